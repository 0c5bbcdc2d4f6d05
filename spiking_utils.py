"""Spiking convolution and dense layers with negative spike dynamics (ALGORITHM.md §3 and §4).

Reads top to bottom like the specification:
1. `fold_batch_norm`: BN folded into each neuron's threshold theta and bound b (§3);
2. `synaptic_input`: W (*) input for a convolution or a dense layer;
3. `neuron_step`: one update of the negative-spike neuron (§4);
4. `simulate`: the runner over T time steps, recording the §4 counters per sample and step
   (`make_neuron_update`: the same update in float32; `exact_spikes`: close calls taken again in float64);
5. `write_logs`: the four log files, batch-major, in the authors' layout.

The spike decisions, and therefore the logs, are those of a literal float64 implementation of §4,
line by line. The runner is fast because it (a) steps pools of hundreds of samples at once, two
pools in parallel threads, each through one compiled TensorFlow step (each layer's element-wise
neuron update fused by XLA on the layer's flattened units),
(b) computes layer 1's spike train in closed form (its input arrives only at t = 0), (c) retires a
sample as soon as its state is a fixed point (no layer will spike again), since every later step
repeats its counters and prediction, and gives its row of the pool to the next sample, and (d)
does the arithmetic in float32, in threshold units (`FastLayer`): spike counts are whole numbers,
exact in float32, and the few decisions that lie within float32's error of a threshold are taken
again in float64 from the exact membrane (`exact_spikes`). The only decisions that can differ from
another float64 implementation are then exact ties, which float64 rounding decides either way;
SimulationResult.float64_decisions counts them.
"""
import contextlib
import logging
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from architectures import ARCHITECTURES, BN_EPSILON, NUM_CLASSES, QUANTIZER_TIE_NUDGE, TIME_STEPS, layer_shapes
from cli import UserError, atomic_path
from log_format import LOG_BATCH_SIZE, LOG_FILES, steps_to_final  # noqa: F401  (part of this module's interface)

NEGATIVE_SPIKE_TOLERANCE = 1e-5  # d < -1e-5 fires a negative spike (§4, step 5)


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


def spike_decision(d, threshold):
    """§4 step 5: +1 if d > theta, -1 if d < -1e-5, else 0 (same dtype as d)."""
    return tf.cast(d > threshold, d.dtype) - tf.cast(d < -NEGATIVE_SPIKE_TOLERANCE, d.dtype)


def neuron_step(mem, mem_q, threshold, bound):
    """One update: returns (spikes in {-1, 0, +1}, new mem_q), as float64 tensors.

    d = max(mem, b) - mem_q; +1 if d > theta, -1 if d < -1e-5, else 0; mem_q += spike * theta.
    Shapes: mem and mem_q (B, ..., C); threshold and bound (C,).
    """
    mem, mem_q = tf.convert_to_tensor(mem, tf.float64), tf.convert_to_tensor(mem_q, tf.float64)
    spikes = spike_decision(tf.maximum(mem, bound) - mem_q, threshold)
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
    tie_mismatches: np.ndarray = None  # (N,) of those, neurons off by their own 1e-5 rounding tie
    other_mismatches: np.ndarray = None  # (N,) neurons off for any other reason (0 unless T was too short)
    ann_predictions: np.ndarray = None  # (N,) the quantized ANN's predictions, if checked
    float64_decisions: dict = None  # neuron decisions taken again in float64: "close_calls", "changed", "ties"

    @property
    def time_steps(self):
        return self.spikes.shape[1]

    @property
    def still_spiking(self):
        """(N,) bool: samples that fired at the last step, so T may have been too short for them."""
        return self.spikes[:, -1] > 0


DECISION_WINDOW_ULPS = 256  # float32 ulps of a layer's largest one-step input: closer calls are re-decided in float64
DECISION_KINDS = ("close_calls", "changed", "ties")  # the decision counts a step returns, in order
TIE_MARGIN = 1e-9  # a float64 d this close to a threshold (in units of theta) counts as an exact tie


@dataclass
class FastLayer:
    """A spiking layer in threshold units, for the float32 arithmetic of the runner.

    With v = (mem - b) / theta and n the net spike count, §4's d / theta = max(v, 0) - n, so the
    neuron fires +1 if max(v, 0) - n > 1 and -1 if it is < -1e-5 / theta. float32 computes v with
    an error of a few 1e-6 (measured: benchmarks/bench_snn.py); decisions closer than `window` to
    either threshold are taken again in float64 from the exact membrane (`exact_spikes`).
    """

    kernel: tf.Tensor  # W / theta, float32, same shape as SpikingLayer.kernel
    start: tf.Tensor  # v at t = 0: -b / theta, float32 (C,)
    tolerance: tf.Tensor  # 1e-5 / theta, float32 (C,)
    window: float  # in threshold units
    kernel_by_unit: tf.Tensor  # float64 W with the output unit first: conv (C_out, kh, kw, C_in), dense (units, fan_in)


