"""The fast engine's arithmetic: float32 in threshold units, with the close calls decided again in float64.

snn_engine.py steps the neurons in float32, where v = (mem - b) / theta and the net spike count n
make the spike rule of spiking_utils.neuron_step read: +1 if max(v, 0) - n > 1 (>= 1 under the exact
tie rule), -1 if it is below -1e-5 / theta (0 under the exact rule). float32 computes v with an error of a few 1e-6 (measured: benchmarks/bench_snn.py).
Spike counts are whole numbers, exact in float32, so the exact float64 membrane can always be
recomputed from them: mem = W (*) (net counts of the layer before). Every decision that lies within
float32's error of a threshold is taken again that way, with the definition's spike_decision, so the
only decisions that can differ from the reference simulator are exact ties, which float64 rounding
decides either way; the engine counts them (TIE_MARGIN). Layer 1, whose input arrives only at t = 0,
gets its whole spike train here in closed form, and its doubtful units are replayed with neuron_step.
"""
import functools
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from spiking_utils import EXACT_TIE_MARGIN as TIE_MARGIN
from spiking_utils import negative_spike_threshold, neuron_step, spike_decision, weighted_input

DECISION_WINDOW_ULPS = 256  # float32 ulps of a layer's largest one-step input: closer calls are re-decided in float64



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
    tolerance: tf.Tensor  # -negative_spike_threshold / theta: 1e-5 / theta (paper's rule) or 0 (exact), float32 (C,)
    window: float  # in threshold units
    kernel_by_unit: tf.Tensor  # float64 W with the output unit first: conv (C_out, kh, kw, C_in), dense (units, fan_in)


def fast_layer(layer):
    """The FastLayer of a SpikingLayer whose inputs are spikes (-1, 0 or +1).

    Its window grows with the largest input one step can bring, sum |W| / theta.
    """
    kernel = layer.kernel / layer.threshold
    largest_current = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0).max()
    scale = 1.0 + largest_current + np.abs(layer.bound / layer.threshold).max()
    tolerance = -negative_spike_threshold(layer.tie_rule) / layer.threshold
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
    encoded_input: (B, *input shape) network inputs * 2**k. Returns a numpy array (B, *output_shape) of `dtype` (a tf.DType).
    """
    count_block = make_first_layer_counter(layer, time_steps, dtype, max(1, min(block_size, len(encoded_input))))
    return np.concatenate([np.zeros((0, *layer.output_shape), dtype.as_numpy_dtype)] + [
        count_block(encoded_input[start : start + block_size]) for start in range(0, len(encoded_input), block_size)])


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
    """Layer 1's spike counts at the units `where` (m, rank), by T float64 steps of neuron_step (§4).

    `chunk` units at a time, so that their inputs (chunk x fan-in, float64) stay small."""
    if len(where) > chunk:
        return np.concatenate([replay_first_layer(layer, fast, encoded_input, where[start : start + chunk], time_steps)
                               for start in range(0, len(where), chunk)])
    channel = where[:, -1]
    theta, bound = layer.threshold[channel], layer.bound[channel]
    membrane = exact_membrane(layer, fast, encoded_input, None, tf.constant(where, tf.int64))
    fired = replay_steps(time_steps, layer.tie_rule)(membrane, tf.constant(theta), tf.constant(bound))
    return fired.numpy().astype(np.int64)


@functools.cache
def replay_steps(time_steps, tie_rule):
    """replay(membrane, theta, bound) -> net spike counts (m,) after up to T steps of neuron_step, compiled.

    The input arrives only at t = 0, so the membrane stays and only the count moves; once a step
    fires nothing, no later step will, and the loop ends there.
    """
    vector = tf.TensorSpec((None,), tf.float64)

    @tf.function(autograph=False, input_signature=[vector, vector, vector])
    def replay(membrane, theta, bound):
        def step(t, fired, fired_before):
            return t + 1, fired + neuron_step(membrane, fired, theta, bound, tie_rule), fired

        def going(t, fired, fired_before):
            return (t < time_steps) & ((t == 0) | tf.reduce_any(fired != fired_before))

        zeros = tf.zeros_like(membrane)
        return tf.while_loop(going, step, (tf.constant(0), zeros, zeros))[1]

    return replay


def exact_spikes(layer, fast, counts_in, cap, previous_counts, where):
    """§4 steps 4-5 in float64 for the units `where`, as the reference simulator takes them.

    previous_counts: (m,) their net spike counts before this step. Returns (m,) spikes and (m,)
    whether each decision is an exact tie: d within TIE_MARGIN theta of a threshold, where two
    float64 implementations that sum in different orders may disagree.
    """
    channel = where[:, -1]
    threshold, bound = tf.gather(layer.threshold, channel), tf.gather(layer.bound, channel)
    mem_q = bound + tf.cast(previous_counts, tf.float64) * threshold
    d = tf.maximum(exact_membrane(layer, fast, counts_in, cap, where), bound) - mem_q
    distance = tf.minimum(tf.abs(d - threshold), tf.abs(d - negative_spike_threshold(layer.tie_rule)))
    return spike_decision(d, threshold, layer.tie_rule), distance <= TIE_MARGIN * threshold
