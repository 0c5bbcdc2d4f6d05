"""The whole N-MNIST study in one command: data, 8 trainings, 8 ANN evaluations, 6 SNNs, figures, RESULTS.md.

    python reproduce.py --demo                 # offline demo data, short schedule (minutes on a laptop)
    python reproduce.py --raw data/N-MNIST     # the real dataset, the paper's 150 epochs
    python reproduce.py --dataset fashion_mnist [--raw DIR]   # Fashion-MNIST (§8): RESULTS_fashion_mnist.md

Stages whose outputs are complete are skipped, so a rerun after an interruption carries on
(an interrupted training resumes from its last finished epoch); --force redoes everything.
"""
import argparse
import contextlib
import functools
import importlib
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import data_sources
import fashion_mnist
import n_mnist
import paths
import preprocessing_fashion_mnist
import preprocessing_n_mnist
import report
from architectures import (BATCH_SIZE, DATASETS, EPOCHS, LEARNING_RATE, MODEL_NAMES, PRECISIONS, SEED, TIE_RULES,
                           TIME_STEPS, precision_to_k)
from cli import (REPO_ROOT, TF_NOTICES_HELP, ArgumentParser, UserError, import_tensorflow, is_number,
                 non_negative_int, positive_int, read_json_object, run_main, shown, write_text_atomic)
from paths import ANN_RESULTS_FILE, SNN_RESULTS_FILE
from result_files import ANN_KEYS, SNN_KEYS, results_match

DEMO_EPOCHS = 50  # the demo's short schedule; the paper's is EPOCHS
TIMINGS_FILE = "reproduce_timings.json"
STAGE_LOG_FILE = "reproduce_log.txt"  # every stage's full output; the screen gets one line per stage
RESULTS_FILE = "RESULTS.md"
FIGURE_SCRIPTS = ("accuracy_speed", "sops", "sparsity")
CLEAR_LINE = "\r\x1b[K"  # back to the start of the terminal line and clear it


def newer(output, *inputs):
    """True when `output` exists and is at least as new as every existing input."""
    output = Path(output)
    if not output.is_file():
        return False
    times = [Path(path).stat().st_mtime for path in inputs if Path(path).exists()]
    return not times or output.stat().st_mtime >= max(times)


@dataclass
class Stage:
    """One step of the study. It is complete, and skipped, when every output is at least as new as
    every input and `check` passes: what the file times cannot tell (well formed, this run's settings)."""

    name: str
    run: Callable[[], str]  # does the work; returns the one-line summary shown on screen
    inputs: Sequence[Path] = ()
    outputs: Sequence[Path] = ()
    check: Callable[[], bool] = lambda: True

    def is_complete(self):
        return all(newer(output, *self.inputs) for output in self.outputs) and self.check()


def epoch_progress(prefix, epochs, stream):
    """A Keras callback that keeps a training stage's one screen line current: `[ 3/25] train lenet k0 ... epoch 12/50`."""
    import keras

    def show(epoch, logs=None):
        if stream.isatty():
            stream.write(f"\r{prefix} ... epoch {epoch + 1}/{epochs}")
            stream.flush()

    return keras.callbacks.LambdaCallback(on_epoch_end=show)


