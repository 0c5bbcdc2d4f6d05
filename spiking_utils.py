"""Spiking convolution and dense layers with negative spike dynamics (ALGORITHM.md §3 and §4).

Reads top to bottom like the specification:
1. `fold_batch_norm`: BN folded into each neuron's threshold theta and bound b (§3);
2. `synaptic_input`: W (*) input for a convolution or a dense layer;
3. `neuron_step`: one update of the negative-spike neuron (§4);
4. `simulate`: the runner over T time steps, recording the §4 counters per sample and step;
5. `write_logs`: the four log files, batch-major, in the authors' layout.

Everything is float64, like a literal implementation of §4: the spike decisions, and therefore the
logs, are the same line by line. The runner is fast because it (a) simulates hundreds of samples
at once in one compiled TensorFlow step (convolutions and element-wise updates on all cores),
(b) computes layer 1's spike train in closed form (its input arrives only at t = 0), and (c) drops
a sample once no layer emits a spike for it: its state is then a fixed point, so every later step
repeats its counters and prediction.
"""
import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from architectures import ARCHITECTURES, BN_EPSILON, NUM_CLASSES, QUANTIZER_TIE_NUDGE, layer_shapes
from cli import UserError, atomic_path
from log_format import LOG_BATCH_SIZE, LOG_FILES, steps_to_final  # noqa: F401  (part of this module's interface)

NEGATIVE_SPIKE_TOLERANCE = 1e-5  # d < -1e-5 fires a negative spike (§4, step 5)
TIME_STEPS = 40  # the authors' T
CHUNK_SIZE = 256  # samples simulated together; any value gives the same logs


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


def weighted_input(kind, kernel, stride, inputs):
    """W (*) inputs, no bias: a valid cross-correlation (the TensorFlow convention) or a matrix product.

    inputs: (B, H, W, C_in) for a convolution with kernel (kh, kw, C_in, C_out), or anything
    flattened to (B, fan_in) for a dense kernel (fan_in, units). float64 in, float64 tensor out.
    """
    if kind == "conv":
        return tf.nn.conv2d(inputs, kernel, stride, "VALID")
    return tf.matmul(tf.reshape(inputs, (tf.shape(inputs)[0], -1)), kernel)


def synaptic_input(layer, inputs):
    """W (*) inputs for a batch: (B, *layer.input_shape) -> (B, *layer.output_shape)."""
    return weighted_input(layer.kind, layer.kernel, layer.stride, inputs)


# ---------------------------------------------------------------------------------------------
# 3. The negative-spike neuron (§4, steps 4-6)


def neuron_step(mem, mem_q, threshold, bound):
    """One update: returns (spikes in {-1, 0, +1}, new mem_q), as float64 tensors.

    d = max(mem, b) - mem_q; +1 if d > theta, -1 if d < -1e-5, else 0; mem_q += spike * theta.
    Shapes: mem and mem_q (B, ..., C); threshold and bound (C,).
    """
    d = tf.maximum(mem, bound) - mem_q
    spikes = tf.cast(d > threshold, tf.float64) - tf.cast(d < -NEGATIVE_SPIKE_TOLERANCE, tf.float64)
    return spikes, mem_q + spikes * threshold


