"""The fast SNN engine: the same logs as spiking_utils.simulate_reference, many times faster.

spiking_utils.py defines the method and simulates it plainly; this module only speeds it up, and
tests/test_snn.py (test_both_engines_write_identical_files, test_logs_equal_reference_simulation) holds
the two engines to identical logs. What it does differently:
(a) it steps pools of hundreds of samples at once, two pools in parallel threads, each through one
    compiled TensorFlow step, each layer's element-wise neuron update fused by XLA on the layer's
    flattened units (make_neuron_update, make_network_step);
(b) layer 1, whose input arrives only at t = 0, gets its whole spike train in closed form
    (snn_float64.make_first_layer_counter) and its counters too (first_layer_counters);
(c) a sample is retired as soon as its state is a fixed point (no layer will spike again), since
    every later step repeats its counters and prediction, and its row takes the next sample;
(d) the arithmetic is float32 in threshold units, and the decisions within float32's error of a
    threshold are taken again in float64 (snn_float64.py).
"""
import logging
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from architectures import NUM_CLASSES, TIME_STEPS
from snn_float64 import exact_spikes, fast_layer, make_first_layer_counter
from spiking_utils import SimulationResult, weighted_input

DECISION_KINDS = ("close_calls", "changed", "ties")  # the float64 decision counts a step returns, in order


class _OneTracePerNetwork(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning. Each converted network gets
    tf.functions of its own, each traced once by design (their shapes never change); TensorFlow
    counts those traces per source function across networks, so simulating six networks in one
    process (reproduce.py) would warn about retracing that is not happening."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_OneTracePerNetwork())


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


def simulate(network, frames, time_steps=TIME_STEPS, keep_counts=False, progress=True, pool_size=POOL_SIZE,
             workers=WORKERS):
    """Simulate all samples for T steps; frames: (N, *input shape) network inputs (N-MNIST: ON counts / 32). Returns SimulationResult.

    Each of `workers` threads steps its own pool of `pool_size` rows, each row holding one sample
    at its own step t. A sample whose state is a fixed point (no spike in any layer at this step,
    or certainly none at the next: layer 1 has fired its last spike and no neuron is PENDING)
    repeats its counters and prediction at every later step, so it is done, and its row takes the
    next sample at once. With `keep_counts`, the final spike counts of every layer are
    returned (final_counts), as lossless.check needs them.
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
    if keep_counts:
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

    return SimulationResult(spikes_log, net_log, sops_log, predictions, final_counts,
                            float64_decisions=dict(zip(DECISION_KINDS, decisions.tolist())))
