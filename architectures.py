"""The two networks of the paper on its two datasets as plain data (ALGORITHM.md §2, §8), and numbers derived from it.

Both the Keras builders (models.py) and the spiking simulator (spiking_utils.py) read these
tables, so an architecture is written down exactly once.
"""
from dataclasses import dataclass

BN_MOMENTUM = 0.9  # BN moving statistics decay 0.9, as in the authors' TensorFlow code
BN_EPSILON = 1e-5  # not the Keras default
QUANTIZER_TIE_NUDGE = 1e-5  # q_k(a) = round(a * 2**k + 1e-5) / 2**k: pushes exact .5 ties upwards

# Initial weights, as the authors' TensorLayer 1.8.5 layers drew them by default (ALGORITHM.md §2).
# Kernels are truncated normals (redrawn beyond 2 stddev); the authors wrote every hidden layer, the
# MLP's dense ones included, as a convolution, so all hidden kernels share one stddev.
HIDDEN_KERNEL_STDDEV = 0.02
OUTPUT_KERNEL_STDDEV = 0.1
BN_GAMMA_MEAN, BN_GAMMA_STDDEV = 1.0, 0.002  # gamma ~ Normal(1, 0.002); beta starts at 0

# The paper's schedule (§2) and T (§4); SEED is ours, the paper gives none. EPOCHS and TIME_STEPS are
# N-MNIST's (DATASETS below holds each dataset's, per model).
EPOCHS = 150
BATCH_SIZE = 200
LEARNING_RATE = 1e-4
SEED = 0
TIME_STEPS = 40
MAX_TIME_STEPS = 2**31 - 1  # the simulator counts steps in int32
ENGINES = ("fast", "reference")  # SNN simulators: snn_engine.simulate (the default), spiking_utils.simulate_reference
TIE_RULES = ("paper", "exact")  # spike rules: the authors' (the default), and ours that agrees with q_k (docs/tie_rule.md)

NUM_CLASSES = 10

MODEL_NAMES = ("lenet", "mlp")
PRECISIONS = ("full", "k0", "k1", "k2")
FIGURE_PREFIXES = {"lenet": "scnn", "mlp": "smlp"}  # the authors' figure names: scnn_accuracy_<dataset>.png
DISPLAY_NAMES = {"lenet": "LeNet", "mlp": "MLP 400-400"}


@dataclass(frozen=True)
class HiddenLayer:
    """One weight layer followed by BN -> ReLU -> q_k (a spiking layer after conversion)."""

    name: str  # prefix of its arrays in model_<dataset>.npz: conv1 -> conv1_kernel, bn1_*
    kind: str  # "conv" or "dense"
    units: int  # filters of a convolution, units of a dense layer
    kernel_size: int = 1
    stride: int = 1


N_MNIST_ARCHITECTURES = {
    "lenet": (
        HiddenLayer("conv1", "conv", 12, kernel_size=5, stride=1),
        HiddenLayer("conv2", "conv", 12, kernel_size=2, stride=2),
        HiddenLayer("conv3", "conv", 64, kernel_size=4, stride=1),
        HiddenLayer("conv4", "conv", 64, kernel_size=2, stride=2),
    ),
    "mlp": (
        HiddenLayer("dense1", "dense", 400),
        HiddenLayer("dense2", "dense", 400),
    ),
}


@dataclass(frozen=True)
class Dataset:
    """Everything that differs between the two datasets; every other setting is shared (§2-§4, §8)."""

    name: str  # "n_mnist" or "fashion_mnist": the suffix of file names (model_<name>.npz, scnn_sop_<name>.png)
    title: str  # for messages and reports
    input_shape: tuple  # (height, width, channels) of a network input
    input_scale: float  # network input = raw value / input_scale (ON counts / 32, pixels / 256)
    nets: dict  # {model: (HiddenLayer, ...)}
    epochs: dict  # {model: the paper's training epochs}
    time_steps: dict  # {model: the paper's T}
    folders: dict  # {model: folder of its scripts, checkpoints and logs, relative to the repository}


