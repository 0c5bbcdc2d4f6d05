"""Keras builders for LeNet and the 400-400 MLP (ALGORITHM.md §2, §8) and the §6 parameter file.

`model_<dataset>.npz` holds plain named arrays (conv1_kernel, bn1_gamma, ..., out_kernel, model, k)
so that any tool, the spiking simulator included, can read it with `np.load(allow_pickle=False)`.
A Fashion-MNIST file also holds `dataset`; a file without it is N-MNIST's (as all earlier files are).
"""
from pathlib import Path

import keras
import numpy as np

from architectures import (BN_EPSILON, BN_GAMMA_MEAN, BN_GAMMA_STDDEV, BN_MOMENTUM, DATASETS,
                           HIDDEN_KERNEL_STDDEV, NUM_CLASSES, OUTPUT_KERNEL_STDDEV, architecture, check_dataset,
                           k_to_precision, layer_shapes)
from cli import UserError, atomic_path, load_npz_arrays
from paths import PARAMETERS_FILE, check_parameter_file  # noqa: F401  (models.PARAMETERS_FILE: the callers' name)
from quantization import QuantizedReLU

BN_FIELDS = ("gamma", "beta", "mean", "var")


def activation_layer(k, name):
    """Plain ReLU at full precision (k = -1), the quantizer q_k otherwise."""
    return keras.layers.ReLU(name=name) if k < 0 else QuantizedReLU(k, name=name)


def hidden_kernel_initializer():
    """Truncated normal, stddev 0.02: what the authors' convolutions drew (§2)."""
    return keras.initializers.TruncatedNormal(stddev=HIDDEN_KERNEL_STDDEV)


def build_model(model, k, dataset="n_mnist"):
    """The Keras model for `model` ('lenet' or 'mlp') on `dataset` at precision k (-1 = full precision).

    No biases anywhere; BN -> ReLU -> q_k after every hidden weight layer; logits out.
    Layer names match the parameter file: conv1 / bn1 / act1 ..., out. Initial weights are the
    authors' (§2); they are drawn from Keras' global seed (`keras.utils.set_random_seed`).
    """
    inputs = keras.Input(check_dataset(dataset).input_shape, name="frames")  # (batch, 34, 34, 1) for N-MNIST
    x = inputs
    for index, layer in enumerate(architecture(model, dataset), start=1):
        if layer.kind == "conv":
            x = keras.layers.Conv2D(layer.units, layer.kernel_size, strides=layer.stride,
                                    padding="valid", use_bias=False, kernel_initializer=hidden_kernel_initializer(),
                                    name=layer.name)(x)
        else:
            if len(x.shape) > 2:
                x = keras.layers.Flatten(name=f"flatten{index}")(x)  # channels last, row-major
            x = keras.layers.Dense(layer.units, use_bias=False, kernel_initializer=hidden_kernel_initializer(), name=layer.name)(x)
        gamma = keras.initializers.RandomNormal(mean=BN_GAMMA_MEAN, stddev=BN_GAMMA_STDDEV)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, gamma_initializer=gamma,
                                            name=f"bn{index}")(x)
        x = activation_layer(k, name=f"act{index}")(x)
    if len(x.shape) > 2:
        x = keras.layers.Flatten(name="flatten_out")(x)
    logits = keras.layers.Dense(NUM_CLASSES, use_bias=False, name="out",
                                kernel_initializer=keras.initializers.TruncatedNormal(stddev=OUTPUT_KERNEL_STDDEV))(x)
    return keras.Model(inputs, logits, name=f"{model}_{k_to_precision(k)}")


def parameter_shapes(model, dataset="n_mnist"):
    """{array name: shape} of a §6 parameter file (without the `model`, `k` and `dataset` entries)."""
    shapes = {}
    layers = architecture(model, dataset)
    io_shapes = layer_shapes(model, dataset)
    for layer, (shape_in, _) in zip(layers, io_shapes):
        if layer.kind == "conv":
            shapes[f"{layer.name}_kernel"] = (layer.kernel_size, layer.kernel_size, shape_in[-1], layer.units)
        else:
            shapes[f"{layer.name}_kernel"] = (int(np.prod(shape_in)), layer.units)
    for index, layer in enumerate(layers, start=1):
        for field in BN_FIELDS:
            shapes[f"bn{index}_{field}"] = (layer.units,)
    shapes["out_kernel"] = (int(np.prod(io_shapes[-1][0])), NUM_CLASSES)
    return shapes