def build_stages(args, screen=sys.stdout):
    """The study's stages in the order they run: data, trainings, ANN evaluations, SNNs, figures."""
    import checkpointing
    import evaluation
    import training

    data, root, dataset = args.data, args.out_root, args.dataset
    spiking = [p for p in args.precisions if precision_to_k(p) >= 0]
    parameters_file = paths.parameters_file(dataset)

    def load_arrays():  # the dataset file's raw arrays, checked
        return n_mnist.load_frame_counts(data) if dataset == "n_mnist" else fashion_mnist.load_fashion_mnist(data)

    # What this run uses; both are first asked after the data stage, which is the first stage.
    @functools.cache
    def n_test():
        n_available = len(load_arrays()["y_test"])
        return min(n_available, args.test_limit or n_available)

    @functools.cache
    def settings():  # the training data's CRC-32 included
        x_train, y_train, _, _ = data_sources.load_inputs(data, dataset, train_limit=args.train_limit, test_limit=0)
        return checkpointing.run_settings(BATCH_SIZE, LEARNING_RATE, args.seed, x_train, y_train)

    def data_stage():
        def make_data():
            if dataset == "fashion_mnist":
                raw = args.raw or preprocessing_fashion_mnist.default_raw()
                if not Path(raw).is_dir():
                    raise UserError(f"{raw}: folder not found (the four Fashion-MNIST .gz files; give --raw)")
                print(fashion_mnist.summary(data, fashion_mnist.build_dataset(raw, data, fashion_mnist.SIZES)))
            elif args.demo:
                print(preprocessing_n_mnist.build_demo(data, progress=False))
            else:
                print(preprocessing_n_mnist.convert_dataset(args.raw, data, progress=False))
            arrays = load_arrays()
            return f"{len(arrays['y_train']):,} training and {len(arrays['y_test']):,} test samples in {shown(data)}"

        def readable():
            try:
                load_arrays()
            except UserError:
                return False
            return True

        return Stage("data", make_data, outputs=[data], check=readable)

    def training_stage(model, precision):
        model_dir, name = paths.model_dir(model, precision, root, dataset), f"train {model} {precision}"
        epochs = args.model_epochs[model]

        def this_runs_state():  # the training state when trained with this run's settings on the same data
            state = checkpointing.read_state_or_none(model_dir)
            return state if state is not None and checkpointing.changed_setting(state, settings()) is None else None

        def train():
            state = this_runs_state()
            resume = not args.force and state is not None and state["epochs_done"] <= epochs
            progress = epoch_progress(screen_prefix(stages, name), epochs, screen)
            history = training.train(model, precision, data, model_dir, epochs=epochs, seed=args.seed,
                                     resume=resume, train_limit=args.train_limit, verbose=2, callbacks=[progress],
                                     dataset=dataset)
            last = history[-1]
            return f"{last['epoch']} epochs, loss {last['loss']:.4f}, train accuracy {100 * last['accuracy']:.2f}%"

        def trained_enough():
            state = this_runs_state()
            return state is not None and state["epochs_done"] >= epochs

        return Stage(name, train, inputs=[data], outputs=[model_dir / parameters_file], check=trained_enough)

    def ann_stage(model, precision):
        model_dir = paths.model_dir(model, precision, root, dataset)
        results = model_dir / ANN_RESULTS_FILE

        def evaluate():
            results = evaluation.evaluate_ann(model, precision, data, model_dir, args.test_limit, dataset=dataset)
            return f"test accuracy {100 * results['accuracy']:.2f}% on {results['n_test']:,} samples"

        return Stage(f"ANN {model} {precision}", evaluate, inputs=[model_dir / parameters_file, data], outputs=[results],
                     check=lambda: results_match(results, ANN_KEYS, n_test=n_test()))

    def snn_stage(model, precision):
        model_dir, log_dir = paths.model_dir(model, precision, root, dataset), paths.log_dir(model, precision, root, dataset)
        results = log_dir / SNN_RESULTS_FILE
        time_steps = args.model_time_steps[model]

        def simulate():
            results = evaluation.evaluate_snn(model, precision, data, model_dir, log_dir, time_steps,
                                              test_limit=args.test_limit, check_lossless=True, progress=False,
                                              tie_rule=args.tie_rule, dataset=dataset)
            differ = ", ".join(f"{check['mismatching_predictions']} under the {rule} rule"
                               for rule, check in results["lossless_check"].items())
            return (f"{100 * results['final_accuracy']:.2f}% after {results['steps_to_final']} of "
                    f"{time_steps} steps; predictions that differ from the quantized ANN's: {differ}")

        # the logs are this run's: its test samples and T, its model and data
        return Stage(f"SNN {model} {precision}", simulate, inputs=[model_dir / parameters_file, data], outputs=[results],
                     check=lambda: results_match(results, SNN_KEYS, lossless=True, n_test=n_test(),
                                                 time_steps=time_steps, tie_rule=args.tie_rule))

    def figures_stage(model):
        figure_dir = paths.figure_dir(model, root, dataset)
        ann_results = paths.model_dir(model, "full", root, dataset) / ANN_RESULTS_FILE
        all_spiking = [p for p in PRECISIONS if precision_to_k(p) >= 0]

        def draw():
            # This run's precisions, and those whose SNN stage counts as complete for this run (an earlier run's
            # logs, with the same test samples and T, newer than their model and the data); other logs may be stale.
            drawn = [p for p in all_spiking if p in args.precisions or snn_stage(model, p).is_complete()]
            ann_flags = ["--ann-results", str(ann_results)] if ann_results.is_file() else []
            for script in FIGURE_SCRIPTS:
                module = importlib.import_module(f"figs.{script}")
                module.main(["--model", model, "--log-root", str(figure_dir), "--out-dir", str(figure_dir),
                             "--precisions", *drawn, *ann_flags, "--dataset", dataset,
                             "--time-steps", str(args.model_time_steps[model])])
            return f"{len(FIGURE_SCRIPTS)} figures of {', '.join(drawn)} in {shown(figure_dir)}"

        return Stage(f"figures {model}", draw,
                     inputs=[ann_results, *(paths.log_dir(model, p, root, dataset) / SNN_RESULTS_FILE for p in all_spiking)],
                     outputs=[paths.figure_path(model, figure, figure_dir, dataset) for figure in paths.FIGURES])

    stages = [data_stage()]
    stages += [training_stage(model, precision) for model in args.models for precision in args.precisions]
    stages += [ann_stage(model, precision) for model in args.models for precision in args.precisions]
    stages += [snn_stage(model, precision) for model in args.models for precision in spiking]
    stages += [figures_stage(model) for model in args.models if spiking]  # no SNN logs, nothing to draw
    return stages