def first_layer_spike_counts(layer, encoded_input, time_steps):
    """Layer 1's whole spike train, computed once: it fires +1 at steps 0 .. n-1, nothing else.

    Its input arrives only at t = 0, so max(mem, b) is fixed and the neuron_step recurrence just
    adds theta to mem_q, one spike per step, while the gap exceeds theta: n = floor((max(mem, b) - b)
    / theta), capped at T. (The gap never drops below -1e-5, so there are no negative spikes.)
    Where that ratio lies within rounding error of an integer, the recurrence itself is replayed,
    so n is exactly what a step-by-step float64 simulation gives. Returns an int64 tensor (B, *output_shape).
    """
    target = tf.maximum(synaptic_input(layer, encoded_input), layer.bound)  # max(mem, b) for all t
    ratio = (target - layer.bound) / layer.threshold
    counts = tf.cast(tf.minimum(tf.floor(ratio), time_steps), tf.int64)
    # rounding error of the step-by-step sums, relative to theta: ~T ulps of |target| + |b| <= ratio*theta + 2|b|
    margin = 1e-10 * (1.0 + ratio + 2.0 * np.abs(layer.bound) / layer.threshold)
    replay = tf.where((tf.abs(ratio - tf.round(ratio)) < margin) & (ratio > 0.5))  # (n, rank) indices
    if replay.shape[0]:
        gap_target = tf.gather_nd(target, replay).numpy()
        channel = replay[:, -1].numpy()
        theta, mem_q = layer.threshold[channel], layer.bound[channel].copy()
        fired = np.zeros(len(channel), dtype=np.int64)
        for _ in range(time_steps):
            spikes = gap_target - mem_q > theta
            mem_q += spikes * theta
            fired += spikes
        counts = tf.tensor_scatter_nd_update(counts, replay, fired)
    return counts


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
    tie_mismatches: np.ndarray = None  # (N,) of those, neurons off by their own 1e-5 rounding tie
    other_mismatches: np.ndarray = None  # (N,) neurons off for any other reason (should be 0)
    ann_predictions: np.ndarray = None  # (N,) the quantized ANN's predictions, if checked

    @property
    def time_steps(self):
        return self.spikes.shape[1]


COMPACT_FRACTION = 0.05  # drop finished samples from the state once they are this share of it


def make_network_step(network):
    """A compiled function for one time step of layers 2..L, for any number of samples.

    step(t, first_counts, mem, mem_q, last_counts) -> (mem, mem_q, last_counts, spikes, net, sops, logits)
    first_counts: layer 1's spike counts (B, *shape) int64, so its spikes at t are first_counts > t;
    mem, mem_q: lists over layers 2..L of (B, *shape); last_counts: net spike counts of layer L;
    spikes, net, sops: this step's counters per sample (B,); logits (B, 10).
    """
    first, *layers = network.layers
    out_kernel = tf.constant(network.out_kernel)
    state_specs = [tf.TensorSpec((None, *layer.output_shape), tf.float64) for layer in layers]
    # Per layer, a (units, 2) matrix: column 0 counts a unit's spikes, column 1 the synapses each of
    # its spikes drives (the next layer's synapses_per_input, or the 10 output units), so one matrix
    # product gives both the spike count and the SOPs of a layer's output.
    fan_out = [layer.synapses_per_input.reshape(-1) for layer in layers]
    fan_out.append(np.full(int(np.prod(layers[-1].output_shape)), NUM_CLASSES))
    counters = [tf.constant(np.stack([np.ones(len(f)), f], axis=1), tf.float64) for f in fan_out]

    def flatten(values):  # (B, ...) -> (B, units)
        return tf.reshape(values, (tf.shape(values)[0], -1))

    def count(spikes, counter):  # -> |spikes| per sample, SOPs they cause, net spikes per sample
        flat = flatten(spikes)
        magnitude_and_sops = tf.matmul(tf.abs(flat), counter)
        return magnitude_and_sops[:, 0], magnitude_and_sops[:, 1], tf.reduce_sum(flat, axis=1)

    @tf.function(input_signature=[
        tf.TensorSpec((), tf.int64), tf.TensorSpec((None, *first.output_shape), tf.int64),
        state_specs, state_specs, state_specs[-1]])
    def step(t, first_counts, mem, mem_q, last_counts):
        spikes = tf.cast(first_counts > t, tf.float64)  # layer 1 fires +1 at steps 0 .. n-1, never -1
        spike_total_and_sops = tf.matmul(flatten(spikes), counters[0])
        spike_total, sop_total = spike_total_and_sops[:, 0], spike_total_and_sops[:, 1]
        net_total = spike_total
        new_mem, new_mem_q = [], []
        for layer, counter, layer_mem, layer_mem_q in zip(layers, counters[1:], mem, mem_q):
            layer_mem = layer_mem + synaptic_input(layer, spikes)
            spikes, layer_mem_q = neuron_step(layer_mem, layer_mem_q, layer.threshold, layer.bound)
            magnitude, sops, net = count(spikes, counter)
            spike_total, sop_total, net_total = spike_total + magnitude, sop_total + sops, net_total + net
            new_mem.append(layer_mem)
            new_mem_q.append(layer_mem_q)
        last_counts = last_counts + spikes
        logits = tf.matmul(flatten(last_counts), out_kernel)
        return new_mem, new_mem_q, last_counts, spike_total, net_total, sop_total, logits

    return step


