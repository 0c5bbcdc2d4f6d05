"""What the three figure scripts share: their flags, one model's logs and ANN accuracy, colors, titles, PNGs."""
import sys
from collections import namedtuple
from pathlib import Path

import paths
from architectures import DATASETS, DISPLAY_NAMES, MODEL_NAMES, TIME_STEPS
from cli import ArgumentParser, UserError, atomic_path, positive_int, read_json_object, shown
from log_format import LOG_BATCH_SIZE, LOG_FILES, has_logs, read_logs
from preprocessing_n_mnist import is_demo_file

KS = (0, 1, 2)  # the precisions that have an SNN
K_COLORS = {0: "tab:blue", 1: "tab:orange", 2: "tab:green"}
ANN_COLOR = "0.35"
FIGURE_DPI = 160


def figure_parser(description, compare=False):
    """The flags every figure script takes (plus --compare-root and --compare-label where `compare`)."""
    defaults = ", ".join(shown(paths.figure_dir(model)) for model in MODEL_NAMES)
    ann_defaults = ", ".join(shown(paths.model_dir(model, "full") / paths.ANN_RESULTS_FILE) for model in MODEL_NAMES)
    parser = ArgumentParser(description=description)
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="n_mnist",
                        help="whose folders, network sizes and figure names (default: %(default)s; the other "
                             "defaults shown are N-MNIST's)")
    parser.add_argument("--model", choices=MODEL_NAMES, metavar="{" + "|".join(MODEL_NAMES) + "}",
                        help="plot one model (default: both)")
    parser.add_argument("--log-root", metavar="DIR", type=Path,
                        help=f"folder of k0/ k1/ k2/ logs, or of <Model>/k*/ (default: {defaults})")
    parser.add_argument("--out-dir", metavar="DIR", type=Path, help=f"where the PNGs go (default: {defaults})")
    parser.add_argument("--precisions", nargs="+", choices=[f"k{k}" for k in KS], default=[f"k{k}" for k in KS],
                        metavar="kK", help="the precisions to plot (default: %(default)s)")
    parser.add_argument("--time-steps", metavar="T", type=positive_int, default=TIME_STEPS,
                        help=f"T of logs without {paths.SNN_RESULTS_FILE}, such as the authors' (default: %(default)s)")
    parser.add_argument("--batch-size", metavar="N", type=positive_int, default=LOG_BATCH_SIZE,
                        help=f"batch size of logs without {paths.SNN_RESULTS_FILE} (default: %(default)s)")
    parser.add_argument("--ann-results", metavar="PATH", type=Path,
                        help=f"full-precision ANN results to draw beside the SNNs (default: {ann_defaults}; "
                             "none with --log-root)")
    if compare:
        parser.add_argument("--compare-root", metavar="DIR", type=Path,
                            help="a second set of logs, laid out like --log-root, drawn dashed (e.g. the authors')")
        parser.add_argument("--compare-label", metavar="TEXT", default="authors",
                            help="legend label of the --compare-root curves (default: %(default)s)")
    return parser


def note(message):
    """An informational line on stderr; stdout lists the PNGs."""
    print(message, file=sys.stderr)


def holds_one_model(root):
    """True when `root` itself holds k0/, k1/ or k2/ logs, rather than <Model>/k*/ of both models."""
    return any(has_logs(Path(root) / f"k{k}") for k in KS)


def check_root(root, flag, model):
    """UserError for a root that does not exist, or that holds one model's logs while both are drawn."""
    if root is not None and not Path(root).is_dir():
        raise UserError(f"{root}: no such folder ({flag})")
    if root is not None and model is None and holds_one_model(root):
        raise UserError(f"{root}: holds one model's k0/ k1/ k2/ logs; name that model with --model ({flag})")


