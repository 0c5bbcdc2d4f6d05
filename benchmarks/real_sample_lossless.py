"""The lossless check on real N-MNIST recordings, under both tie rules (docs/tie_rule.md).

Builds a frame dataset from the 100 real training recordings in ../shared/data/nmnist_real_sample/
(ids 1 .. --train-count train, the rest are held out as the test set), trains a LeNet and an MLP at
k = 1 on the paper's schedule, evaluates the quantized ANNs and runs their SNNs with the lossless
check, which reports, per rule, the neurons and predictions that differ from the quantized ANN.

    python benchmarks/real_sample_lossless.py                 # a few minutes on 2 cores
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import argparse
import contextlib
import io

import numpy as np

import n_mnist
from architectures import EPOCHS, TIME_STEPS
from benchmarks import readme_rows
from cli import REPO_ROOT, ArgumentParser, UserError, import_tensorflow, positive_int, run_main, shown

DEFAULT_RAW = REPO_ROOT.parent / "shared" / "data" / "nmnist_real_sample"
DEFAULT_OUT = REPO_ROOT / "data" / "real_sample"  # generated: frames, checkpoints, logs


def sample_frames(raw, train_count):
    """(x_train, y_train, x_test, y_test) of the recordings under raw/Train/<digit>/<id>.bin, split by id."""
    files = sorted((raw / "Train").glob("*/*.bin"), key=lambda path: int(path.stem))
    if not files:
        raise UserError(f"{raw}: no recordings Train/<digit>/<id>.bin")
    frames = np.stack([n_mnist.on_event_frame(n_mnist.decode_events(path), str(path)) for path in files])
    labels = np.array([int(path.parent.name) for path in files], dtype=np.uint8)
    if not 0 < train_count < len(files):
        raise UserError(f"--train-count must leave test recordings: {len(files)} recordings in {raw}")
    return frames[:train_count], labels[:train_count], frames[train_count:], labels[train_count:]


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=pathlib.Path, default=DEFAULT_RAW, help=f"default: {DEFAULT_RAW}")
    parser.add_argument("--out-dir", type=pathlib.Path, default=DEFAULT_OUT, help=f"default: {shown(DEFAULT_OUT)}")
    parser.add_argument("--train-count", type=positive_int, default=50, help="recordings to train on (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=EPOCHS, help="default: %(default)s")
    parser.add_argument("--time-steps", type=positive_int, default=TIME_STEPS, help="T (default: %(default)s)")
    parser.add_argument(readme_rows.FLAG, action="store_true", help=readme_rows.FLAG_HELP)
    args = parser.parse_args(argv)
    data = args.out_dir / "frames.npz"
    n_mnist.save_frames(data, *sample_frames(args.raw, args.train_count))
    import_tensorflow()
    import evaluation
    import training

    measured = []
    for model in ("lenet", "mlp"):
        model_dir, log_dir = args.out_dir / model / "checkpoints", args.out_dir / model / "logs"
        with contextlib.redirect_stdout(io.StringIO()):
            training.train(model, "k1", data, model_dir, epochs=args.epochs, verbose=0)
            ann = evaluation.evaluate_ann(model, "k1", data, model_dir)
            snn = evaluation.evaluate_snn(model, "k1", data, model_dir, log_dir, args.time_steps, check_lossless=True,
                                          progress=False)
        checks = snn["lossless_check"]
        line = (f"{model} k1, {args.epochs} epochs on {args.train_count} recordings, {snn['n_test']} held out: "
                f"ANN {100 * ann['accuracy']:.1f}%, SNN {100 * snn['final_accuracy']:.1f}%; " + "; ".join(
                    f"{rule} rule: {check['mismatching_neurons']} neurons differ ({check['rounding_tie_neurons']} ties), "
                    f"{check['mismatching_predictions']} predictions differ" for rule, check in checks.items()))
        print(line)
        measured.append(line)
    if args.update_docs:
        readme_rows.update_row("Lossless check on real recordings (../shared/data/nmnist_real_sample)",
                               "; ".join(measured), "exact rule: 0 neurons differ")


if __name__ == "__main__":
    run_main(main)
