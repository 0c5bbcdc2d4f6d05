"""The spiking network of the paper, as ALGORITHM.md §3-§4 define it: read this file for the method.

1. `convert`: each layer's BN folded into its neurons' threshold theta and bound b (§3);
2. `synaptic_input`: W (*) input, a convolution or a matrix product, no bias;
3. `neuron_step`: the negative-spike neuron (§4, steps 4-6);
4. `step_counters`: the §4 counters of one step;
5. `simulate_reference`: the simulator, as plain as §4: float64, a batch at a time, every layer at
   every one of the T steps (`--engine reference`).

The SNN scripts run the fast engine by default (snn_engine.simulate, `--engine fast`), which
gives the same logs many times faster; tests/test_snn.py holds the two to identical logs.
"""
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from architectures import (BN_EPSILON, NUM_CLASSES, QUANTIZER_TIE_NUDGE, TIE_RULES, TIME_STEPS, architecture,
                           layer_shapes)
from cli import UserError
from log_format import LOG_BATCH_SIZE

NEGATIVE_SPIKE_TOLERANCE = 1e-5  # d < -1e-5 fires a negative spike (§4, step 5), under the paper's rule
EXACT_TIE_MARGIN = 1e-9  # closer than this (in threshold or count units), float64 rounding decides: an exact tie


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
    tie_rule: str = "paper"  # one of TIE_RULES: which spike_decision its neurons use

    @property
    def neurons(self):
        """How many neurons the layer has per sample: prod(output_shape)."""
        return int(np.prod(self.output_shape))


@dataclass
class SpikingNetwork:
    model: str
    k: int
    layers: list  # [SpikingLayer]
    out_kernel: np.ndarray  # (units of the last spiking layer, 10): the non-spiking output layer
    params: dict  # the §6 parameters it was converted from (for the lossless check)
    tie_rule: str = "paper"


def fold_batch_norm(kernel, gamma, beta, mean, var, k, tie_rule="paper"):
    """(kernel, theta, b) of one layer: BN and the quantizer folded into the neuron (§3).

    A channel with gamma < 0 would get a negative threshold. Its kernel, mean and gamma change
    sign instead: gamma * (z - mean) = (-gamma) * ((-z) - (-mean)), so the layer computes the same
    BN output while the neuron sees -z and a positive threshold. Under the exact tie rule the bound
    moves down by q_k's nudge, 1e-5 counts = 1e-5 theta, so that the neuron rounds as q_k does.
    """
    sign = np.where(gamma < 0, -1.0, 1.0)
    kernel, gamma, mean = kernel * sign, gamma * sign, mean * sign
    sigma = np.sqrt(var + BN_EPSILON)
    theta = sigma / gamma
    scale = 2.0**k
    bound = (2.0 ** -(k + 1) - beta) * scale * sigma / gamma + scale * mean - theta
    if tie_rule == "exact":
        bound = bound - QUANTIZER_TIE_NUDGE * theta
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


def convert(params, tie_rule="paper"):
    """The spiking network of a §6 parameter dict (from models.load_parameters), under `tie_rule`."""
    model, k, dataset = params["model"], params["k"], params.get("dataset", "n_mnist")
    if k < 0:
        raise UserError("the full-precision model has no spiking version (§3); use k = 0, 1 or 2")
    if tie_rule not in TIE_RULES:
        raise ValueError(f"unknown tie rule {tie_rule!r}; expected one of {', '.join(TIE_RULES)}")
    layers = []
    for index, (layer, (shape_in, shape_out)) in enumerate(zip(architecture(model, dataset), layer_shapes(model, dataset)), start=1):
        kernel, theta, bound = fold_batch_norm(
            params[f"{layer.name}_kernel"], *(params[f"bn{index}_{field}"] for field in ("gamma", "beta", "mean", "var")),
            k, tie_rule)
        layers.append(SpikingLayer(layer.kind, kernel, layer.stride, theta, bound, shape_in, shape_out,
                                   synapse_counts(layer, shape_in), tie_rule))
    return SpikingNetwork(model, k, layers, params["out_kernel"], params, tie_rule)


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


def negative_spike_threshold(tie_rule):
    """d below this fires -1: -1e-5 under the paper's rule (§4 step 5), 0 under the exact one."""
    return 0.0 if tie_rule == "exact" else -NEGATIVE_SPIKE_TOLERANCE


def spike_decision(d, threshold, tie_rule="paper"):
    """§4 step 5, in d's dtype: +1 if d > theta (paper) or d >= theta (exact); -1 if d is below
    negative_spike_threshold; else 0. docs/tie_rule.md derives the exact rule."""
    fires = d >= threshold if tie_rule == "exact" else d > threshold
    return tf.cast(fires, d.dtype) - tf.cast(d < negative_spike_threshold(tie_rule), d.dtype)


