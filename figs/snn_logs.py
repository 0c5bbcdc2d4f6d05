"""Read the SNN logs of ALGORITHM.md §4, and the plumbing the three figure scripts share.

A log folder (e.g. `LeNet/figs/k1/`) holds four text files with one integer per line,
batch-major (batch 0 steps 0..T-1, then batch 1, ...):

    accuracy.txt       correct predictions of the batch at that step
    spike_num.txt      positive + negative spikes so far (cumulative within the batch)
    spike_collect.txt  positive - negative spikes so far
    sop_num.txt        synaptic operations so far

`read_logs(folder)` turns them into per-step, per-sample numbers (`SnnLog`). T and the
number of test samples N come from `snn_results.json` in the folder when it is there;
otherwise T is inferred from where the cumulative counters restart, and N is
batches x batch size.
"""
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from architectures import DISPLAY_NAMES, FIGURE_PREFIXES, MODEL_FOLDERS, MODEL_NAMES
from cli import REPO_ROOT, ArgumentParser, UserError, atomic_path, positive_int, read_json_object
from log_format import LOG_BATCH_SIZE, LOG_FILES, steps_to_final
from preprocessing_n_mnist import is_demo_file

DEFAULT_BATCH_SIZE = LOG_BATCH_SIZE  # only used when a folder has no snn_results.json
RESULTS_FILE = "snn_results.json"
KS = (0, 1, 2)  # the quantization precisions that have an SNN
FIGURE_DPI = 160
K_COLORS = {0: "tab:blue", 1: "tab:orange", 2: "tab:green"}
ANN_COLOR = "0.35"


# --------------------------------------------------------------------------- reading logs

@dataclass(frozen=True)
class SnnLog:
    """One SNN run, per time step (arrays of length T; index t is step t + 1)."""

    folder: Path
    time_steps: int  # T
    n_test: int  # N, the number of test samples
    n_batches: int
    accuracy: np.ndarray  # fraction of the N samples classified correctly at each step
    spikes: np.ndarray  # spike_num / N: positive + negative spikes per sample
    net_spikes: np.ndarray  # spike_collect / N: positive - negative spikes per sample
    sops: np.ndarray  # sop_num / N: synaptic operations per sample
    positive: np.ndarray  # (spike_num + spike_collect) / 2 / N
    negative: np.ndarray  # (spike_num - spike_collect) / 2 / N
    steps_to_final: int  # first step (from 1) from which the accuracy stays at its final value
    data: object = None  # the frame dataset simulated, as snn_results.json names it (None: not recorded)

    @property
    def final_accuracy(self):
        return float(self.accuracy[-1])


def read_column(path):
    """The whole numbers of a log file, one per line, as int64.

    `593333.0` is accepted (the authors wrote spike_collect that way); `1.5`, `abc` or a
    blank line in the middle raise a UserError naming the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: missing log file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from None
    while lines and not lines[-1].strip():  # tolerate trailing blank lines
        lines.pop()
    if not lines:
        raise UserError(f"{path}: empty log file")
    values = np.empty(len(lines), dtype=np.int64)
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if "_" in text:  # Python's int() and float() accept 1_000; a log never holds it
            raise UserError(f"{path}:{number}: expected a whole number, got {text!r}")
        try:
            values[number - 1] = int(text)
            continue
        except ValueError:
            pass
        except OverflowError:
            raise UserError(f"{path}:{number}: {text!r} is too large for a count") from None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not value.is_integer():
            raise UserError(f"{path}:{number}: expected a whole number, got {text!r}")
        if abs(value) >= 2**63:
            raise UserError(f"{path}:{number}: {text!r} is too large for a count")
        values[number - 1] = int(value)
    return values


def restart_lines(spike_num, sop_num):
    """Line indices (from 0) where a cumulative counter drops: the first step of a batch."""
    return np.union1d(*[np.flatnonzero(np.diff(column) < 0) + 1 for column in (spike_num, sop_num)])


def infer_time_steps(spike_num, sop_num, where="logs"):
    """T, from where the cumulative counters restart: at a batch's first step a counter drops.

    T is the greatest common divisor of the restart lines (the whole file when nothing ever
    restarts: one batch). The lines must then be whole batches, each boundary a restart;
    otherwise lines are missing or extra, and a UserError says so (`where` names the folder).
    """
    count = len(spike_num)
    restarts = restart_lines(spike_num, sop_num)
    if len(restarts) == 0:
        return count
    time_steps = int(np.gcd.reduce(restarts))
    boundaries = np.arange(time_steps, count, time_steps)
    if count % time_steps or len(restarts) != len(boundaries):
        raise UserError(
            f"{where}: the cumulative counters restart at lines {', '.join(str(line + 1) for line in restarts[:4])}"
            f"{', ...' if len(restarts) > 4 else ''} of {count}: not every T lines for any T that divides "
            f"the line count (lines missing or extra?); pass --time-steps if you know T")
    return time_steps


def check_time_steps(spike_num, sop_num, time_steps, folder):
    """`time_steps` given by hand, checked against the counters: where they restart every T' lines,
    T must be T'; where they do not (a batch hides its restart), every restart must still start a batch."""
    try:
        inferred = infer_time_steps(spike_num, sop_num, where=folder)
    except UserError:
        restarts = restart_lines(spike_num, sop_num)
        off = restarts[restarts % time_steps != 0]
        if len(off):
            raise UserError(f"{folder}: the cumulative counters restart at line {off[0] + 1}, inside a batch of "
                            f"--time-steps {time_steps}") from None
        return time_steps
    if inferred != time_steps:
        raise UserError(f"{folder}: the cumulative counters restart every {inferred} lines, not every "
                        f"{time_steps} (--time-steps)")
    return time_steps