def export_parameters(keras_model, model, k, dataset="n_mnist"):
    """The §6 arrays of a built Keras model: float32 kernels and BN statistics, plus model and k.

    And `dataset`, but for N-MNIST, whose files never had it (so they stay as they were).
    """
    params = {}
    for index, layer in enumerate(architecture(model, dataset), start=1):
        params[f"{layer.name}_kernel"] = keras.ops.convert_to_numpy(keras_model.get_layer(layer.name).kernel)
        bn = keras_model.get_layer(f"bn{index}")
        for field, variable in zip(BN_FIELDS, (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)):
            params[f"bn{index}_{field}"] = keras.ops.convert_to_numpy(variable)
    params["out_kernel"] = keras.ops.convert_to_numpy(keras_model.get_layer("out").kernel)
    params = {name: np.asarray(value, dtype=np.float32) for name, value in params.items()}
    tags = {"model": np.array(model), "k": np.array(k, dtype=np.int64)}
    if dataset != "n_mnist":
        tags["dataset"] = np.array(dataset)
    return {**params, **tags}


def assign_parameters(keras_model, params, model, dataset="n_mnist"):
    """Copy §6 arrays into a Keras model built by `build_model(model, k, dataset)`."""
    for index, layer in enumerate(architecture(model, dataset), start=1):
        keras_model.get_layer(layer.name).kernel.assign(params[f"{layer.name}_kernel"])
        bn = keras_model.get_layer(f"bn{index}")
        for field, variable in zip(BN_FIELDS, (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)):
            variable.assign(params[f"bn{index}_{field}"])
    keras_model.get_layer("out").kernel.assign(params["out_kernel"])


def save_parameters(path, params):
    """Write a §6 parameter file atomically."""
    with atomic_path(path, suffix=".npz") as temporary:
        np.savez(temporary, **params)


def load_parameters(path, model=None, k=None, quantized_only=False, dataset=None):
    """Read and validate a §6 parameter file; returns {name: float64 array} plus 'model', 'k' and 'dataset'.

    `model` / `k` / `dataset`, when given, must match what the file says (no `dataset` entry: n_mnist); `quantized_only` rejects full
    precision (the SNN needs k >= 0). Every problem is a one-line UserError naming the file.
    """
    path = Path(path)
    check_parameter_file(path)
    arrays = load_npz_arrays(path, "parameter file")
    for name in ("model", "k"):
        if name not in arrays or arrays[name].shape != ():
            raise UserError(f"{path}: missing scalar entry '{name}'")
    if not np.issubdtype(arrays["k"].dtype, np.integer):
        raise UserError(f"{path}: entry 'k' is not an integer (got {arrays['k']!r})")
    if "dataset" in arrays and arrays["dataset"].shape != ():
        raise UserError(f"{path}: entry 'dataset' is not a scalar")
    file_model, file_k = str(arrays["model"]), int(arrays["k"])
    file_dataset = str(arrays["dataset"]) if "dataset" in arrays else "n_mnist"
    if file_dataset not in DATASETS:
        raise UserError(f"{path}: unknown dataset {file_dataset!r}")
    if dataset is not None and file_dataset != dataset:
        raise UserError(f"{path}: holds a {file_dataset} model, expected {dataset}")
    if file_model not in DATASETS[file_dataset].nets:
        raise UserError(f"{path}: unknown model {file_model!r}")
    if model is not None and file_model != model:
        raise UserError(f"{path}: holds a {file_model} model, expected {model}")
    if k is not None and file_k != k:
        raise UserError(f"{path}: holds precision {k_to_precision(file_k)}, expected {k_to_precision(k)}")
    if quantized_only and file_k < 0:
        raise UserError(f"{path}: holds a full-precision model; the SNN needs a quantized one (k >= 0)")
    params = {"model": file_model, "k": file_k, "dataset": file_dataset}
    for name, shape in parameter_shapes(file_model, file_dataset).items():
        if name not in arrays:
            raise UserError(f"{path}: missing array '{name}'")
        if arrays[name].shape != shape:
            raise UserError(f"{path}: array '{name}' has shape {arrays[name].shape}, expected {shape}")
        if not np.issubdtype(arrays[name].dtype, np.floating) or not np.isfinite(arrays[name]).all():
            raise UserError(f"{path}: array '{name}' is not finite floating point")
        params[name] = arrays[name].astype(np.float64)
    for index in range(1, len(architecture(file_model, file_dataset)) + 1):
        if (params[f"bn{index}_var"] <= 0).any():
            raise UserError(f"{path}: bn{index}_var holds a non-positive variance")
        if quantized_only and (params[f"bn{index}_gamma"] == 0).any():  # theta = sigma / |gamma| (§3)
            raise UserError(f"{path}: bn{index}_gamma holds a zero: the spiking neuron's threshold "
                            "sigma / |gamma| would be infinite")
    return params