def screen_prefix(stages, name):
    """How the screen line of the stage called `name` starts, e.g. `[ 3/25] train lenet k0`."""
    number = [stage.name for stage in stages].index(name) + 1
    return f"[{number:2d}/{len(stages)}] {name}"


def covers_whole_study(args):
    """True when no --models or --precisions narrow the run."""
    return set(args.models) == set(MODEL_NAMES) and set(args.precisions) == set(PRECISIONS)


def read_timings(path):
    """{stage: seconds} of earlier runs; a missing or malformed file (it is only a cache) counts as none."""
    try:
        timings = read_json_object(path) if Path(path).is_file() else {}
    except UserError:
        return {}
    return {name: seconds for name, seconds in timings.items() if is_number(seconds)}


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog=TF_NOTICES_HELP)
    raw, demo_data = preprocessing_n_mnist.DEFAULT_RAW, preprocessing_n_mnist.DEFAULT_DEMO_OUT
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="n_mnist",
                        help="n_mnist (ALGORITHM.md §7) or fashion_mnist (§8; its own folders FashionMNIST/<Model> "
                             "and RESULTS_fashion_mnist.md) (default: %(default)s)")
    parser.add_argument("--demo", action="store_true", help=f"offline demo recordings and a short schedule ({DEMO_EPOCHS} epochs)")
    parser.add_argument("--raw", type=Path, default=None,
                        help="N-MNIST recordings: Train/ and Test/ folders or Train.zip and Test.zip "
                             f"(default: {shown(raw)}); Fashion-MNIST: the folder of its four .gz files "
                             f"(default: {shown(preprocessing_fashion_mnist.LOCAL_RAW)}/ if it holds them, "
                             f"otherwise {preprocessing_fashion_mnist.DEBIAN_RAW}/)")
    parser.add_argument("--data", type=Path, default=None,
                        help=f"frame dataset (default: {shown(n_mnist.DEFAULT_DATA)}, or {shown(demo_data)} with --demo; "
                             f"{shown(fashion_mnist.DEFAULT_DATA)} for Fashion-MNIST)")
    parser.add_argument("--out-root", type=Path, default=REPO_ROOT,
                        help="where <Model>/checkpoints, <Model>/figs and RESULTS.md go (default: the repository)")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), metavar="MODEL",
                        help="any of %(choices)s (default: all)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS), metavar="PRECISION",
                        help="any of %(choices)s (default: all)")
    fashion = DATASETS["fashion_mnist"]
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"default: {EPOCHS}, or {DEMO_EPOCHS} with --demo; Fashion-MNIST: LeNet "
                             f"{fashion.epochs['lenet']}, MLP {fashion.epochs['mlp']}")
    parser.add_argument("--time-steps", type=positive_int, default=None,
                        help=f"SNN T (default: {TIME_STEPS}; Fashion-MNIST: LeNet {fashion.time_steps['lenet']}, "
                             f"MLP {fashion.time_steps['mlp']})")
    parser.add_argument("--tie-rule", choices=TIE_RULES, default=TIE_RULES[0],
                        help="the SNNs' spike rule for their logs (default: %(default)s; the lossless check reports "
                             "both; docs/tie_rule.md)")
    parser.add_argument("--seed", type=non_negative_int, default=SEED, help="default: %(default)s")
    parser.add_argument("--train-limit", type=positive_int, default=None, metavar="N", help="use the first N training samples")
    parser.add_argument("--test-limit", type=positive_int, default=None, metavar="N", help="use the first N test samples")
    parser.add_argument("--force", action="store_true",
                        help="redo every stage, even complete ones (the data stage only when no --models or "
                             "--precisions narrow the run)")
    parser.add_argument("--update-readme", action="store_true",
                        help="also write the results into README.md's generated block: N-MNIST's table, or "
                             "Fashion-MNIST's short table of every model with result files")
    args = parser.parse_args(argv)
    args.models = list(dict.fromkeys(args.models))  # each once, in the order given
    args.precisions = list(dict.fromkeys(args.precisions))
    dataset = DATASETS[args.dataset]
    if args.dataset == "n_mnist":
        if args.epochs is None:
            args.epochs = DEMO_EPOCHS if args.demo else EPOCHS
        args.time_steps = args.time_steps or TIME_STEPS
        args.raw = args.raw or raw
        args.data = args.data or (demo_data if args.demo else n_mnist.DEFAULT_DATA)
    elif args.demo:
        raise UserError("--demo is N-MNIST's offline demo; Fashion-MNIST needs its four files (--raw)")
    else:
        args.data = args.data or fashion_mnist.DEFAULT_DATA
    # per model: the flag when given, else the dataset's (the same for both N-MNIST models)
    args.model_epochs = {model: args.epochs or dataset.epochs[model] for model in MODEL_NAMES}
    args.model_time_steps = {model: args.time_steps or dataset.time_steps[model] for model in MODEL_NAMES}
    return args