def simulate_chunk(network, frames, time_steps, keep_counts=False, step=None):
    """Simulate one chunk of samples; frames: (B, 34, 34, 1) float (ON count / 32).

    Returns a SimulationResult for these B samples. A sample that emits no spike in any layer at
    a step has reached a fixed point: every later step repeats its state (zero increments, same
    prediction), so such samples leave the simulated set.
    """
    step = step or make_network_step(network)
    first, *layers = network.layers
    n_samples = len(frames)
    spikes_log, net_log, sops_log, predictions = (np.zeros((n_samples, time_steps), dtype=np.int64) for _ in range(4))
    state_first = first_layer_spike_counts(first, frames.astype(np.float64) * 2.0**network.k, time_steps)
    final_counts = [state_first.numpy() if keep_counts else None]
    final_counts += [np.zeros((n_samples, *layer.output_shape), dtype=np.int64) for layer in layers]

    rows = np.arange(n_samples)  # chunk rows of the state below
    mem = [tf.zeros((n_samples, *layer.output_shape), tf.float64) for layer in layers]
    mem_q = [tf.constant(np.broadcast_to(layer.bound, (n_samples, *layer.output_shape))) for layer in layers]
    last_counts = tf.zeros((n_samples, *layers[-1].output_shape), tf.float64)
    finished = np.zeros(n_samples, dtype=bool)  # per state row: reached its fixed point

    def store_final_counts(which):
        for index, layer in enumerate(layers):  # net count = (mem_q - b) / theta, up to rounding
            count = np.rint((mem_q[index].numpy()[which] - layer.bound) / layer.threshold)
            final_counts[index + 1][rows[which]] = count

    for t in range(time_steps):
        mem, mem_q, last_counts, spike_total, net_total, sop_total, logits = step(
            tf.constant(t, tf.int64), state_first, mem, mem_q, last_counts)
        spike_total = spike_total.numpy()
        predictions[rows, t:] = np.argmax(logits.numpy(), axis=1)[:, None]  # first index on ties
        spikes_log[rows, t], net_log[rows, t], sops_log[rows, t] = spike_total, net_total.numpy(), sop_total.numpy()

        finished |= spike_total == 0
        if finished.all() or finished.sum() >= COMPACT_FRACTION * len(rows):
            if keep_counts:
                store_final_counts(finished)
            keep = np.flatnonzero(~finished)
            if len(keep) == 0:
                break
            rows, finished = rows[keep], finished[keep]
            state_first, last_counts = tf.gather(state_first, keep), tf.gather(last_counts, keep)
            mem, mem_q = [tf.gather(array, keep) for array in mem], [tf.gather(array, keep) for array in mem_q]
    else:
        if keep_counts:
            store_final_counts(np.ones(len(rows), dtype=bool))
    return SimulationResult(spikes_log, net_log, sops_log, predictions, final_counts if keep_counts else None)


def quantized_layer(params, index, activation):
    """Hidden layer `index` (from 1) of the quantized ANN of §2, in float64, from the raw parameters.

    Returns (2**k * relu(BN(z)), 2**k * q_k(relu(BN(z)))): the scaled activation before and after
    rounding; the second is the spike count a lossless SNN neuron must reach.
    """
    layer, k = ARCHITECTURES[params["model"]][index - 1], params["k"]
    z = weighted_input(layer.kind, params[f"{layer.name}_kernel"], layer.stride, activation).numpy()
    gamma, beta, mean, var = (params[f"bn{index}_{field}"] for field in ("gamma", "beta", "mean", "var"))
    scaled = np.maximum(gamma * (z - mean) / np.sqrt(var + BN_EPSILON) + beta, 0.0) * 2.0**k
    return scaled, np.round(scaled + QUANTIZER_TIE_NUDGE)


def quantized_ann(params, frames):
    """The quantized ANN in float64: (per layer 2**k * q_k activations, predictions). frames: (B, 34, 34, 1)."""
    activation, counts = frames.astype(np.float64), []
    for index in range(1, len(ARCHITECTURES[params["model"]]) + 1):
        counts.append(quantized_layer(params, index, activation)[1])
        activation = counts[-1] / 2.0 ** params["k"]
    logits = activation.reshape(len(activation), -1) @ params["out_kernel"]
    return counts, np.argmax(logits, axis=1)


