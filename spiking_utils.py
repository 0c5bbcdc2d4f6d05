"""Spiking convolution and dense layers with negative spike dynamics (ALGORITHM.md §3 and §4).

Reads top to bottom like the specification:
1. `fold_batch_norm`: BN folded into each neuron's threshold theta and bound b (§3);
2. `synaptic_input`: W (*) input for a convolution or a dense layer;
3. `neuron_step`: one update of the negative-spike neuron (§4);
4. `simulate`: the runner over T time steps, recording the §4 counters per sample and step;
5. `write_logs`: the four log files, batch-major, in the authors' layout.

Everything is float64, like a literal implementation of §4: the spike decisions, and therefore the
logs, are the same line by line. The runner is fast because it (a) simulates many samples at once
with BLAS matrix products, (b) skips a layer's product for samples whose input holds no spike at
this step, and (c) drops a sample once no layer emits a spike for it: its state is then a fixed
point, so every later step repeats its counters and prediction.
"""
import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from architectures import ARCHITECTURES, BN_EPSILON, NUM_CLASSES, QUANTIZER_TIE_NUDGE, layer_shapes
from cli import UserError, atomic_path

NEGATIVE_SPIKE_TOLERANCE = 1e-5  # d < -1e-5 fires a negative spike (§4, step 5)
TIME_STEPS = 40  # the authors' T
LOG_BATCH_SIZE = 50  # the authors' batch; the logs hold one line per (batch of 50, step)
CHUNK_SIZE = 500  # samples simulated together; any value gives the same logs
LOG_FILES = ("accuracy.txt", "spike_num.txt", "spike_collect.txt", "sop_num.txt")


# ---------------------------------------------------------------------------------------------
# 1. Conversion (§3)


@dataclass
class SpikingLayer:
    """A weight layer whose units are negative-spike neurons (BN folded in)."""

    kind: str  # "conv" or "dense"
    kernel: np.ndarray  # conv: (kh, kw, C_in, C_out); dense: (fan_in, units); float64
    stride: int
    threshold: np.ndarray  # theta per output channel, (C_out,), all > 0
    bound: np.ndarray  # b per output channel, (C_out,)
    input_shape: tuple  # per sample, e.g. (15, 15, 12) or (400,)
    output_shape: tuple
    synapses_per_input: np.ndarray  # per input unit: output positions reached x output channels (SOPs)


@dataclass
class SpikingNetwork:
    model: str
    k: int
    layers: list  # [SpikingLayer]
    out_kernel: np.ndarray  # (units of the last spiking layer, 10): the non-spiking output layer
    params: dict  # the §6 parameters it was converted from (for the lossless check)


def fold_batch_norm(kernel, gamma, beta, mean, var, k):
    """(kernel, theta, b) of one layer: BN and the quantizer folded into the neuron (§3).

    A channel with gamma < 0 would get a negative threshold. Its kernel, mean and gamma change
    sign instead: gamma * (z - mean) = (-gamma) * ((-z) - (-mean)), so the layer computes the same
    BN output while the neuron sees -z and a positive threshold.
    """
    sign = np.where(gamma < 0, -1.0, 1.0)
    kernel, gamma, mean = kernel * sign, gamma * sign, mean * sign
    sigma = np.sqrt(var + BN_EPSILON)
    theta = sigma / gamma
    scale = 2.0**k
    bound = (2.0 ** -(k + 1) - beta) * scale * sigma / gamma + scale * mean - theta
    return kernel, theta, bound


def synapse_counts(layer, shape_in):
    """Per input unit, how many synapses an input spike drives: the SOP weight of §4.

    Convolution: the output positions whose receptive field holds the input, x output channels.
    Dense: the fan-out. Shape: shape_in.
    """
    if layer.kind == "dense":
        return np.full(shape_in, layer.units, dtype=np.int64)

    def reach(size):  # how many output positions along one axis cover each input position
        n_out = (size - layer.kernel_size) // layer.stride + 1
        covered = np.zeros(size, dtype=np.int64)
        for start in range(0, n_out * layer.stride, layer.stride):
            covered[start : start + layer.kernel_size] += 1
        return covered

    per_position = np.outer(reach(shape_in[0]), reach(shape_in[1]))  # (H, W)
    return np.repeat(per_position[:, :, None], shape_in[2], axis=2) * layer.units