def _read_results_json(path, model=None):
    """(time_steps, n_test, batch_size or None, data or None) from snn_results.json, checked."""
    results = read_json_object(path)
    numbers = {}
    for key in ("time_steps", "n_test"):
        value = results.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{path}: '{key}' must be a positive integer, got {value!r}")
        numbers[key] = value
    if model is not None and results.get("model", model) != model:
        raise UserError(f"{path}: logs of model {results['model']!r}, not {model!r} (check --log-root and --model)")
    batch_size = results.get("batch_size")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        batch_size = None  # written before batch_size was recorded
    data = results.get("data") if isinstance(results.get("data"), str) else None
    return numbers["time_steps"], numbers["n_test"], batch_size, data


def read_logs(folder, batch_size=DEFAULT_BATCH_SIZE, time_steps=None, model=None):
    """Read the four §4 log files of `folder` into an `SnnLog` (per-sample, per-step numbers).

    T and N come from the folder's snn_results.json; without it T is `time_steps` or inferred
    from the counters, and N = batches x `batch_size`. `model`, when given, must match the JSON's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such log folder")
    columns = {name: read_column(folder / name) for name in LOG_FILES}
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise UserError(f"{folder}: log files have different lengths ({listing} lines)")
    correct, spike_num, spike_collect, sop_num = (columns[name] for name in LOG_FILES)
    count = len(correct)

    results_path = folder / RESULTS_FILE
    if results_path.exists():
        time_steps, n_test, json_batch_size, data = _read_results_json(results_path, model)
        where = f"time_steps={time_steps} from {RESULTS_FILE}"
    else:
        if batch_size < 1:
            raise UserError(f"batch size must be positive, got {batch_size}")
        where = f"--time-steps {time_steps}" if time_steps else "the inferred T"
        time_steps = check_time_steps(spike_num, sop_num, time_steps, folder) if time_steps else \
            infer_time_steps(spike_num, sop_num, where=folder)
        json_batch_size, n_test, data = None, None, None
    if count % time_steps:
        raise UserError(f"{folder / LOG_FILES[0]}: {count} lines is not a multiple of {where}")
    n_batches = count // time_steps
    if n_test is None:  # no snn_results.json: full batches of `batch_size`
        n_test, json_batch_size = n_batches * batch_size, batch_size
    elif json_batch_size and not (n_batches - 1) * json_batch_size < n_test <= n_batches * json_batch_size:
        raise UserError(f"{results_path}: n_test {n_test} does not fit the logs' {n_batches} batches of at most "
                        f"{json_batch_size} samples")
    line_batch_size = json_batch_size or n_test  # an older snn_results.json does not record the batch size

    for name, column in columns.items():
        if name != "spike_collect.txt" and column.min() < 0:
            line = int(np.argmax(column < 0)) + 1
            raise UserError(f"{folder / name}:{line}: negative count {column[line - 1]}")
    for name in ("spike_num.txt", "sop_num.txt"):
        within_batches = np.diff(columns[name].reshape(n_batches, time_steps), axis=1)
        if within_batches.min(initial=0) < 0:
            batch, step = np.argwhere(within_batches < 0)[0]
            line = batch * time_steps + step + 2
            raise UserError(f"{folder / name}:{line}: the cumulative counter decreases inside a batch of "
                            f"{time_steps} steps ({where})")
    bad = np.flatnonzero(np.abs(spike_collect) > spike_num)
    if len(bad):
        line = int(bad[0]) + 1
        raise UserError(
            f"{folder / 'spike_collect.txt'}:{line}: net spike count {spike_collect[line - 1]} "
            f"exceeds spike_num {spike_num[line - 1]}")
    if correct.max() > line_batch_size:
        line = int(np.argmax(correct)) + 1
        raise UserError(f"{folder / 'accuracy.txt'}:{line}: {correct[line - 1]} correct predictions in a batch "
                        f"of at most {line_batch_size} samples (wrong --batch-size?)")

    def per_step(column):  # sum over batches of each step's line
        return column.reshape(n_batches, time_steps).sum(axis=0)

    correct_per_step = per_step(correct)
    if correct_per_step.max() > n_test:
        raise UserError(
            f"{folder / 'accuracy.txt'}: {correct_per_step.max()} correct answers at one step "
            f"but only {n_test} test samples (wrong batch size?)")
    spikes, net = per_step(spike_num), per_step(spike_collect)
    return SnnLog(
        folder=folder,
        time_steps=time_steps,
        n_test=n_test,
        n_batches=n_batches,
        accuracy=correct_per_step / n_test,
        spikes=spikes / n_test,
        net_spikes=net / n_test,
        sops=per_step(sop_num) / n_test,
        positive=(spikes + net) / 2 / n_test,
        negative=(spikes - net) / 2 / n_test,
        steps_to_final=steps_to_final(correct_per_step),
        data=data,
    )


def dataset_name(logs):
    """What `logs` (SnnLogs) were simulated on, for titles: the offline demo data when every one says so."""
    logs = list(logs)
    return "the offline demo data" if logs and all(log.data and is_demo_file(log.data) for log in logs) else "N-MNIST"


def has_logs(folder):
    """True when `folder` holds at least one of the log files (a run was logged there)."""
    return any((Path(folder) / name).exists() for name in LOG_FILES)


# --------------------------------------------------------------------------- figure scripts

def figure_parser(description, compare=False):
    """The flags every figure script takes (plus --compare-root where `compare`)."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--model", choices=MODEL_NAMES, default=None,
                        metavar="{" + "|".join(MODEL_NAMES) + "}",
                        help="plot one model (default: both)")
    parser.add_argument("--log-root", metavar="DIR", type=Path, default=None,
                        help="folder holding k0/, k1/, k2/ log folders, or <Model>/k*/ "
                             "(default: <Model>/figs under the repository root)")
    parser.add_argument("--out-dir", metavar="DIR", type=Path, default=None,
                        help="where the PNGs go (default: <Model>/figs under the repository root)")
    parser.add_argument("--precisions", nargs="+", choices=[f"k{k}" for k in KS], default=[f"k{k}" for k in KS],
                        metavar="kK", help="the precisions to plot (default: %(default)s)")
    parser.add_argument("--batch-size", metavar="N", type=positive_int, default=DEFAULT_BATCH_SIZE,
                        help=f"SNN batch size, used only for a log folder without {RESULTS_FILE} "
                             "(default: %(default)s, the authors' batch)")
    parser.add_argument("--time-steps", metavar="T", type=positive_int, default=None,
                        help=f"time steps per batch, used only for a log folder without {RESULTS_FILE} "
                             "(default: inferred from where the cumulative counters restart)")
    parser.add_argument("--ann-results", metavar="PATH", type=Path, default=None,
                        help="full-precision ANN results JSON, drawn as the ANN's accuracy "
                             "(default: <Model>/checkpoints/full/ann_results.json when --log-root is "
                             "not given; with --log-root, none unless given)")
    if compare:
        parser.add_argument("--compare-root", metavar="DIR", type=Path, default=None,
                            help="a second set of logs (same layout as --log-root) drawn dashed, "
                                 "e.g. the authors' paper_logs")
        parser.add_argument("--compare-label", metavar="TEXT", default="authors",
                            help="legend label of the --compare-root curves (default: %(default)s)")
    return parser