def explain_mismatches(network, frames, snn_counts):
    """Per sample: (neurons off only at a 1e-5 rounding tie, neurons off for any other reason).

    Each layer is recomputed from the SNN's own counts of the layer before, so a neuron is blamed
    only for its own rounding. With x = 2**k BN(z), the SNN settles at floor(x + 1/2) while q_k
    rounds x + 1e-5; and a neuron that overshot comes back only if its deficit exceeds 1e-5 in
    membrane units, i.e. 1e-5 / theta counts. So x within max(1e-5, 1e-5/theta) of a half-integer
    may legitimately differ by one: the ties §3 names as the only exception. Anything else would
    be a fault of the simulator.
    """
    params = network.params
    activation = frames.astype(np.float64)
    ties = others = 0
    for index, (layer, counts) in enumerate(zip(network.layers, snn_counts), start=1):
        scaled, levels = quantized_layer(params, index, activation)
        window = 2 * np.maximum(QUANTIZER_TIE_NUDGE, NEGATIVE_SPIKE_TOLERANCE / layer.threshold)  # per channel
        differs = (counts != levels).reshape(len(frames), -1)
        near_tie = (np.abs(scaled - np.floor(scaled) - 0.5) <= window).reshape(len(frames), -1)
        ties = ties + (differs & near_tie).sum(axis=1)
        others = others + (differs & ~near_tie).sum(axis=1)
        activation = counts / 2.0 ** params["k"]
    return ties, others


def simulate(network, frames, time_steps=TIME_STEPS, chunk_size=CHUNK_SIZE, check_lossless=False, progress=True):
    """Simulate all samples, `chunk_size` at a time; frames: (N, 34, 34, 1). Returns SimulationResult.

    With `check_lossless`, every chunk's final spike counts are compared with 2**k x the quantized
    ANN's activations (`quantized_ann`) and the differences explained (`explain_mismatches`).
    """
    parts, checks = [], []
    step = make_network_step(network)
    with tqdm(total=len(frames), desc=f"SNN {network.model} k={network.k}", unit="sample", disable=not progress) as bar:
        for start in range(0, len(frames), chunk_size):
            chunk = frames[start : start + chunk_size]
            part = simulate_chunk(network, chunk, time_steps, keep_counts=check_lossless, step=step)
            if check_lossless:
                ann_counts, predictions = quantized_ann(network.params, chunk)
                mismatches = sum((snn != ann).reshape(len(chunk), -1).sum(axis=1)
                                 for snn, ann in zip(part.final_counts, ann_counts))
                checks.append((mismatches, *explain_mismatches(network, chunk, part.final_counts), predictions))
                part.final_counts = None  # large; the comparison is all that is kept
            parts.append(part)
            bar.update(len(chunk))
    joined = {name: np.concatenate([getattr(part, name) for part in parts])
              for name in ("spikes", "net_spikes", "sops", "predictions")}
    if check_lossless:
        mismatches, ties, others, predictions = (np.concatenate(column) for column in zip(*checks))
        joined.update(neuron_mismatches=mismatches, tie_mismatches=ties, other_mismatches=others,
                      ann_predictions=predictions)
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
    different_predictions = result.predictions[:, -1] != result.ann_predictions
    return {
        "mismatching_neurons": int(result.neuron_mismatches.sum()),
        "mismatching_neuron_share": float(result.neuron_mismatches.sum() / neurons),
        "samples_with_mismatching_neurons": int((result.neuron_mismatches > 0).sum()),
        "rounding_tie_neurons": int(result.tie_mismatches.sum()),
        "downstream_of_ties_neurons": int(result.neuron_mismatches.sum() - result.tie_mismatches.sum()
                                          - result.other_mismatches.sum()),
        "other_mismatching_neurons": int(result.other_mismatches.sum()),
        "mismatching_predictions": int(different_predictions.sum()),
        "mismatching_prediction_share": float(different_predictions.mean()),
        "first_step_all_predictions_match": first_step,
    }


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