def convert(params):
    """The spiking network of a §6 parameter dict (from models.load_parameters)."""
    model, k = params["model"], params["k"]
    if k < 0:
        raise UserError("the full-precision model has no spiking version (§3); use k = 0, 1 or 2")
    layers = []
    for index, (layer, (shape_in, shape_out)) in enumerate(zip(ARCHITECTURES[model], layer_shapes(model)), start=1):
        kernel, theta, bound = fold_batch_norm(
            params[f"{layer.name}_kernel"], *(params[f"bn{index}_{field}"] for field in ("gamma", "beta", "mean", "var")), k
        )
        layers.append(SpikingLayer(layer.kind, kernel, layer.stride, theta, bound, shape_in, shape_out,
                                   synapse_counts(layer, shape_in)))
    return SpikingNetwork(model, k, layers, params["out_kernel"], params)


# ---------------------------------------------------------------------------------------------
# 2. Synaptic input: W (*) input, no bias


def convolve(inputs, kernel, stride):
    """Valid cross-correlation (the TensorFlow convention) as one matrix product.

    inputs: (B, H, W, C_in); kernel: (kh, kw, C_in, C_out) -> (B, H_out, W_out, C_out).
    """
    batch, height, width, channels = inputs.shape
    size = kernel.shape[0]
    out_h, out_w = (height - size) // stride + 1, (width - size) // stride + 1
    if stride == size:  # non-overlapping windows ("pooling" convolutions): a reshape, no copy of patches
        blocks = inputs[:, : out_h * size, : out_w * size].reshape(batch, out_h, size, out_w, size, channels)
        patches = blocks.transpose(0, 1, 3, 2, 4, 5)  # (B, out_h, out_w, kh, kw, C_in)
    else:
        windows = np.lib.stride_tricks.sliding_window_view(inputs, (size, size), axis=(1, 2))
        patches = windows[:, ::stride, ::stride].transpose(0, 1, 2, 4, 5, 3)  # (B, out_h, out_w, kh, kw, C_in)
    patch_matrix = patches.reshape(batch * out_h * out_w, size * size * channels)
    return (patch_matrix @ kernel.reshape(-1, kernel.shape[-1])).reshape(batch, out_h, out_w, kernel.shape[-1])


def synaptic_input(layer, inputs):
    """W (*) inputs for a batch: (B, *layer.input_shape) -> (B, *layer.output_shape)."""
    if layer.kind == "conv":
        return convolve(inputs, layer.kernel, layer.stride)
    return inputs.reshape(len(inputs), -1) @ layer.kernel


# ---------------------------------------------------------------------------------------------
# 3. The negative-spike neuron (§4, steps 4-6)


def neuron_step(mem, mem_q, threshold, bound):
    """One update: returns (spikes in {-1, 0, +1}, new shadow potential).

    d = max(mem, b) - mem_q; +1 if d > theta, -1 if d < -1e-5, else 0; mem_q += spike * theta.
    Shapes: mem and mem_q (B, ..., C); threshold and bound (C,).
    """
    d = np.maximum(mem, bound) - mem_q
    spikes = (d > threshold).astype(np.float64) - (d < -NEGATIVE_SPIKE_TOLERANCE)
    return spikes, mem_q + spikes * threshold


# ---------------------------------------------------------------------------------------------
# 4. The runner


@dataclass
class SimulationResult:
    """Per-sample, per-step increments of the §4 counters: every array is (N, T)."""

    spikes: np.ndarray  # |spike| summed over all spiking layers at that step (int64)
    net_spikes: np.ndarray  # spike summed over all spiking layers (int64)
    sops: np.ndarray  # synaptic operations at that step (int64)
    predictions: np.ndarray  # argmax of the output layer after that step (int64)
    final_counts: list = None  # per layer, (N, *output_shape) net spike counts after T steps, if kept
    neuron_mismatches: np.ndarray = None  # (N,) neurons whose count differs from 2**k * q_k(ANN), if checked
    ann_predictions: np.ndarray = None  # (N,) the quantized ANN's predictions, if checked

    @property
    def time_steps(self):
        return self.spikes.shape[1]


