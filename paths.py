"""Where each output goes: one function per kind of path, under `root` (the repository by default).

    <root>/<Model>/checkpoints/<precision>/model_n_mnist.npz, ann_results.json, training_state.json, ...
    <root>/<Model>/figs/k<k>/accuracy.txt ... sop_num.txt, snn_results.json
    <root>/<Model>/figs/scnn_accuracy_n_mnist.png, ...
"""
from pathlib import Path

from architectures import FIGURE_PREFIXES, MODEL_FOLDERS
from cli import REPO_ROOT, UserError

PARAMETERS_FILE = "model_n_mnist.npz"  # the §6 parameter file
ANN_RESULTS_FILE = "ann_results.json"  # evaluation.evaluate_ann, beside the parameters
SNN_RESULTS_FILE = "snn_results.json"  # evaluation.evaluate_snn, beside the logs
FIGURES = ("accuracy", "sop", "spike_neuron")  # the authors' figure names: scnn_<figure>_n_mnist.png


def model_dir(model, precision, root=REPO_ROOT):
    """Checkpoints, parameter file and ANN results of one training, e.g. LeNet/checkpoints/k1."""
    return root / MODEL_FOLDERS[model] / "checkpoints" / precision


def figure_dir(model, root=REPO_ROOT):
    """A model's figures, above its SNN logs, e.g. LeNet/figs."""
    return root / MODEL_FOLDERS[model] / "figs"


def log_dir(model, precision, root=REPO_ROOT):
    """The SNN logs of one precision, where the figure scripts look for them, e.g. LeNet/figs/k1."""
    return figure_dir(model, root) / precision


def figure_path(model, figure, out_dir=None):
    """A figure's PNG, e.g. LeNet/figs/scnn_accuracy_n_mnist.png; `figure` is one of FIGURES."""
    return (out_dir or figure_dir(model)) / f"{FIGURE_PREFIXES[model]}_{figure}_n_mnist.png"


def check_parameter_file(path):
    """UserError unless `path` is a file: the first check of a parameter file, made before any long import."""
    if not Path(path).is_file():
        raise UserError(f"{path}: parameter file not found (train the model first)")