def fast_layer(layer):
    """The FastLayer of a SpikingLayer whose inputs are spikes (-1, 0 or +1).

    Its window grows with the largest input one step can bring, sum |W| / theta.
    """
    kernel = layer.kernel / layer.threshold
    largest_current = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0).max()
    scale = 1.0 + largest_current + np.abs(layer.bound / layer.threshold).max()
    tolerance = NEGATIVE_SPIKE_TOLERANCE / layer.threshold
    return FastLayer(tf.constant(kernel, tf.float32), tf.constant(-layer.bound / layer.threshold, tf.float32),
                     tf.constant(tolerance, tf.float32), DECISION_WINDOW_ULPS * 2.0**-24 * scale,
                     tf.constant(np.moveaxis(layer.kernel, -1, 0)))


def exact_membrane(layer, fast, counts_in, cap, where):
    """mem (§4) in float64 at the output units `where` (m, rank) indices, from the input's net counts.

    mem is the sum over steps of W (*) spikes, i.e. W (*) (net spike counts of the layer before),
    so it is recomputed exactly from the counts, which the float32 state holds without error.
    counts_in: (B, *layer.input_shape); cap: None, or (m,) upper limits of the counts for each
    unit's sample (layer 1 has fired min(n, t + 1) of its n spikes by step t). Returns (m,) float64.
    """
    if layer.kind == "dense":
        inputs = tf.gather(tf.reshape(counts_in, (tf.shape(counts_in)[0], -1)), where[:, 0])  # (m, fan_in)
    else:
        size = layer.kernel.shape[0]
        offsets = tf.range(size, dtype=tf.int64)
        rows = where[:, 1:2] * layer.stride + offsets  # (m, size)
        cols = where[:, 2:3] * layer.stride + offsets
        grid = tf.shape(rows)[0], size, size
        index = tf.stack([tf.broadcast_to(where[:, 0, None, None], grid), tf.broadcast_to(rows[:, :, None], grid),
                          tf.broadcast_to(cols[:, None, :], grid)], axis=-1)  # (m, size, size, 3)
        inputs = tf.gather_nd(counts_in, index)  # (m, size, size, C_in)
    inputs = tf.cast(inputs, tf.float64)
    if cap is not None:
        inputs = tf.minimum(inputs, tf.reshape(tf.cast(cap, tf.float64), (-1,) + (1,) * (len(inputs.shape) - 1)))
    weights = tf.gather(fast.kernel_by_unit, where[:, -1])  # same shape as inputs
    return tf.reduce_sum(tf.reshape(inputs * weights, (tf.shape(inputs)[0], -1)), axis=1)


FIRST_LAYER_BLOCK = 256  # samples per compiled call of layer 1's closed form


def first_layer_spike_counts(layer, encoded_input, time_steps, dtype=tf.int32, block_size=FIRST_LAYER_BLOCK):
    """Layer 1's whole spike train, computed once: it fires +1 at steps 0 .. n-1, nothing else.

    Its input arrives only at t = 0, so max(mem, b) is fixed and the neuron_step recurrence just
    adds theta to mem_q, one spike per step, while the gap exceeds theta: n = floor((max(mem, b) - b)
    / theta), capped at T. (The gap never drops below 0, so there are no negative spikes.)
    encoded_input: (B, 34, 34, 1) frames * 2**k. Returns a numpy array (B, *output_shape) of `dtype` (a tf.DType).
    """
    count_block = make_first_layer_counter(layer, time_steps, dtype, max(1, min(block_size, len(encoded_input))))
    return np.concatenate([np.zeros((0, *layer.output_shape), dtype.as_numpy_dtype)] + [
        count_block(encoded_input[start : start + block_size]) for start in range(0, len(encoded_input), block_size)])