def simulate_chunk(network, frames, time_steps, keep_counts=False):
    """Simulate one chunk of samples; frames: (B, 34, 34, 1) float (ON count / 32).

    Returns a SimulationResult for these B samples. Samples that stop spiking leave the active
    set; their remaining steps repeat the last state (zero increments, same prediction).
    """
    layers, n_samples = network.layers, len(frames)
    spikes_log = np.zeros((n_samples, time_steps), dtype=np.int64)
    net_log = np.zeros((n_samples, time_steps), dtype=np.int64)
    sops_log = np.zeros((n_samples, time_steps), dtype=np.int64)
    predictions = np.zeros((n_samples, time_steps), dtype=np.int64)
    final_counts = [np.zeros((n_samples, *layer.output_shape), dtype=np.int32) for layer in layers]

    active = np.arange(n_samples)  # chunk rows still spiking; the state arrays below hold these rows only
    mem = [np.zeros((n_samples, *layer.output_shape)) for layer in layers]
    mem_q = [np.broadcast_to(layer.bound, (n_samples, *layer.output_shape)).copy() for layer in layers]
    counts = [np.zeros((n_samples, *layer.output_shape)) for layer in layers]
    encoded_input = frames.astype(np.float64) * 2.0**network.k  # injected once, at t = 0

    for t in range(time_steps):
        step_spikes = np.zeros(len(active), dtype=np.int64)
        step_net = np.zeros(len(active), dtype=np.int64)
        step_sops = np.zeros(len(active), dtype=np.int64)
        layer_input = encoded_input if t == 0 else None
        for index, layer in enumerate(layers):
            if layer_input is not None:  # layer 1 gets input only at t = 0
                with_input = np.flatnonzero(layer_input.reshape(len(active), -1).any(axis=1))
                if len(with_input) == len(active):
                    mem[index] += synaptic_input(layer, layer_input)
                elif len(with_input):
                    mem[index][with_input] += synaptic_input(layer, layer_input[with_input])
                if index > 0:  # spikes arriving at layer 2..L are synaptic operations
                    step_sops += (np.abs(layer_input) * layer.synapses_per_input).reshape(len(active), -1).sum(axis=1).astype(np.int64)
            spikes, mem_q[index] = neuron_step(mem[index], mem_q[index], layer.threshold, layer.bound)
            counts[index] += spikes
            flat = spikes.reshape(len(active), -1)
            step_spikes += np.count_nonzero(flat, axis=1)
            step_net += flat.sum(axis=1).astype(np.int64)
            layer_input = spikes
        last_abs = np.count_nonzero(layer_input.reshape(len(active), -1), axis=1)
        step_sops += last_abs * NUM_CLASSES  # synapses into the output layer
        logits = counts[-1].reshape(len(active), -1) @ network.out_kernel  # (B_active, 10)
        predictions[active, t:] = np.argmax(logits, axis=1)[:, None]  # later steps repeat it unless overwritten
        spikes_log[active, t], net_log[active, t], sops_log[active, t] = step_spikes, step_net, step_sops

        still = step_spikes > 0
        if not still.all():  # converged samples: store their final counts, drop them from the state
            done = active[~still]
            for index in range(len(layers)):
                final_counts[index][done] = counts[index][~still]
            active = active[still]
            mem, mem_q, counts = ([array[still] for array in arrays] for arrays in (mem, mem_q, counts))
            encoded_input = encoded_input[still]
        if len(active) == 0:
            break
    for index in range(len(layers)):
        final_counts[index][active] = counts[index]
    return SimulationResult(spikes_log, net_log, sops_log, predictions, final_counts if keep_counts else None)


def quantized_ann(params, frames):
    """The quantized ANN of §2 in float64, straight from the parameters (no folding).

    Returns (per layer 2**k * q_k activations, i.e. the spike counts a lossless SNN must reach,
    and the predictions). frames: (B, 34, 34, 1).
    """
    model, k = params["model"], params["k"]
    activation, counts = frames.astype(np.float64), []
    for index, layer in enumerate(ARCHITECTURES[model], start=1):
        kernel = params[f"{layer.name}_kernel"]
        if layer.kind == "conv":
            z = convolve(activation, kernel, layer.stride)
        else:
            z = activation.reshape(len(activation), -1) @ kernel
        gamma, beta, mean, var = (params[f"bn{index}_{field}"] for field in ("gamma", "beta", "mean", "var"))
        normalized = gamma * (z - mean) / np.sqrt(var + BN_EPSILON) + beta
        levels = np.round(np.maximum(normalized, 0.0) * 2.0**k + QUANTIZER_TIE_NUDGE)  # = 2**k * q_k(relu(BN(z)))
        counts.append(levels)
        activation = levels / 2.0**k
    logits = activation.reshape(len(activation), -1) @ params["out_kernel"]
    return counts, np.argmax(logits, axis=1)