def note(message):
    """Informational line (missing logs, missing ANN results) on stderr; stdout lists the PNGs."""
    print(message, file=sys.stderr)


def holds_model_logs(root):
    """True when `root` itself holds k0/, k1/ or k2/ logs (one model's), not <Model>/k*/."""
    return any(has_logs(Path(root) / f"k{k}") for k in KS)


def resolve_log_root(root, model):
    """Folder holding k0/, k1/, k2/ for `model`: the default <Model>/figs, `root` itself, or
    `root/<Model>` when `root` has no k*/ logs but that folder exists (one root for both models).
    """
    if root is None:
        return REPO_ROOT / MODEL_FOLDERS[model] / "figs"
    root = Path(root)
    nested = root / MODEL_FOLDERS[model]
    if not holds_model_logs(root) and nested.is_dir():
        return nested
    return root


def load_model_logs(root, model, batch_size, required=True, time_steps=None, ks=KS):
    """{k: SnnLog} of the precisions `ks` logged under `root`; prints a note naming missing ones.

    A precision whose folder has none of the log files is missing; one with only some of
    them is malformed (UserError). With no precision at all: UserError if `required`. Logs of
    different runs (other test samples or T) are plotted together, with a note saying so.
    """
    root = resolve_log_root(root, model)
    logs, missing = {}, []
    for k in ks:
        folder = root / f"k{k}"
        if has_logs(folder):
            logs[k] = read_logs(folder, batch_size, time_steps=time_steps, model=model)
        else:
            missing.append(k)
    if not logs:
        if required:
            raise UserError(f"{root}: no SNN logs for {DISPLAY_NAMES[model]} (expected k0/, k1/ or k2/ "
                            f"holding {', '.join(LOG_FILES)})")
        note(f"note: no SNN logs for {DISPLAY_NAMES[model]} under {root}")
    elif missing:
        names = ", ".join(f"k{k}" for k in missing)
        note(f"note: {DISPLAY_NAMES[model]}: no logs for {names} under {root}; plotting the others")
    if len({(log.n_test, log.time_steps) for log in logs.values()}) > 1:
        runs = "; ".join(f"k{k}: {log.n_test:,} samples, T = {log.time_steps}" for k, log in logs.items())
        note(f"note: {DISPLAY_NAMES[model]}: the logs under {root} come from different runs ({runs})")
    return logs