def neuron_step(mem, count, threshold, bound, tie_rule="paper"):
    """One update of §4 steps 4-6: returns the spikes in {-1, 0, +1} (float64); the caller adds them to count.

    §4's shadow potential mem_q starts at b and gains spike * theta at every step, so it is
    b + n theta, n the net spike count. It is computed that way, from the exact count: summed step
    by step, floating point would leave it an ulp off after spikes that cancel, which the paper's
    -1e-5 tolerance hides but the exact rule's comparison with 0 would see as a deficit.
    d = max(mem, b) - mem_q. Shapes: mem and count (B, ..., C); threshold and bound (C,).
    """
    mem, count = tf.convert_to_tensor(mem, tf.float64), tf.convert_to_tensor(count, tf.float64)
    return spike_decision(tf.maximum(mem, bound) - (bound + count * threshold), threshold, tie_rule)


# ---------------------------------------------------------------------------------------------
# 4. Counters (§4)


def step_counters(network, spikes):
    """The §4 counters of one step, per sample: (|spikes|, net spikes, SOPs), each (B,) int64.

    spikes: per spiking layer, (B, *output_shape) in {-1, 0, +1}. Each spike of a layer drives the
    synapses it reaches in the next layer (that layer's synapses_per_input), or the 10 output units
    for the last layer; the frame that drives layer 1 is not counted.
    """
    flat = [np.reshape(np.asarray(layer_spikes), (len(layer_spikes), -1)) for layer_spikes in spikes]
    fan_out = [layer.synapses_per_input.reshape(-1) for layer in network.layers[1:]]
    fan_out.append(np.full(flat[-1].shape[1], NUM_CLASSES))
    magnitude = sum(np.abs(layer_spikes).sum(axis=1) for layer_spikes in flat)
    net = sum(layer_spikes.sum(axis=1) for layer_spikes in flat)
    sops = sum(np.abs(layer_spikes) @ synapses for layer_spikes, synapses in zip(flat, fan_out))
    return tuple(np.rint(counter).astype(np.int64) for counter in (magnitude, net, sops))


@dataclass
class SimulationResult:
    """Per-sample, per-step increments of the §4 counters: every array is (N, T)."""

    spikes: np.ndarray  # |spike| summed over all spiking layers at that step (int64)
    net_spikes: np.ndarray  # spike summed over all spiking layers (int64)
    sops: np.ndarray  # synaptic operations at that step (int64)
    predictions: np.ndarray  # argmax of the output layer after that step (int64)
    final_counts: list = None  # per layer, (N, *output_shape) net spike counts after T steps, if kept
    float64_decisions: dict = None  # fast engine only: its decisions taken again in float64 (snn_float64.py)

    @property
    def time_steps(self):
        return self.spikes.shape[1]

    @property
    def still_spiking(self):
        """(N,) bool: samples that fired at the last step, so T may have been too short for them."""
        return self.spikes[:, -1] > 0


# ---------------------------------------------------------------------------------------------
# 5. The reference simulator


def simulate_reference(network, frames, time_steps=TIME_STEPS, keep_counts=False, progress=True,
                       batch_size=LOG_BATCH_SIZE):
    """Simulate §4 step by step; frames: (N, *input shape) network inputs (N-MNIST: ON counts / 32). Returns a SimulationResult.

    Every neuron of every layer is updated at every step, in float64, `batch_size` samples at once.
    The frame x 2**k is injected at t = 0 only; each later layer receives the spikes its predecessor
    emitted at the same step. With `keep_counts`, the final net spike counts of every layer are kept.
    """
    n_samples = len(frames)
    spikes_log, net_log, sops_log, predictions = (np.zeros((n_samples, time_steps), np.int64) for _ in range(4))
    final_counts = [np.zeros((n_samples, *layer.output_shape)) for layer in network.layers] if keep_counts else None
    batches = range(0, n_samples, batch_size)
    for start in tqdm(batches, desc=f"SNN {network.model} k={network.k} (reference)", unit="batch", disable=not progress):
        frame = tf.constant(frames[start : start + batch_size], tf.float64) * 2.0**network.k
        rows = slice(start, start + len(frame))
        mem = [tf.zeros((len(frame), *layer.output_shape), tf.float64) for layer in network.layers]
        counts = [tf.zeros_like(m) for m in mem]  # net spike counts: mem_q = b + counts * theta
        for t in range(time_steps):
            inputs = frame if t == 0 else tf.zeros_like(frame)
            spikes = []
            for index, layer in enumerate(network.layers):
                mem[index] += synaptic_input(layer, inputs)
                layer_spikes = neuron_step(mem[index], counts[index], layer.threshold, layer.bound, layer.tie_rule)
                counts[index] += layer_spikes
                spikes.append(layer_spikes.numpy())
                inputs = layer_spikes
            spikes_log[rows, t], net_log[rows, t], sops_log[rows, t] = step_counters(network, spikes)
            logits = np.reshape(counts[-1].numpy(), (len(frame), -1)) @ network.out_kernel
            predictions[rows, t] = np.argmax(logits, axis=1)  # the first index on ties
        if keep_counts:
            for layer_final, layer_counts in zip(final_counts, counts):
                layer_final[rows] = layer_counts.numpy()
    return SimulationResult(spikes_log, net_log, sops_log, predictions, final_counts)