DATASETS = {
    "n_mnist": Dataset("n_mnist", "N-MNIST", (34, 34, 1), 32.0, N_MNIST_ARCHITECTURES,
                       epochs={"lenet": EPOCHS, "mlp": EPOCHS}, time_steps={"lenet": TIME_STEPS, "mlp": TIME_STEPS},
                       folders={"lenet": "LeNet", "mlp": "MLP"}),
    "fashion_mnist": Dataset(
        "fashion_mnist", "Fashion-MNIST", (28, 28, 1), 256.0,
        {
            "lenet": (  # "32C5-P2-64C5-P2-1024" (§8): the pools are 2 x 2 stride-2 convolutions
                HiddenLayer("conv1", "conv", 32, kernel_size=5, stride=1),
                HiddenLayer("conv2", "conv", 32, kernel_size=2, stride=2),
                HiddenLayer("conv3", "conv", 64, kernel_size=5, stride=1),
                HiddenLayer("conv4", "conv", 64, kernel_size=2, stride=2),
                HiddenLayer("conv5", "conv", 1024, kernel_size=4, stride=1),
            ),
            "mlp": N_MNIST_ARCHITECTURES["mlp"],
        },
        epochs={"lenet": 100, "mlp": 150}, time_steps={"lenet": 20, "mlp": 40},
        folders={"lenet": "FashionMNIST/LeNet", "mlp": "FashionMNIST/MLP"}),
}
DATASET_NAMES = tuple(DATASETS)

# N-MNIST's row under its earlier names (the N-MNIST code and tests read them)
ARCHITECTURES = DATASETS["n_mnist"].nets
INPUT_SHAPE = DATASETS["n_mnist"].input_shape
MODEL_FOLDERS = DATASETS["n_mnist"].folders


def check_dataset(dataset):
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[dataset]


def architecture(model, dataset="n_mnist"):
    """The hidden layers of `model` on `dataset`."""
    return check_dataset(dataset).nets[check_model_name(model)]


def precision_to_k(precision):
    """'full' -> -1 (no quantizer), 'k0' -> 0, 'k1' -> 1, 'k2' -> 2."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return -1 if precision == "full" else int(precision[1:])


def k_to_precision(k):
    return "full" if k == -1 else f"k{k}"


def check_model_name(model):
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(MODEL_NAMES)}")
    return model


def layer_shapes(model, dataset="n_mnist"):
    """[(input_shape, output_shape), ...] of each hidden layer, then the output layer.

    Convolutions are 'valid' with the layer's stride; a dense layer flattens its input.
    """
    shape = check_dataset(dataset).input_shape
    shapes = []
    for layer in architecture(model, dataset):
        if layer.kind == "conv":
            height = (shape[0] - layer.kernel_size) // layer.stride + 1
            width = (shape[1] - layer.kernel_size) // layer.stride + 1
            out = (height, width, layer.units)
        else:
            out = (layer.units,)
        shapes.append((shape, out))
        shape = out
    shapes.append((shape, (NUM_CLASSES,)))
    return shapes


def _size(shape):
    size = 1
    for dim in shape:
        size *= dim
    return size


def layer_macs(model, dataset="n_mnist"):
    """Multiply-accumulates of each weight layer (hidden layers, then the output layer)."""
    macs = []
    layers = list(architecture(model, dataset)) + [None]
    for layer, (shape_in, shape_out) in zip(layers, layer_shapes(model, dataset)):
        if layer is not None and layer.kind == "conv":
            fan_in = layer.kernel_size * layer.kernel_size * shape_in[2]
        else:
            fan_in = _size(shape_in)
        macs.append(_size(shape_out) * fan_in)
    return macs


def ann_ops_per_sample(model, dataset="n_mnist"):
    """The paper's ANN operation count (§5): 3 x the MACs of every layer but the first."""
    return 3 * sum(layer_macs(model, dataset)[1:])


def spiking_neuron_count(model, dataset="n_mnist"):
    """Number of spiking neurons after conversion: every hidden layer's outputs."""
    return sum(_size(shape_out) for _, shape_out in layer_shapes(model, dataset)[:-1])
