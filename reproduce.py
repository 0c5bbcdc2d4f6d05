"""The whole N-MNIST study in one command: data, 8 trainings, 8 ANN evaluations, 6 SNNs, figures, RESULTS.md.

    python reproduce.py --demo                 # offline demo data, short schedule (minutes on a laptop)
    python reproduce.py --raw data/N-MNIST     # the real dataset, the paper's 150 epochs

Stages whose outputs are complete are skipped, so a rerun after an interruption carries on
(an interrupted training resumes from its last finished epoch); --force redoes everything.
"""
import argparse
import contextlib
import functools
import importlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import n_mnist
import paths as output_paths
import preprocessing_n_mnist
from architectures import (BATCH_SIZE, DISPLAY_NAMES, EPOCHS, LEARNING_RATE, MODEL_NAMES, PRECISIONS, SEED, TIME_STEPS, ann_ops_per_sample,
                           precision_to_k)
from cli import (REPO_ROOT, TF_NOTICES_HELP, ArgumentParser, UserError, import_tensorflow, is_number, read_json_object,
                 run_main, shown, write_text_atomic)
from paths import ANN_RESULTS_FILE, PARAMETERS_FILE, SNN_RESULTS_FILE

DEMO_EPOCHS = 50  # the demo's short schedule; the paper's is EPOCHS
TIMINGS_FILE = "reproduce_timings.json"
STAGE_LOG_FILE = "reproduce_log.txt"  # every stage's full output; the screen gets one line per stage
RESULTS_FILE = "RESULTS.md"
FIGURE_SCRIPTS = ("accuracy_speed", "sops", "sparsity")
README_MARKERS = ("<!-- results:start -->", "<!-- results:end -->")
CLEAR_LINE = "\r\x1b[K"  # back to the start of the terminal line and clear it

# The authors' numbers (ALGORITHM.md §7), quoted beside ours; None where the paper gives none.
PAPER_RESULTS = {
    ("mlp", "full"): dict(ann=0.9643),
    ("mlp", "k0"): dict(snn=0.9639, steps=4, positive=380.9, negative=17.1, sops=68_648),
    ("mlp", "k1"): dict(ann=0.9658, snn=0.9658, steps=9, positive=767.8, negative=76.0, sops=125_411),
    ("mlp", "k2"): dict(snn=0.9674, steps=14, positive=1_573.6, negative=211.2, sops=246_081),
    ("lenet", "full"): dict(ann=0.9793),
    ("lenet", "k0"): dict(snn=0.9780, steps=8, positive=14_540.9, negative=2_778.3, sops=2_022_864),
    ("lenet", "k1"): dict(ann=0.9786, snn=0.9786, steps=14, positive=28_797.4, negative=7_120.8, sops=3_926_794),
    ("lenet", "k2"): dict(snn=0.9751, steps=13, positive=25_864.6, negative=6_309.3, sops=3_611_154),
}


class Paths:
    """Where each model's outputs go under `root` (the repository by default): paths.py's, for one root."""

    def __init__(self, root):
        self.root = Path(root)

    def model_dir(self, model, precision):
        return output_paths.model_dir(model, precision, self.root)

    def log_dir(self, model, precision):
        return output_paths.log_dir(model, precision, self.root)

    def figure_dir(self, model):
        return output_paths.figure_dir(model, self.root)


def newer(output, *inputs):
    """True when `output` exists and is at least as new as every existing input."""
    output = Path(output)
    if not output.is_file():
        return False
    times = [Path(path).stat().st_mtime for path in inputs if Path(path).exists()]
    return not times or output.stat().st_mtime >= max(times)


def epoch_progress(prefix, epochs, stream):
    """A Keras callback that keeps a training stage's one screen line current: `[ 3/25] train lenet k0 ... epoch 12/50`."""
    import keras

    def show(epoch, logs=None):
        if stream.isatty():
            stream.write(f"\r{prefix} ... epoch {epoch + 1}/{epochs}")
            stream.flush()

    return keras.callbacks.LambdaCallback(on_epoch_end=show)