def simulate(network, frames, time_steps=TIME_STEPS, chunk_size=CHUNK_SIZE, check_lossless=False, progress=True):
    """Simulate all samples, `chunk_size` at a time; frames: (N, 34, 34, 1). Returns SimulationResult.

    With `check_lossless`, every chunk's final spike counts are compared with 2**k x the quantized
    ANN's activations (`quantized_ann`), filling `neuron_mismatches` and `ann_predictions`.
    """
    parts, mismatches, ann_predictions = [], [], []
    with tqdm(total=len(frames), desc=f"SNN {network.model} k={network.k}", unit="sample", disable=not progress) as bar:
        for start in range(0, len(frames), chunk_size):
            chunk = frames[start : start + chunk_size]
            part = simulate_chunk(network, chunk, time_steps, keep_counts=check_lossless)
            if check_lossless:
                ann_counts, predictions = quantized_ann(network.params, chunk)
                mismatches.append(sum((snn != ann).reshape(len(chunk), -1).sum(axis=1)
                                      for snn, ann in zip(part.final_counts, ann_counts)))
                ann_predictions.append(predictions)
                part.final_counts = None  # large; the comparison is all that is kept
            parts.append(part)
            bar.update(len(chunk))
    joined = {name: np.concatenate([getattr(part, name) for part in parts])
              for name in ("spikes", "net_spikes", "sops", "predictions")}
    if check_lossless:
        joined.update(neuron_mismatches=np.concatenate(mismatches), ann_predictions=np.concatenate(ann_predictions))
    return SimulationResult(**joined)


def lossless_report(result, network):
    """Numbers of the lossless check (§3): mismatching neurons and samples, first all-matching step."""
    n_samples, time_steps = result.predictions.shape
    neurons = n_samples * sum(int(np.prod(layer.output_shape)) for layer in network.layers)
    all_match = (result.predictions == result.ann_predictions[:, None]).all(axis=0)  # (T,)
    first_step = None
    if all_match[-1]:
        not_matching = np.flatnonzero(~all_match)
        first_step = int(not_matching[-1]) + 2 if len(not_matching) else 1  # counted from 1
    return {
        "mismatching_neurons": int(result.neuron_mismatches.sum()),
        "mismatching_neuron_share": float(result.neuron_mismatches.sum() / neurons),
        "samples_with_mismatching_neurons": int((result.neuron_mismatches > 0).sum()),
        "mismatching_predictions": int((result.predictions[:, -1] != result.ann_predictions).sum()),
        "mismatching_prediction_share": float((result.predictions[:, -1] != result.ann_predictions).mean()),
        "first_step_all_predictions_match": first_step,
    }


def steps_to_final(accuracy_per_step):
    """The first step, counted from 1, from which the accuracy stays at its final value (§5)."""
    accuracy_per_step = np.asarray(accuracy_per_step)
    different = np.flatnonzero(accuracy_per_step != accuracy_per_step[-1])
    return int(different[-1]) + 2 if len(different) else 1


# ---------------------------------------------------------------------------------------------
# 5. Logs (§4): one integer per line, batch-major (batch 0 steps 0..T-1, batch 1, ...)


def log_columns(result, labels, log_batch_size=LOG_BATCH_SIZE):
    """The four logs as {file name: int64 array (n_batches, T)}: cumulative counters summed per batch."""
    n_samples = len(labels)
    batch_of_sample = np.arange(n_samples) // log_batch_size
    n_batches = batch_of_sample[-1] + 1

    def per_batch(per_sample):  # (N, T) -> (n_batches, T), summed over the samples of each batch
        summed = np.zeros((n_batches, per_sample.shape[1]), dtype=np.int64)
        np.add.at(summed, batch_of_sample, per_sample)
        return summed

    correct = (result.predictions == np.asarray(labels)[:, None]).astype(np.int64)
    return {
        "accuracy.txt": per_batch(correct),
        "spike_num.txt": per_batch(np.cumsum(result.spikes, axis=1)),
        "spike_collect.txt": per_batch(np.cumsum(result.net_spikes, axis=1)),
        "sop_num.txt": per_batch(np.cumsum(result.sops, axis=1)),
    }


def write_logs(log_dir, result, labels, log_batch_size=LOG_BATCH_SIZE):
    """Write the four logs into log_dir; each goes through a temporary file, all renamed at the end."""
    log_dir = Path(log_dir)
    columns = log_columns(result, labels, log_batch_size)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as renames:  # renames happen only if every file was written
            for name, values in columns.items():
                temporary = renames.enter_context(atomic_path(log_dir / name))
                temporary.write_text("".join(f"{value}\n" for value in values.reshape(-1)))
    except OSError as error:
        raise UserError(f"{log_dir}: cannot write logs ({error.strerror or error})") from None
    return columns