class _OneTracePerNetwork(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning. Each converted network gets
    tf.functions of its own, each traced once by design (their shapes never change); TensorFlow
    counts those traces per source function across networks, so simulating six networks in one
    process (reproduce.py) would warn about retracing that is not happening."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_OneTracePerNetwork())

def make_first_layer_counter(layer, time_steps, dtype, block_size):
    """count_block(encoded_input) -> layer 1's spike counts of up to `block_size` samples (numpy, `dtype`).

    The ratio n = (max(mem, b) - b) / theta is computed in float32 (`FastLayer`), with a bound on
    its rounding error per unit (the classic one for a sum of products: taps + 4 units in the last
    place of sum |w x| + |b / theta|, doubled); where the ratio lies within that bound of a whole
    number, the membrane is computed again in float64 and the recurrence itself is replayed, so n
    is exactly what a step-by-step float64 simulation gives. Blocks are padded to one shape, so
    the float32 part compiles once; it may be called from several threads at once.
    """
    fast = fast_layer(layer)
    taps = int(np.prod(layer.kernel.shape[:-1]))
    kernel_magnitude = tf.abs(fast.kernel)

    @tf.function(jit_compile=True, autograph=False)  # the element-wise part, fused
    def counts_and_doubts(weighted, magnitude):  # magnitude: sum |w x| per unit
        ratio = weighted + fast.start
        error_bound = 2 * (taps + 4) * 2.0**-24 * (magnitude + tf.abs(fast.start))
        counts = tf.cast(tf.clip_by_value(tf.floor(ratio), 0.0, time_steps), dtype)
        return counts, (tf.abs(ratio - tf.round(ratio)) <= error_bound) & (ratio > 0.5)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec((block_size, *layer.input_shape), tf.float32)])
    def float32_counts(inputs):  # -> (counts, uncertain (m, rank)): floor(ratio) in [0, T], and where it may be off by one
        counts, doubtful = counts_and_doubts(weighted_input(layer.kind, fast.kernel, layer.stride, inputs),
                                             weighted_input(layer.kind, kernel_magnitude, layer.stride, tf.abs(inputs)))
        return counts, tf.where(doubtful)

    def count_block(encoded_input):
        encoded_input = np.asarray(encoded_input, dtype=np.float64)
        padded = np.zeros((block_size, *layer.input_shape), dtype=np.float32)
        padded[: len(encoded_input)] = encoded_input.reshape(len(encoded_input), *layer.input_shape)
        counts, uncertain = (array.numpy() for array in float32_counts(padded))
        uncertain = uncertain[uncertain[:, 0] < len(encoded_input)]
        if len(uncertain):
            counts[tuple(uncertain.T)] = replay_first_layer(layer, fast, encoded_input, uncertain, time_steps)
        return counts[: len(encoded_input)]

    return count_block


def replay_first_layer(layer, fast, encoded_input, where, time_steps, chunk=4096):
    """Layer 1's spike counts at the units `where` (m, rank), by T literal float64 steps of §4.

    `chunk` units at a time, so that their inputs (chunk x fan-in, float64) stay small."""
    if len(where) > chunk:
        return np.concatenate([replay_first_layer(layer, fast, encoded_input, where[start : start + chunk], time_steps)
                               for start in range(0, len(where), chunk)])
    channel = where[:, -1]
    theta, bound = layer.threshold[channel], layer.bound[channel]
    membrane = exact_membrane(layer, fast, encoded_input, None, tf.constant(where, tf.int64)).numpy()
    target, mem_q = np.maximum(membrane, bound), bound.copy()
    fired = np.zeros(len(channel), dtype=np.int64)
    for _ in range(time_steps):  # §4 steps 4-6
        spikes = target - mem_q > theta
        mem_q += spikes * theta
        fired += spikes
    return fired


def first_layer_counters(counts, synapses, time_steps):
    """Layer 1's §4 counters at every step, in closed form: it fires +1 at steps 0 .. n-1, so its
    spikes at step t are the units with n > t.

    counts: (B, units) spike counts in [0, T]; synapses: (units,) SOPs each of a unit's spikes
    causes. Returns (B, T, 3) int64: |spikes|, net spikes and SOPs per sample and step.
    """
    samples, units = counts.shape
    bins = (counts + (np.arange(samples, dtype=np.int64) * (time_steps + 1))[:, None]).reshape(-1)

    def beyond(weights=None):  # (B, T): the sum of `weights` (1 by default) over the units with n > t
        per_count = np.bincount(bins, weights, minlength=samples * (time_steps + 1)).reshape(samples, -1)
        return np.cumsum(per_count[:, ::-1], axis=1)[:, ::-1][:, 1:]  # sum over n >= t + 1

    spikes = beyond()
    if np.all(synapses == synapses[0]):
        sops = spikes * int(synapses[0])
    else:
        sops = np.rint(beyond(np.tile(synapses.astype(np.float64), samples))).astype(np.int64)
    return np.stack([spikes, spikes, sops], axis=2)  # |spikes| = net spikes: layer 1 only fires +1