def output_name(name, dataset):
    """RESULTS.md -> RESULTS_fashion_mnist.md for another dataset than N-MNIST (whose names stay)."""
    if dataset == "n_mnist":
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}_{dataset}{dot}{suffix}"


def run_stage(stage, prefix, stage_log, screen):
    """Run one stage with its output going to the stage log; the screen shows `prefix ...` meanwhile."""
    live = screen.isatty()  # a terminal: show the stage while it runs, then overwrite that line
    if live:
        print(f"{prefix} ...", end="", flush=True)
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            return stage.run()
    except BaseException as error:  # the screen line says so, whatever went wrong (Ctrl-C included)
        print(f"{CLEAR_LINE if live else ''}{prefix}: failed", flush=True)
        if isinstance(error, UserError):
            raise UserError(f"stage '{stage.name}' failed: {error}") from None
        raise
    finally:
        with open(stage_log, "a") as log:
            log.write(f"==== {stage.name} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n{output.getvalue()}\n")


def main(argv=None):
    """Run every stage that is not complete, one screen line each; write RESULTS.md."""
    args = parse_args(argv)
    if args.update_readme and Path(args.out_root).resolve() != REPO_ROOT:
        raise UserError("--update-readme copies the repository's own results: leave out --out-root")
    if args.update_readme and args.dataset == "n_mnist" and not covers_whole_study(args):
        raise UserError("--update-readme replaces the README's whole results table: leave out --models and --precisions")
    screen = sys.stdout
    import_tensorflow()
    stages = build_stages(args, screen)
    timings_path = Path(args.out_root) / output_name(TIMINGS_FILE, args.dataset)
    timings = {} if args.force else read_timings(timings_path)
    stage_log = Path(args.out_root) / output_name(STAGE_LOG_FILE, args.dataset)
    try:
        stage_log.parent.mkdir(parents=True, exist_ok=True)
        with open(stage_log, "a"):
            pass
    except OSError as error:
        raise UserError(f"{args.out_root}: cannot write there ({error.strerror or error})") from None
    started, ran_now = time.perf_counter(), set()
    print(f"{len(stages)} stages; each stage's full output goes to {shown(stage_log)}", flush=True)
    for stage in stages:
        prefix = screen_prefix(stages, stage.name)
        # --force rebuilds the data only for the whole study: new data would make every other model's outputs stale
        forced = args.force and (stage.name != "data" or covers_whole_study(args))
        if not forced and stage.is_complete():
            print(f"{prefix}: complete, skipped", flush=True)
            continue
        stage_started = time.perf_counter()
        summary = run_stage(stage, prefix, stage_log, screen)
        timings[stage.name] = time.perf_counter() - stage_started
        ran_now.add(stage.name)
        write_text_atomic(timings_path, json.dumps(timings, indent=1))
        print(f"{CLEAR_LINE if screen.isatty() else ''}{prefix}: {summary} (done in {timings[stage.name]:.1f} s)",
              flush=True)
    markdown = report.results_markdown(args, {stage.name: timings[stage.name] for stage in stages
                                              if stage.name in timings}, ran_now)
    results_file = Path(args.out_root) / output_name(RESULTS_FILE, args.dataset)
    write_text_atomic(results_file, markdown)
    if args.update_readme:
        report.update_readme(REPO_ROOT / "README.md", report.readme_markdown(args), args.dataset)
    print(f"wrote {shown(results_file)} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    run_main(main)