ANN_KEYS = ("accuracy", "n_test")
SNN_KEYS = ("final_accuracy", "steps_to_final", "positive_spikes_per_sample", "negative_spikes_per_sample",
            "sops_per_sample", "n_test", "time_steps")
LOSSLESS_KEYS = ("mismatching_neurons", "rounding_tie_neurons", "downstream_of_ties_neurons",
                 "samples_still_spiking_at_the_last_step", "unsettled_neurons", "other_mismatching_neurons",
                 "mismatching_predictions", "first_step_all_predictions_match")
MAY_BE_NONE = {"first_step_all_predictions_match"}  # null when the predictions never all match


def read_results(path, keys, lossless=False):
    """A results JSON whose `keys` (and, with `lossless`, lossless_check's) hold numbers; UserError otherwise."""
    results = read_json_object(path)
    checks = [(results, key, key) for key in keys]
    if lossless:
        check = results.get("lossless_check")
        if not isinstance(check, dict):
            raise UserError(f"{path}: no lossless_check (rerun its stage, or --force)")
        checks += [(check, key, f"lossless_check.{key}") for key in LOSSLESS_KEYS]
    for where, key, label in checks:
        value = where.get(key)
        if not (is_number(value) or (key in MAY_BE_NONE and key in where and value is None)):
            raise UserError(f"{path}: '{label}' is missing or not a number (rerun its stage, or --force)")
    return results


def complete_results(path, keys, inputs, lossless=False, **expected):
    """The results at `path` when newer than `inputs`, well formed and from a run with the `expected`
    values (e.g. n_test=50); otherwise None, and the stage runs again."""
    if not newer(path, *inputs):
        return None
    try:
        results = read_results(path, keys, lossless)
    except UserError:
        return None
    return results if all(results.get(key) == value for key, value in expected.items()) else None


def read_state_or_none(model_dir):
    """The training state, or None when there is none or it is unreadable (the stage then starts afresh)."""
    import checkpointing

    try:
        return checkpointing.read_state(model_dir)
    except UserError:
        return None