def make_first_layer_drive(layer, fast):
    """drive(first_counts, time) -> layer 2's input current W (*) spikes / theta (float32), from layer 1's counts.

    Layer 1 fires +1 at steps 0 .. n-1, so its spikes at each row's step t are first_counts > t. One
    XLA function compares and multiplies: for a convolution whose stride equals its kernel size
    (LeNet's 2 x 2, stride 2), as a matrix product of the non-overlapping patches (space to depth),
    about twice as fast as a comparison followed by a convolution. first_counts: (rows,
    *layer.input_shape) int; time: (rows,) int32; returns (rows, *layer.output_shape).
    """
    as_patches = (layer.kind == "conv" and layer.kernel.shape[0] == layer.stride
                  and all(side % layer.stride == 0 for side in layer.input_shape[:2]))
    size = layer.stride  # of the patches, when as_patches

    @tf.function(jit_compile=True, autograph=False)
    def drive(first_counts, time):
        rows = first_counts.shape[0]
        time = tf.reshape(time, (rows,) + (1,) * len(layer.input_shape))
        spikes = tf.cast(tf.cast(first_counts, tf.int32) > time, tf.float32)
        if not as_patches:
            return weighted_input(layer.kind, fast.kernel, layer.stride, spikes)
        height, width, channels = layer.input_shape
        out_height, out_width = height // size, width // size
        patches = tf.transpose(tf.reshape(spikes, (rows, out_height, size, out_width, size, channels)), (0, 1, 3, 2, 4, 5))
        current = tf.matmul(tf.reshape(patches, (rows * out_height * out_width, size * size * channels)),
                            tf.reshape(fast.kernel, (size * size * channels, -1)))  # kernel (kh, kw, C_in, C_out)
        return tf.reshape(current, (rows, *layer.output_shape))

    return drive


def exact_spikes(layer, fast, counts_in, cap, previous_counts, where):
    """§4 steps 4-5 in float64 for the units `where`, as the literal simulation takes them.

    previous_counts: (m,) their net spike counts before this step. Returns (m,) spikes and (m,)
    whether each decision is an exact tie: d within TIE_MARGIN theta of a threshold, where two
    float64 implementations that sum in different orders may disagree.
    """
    channel = where[:, -1]
    threshold, bound = tf.gather(layer.threshold, channel), tf.gather(layer.bound, channel)
    mem_q = bound + tf.cast(previous_counts, tf.float64) * threshold
    d = tf.maximum(exact_membrane(layer, fast, counts_in, cap, where), bound) - mem_q
    distance = tf.minimum(tf.abs(d - threshold), tf.abs(d + NEGATIVE_SPIKE_TOLERANCE))
    return spike_decision(d, threshold), distance <= TIE_MARGIN * threshold


def per_unit(per_channel, output_shape):
    """A per-channel value (C,) spread over a layer's flattened units (n,) = prod(output_shape), channels last."""
    return tf.reshape(tf.broadcast_to(per_channel, output_shape), (-1,))


PENDING, CLOSE_CALL, BOTH = 1, 2, 3  # the neuron outlooks of make_neuron_update (0: neither)


def make_neuron_update(fast, output_shape):
    """§4 steps 3-6 in float32 for one spiking layer 2..L, its element-wise operations fused by XLA.

    update(current, potential, counts, fresh) -> (potential, counts, spikes, outlook), all
    (rows, n) with the layer's n = prod(output_shape) units flattened (XLA vectorizes a flat loop
    better: twice as fast for 12 channels). current: W (*) spikes / theta; potential: v = (mem - b)
    / theta; counts: net spike counts (int); fresh (rows,): rows that start a new sample at this step
    (v = -b / theta, n = 0 before it). outlook (int8): CLOSE_CALL for the decisions within `window`
    of a threshold, PENDING for the neurons that may fire again at the next step even if no input
    arrives, BOTH for both; so a close call is outlook >= CLOSE_CALL, a cheap comparison.

    A neuron fires again without input only if its excess is still beyond a threshold after this
    step's spike: excess > 2 (a +1 spike leaves it above 1), or excess < -1 - tolerance with a net
    count still positive after its -1 spike (without one, d >= 0). float32's error is allowed for by
    the same window. A neuron can be both when the window is wide (0.5 threshold units or more, for
    parameters with |b / theta| or sum |W| / theta near 2**16).
    """
    start, tolerance = per_unit(fast.start, output_shape), per_unit(fast.tolerance, output_shape)

    @tf.function(jit_compile=True, autograph=False)
    def update(current, potential, counts, fresh):
        fresh = fresh[:, None]
        potential = tf.where(fresh, start, potential) + current
        counts = tf.where(fresh, tf.zeros_like(counts), counts)
        excess = tf.nn.relu(potential) - tf.cast(counts, tf.float32)  # d / theta
        spikes = tf.cast(excess > 1.0, tf.float32) - tf.cast(excess < -tolerance, tf.float32)
        # Close to either threshold, excess = 1 or excess = -tolerance. With no net spike yet, d >= 0
        # exactly, so no precision can fire a negative spike: only the upper threshold is then close.
        close_call = (tf.abs(excess - 1.0) <= fast.window) | ((tf.abs(excess + tolerance) <= fast.window) & (counts > 0))
        pending = (excess > 2.0 - fast.window) | ((excess < -1.0 - tolerance + fast.window) & (counts > 1))
        outlook = CLOSE_CALL * tf.cast(close_call, tf.int8) + PENDING * tf.cast(pending, tf.int8)
        return potential, counts + tf.cast(spikes, counts.dtype), spikes, outlook

    return update


