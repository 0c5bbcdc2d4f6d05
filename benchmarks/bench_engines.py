"""The two SNN engines on the demo models: identical files, and how much faster the fast one is.

For every quantized model (LeNet and MLP, k = 0, 1, 2) it runs the SNN script's work twice on the
whole demo test set, T = 40, with the lossless check: once with `--engine reference` (the plain
float64 simulator of spiking_utils.py) and once with the default fast engine (snn_engine.py), each
into a folder of its own, and compares the four logs and snn_results.json byte for byte.

    python reproduce.py --demo                   # the demo models, first
    python benchmarks/bench_engines.py
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import argparse
import contextlib
import io
import tempfile
import time

import paths
from architectures import MODEL_NAMES, TIME_STEPS
from benchmarks import readme_rows
from cli import ArgumentParser, import_tensorflow, positive_int, run_main
from preprocessing_n_mnist import DEFAULT_DEMO_OUT

PRECISIONS = ("k0", "k1", "k2")


def run_engine(evaluation, model, precision, data, log_dir, time_steps, engine):
    """Seconds of one SNN evaluation, its printout kept quiet; the files land in log_dir."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate_snn(model, precision, data, paths.model_dir(model, precision), log_dir, time_steps,
                                check_lossless=True, progress=False, engine=engine)
    return time.perf_counter() - started


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DEMO_OUT, help="default: %(default)s")
    parser.add_argument("--time-steps", type=positive_int, default=TIME_STEPS, help="T (default: %(default)s)")
    parser.add_argument(readme_rows.FLAG, action="store_true", help=readme_rows.FLAG_HELP)
    args = parser.parse_args(argv)
    import_tensorflow()
    import evaluation
    import snn_engine

    snn_engine.configure_threads()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for model in MODEL_NAMES:
            for precision in PRECISIONS:
                folders = {engine: pathlib.Path(scratch) / model / precision / engine for engine in ("reference", "fast")}
                seconds = {engine: run_engine(evaluation, model, precision, args.data, folder, args.time_steps, engine)
                           for engine, folder in folders.items()}
                files = {engine: {path.name: path.read_bytes() for path in sorted(folder.iterdir())}
                         for engine, folder in folders.items()}
                identical = files["reference"] == files["fast"]
                rows.append((model, precision, seconds, identical, len(files["fast"])))
                print(f"{model} {precision}: reference {seconds['reference']:.1f} s, fast {seconds['fast']:.1f} s "
                      f"({seconds['reference'] / seconds['fast']:.1f}x); {len(files['fast'])} files "
                      f"{'identical' if identical else 'DIFFERENT'}")
    all_identical = all(row[3] for row in rows)
    print(f"all {len(rows)} SNNs: logs and snn_results.json {'identical' if all_identical else 'NOT identical'}")
    if args.update_docs:
        readme_rows.update_row(
            f"SNN engines, the 6 demo models, whole demo test set, T = {args.time_steps}",
            "; ".join(f"{model} {precision}: reference {s['reference']:.1f} s, fast {s['fast']:.1f} s"
                      for model, precision, s, _, _ in rows)
            + f"; the 4 logs and snn_results.json identical byte for byte: {'yes, all 6' if all_identical else '**no**'}",
            "identical files")
    return 0 if all_identical else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