def build_stages(args, paths, screen=sys.stdout):
    """[(name, is_complete, run)] in the order the study runs them; run() returns a one-line summary."""
    import checkpointing
    import evaluation
    import training

    stages = []
    data = args.data

    def make_data():
        if args.demo:
            print(preprocessing_n_mnist.build_demo(data, progress=False))
        else:
            print(preprocessing_n_mnist.convert_dataset(args.raw, data, progress=False))
        arrays = n_mnist.load_frame_counts(data)
        return f"{len(arrays['y_train']):,} training and {len(arrays['y_test']):,} test samples in {shown(data)}"

    def data_complete():
        try:
            n_mnist.load_frame_counts(data)
            return True
        except UserError:
            return False

    stages.append(("data", data_complete, make_data))

    # Both are first asked after the data stage, which is the first stage.
    @functools.cache
    def test_size():  # the number of test samples this run uses
        n_test = len(n_mnist.load_frame_counts(data)["y_test"])
        return min(n_test, args.test_limit or n_test)

    @functools.cache
    def wanted_settings():  # what this run trains with, the training data's CRC-32 included
        x_train, y_train, _, _ = n_mnist.load_frames(data, train_limit=args.train_limit, test_limit=0)
        return checkpointing.run_settings(BATCH_SIZE, LEARNING_RATE, args.seed, x_train, y_train)

    def simulated(model, precision):  # the SNN's logs are this run's: its test samples and T, its model and data
        results = paths.log_dir(model, precision) / SNN_RESULTS_FILE
        return complete_results(results, SNN_KEYS, [paths.model_dir(model, precision) / PARAMETERS_FILE, data],
                                lossless=True, n_test=test_size(), time_steps=args.time_steps) is not None

    def same_training(state):  # the state was trained with this run's settings, on the same data
        return state is not None and checkpointing.changed_setting(state, wanted_settings()) is None

    for model in args.models:
        for precision in args.precisions:
            model_dir = paths.model_dir(model, precision)
            name = f"train {model} {precision}"

            def train(model=model, precision=precision, model_dir=model_dir, name=name):
                state = read_state_or_none(model_dir)
                resume = not args.force and same_training(state) and state["epochs_done"] <= args.epochs
                progress = epoch_progress(f"[{stage_number(stages, name)}] {name}", args.epochs, screen)
                history = training.train(model, precision, data, model_dir, epochs=args.epochs, seed=args.seed,
                                         resume=resume, train_limit=args.train_limit, verbose=2, callbacks=[progress])
                last = history[-1]
                return f"{last['epoch']} epochs, loss {last['loss']:.4f}, train accuracy {100 * last['accuracy']:.2f}%"

            def trained(model_dir=model_dir):
                state = read_state_or_none(model_dir)
                return (same_training(state) and state["epochs_done"] >= args.epochs
                        and newer(model_dir / PARAMETERS_FILE, data))

            stages.append((name, trained, train))
    for model in args.models:
        for precision in args.precisions:
            model_dir = paths.model_dir(model, precision)
            results = model_dir / ANN_RESULTS_FILE

            def evaluate(model=model, precision=precision, model_dir=model_dir):
                results = evaluation.evaluate_ann(model, precision, data, model_dir, args.test_limit)
                return f"test accuracy {100 * results['accuracy']:.2f}% on {results['n_test']:,} samples"

            stages.append((
                f"ANN {model} {precision}",
                lambda results=results, model_dir=model_dir: complete_results(
                    results, ANN_KEYS, [model_dir / PARAMETERS_FILE, data], n_test=test_size()) is not None,
                evaluate,
            ))
    for model in args.models:
        for precision in [p for p in args.precisions if precision_to_k(p) >= 0]:
            model_dir, log_dir = paths.model_dir(model, precision), paths.log_dir(model, precision)

            def simulate(model=model, precision=precision, model_dir=model_dir, log_dir=log_dir):
                results = evaluation.evaluate_snn(model, precision, data, model_dir, log_dir, args.time_steps,
                                                  test_limit=args.test_limit, check_lossless=True, progress=False)
                check = results["lossless_check"]
                return (f"{100 * results['final_accuracy']:.2f}% after {results['steps_to_final']} of "
                        f"{args.time_steps} steps; {check['mismatching_predictions']} predictions differ "
                        f"from the quantized ANN's")

            stages.append((f"SNN {model} {precision}", functools.partial(simulated, model, precision), simulate))
    for model in args.models:
        if not any(precision_to_k(p) >= 0 for p in args.precisions):
            continue  # no SNN logs to draw
        figure_dir = paths.figure_dir(model)
        ann_results = paths.model_dir(model, "full") / ANN_RESULTS_FILE
        spiking = [p for p in PRECISIONS if precision_to_k(p) >= 0]
        inputs = [ann_results] + [paths.log_dir(model, p) / SNN_RESULTS_FILE for p in spiking]
        outputs = [output_paths.figure_path(model, figure, figure_dir) for figure in output_paths.FIGURES]

        def draw(model=model, figure_dir=figure_dir, ann_results=ann_results, spiking=spiking):
            # This run's precisions, and those whose logs count as complete for this run (an earlier run's,
            # with the same test samples and T, newer than their model and the data); other logs may be stale.
            drawn = [p for p in spiking if p in args.precisions or simulated(model, p)]
            ann_flags = ["--ann-results", str(ann_results)] if ann_results.is_file() else []
            for script in FIGURE_SCRIPTS:
                module = importlib.import_module(f"figs.{script}")
                module.main(["--model", model, "--log-root", str(figure_dir), "--out-dir", str(figure_dir),
                             "--precisions", *drawn, *ann_flags])
            return f"{len(FIGURE_SCRIPTS)} figures of {', '.join(drawn)} in {shown(figure_dir)}"

        stages.append((f"figures {model}", lambda outputs=outputs, inputs=inputs: all(newer(o, *inputs) for o in outputs), draw))
    return stages


def stage_number(stages, name):
    """`n/N` of the stage called `name`, e.g. ` 3/25`."""
    names = [stage[0] for stage in stages]
    return f"{names.index(name) + 1:2d}/{len(names)}" if name in names else "?"


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, {'GPU: ' + ', '.join(g.name for g in gpus) if gpus else 'no GPU'}")