def sparse_where(mask, block):
    """tf.where(mask) -> (m, rank) int64 indices, in the same order, for a mask that is almost all False.

    tf.where scans every element twice, one thread; here one reduction finds the runs of `block`
    consecutive elements (block divides mask.size) that hold any True, and only those are scanned
    again: about 2-3 times faster for the close calls of a 256-row pool.
    """
    runs = tf.reshape(mask, (-1, block))
    hit = tf.where(tf.reduce_any(runs, axis=1))[:, 0]  # (runs with a True,)
    inner = tf.where(tf.gather(runs, hit))  # (m, 2): (which of them, offset in the run)
    flat = tf.gather(hit, inner[:, 0]) * block + inner[:, 1]
    index = []  # flat -> (m, rank), last axis first (mask's shape is static)
    for size in reversed(mask.shape):
        index.append(flat % size)
        flat //= size
    return tf.stack(index[::-1], axis=1)


def largest_divisor(n, at_most=64):
    """The run length sparse_where uses for a layer of n neurons: n's largest divisor up to `at_most`."""
    return max(d for d in range(1, at_most + 1) if n % d == 0)


def count_dtype(time_steps):
    """The smallest integer type that holds any net spike count (|n| <= T): int8 for the usual T = 40."""
    return next(dtype for dtype in (tf.int8, tf.int16, tf.int32, tf.int64) if time_steps <= dtype.max)


def make_network_step(network, rows, time_steps):
    """(step, FastLayers): a compiled function for one time step of `rows` samples, each at its own step.

    step(time, fresh, live, first_counts, potentials, counts) -> (potentials, counts, counters, logits, decisions, may_fire)
    time (rows,) int32: each row's step t; fresh (rows,) bool: rows starting a new sample; live (rows,)
    bool: rows holding a sample (others run idle and are not counted); first_counts: layer 1's spike
    counts (rows, *shape), so its spikes at t are first_counts > t; potentials, counts: lists over
    layers 2..L of (rows, n) v = (mem - b) / theta (float32) and net spike counts (int), each
    layer's n units flattened as make_neuron_update wants them;
    counters (rows, 3) int32: |spikes|, net spikes and SOPs of layers 2..L at this step (layer 1's come
    from first_layer_counters); logits (rows, 10) float64;
    decisions int64 (3,): DECISION_KINDS of the live rows; may_fire (rows,) bool: a neuron of layers
    2..L may fire at the next step even if layer 1 does not (make_neuron_update's PENDING or BOTH).
    """
    first, *layers = network.layers
    fast = [fast_layer(layer) for layer in layers]
    updates = [make_neuron_update(f, layer.output_shape) for f, layer in zip(fast, layers)]
    out_kernel = tf.constant(network.out_kernel, tf.float64)
    dtype = count_dtype(time_steps)
    units = [layer.neurons for layer in layers]
    drive = make_first_layer_drive(layers[0], fast[0])
    # Per layer 2..L, the synapses each of a unit's spikes drives: the next layer's
    # synapses_per_input, or the 10 output units (layer 1's counters: first_layer_counters). float32
    # sums whole numbers exactly below 2**24, far above one step's SOPs per sample; float64 takes over beyond.
    fan_out = [layer.synapses_per_input.reshape(-1) for layer in layers[1:]] + [np.full(units[-1], NUM_CLASSES)]
    exact_in_float32 = sum(int(f.sum()) for f in fan_out) < 2**24
    counter_dtype = tf.float32 if exact_in_float32 else tf.float64
    uniform = [bool(np.all(f == f[0])) for f in fan_out]  # then SOPs = |spikes| x that fan-out
    fan_out = [tf.constant(f, counter_dtype) for f in fan_out]

    def count(spikes, index):  # -> (rows, 3) int32: |spikes|, net spikes and the SOPs they cause, per row
        flat = tf.cast(tf.reshape(spikes, (rows, -1)), counter_dtype)
        net = tf.reduce_sum(flat, axis=1)
        # Spikes are -1, 0 or 1, so sum |s| = ||s||^2: one pass over memory, where abs then sum take
        # three; its rounding error is far below 1/2.
        spike_count = tf.round(tf.square(tf.math.reduce_euclidean_norm(flat, axis=1)))
        sops = (spike_count * fan_out[index][0] if uniform[index]
                else tf.linalg.matvec(tf.abs(flat), fan_out[index]))
        return tf.cast(tf.stack([spike_count, net, sops], axis=1), tf.int32)

    def input_current(index, spikes):  # W (*) spikes / theta into layers[index]; nothing after the last layer
        if index == len(layers):
            return tf.zeros(())
        return weighted_input(layers[index].kind, fast[index].kernel, layers[index].stride, spikes)

    blocks = [largest_divisor(n) for n in units]  # sparse_where's run length per layer
    state_specs = [tf.TensorSpec((rows, n), tf.float32) for n in units]
    count_specs = [tf.TensorSpec((rows, n), dtype) for n in units]
    row_spec = tf.TensorSpec((rows,), tf.bool)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec((rows,), tf.int32), row_spec, row_spec,
                                  tf.TensorSpec((rows, *first.output_shape), dtype), state_specs, count_specs])
    def step(time, fresh, live, first_counts, potentials, counts):
        current = drive(first_counts, time)
        counters = tf.zeros((rows, 3), tf.int32)
        counts_in, cap = first_counts, time + 1  # by step t layer 1 has fired min(n, t + 1) times
        new_potentials, new_counts, decisions = [], [], tf.zeros(3, tf.int64)
        may_fire = tf.zeros(rows, tf.bool)  # per row: some neuron of layers 2..L may fire at t + 1 without input
        for index, (layer, layer_fast, update) in enumerate(zip(layers, fast, updates)):
            shape = (rows, *layer.output_shape)
            potential, layer_counts, spikes, outlook = update(tf.reshape(current, (rows, -1)), potentials[index],
                                                              counts[index], fresh)  # (rows, n) each
            # Close calls: decided again in float64 from the exact membrane, before the spikes go on.
            where = sparse_where(tf.reshape(outlook >= CLOSE_CALL, shape), blocks[index])  # (m, rank)
            spikes, layer_counts = tf.reshape(spikes, shape), tf.reshape(layer_counts, shape)
            tentative = tf.gather_nd(spikes, where)
            previous = tf.cast(tf.gather_nd(layer_counts, where), tf.float32) - tentative
            row_cap = tf.gather(cap, where[:, 0]) if cap is not None else None
            exact, tie = exact_spikes(layer, layer_fast, counts_in, row_cap, previous, where)
            correction = tf.cast(exact, tf.float32) - tentative
            changed = tf.math.count_nonzero(correction)

            def corrected(spikes=spikes, layer_counts=layer_counts, where=where, correction=correction):
                return (tf.tensor_scatter_nd_add(spikes, where, correction),
                        tf.tensor_scatter_nd_add(layer_counts, where, tf.cast(correction, dtype)))

            spikes, layer_counts = tf.cond(  # rare: float32 and float64 seldom disagree
                changed > 0, corrected, lambda: (spikes, layer_counts))
            # Neurons that may fire at t + 1 without input: PENDING ones, and close calls that are BOTH.
            close_and_pending = tf.cast(tf.gather_nd(tf.reshape(outlook, shape), where) == BOTH, tf.int32)
            may_fire = (may_fire | tf.reduce_any(outlook == PENDING, axis=1)
                        | (tf.math.unsorted_segment_max(close_and_pending, where[:, 0], rows) > 0))
            counters += count(spikes, index)
            current = input_current(index + 1, spikes)
            in_live_rows = tf.gather(live, where[:, 0])
            decisions += tf.stack([tf.math.count_nonzero(in_live_rows),
                                   tf.math.count_nonzero((correction != 0) & in_live_rows),
                                   tf.math.count_nonzero(tie & in_live_rows)])
            new_potentials.append(potential)
            new_counts.append(tf.reshape(layer_counts, (rows, -1)))
            counts_in, cap = layer_counts, None
        logits = tf.matmul(tf.cast(tf.reshape(counts_in, (rows, -1)), tf.float64), out_kernel)
        return new_potentials, new_counts, counters, logits, decisions, may_fire

    return step, fast