def read_ann_accuracy(path, model):
    """Full-precision ANN accuracy (fraction) from `ann_results.json` at `path`; UserError if absent."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ANN results file not found (run the full-precision ANN inference, "
                        "or leave out --ann-results)")
    results = read_json_object(path)
    if "model" in results and results["model"] != model:
        raise UserError(f"{path}: holds results of model {results['model']!r}, not {model!r} "
                        f"(pass --model)")
    if results.get("precision", "full") != "full" or results.get("k", -1) != -1:
        raise UserError(f"{path}: not a full-precision result (precision {results.get('precision')!r})")
    accuracy = results.get("accuracy")
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1:
        raise UserError(f"{path}: 'accuracy' must be a fraction between 0 and 1, got {accuracy!r}")
    return float(accuracy)


def ann_accuracy_for(args, model):
    """The ANN accuracy to draw beside the SNNs, or None (with a note saying why).

    --ann-results wins; otherwise the repository's own full-precision result, but only for the
    repository's own logs: logs from elsewhere (the authors', say) belong to another ANN.
    """
    if args.ann_results is not None:
        return read_ann_accuracy(args.ann_results, model)
    if args.log_root is not None:
        note(f"note: {DISPLAY_NAMES[model]}: no ANN accuracy drawn for logs under {args.log_root} "
             "(pass --ann-results to draw one)")
        return None
    default = REPO_ROOT / MODEL_FOLDERS[model] / "checkpoints" / "full" / "ann_results.json"
    if not default.is_file():
        note(f"note: {default} not found; plotting {DISPLAY_NAMES[model]} without the ANN accuracy")
        return None
    return read_ann_accuracy(default, model)


@dataclass(frozen=True)
class FigureInputs:
    """Everything one model's figure needs, read before any figure is written."""

    model: str
    logs: dict  # {k: SnnLog} of the precisions that were logged
    ann_accuracy: object  # full-precision ANN accuracy (fraction), or None
    compare_logs: dict  # {k: SnnLog} from --compare-root ({} without it)