def fmt(value, kind):
    if value is None:
        return "–"
    if kind == "percent":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def results_rows(paths, models, precisions):
    """One dict per (model, precision) with ours and the paper's numbers, read from the result files."""
    rows = []
    for model in models:
        for precision in precisions:
            ann_path = paths.model_dir(model, precision) / ANN_RESULTS_FILE
            snn_path = paths.log_dir(model, precision) / SNN_RESULTS_FILE
            ann = read_results(ann_path, ANN_KEYS) if ann_path.is_file() else {}
            snn = read_results(snn_path, SNN_KEYS, lossless=True) if snn_path.is_file() else {}
            check = snn.get("lossless_check", {})
            state = read_state_or_none(paths.model_dir(model, precision))
            rows.append(dict(
                model=model, precision=precision, paper=PAPER_RESULTS.get((model, precision), {}),
                ann=ann.get("accuracy"), snn=snn.get("final_accuracy"), steps=snn.get("steps_to_final"),
                positive=snn.get("positive_spikes_per_sample"), negative=snn.get("negative_spikes_per_sample"),
                sops=snn.get("sops_per_sample"), ann_ops=ann_ops_per_sample(model), n_test=ann.get("n_test") or snn.get("n_test"),
                time_steps=snn.get("time_steps"), check=check, epochs=state["epochs_done"] if state else None,
            ))
    return rows


def lossless_text(row):
    """'yes' when every neuron and prediction matches, up to the 1e-5 rounding ties that §3 allows."""
    check = row["check"]
    if not check:
        return "–"
    if check["other_mismatching_neurons"] > 0:
        verdict = "**no**"
    elif check["samples_still_spiking_at_the_last_step"] > 0:
        verdict = (f"not settled: {check['samples_still_spiking_at_the_last_step']:,} samples still spiking at "
                   f"the last step ({check['unsettled_neurons']:,} neurons differ there)")
    elif check["mismatching_predictions"] > 0:
        verdict = "yes, up to 1e-5 rounding ties"
    else:
        verdict = "yes"
    settled_differ = check["rounding_tie_neurons"] + check["downstream_of_ties_neurons"] + check["other_mismatching_neurons"]
    ties = (f"; {settled_differ:,} neurons differ ({check['rounding_tie_neurons']} ties, the rest downstream)"
            if settled_differ else "")
    return (f"{verdict}: {check['mismatching_predictions']} predictions differ{ties}; "
            f"all predictions match from step {check['first_step_all_predictions_match'] or '–'}")


def covers_whole_study(args):
    """True when no --models or --precisions narrow the run."""
    return set(args.models) == set(MODEL_NAMES) and set(args.precisions) == set(PRECISIONS)


def is_demo_data(args):
    """True for the emulated demo dataset (--demo, or its file given with --data)."""
    return args.demo or preprocessing_n_mnist.is_demo_file(args.data)


def distinct(values):
    """`50`, or `1/50` when the rows differ, or `–` when none is known (no SNN, say)."""
    return "/".join(f"{value:,}" for value in sorted({value for value in values if value})) or "–"