def load_model_logs(root, model, ks=KS, required=True, time_steps=TIME_STEPS, batch_size=LOG_BATCH_SIZE,
                    dataset="n_mnist"):
    """{k: SnnLog} of the precisions `ks` under `root` (or `root`/<Model>); notes name missing ones and mixed runs."""
    folder = DATASETS[dataset].folders[model]
    if root is None:
        root = paths.figure_dir(model, dataset=dataset)
    elif (Path(root) / folder).is_dir() and not holds_one_model(root):
        root = Path(root) / folder  # one root for both models, such as the authors' paper_logs
    logs = {k: read_logs(root / f"k{k}", time_steps, batch_size, model) for k in ks if has_logs(root / f"k{k}")}
    missing = ", ".join(f"k{k}" for k in ks if k not in logs)
    if not logs and required:
        raise UserError(f"{root}: no SNN logs for {DISPLAY_NAMES[model]} (expected k0/, k1/ or k2/ holding "
                        f"{', '.join(LOG_FILES)})")
    if missing:
        others = "; plotting the others" if logs else ""
        note(f"note: {DISPLAY_NAMES[model]}: no logs for {missing} under {root}{others}")
    if len({(log.n_test, log.time_steps) for log in logs.values()}) > 1:
        runs = "; ".join(f"k{k}: {log.n_test:,} samples, T = {log.time_steps}" for k, log in logs.items())
        note(f"note: {DISPLAY_NAMES[model]}: the logs under {root} come from different runs ({runs})")
    return logs


def ann_accuracy_for(args, model):
    """The full-precision ANN's accuracy: --ann-results, else ours, but only beside our own logs (None: not drawn)."""
    path = args.ann_results
    if path is None and args.log_root is not None:
        note(f"note: {DISPLAY_NAMES[model]}: no ANN accuracy drawn for logs under {args.log_root} "
             "(pass --ann-results to draw one)")
        return None
    if path is None:
        path = paths.model_dir(model, "full", dataset=args.dataset) / paths.ANN_RESULTS_FILE
        if not path.is_file():
            note(f"note: {path} not found; plotting {DISPLAY_NAMES[model]} without the ANN accuracy")
            return None
    elif not path.is_file():
        raise UserError(f"{path}: ANN results file not found (run the full-precision ANN, or leave out --ann-results)")
    results = read_json_object(path)
    if results.get("model") != model or results.get("precision") != "full":
        raise UserError(f"{path}: not the full-precision results of {model!r} (model {results.get('model')!r}, "
                        f"precision {results.get('precision')!r})")
    accuracy = results.get("accuracy")
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1:
        raise UserError(f"{path}: 'accuracy' must be a fraction between 0 and 1, got {accuracy!r}")
    return float(accuracy)


# Everything one model's figure needs: {k: SnnLog}, the ANN's accuracy (or None), {k: SnnLog} of --compare-root,
# and the dataset (--dataset).
FigureInputs = namedtuple("FigureInputs", "model logs ann_accuracy compare_logs dataset")


def load_figure_inputs(args):
    """The inputs of every selected model, all read (and checked) before anything is drawn."""
    compare_root = getattr(args, "compare_root", None)
    check_root(args.log_root, "--log-root", args.model)
    check_root(compare_root, "--compare-root", args.model)
    ks = sorted(int(name[1:]) for name in set(args.precisions))
    read = dict(ks=ks, time_steps=args.time_steps, batch_size=args.batch_size, dataset=args.dataset)
    return [FigureInputs(model, load_model_logs(args.log_root, model, **read), ann_accuracy_for(args, model),
                         {} if compare_root is None else load_model_logs(compare_root, model, required=False, **read),
                         args.dataset)
            for model in ((args.model,) if args.model else MODEL_NAMES)]


def dataset_name(logs, dataset="n_mnist"):
    """What `logs` were simulated on, for titles: the offline demo data when every one says so."""
    logs = list(logs)
    demo = dataset == "n_mnist" and logs and all(log.data and is_demo_file(log.data) for log in logs)
    return "the offline demo data" if demo else DATASETS[dataset].title


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, with readable default fonts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 10,
                         "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def save_figure(figure, path):
    """Write `figure` to `path` atomically as a PNG, close it and print the path."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    pyplot().close(figure)
    print(f"wrote {path}")
    return path


def percent(fraction):
    return f"{100 * fraction:.2f}%"
