"""Where each output goes: one function per kind of path, under `root` (the repository by default).

    <root>/<folder>/checkpoints/<precision>/model_<dataset>.npz, ann_results.json, training_state.json, ...
    <root>/<folder>/figs/k<k>/accuracy.txt ... sop_num.txt, snn_results.json
    <root>/<folder>/figs/scnn_accuracy_<dataset>.png, ...

<folder> is the dataset's folder of the model (architectures.DATASETS): LeNet, MLP for N-MNIST,
FashionMNIST/LeNet, FashionMNIST/MLP for Fashion-MNIST.
"""
from pathlib import Path

from architectures import FIGURE_PREFIXES, check_dataset
from cli import REPO_ROOT, UserError

PARAMETERS_FILE = "model_n_mnist.npz"  # N-MNIST's §6 parameter file; parameters_file(dataset) for any
ANN_RESULTS_FILE = "ann_results.json"  # evaluation.evaluate_ann, beside the parameters
SNN_RESULTS_FILE = "snn_results.json"  # evaluation.evaluate_snn, beside the logs
FIGURES = ("accuracy", "sop", "spike_neuron")  # the authors' figure names: scnn_<figure>_<dataset>.png


def parameters_file(dataset="n_mnist"):
    """The §6 parameter file's name: model_n_mnist.npz, model_fashion_mnist.npz."""
    return f"model_{check_dataset(dataset).name}.npz"


def model_dir(model, precision, root=REPO_ROOT, dataset="n_mnist"):
    """Checkpoints, parameter file and ANN results of one training, e.g. LeNet/checkpoints/k1."""
    return root / check_dataset(dataset).folders[model] / "checkpoints" / precision


def figure_dir(model, root=REPO_ROOT, dataset="n_mnist"):
    """A model's figures, above its SNN logs, e.g. LeNet/figs."""
    return root / check_dataset(dataset).folders[model] / "figs"


def log_dir(model, precision, root=REPO_ROOT, dataset="n_mnist"):
    """The SNN logs of one precision, where the figure scripts look for them, e.g. LeNet/figs/k1."""
    return figure_dir(model, root, dataset) / precision


def figure_path(model, figure, out_dir=None, dataset="n_mnist"):
    """A figure's PNG, e.g. LeNet/figs/scnn_accuracy_n_mnist.png; `figure` is one of FIGURES."""
    return (out_dir or figure_dir(model, dataset=dataset)) / f"{FIGURE_PREFIXES[model]}_{figure}_{check_dataset(dataset).name}.png"


def check_parameter_file(path):
    """UserError unless `path` is a file: the first check of a parameter file, made before any long import."""
    if not Path(path).is_file():
        raise UserError(f"{path}: parameter file not found (train the model first)")