def results_markdown(paths, args, timings, ran_now):
    """RESULTS.md: the §7 table, ours beside the paper's, the lossless check, stage times, the machine.

    `timings`: {stage: seconds} of the stages run now (`ran_now`) or in an earlier run.
    """
    rows = results_rows(paths, args.models, args.precisions)
    lines = [
        "# Results", "",
        f"Data: `{shown(args.data)}` ({'offline demo recordings' if is_demo_data(args) else 'N-MNIST'}), "
        f"{distinct(row['n_test'] for row in rows)} test samples; {distinct(row['epochs'] for row in rows)} "
        f"training epochs; T = {distinct(row['time_steps'] for row in rows)}. "
        "Generated by `reproduce.py` from the result files; the paper's numbers (ALGORITHM.md §7, full N-MNIST, "
        "150 epochs) are quoted beside ours as *paper*.", "",
        "| net | precision | ANN (paper) | ANN (ours) | SNN (paper) | SNN (ours) | steps (paper / ours) "
        "| positive spikes (paper / ours) | negative spikes (paper / ours) | SOPs (paper / ours) | ANN ops | SNN = quantized ANN? |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        paper = row["paper"]
        lines.append("| " + " | ".join([
            DISPLAY_NAMES[row["model"]], row["precision"],
            fmt(paper.get("ann"), "percent"), fmt(row["ann"], "percent"),
            fmt(paper.get("snn"), "percent"), fmt(row["snn"], "percent"),
            f"{fmt(paper.get('steps'), 'int')} / {fmt(row['steps'], 'int')}",
            f"{fmt(paper.get('positive'), 'float')} / {fmt(row['positive'], 'float')}",
            f"{fmt(paper.get('negative'), 'float')} / {fmt(row['negative'], 'float')}",
            f"{fmt(paper.get('sops'), 'int')} / {fmt(row['sops'], 'int')}",
            fmt(row["ann_ops"], "int"), lossless_text(row),
        ]) + " |")
    lines += ["", "Steps: the first time step (from 1) from which the SNN accuracy stays at its final value "
              "(single predictions may still change after it while the count of correct ones stays, so the "
              "step from which all predictions match the quantized ANN's can be later). "
              "Spikes and SOPs: per test sample after the last step. The lossless check compares every neuron's "
              "net spike count with 2^k × the quantized ANN activation (float64) and the SNN's predictions with "
              "the quantized ANN's.", "", "### Stage wall times", "", "| stage | seconds | run |", "|---|---|---|"]
    for name, seconds in timings.items():
        lines.append(f"| {name} | {seconds:.1f} | {'this run' if name in ran_now else 'an earlier run'} |")
    this_run = sum(seconds for name, seconds in timings.items() if name in ran_now)
    earlier = len(timings) - len(ran_now & set(timings))
    lines += ["", f"Total: {this_run:.0f} s in this run"
              + (f", plus {sum(timings.values()) - this_run:.0f} s of {earlier} stages done in an earlier run"
                 if earlier else "")
              + f", on {machine_description()}.", ""]
    return "\n".join(lines)


def read_timings(path):
    """{stage: seconds} of earlier runs; a missing or malformed file (it is only a cache) counts as none."""
    try:
        timings = read_json_object(path) if Path(path).is_file() else {}
    except UserError:
        return {}
    return {name: seconds for name, seconds in timings.items() if is_number(seconds)}


def update_readme(readme, table_markdown):
    """Replace the block between the README's results markers with the generated results."""
    text = Path(readme).read_text()
    start, end = README_MARKERS
    if start not in text or end not in text:
        raise UserError(f"{readme}: no {start} ... {end} block to update")
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    write_text_atomic(readme, f"{before}{start}\n{table_markdown}\n{end}{after}")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=TF_NOTICES_HELP)
    parser.add_argument("--demo", action="store_true", help=f"offline demo recordings and a short schedule ({DEMO_EPOCHS} epochs)")
    parser.add_argument("--raw", type=Path, default=preprocessing_n_mnist.DEFAULT_RAW,
                        help=f"N-MNIST recordings: Train/ and Test/ folders or Train.zip and Test.zip (default: {shown(preprocessing_n_mnist.DEFAULT_RAW)})")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"frame dataset (default: {shown(n_mnist.DEFAULT_DATA)}, or {shown(preprocessing_n_mnist.DEFAULT_DEMO_OUT)} with --demo)")
    parser.add_argument("--out-root", type=Path, default=REPO_ROOT,
                        help="where <Model>/checkpoints, <Model>/figs and RESULTS.md go (default: the repository)")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), help="default: %(default)s")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), help="default: %(default)s")
    parser.add_argument("--epochs", type=int, default=None, help=f"default: {EPOCHS}, or {DEMO_EPOCHS} with --demo")
    parser.add_argument("--time-steps", type=int, default=TIME_STEPS, help="SNN T (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="default: %(default)s")
    parser.add_argument("--train-limit", type=int, default=None, metavar="N", help="use the first N training samples")
    parser.add_argument("--test-limit", type=int, default=None, metavar="N", help="use the first N test samples")
    parser.add_argument("--force", action="store_true",
                        help="redo every stage, even complete ones (the data stage only when no --models or "
                             "--precisions narrow the run)")
    parser.add_argument("--update-readme", action="store_true", help="also copy the results table into README.md")
    args = parser.parse_args(argv)
    for name in args.models:
        if name not in MODEL_NAMES:
            raise UserError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    for name in args.precisions:
        if name not in PRECISIONS:
            raise UserError(f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}")
    args.models = list(dict.fromkeys(args.models))  # each once, in the order given
    args.precisions = list(dict.fromkeys(args.precisions))
    if args.epochs is None:
        args.epochs = DEMO_EPOCHS if args.demo else EPOCHS
    args.data = args.data or (preprocessing_n_mnist.DEFAULT_DEMO_OUT if args.demo else n_mnist.DEFAULT_DATA)
    if args.seed < 0:
        raise UserError(f"--seed must be at least 0, got {args.seed}")
    for flag in ("epochs", "time_steps", "train_limit", "test_limit"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    return args


def main(argv=None):
    """Run every stage that is not complete, one screen line each; write RESULTS.md."""
    args = parse_args(argv)
    if args.update_readme and Path(args.out_root).resolve() != REPO_ROOT:
        raise UserError("--update-readme copies the repository's own results: leave out --out-root")
    if args.update_readme and not covers_whole_study(args):
        raise UserError("--update-readme replaces the README's whole results table: leave out --models and --precisions")
    paths = Paths(args.out_root)
    screen = sys.stdout
    import_tensorflow()
    stages = build_stages(args, paths, screen)
    timings_path = Path(args.out_root) / TIMINGS_FILE
    timings = {} if args.force else read_timings(timings_path)
    stage_log = Path(args.out_root) / STAGE_LOG_FILE
    try:
        stage_log.parent.mkdir(parents=True, exist_ok=True)
        with open(stage_log, "a"):
            pass
    except OSError as error:
        raise UserError(f"{args.out_root}: cannot write there ({error.strerror or error})") from None
    started, ran_now = time.perf_counter(), set()
    print(f"{len(stages)} stages; each stage's full output goes to {shown(stage_log)}", flush=True)
    for number, (name, is_complete, run) in enumerate(stages, start=1):
        prefix = f"[{number:2d}/{len(stages)}] {name}"
        # --force rebuilds the data only for the whole study: new data would make every other model's outputs stale
        forced = args.force and (name != "data" or covers_whole_study(args))
        if not forced and is_complete():
            print(f"{prefix}: complete, skipped", flush=True)
            continue
        live = screen.isatty()  # a terminal: show the stage while it runs, then overwrite that line
        if live:
            print(f"{prefix} ...", end="", flush=True)
        stage_started = time.perf_counter()
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                summary = run()
        except BaseException as error:  # the screen line says so, whatever went wrong (Ctrl-C included)
            print(f"{CLEAR_LINE if live else ''}{prefix}: failed", flush=True)
            if isinstance(error, UserError):
                raise UserError(f"stage '{name}' failed: {error}") from None
            raise
        finally:
            with open(stage_log, "a") as log:
                log.write(f"==== {name} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n{output.getvalue()}\n")
        timings[name] = time.perf_counter() - stage_started
        ran_now.add(name)
        write_text_atomic(timings_path, json.dumps(timings, indent=1))
        print(f"{CLEAR_LINE if live else ''}{prefix}: {summary} (done in {timings[name]:.1f} s)", flush=True)
    markdown = results_markdown(paths, args, {name: timings[name] for name, *_ in stages if name in timings}, ran_now)
    write_text_atomic(Path(args.out_root) / RESULTS_FILE, markdown)
    if args.update_readme:
        update_readme(REPO_ROOT / "README.md", markdown.split("\n", 2)[2])
    print(f"wrote {shown(Path(args.out_root) / RESULTS_FILE)} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    run_main(main)