POOL_SIZE = 256  # samples simulated at once by each worker (rows of its state); any value gives the same logs
WORKERS = 2  # pools stepped by parallel threads, so that one computes while the other waits on a serial operation


def pool_rows(n_samples, pool_size=POOL_SIZE, workers=WORKERS):
    """Rows of each worker's pool in `simulate`: pool_size, or fewer when the samples do not fill the pools."""
    return max(1, min(pool_size, -(-n_samples // workers)))


def configure_threads(workers=WORKERS):
    """Size TensorFlow's thread pools for `simulate`: cores // workers threads per operation.

    The workers' pools then compute side by side instead of contending for the same threads
    (measured on 2 cores: about 6 % faster). TensorFlow allows this only before its first
    operation, so the SNN scripts call it first thing; later (as in reproduce.py, after training)
    it changes nothing, and simulate gives the same results at a little less speed.
    """
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, (os.cpu_count() or 1) // workers))
        tf.config.threading.set_inter_op_parallelism_threads(workers)
    except RuntimeError:  # TensorFlow has started already
        pass


def simulate(network, frames, time_steps=TIME_STEPS, pool_size=POOL_SIZE, workers=WORKERS, check_lossless=False,
             keep_counts=False, progress=True):
    """Simulate all samples for T steps; frames: (N, 34, 34, 1) float (ON count / 32). Returns SimulationResult.

    Each of `workers` threads steps its own pool of `pool_size` rows, each row holding one sample
    at its own step t. A sample whose state is a fixed point (no spike in any layer at this step,
    or certainly none at the next: layer 1 has fired its last spike and no neuron is PENDING)
    repeats its counters and prediction at every later step, so it is done, and its row takes the
    next sample at once. With `keep_counts`, the final spike counts of every layer are
    returned (final_counts); with `check_lossless`, they are compared with 2**k x the quantized
    ANN's activations (`quantized_ann`) and the differences explained (`explain_mismatches`).
    """
    first, *layers = network.layers
    n_samples = len(frames)
    rows = pool_rows(n_samples, pool_size, workers)
    step, fast = make_network_step(network, rows, time_steps)
    dtype = count_dtype(time_steps)
    spikes_log, net_log, sops_log, predictions = (np.zeros((n_samples, time_steps), dtype=np.int64) for _ in range(4))

    def empty_state():  # (first_counts, potentials, counts) of a pool with no sample; first_counts is refilled in place
        return (np.zeros((rows, *first.output_shape), dtype.as_numpy_dtype),
                [tf.tile(per_unit(f.start, layer.output_shape)[None], (rows, 1)) for f, layer in zip(fast, layers)],
                [tf.zeros((rows, layer.neurons), dtype) for layer in layers])

    # Layer 1's whole spike trains, (N, *shape), in closed form, block by block, while another
    # thread compiles the step (one idle call). Each block is written in place: no copy of the whole.
    count_block = make_first_layer_counter(first, time_steps, dtype, rows)
    first_layer_counts = np.empty((n_samples, *first.output_shape), dtype.as_numpy_dtype)
    first_layer_steps = np.empty(n_samples, np.int64)  # the step of each sample's last layer-1 spike + 1
    first_layer_table = np.empty((n_samples, time_steps, 3), np.int64)  # layer 1's counters per step
    synapses = layers[0].synapses_per_input.reshape(-1)

    def first_layer_block(start):
        block = slice(start, start + rows)
        counts = count_block(np.asarray(frames[block], np.float64) * 2.0**network.k)
        first_layer_counts[block] = counts
        per_sample = counts.reshape(len(counts), -1)  # (rows, units)
        first_layer_steps[block] = per_sample.max(axis=1, initial=0)
        first_layer_table[block] = first_layer_counters(per_sample, synapses, time_steps)

    with ThreadPoolExecutor(workers) as executor:
        executor.submit(step, np.zeros(rows, np.int32), np.ones(rows, bool), np.zeros(rows, bool), *empty_state())
        list(executor.map(first_layer_block, range(0, n_samples, rows)))
    final_counts = None
    if keep_counts or check_lossless:
        final_counts = [first_layer_counts] + [np.zeros((n_samples, *layer.output_shape), dtype=dtype.as_numpy_dtype)
                                               for layer in layers]

    lock = threading.Lock()  # guards next_sample, decisions and the progress bar
    next_sample, decisions = 0, np.zeros(3, dtype=np.int64)
    stop = threading.Event()  # set when a worker failed or the user interrupted: the others end too

    def take_samples(n):  # the next n samples (or fewer) to simulate
        nonlocal next_sample
        with lock:
            taken = np.arange(next_sample, min(n_samples, next_sample + n))
            next_sample += len(taken)
        return taken

    def run_pool(bar):  # one worker: step a pool until no sample is left
        nonlocal decisions
        row_sample = np.full(rows, -1)  # the sample each row holds, -1 for none
        row_time = np.zeros(rows, dtype=np.int32)
        first_counts, potentials, counts = empty_state()
        while not stop.is_set():
            fresh = np.zeros(rows, dtype=bool)
            new_samples = take_samples(int((row_sample < 0).sum()))
            if len(new_samples):
                free = np.flatnonzero(row_sample < 0)[: len(new_samples)]
                first_counts[free] = first_layer_counts[new_samples]
                row_sample[free], row_time[free], fresh[free] = new_samples, 0, True
            live = row_sample >= 0
            if not live.any():
                return
            potentials, counts, counters, logits, step_decisions, may_fire = step(
                row_time, fresh, live, first_counts, potentials, counts)
            rows_live = np.flatnonzero(live)
            samples, t = row_sample[rows_live], row_time[rows_live]
            counters = counters.numpy()[rows_live] + first_layer_table[samples, t]
            spikes_log[samples, t], net_log[samples, t], sops_log[samples, t] = counters.T
            predictions[samples, t] = np.argmax(logits.numpy()[rows_live], axis=1)  # first index on ties

            # A fixed point: this step was silent, or the next one will be (layer 1 has fired its last
            # spike and no neuron may fire without input), or this was the last step.
            quiet_next = (first_layer_steps[samples] <= t + 1) & ~may_fire.numpy()[rows_live]
            done = (counters[:, 0] == 0) | quiet_next | (t == time_steps - 1)
            if done.any():
                finished, last_step = samples[done], t[done]
                later = np.arange(time_steps) > last_step[:, None]
                predictions[finished] = np.where(later, predictions[finished, last_step][:, None], predictions[finished])
                if final_counts is not None:
                    for layer_final, layer_counts in zip(final_counts[1:], counts):
                        layer_final[finished] = tf.gather(layer_counts, rows_live[done]).numpy().reshape(
                            len(finished), *layer_final.shape[1:])
                row_sample[rows_live[done]] = -1
            row_time += 1
            with lock:
                decisions += step_decisions.numpy()
                bar.update(int(done.sum()))

    with tqdm(total=n_samples, desc=f"SNN {network.model} k={network.k}", unit="sample", disable=not progress) as bar:
        with ThreadPoolExecutor(workers) as executor:
            pools = [executor.submit(run_pool, bar) for _ in range(workers)]
            try:
                wait(pools, return_when=FIRST_EXCEPTION)  # all done, or one failed
            finally:
                stop.set()  # the others stop at their next step (also on Ctrl-C)
            for pool in pools:
                pool.result()  # raises what the worker raised

    result = SimulationResult(spikes_log, net_log, sops_log, predictions,
                              float64_decisions=dict(zip(DECISION_KINDS, decisions.tolist())))
    if check_lossless:
        check_against_ann(result, network, frames, final_counts, pool_size)
    if keep_counts:
        result.final_counts = final_counts
    return result


def check_against_ann(result, network, frames, final_counts, block_size):
    """Fill result's lossless-check fields (§3), `block_size` samples at a time."""
    checks = []
    for start in range(0, len(frames), block_size):
        block = slice(start, start + block_size)
        snn_counts = [layer_counts[block] for layer_counts in final_counts]
        ann_counts, predictions = quantized_ann(network.params, frames[block])
        mismatches = sum((snn != ann).reshape(len(snn), -1).sum(axis=1) for snn, ann in zip(snn_counts, ann_counts))
        checks.append((mismatches, *explain_mismatches(network, frames[block], snn_counts), predictions))
    result.neuron_mismatches, result.tie_mismatches, result.other_mismatches, result.ann_predictions = (
        np.concatenate(column) for column in zip(*checks))


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


def lossless_report(result, network):
    """Numbers of the lossless check (§3): mismatching neurons and samples, first all-matching step.

    Neurons that differ are sorted into: all those of samples still spiking at the last step (T
    too short for them: not settled, so not judged), and in the other samples, their own 1e-5
    rounding tie, downstream of such ties, or any other reason, which would be a simulator fault.
    """
    n_samples, time_steps = result.predictions.shape
    neurons = n_samples * sum(layer.neurons for layer in network.layers)
    all_match = (result.predictions == result.ann_predictions[:, None]).all(axis=0)  # (T,)
    first_step = None
    if all_match[-1]:
        not_matching = np.flatnonzero(~all_match)
        first_step = int(not_matching[-1]) + 2 if len(not_matching) else 1  # counted from 1
    different_predictions = result.predictions[:, -1] != result.ann_predictions
    still_spiking = result.still_spiking
    settled = ~still_spiking
    unsettled = int(result.neuron_mismatches[still_spiking].sum())  # no verdict on them: T was too short
    other = int(result.other_mismatches[settled].sum())
    ties = int(result.tie_mismatches[settled].sum())
    return {
        "mismatching_neurons": int(result.neuron_mismatches.sum()),
        "mismatching_neuron_share": float(result.neuron_mismatches.sum() / neurons),
        "samples_with_mismatching_neurons": int((result.neuron_mismatches > 0).sum()),
        "samples_with_mismatching_neurons_share": float((result.neuron_mismatches > 0).mean()),
        "rounding_tie_neurons": ties,
        "downstream_of_ties_neurons": int(result.neuron_mismatches[settled].sum()) - ties - other,
        "samples_still_spiking_at_the_last_step": int(still_spiking.sum()),
        "unsettled_neurons": unsettled,
        "other_mismatching_neurons": other,
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


def write_logs(log_dir, columns, extra_files=None):
    """Write the four logs (`log_columns`) into log_dir, plus `extra_files` ({name: text}, e.g. snn_results.json).

    Each goes through a temporary file; all are renamed at the end, `extra_files` last, so an
    interrupted run leaves the old files, and a new snn_results.json always sits beside its own logs.
    """
    log_dir = Path(log_dir)
    texts = dict(extra_files or {})  # first in, so renamed last: a new snn_results.json means new logs
    texts.update({name: "".join(f"{value}\n" for value in values.reshape(-1)) for name, values in columns.items()})
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as renames:  # renames happen only if every file was written
            for name, text in texts.items():
                temporary = renames.enter_context(atomic_path(log_dir / name))
                temporary.write_text(text)
    except OSError as error:
        raise UserError(f"{log_dir}: cannot write logs ({error.strerror or error})") from None
    return columns