def check_root(root, flag, model):
    """UserError for a root that does not exist, or that holds one model's k*/ logs while both
    models are plotted (the figures of the other model would show the wrong logs)."""
    if root is None:
        return
    if not Path(root).is_dir():
        raise UserError(f"{root}: no such folder ({flag})")
    if model is None and holds_model_logs(root):
        raise UserError(f"{root}: holds one model's k0/ k1/ k2/ logs; name that model with --model "
                        f"{'|'.join(MODEL_NAMES)} ({flag})")


def load_figure_inputs(args):
    """Read the logs (and ANN results) of every selected model; raise before plotting anything."""
    compare_root = getattr(args, "compare_root", None)
    check_root(args.log_root, "--log-root", args.model)
    check_root(compare_root, "--compare-root", args.model)
    inputs = []
    for model in (args.model,) if args.model else MODEL_NAMES:
        ks = sorted({int(name[1:]) for name in args.precisions})
        logs = load_model_logs(args.log_root, model, args.batch_size, time_steps=args.time_steps, ks=ks)
        compare_logs = {}
        if compare_root is not None:
            compare_logs = load_model_logs(compare_root, model, args.batch_size, required=False,
                                           time_steps=args.time_steps, ks=ks)
        inputs.append(FigureInputs(model, logs, ann_accuracy_for(args, model), compare_logs))
    return inputs


def output_path(args, model, figure_name):
    out_dir = REPO_ROOT / MODEL_FOLDERS[model] / "figs" if args.out_dir is None else args.out_dir
    return Path(out_dir) / f"{FIGURE_PREFIXES[model]}_{figure_name}_n_mnist.png"


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, with readable default fonts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 11, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 10,
        "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.spines.top": False,
        "axes.spines.right": False,
    })
    return plt


def save_figure(figure, path):
    """Write `figure` to `path` atomically as a PNG, close it and print the path."""
    plt = pyplot()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(figure)
    print(f"wrote {path}")
    return path


def percent(fraction):
    return f"{100 * fraction:.2f}%"


def thousands(value, decimals=0):
    return f"{value:,.{decimals}f}"


def k_label(k, log=None):
    """Bar/tick label of precision k, with the SNN's final accuracy when known."""
    return f"SNN k={k}" + (f"\n{percent(log.final_accuracy)}" if log is not None else "")


def ann_label(ann_accuracy):
    return "ANN (full)" + (f"\n{percent(ann_accuracy)}" if ann_accuracy is not None else "")


def label_bars(axes, bars, texts, inside=False, color="black", fontsize=9.5, offset=3):
    """Write `texts` on `bars`: centred inside each bar, or `offset` points above it."""
    for bar, text in zip(bars, texts):
        x = bar.get_x() + bar.get_width() / 2
        if inside:
            y, va = bar.get_y() + bar.get_height() / 2, "center"
        else:
            y, va = bar.get_y() + bar.get_height(), "bottom"
        axes.annotate(text, (x, y), xytext=(0, 0 if inside else offset), textcoords="offset points",
                      ha="center", va=va, color=color, fontsize=fontsize)


def finish_bar_figure(figure, axes, model, logs, ylabel, subject, caption):
    """What the two bar figures share: counts on y with thousands separators, a light grid, the title
    "<Model> on <data>: <subject>", and `caption` (its "{steps}" replaced by the logs' time steps) below."""
    from matplotlib.ticker import FuncFormatter

    axes.set_ylabel(ylabel)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))  # 1,000,000 rather than 1e6
    axes.grid(True, axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.set_title(f"{DISPLAY_NAMES[model]} on {dataset_name(logs.values())}: {subject}")
    steps = "/".join(map(str, sorted({log.time_steps for log in logs.values()})))
    axes.set_xlabel(caption.replace("{steps}", steps), fontsize=9.5, color="0.3")
    figure.tight_layout()
    return figure
