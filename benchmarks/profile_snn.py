"""Where the spiking LeNet simulator's time goes: the measurements behind the account of it in docs/performance.md.

Four measurements of one LeNet model, in one run:
1. TensorFlow's profiler over `snn_engine.simulate` (the task of bench_snn.py): how the workers'
   compiled steps divide their time between the convolutions of layers 3..L (oneDNN's Conv2D), the
   XLA-compiled functions (the neuron updates and layer 2's input), TensorFlow's other operations
   (counters, close calls, logits) and the dispatch between operations;
2. the convolutions' arithmetic rate per worker thread, against large float32 matrix products
   (PRODUCT_SIZE cubed) timed the same way in the same run, about the most a thread attains: how
   much any faster convolution could gain;
3. in a float64 simulation of a subset (§4 as written: `spiking_utils.neuron_step`), the share of
   each of those convolutions' input patches that hold no spike, over each sample's steps up to its
   last spike (the steps simulate computes): the most that skipping silent patches could remove;
4. at the share of those convolutions' inputs that hold a spike in that simulation, the time of a
   sparse patch matrix times the kernel (tf.sparse.sparse_dense_matmul: work in proportion to the
   spikes, as an event-driven simulator does) against the dense convolution, on random spikes, and
   at a tenth of that share (a sample's late steps).

    python benchmarks/profile_snn.py --precision k2     # uses LeNet/checkpoints/k2 (run reproduce.py --demo first)
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import argparse
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

import snn_engine
from architectures import layer_macs
from benchmarks import readme_rows
from benchmarks.bench_snn import add_simulation_flags, dataset_label, float64_steps, last_spiking_step, load_network
from cli import ArgumentParser, UserError, positive_int, run_main

MODEL = "lenet"
STEP_EVENT = "step"  # the profiler's name for a call of simulate's compiled step (make_network_step)
XLA_EVENT = "CpuExecutable::ExecuteAsyncOnStream"  # one run of an XLA-compiled function
PRODUCT_SIZE = 2048  # of the square matrix products that measure a thread's attainable rate
TF_OPERATION = re.compile(r"[^\s:]+:(?P<type>[^\s:]+)")  # a TensorFlow operation's event: "Conv2D_1:_MklNativeConv2D"


def read_trace(log_dir):
    """[(name, start in ps, seconds)] of every event on the host CPU in the profiler's trace under log_dir."""
    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        raise UserError("this TensorFlow build cannot read its profiler's traces (no tensorflow.tsl.profiler.protobuf)")
    traces = sorted(pathlib.Path(log_dir).rglob("*.xplane.pb"))
    if not traces:
        raise UserError(f"{log_dir}: TensorFlow's profiler wrote no trace")
    space = xplane_pb2.XSpace()
    space.ParseFromString(traces[-1].read_bytes())
    events = []
    for plane in space.planes:
        if plane.name == "/host:CPU":
            names = {key: metadata.name for key, metadata in plane.event_metadata.items()}
            events += [(names.get(event.metadata_id, ""), line.timestamp_ns * 1000 + event.offset_ps, event.duration_ps * 1e-12)
                       for line in plane.lines for event in line.events]
    return events


def step_time_breakdown(events):
    """(calls, seconds by kind of work) of the compiled steps in a trace of simulate, summed over threads.

    simulate's first call of its step only compiles it (while layer 1's spike trains are computed),
    so the calls and events before the second call are left out.
    """
    starts = sorted((start, seconds) for name, start, seconds in events if name == STEP_EVENT)
    if len(starts) < 2:
        raise UserError("the profile holds no step of snn_engine.simulate beyond the compiling one")
    first = starts[1][0]
    kinds = {"convolutions": 0.0, "XLA-compiled functions": 0.0, "other TensorFlow operations": 0.0}
    for name, start, seconds in events:
        if start < first:
            continue
        operation = TF_OPERATION.fullmatch(name)
        if name == XLA_EVENT:
            kinds["XLA-compiled functions"] += seconds
        elif operation and operation["type"].endswith("Conv2D"):
            kinds["convolutions"] += seconds
        elif operation:
            kinds["other TensorFlow operations"] += seconds
    total = sum(seconds for _, seconds in starts[1:])
    kinds["dispatch between operations"] = max(0.0, total - sum(kinds.values()))
    return len(starts) - 1, kinds


def profiled_simulation(network, frames, time_steps):
    """simulate under TensorFlow's profiler -> (wall seconds, number of step calls, seconds by kind)."""
    with tempfile.TemporaryDirectory(prefix="profile_snn.") as log_dir:
        tf.profiler.experimental.start(log_dir)
        started = time.perf_counter()
        try:
            snn_engine.simulate(network, frames, time_steps, progress=False)
        finally:
            wall = time.perf_counter() - started
            tf.profiler.experimental.stop()
        calls, kinds = step_time_breakdown(read_trace(log_dir))
    return wall, calls, kinds


def matrix_product_rate(size=PRODUCT_SIZE, repeats=8, workers=snn_engine.WORKERS):
    """GFLOP/s per thread of float32 products (size, size) x (size, size), `workers` threads side by
    side as simulate's workers run."""
    generator = np.random.default_rng(0)
    left, right = (tf.constant(generator.standard_normal((size, size)), tf.float32) for _ in range(2))
    tf.matmul(left, right).numpy()  # oneDNN sets itself up

    def products(_):
        for _ in range(repeats):
            tf.matmul(left, right).numpy()

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as executor:
        list(executor.map(products, range(workers)))
    return 2.0 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def patches_with_a_spike(spikes, layer):
    """(B,) how many of a convolution's input patches hold a spike; spikes (B, *layer.input_shape) in {-1, 0, 1}."""
    size = layer.kernel.shape[0]
    active = tf.reduce_max(tf.abs(tf.cast(spikes, tf.float32)), axis=-1, keepdims=True)  # (B, H, W, 1)
    window = tf.nn.max_pool2d(active, size, layer.stride, "VALID")
    return np.asarray(window).reshape(len(spikes), -1).sum(axis=1).astype(np.int64)


def input_sparsity(network, frames, time_steps):
    """({layer number: share of its input patches without a spike}, {layer number: share of its inputs
    that spike}), for the convolutions of layers 3..L.

    Counted over each sample's steps up to its last spike in any layer (at least step 0), in a
    float64 simulation of §4 (bench_snn.float64_steps).
    """
    layers = network.layers[1:]
    convolutions = [index for index, layer in enumerate(layers) if index > 0 and layer.kind == "conv"]
    with_a_spike = {index: np.zeros((time_steps, len(frames)), np.int64) for index in convolutions}
    spiking_inputs = {index: np.zeros((time_steps, len(frames)), np.int64) for index in convolutions}
    fired = np.zeros((time_steps, len(frames)), bool)  # some layer spiked at (t, sample)
    for t, index, inputs, _, spikes in float64_steps(network, frames, time_steps):
        if index == 0:  # layer 1's spikes
            fired[t] = inputs.reshape(len(frames), -1).any(axis=1)
        if index in with_a_spike:
            with_a_spike[index][t] = patches_with_a_spike(inputs, layers[index])
            spiking_inputs[index][t] = np.count_nonzero(inputs.reshape(len(frames), -1), axis=1)
        fired[t] |= spikes.reshape(len(frames), -1).any(axis=1)
    last = np.maximum(last_spiking_step(fired.T) - 1, 0)  # (B,) last step with a spike, from 0
    simulated = np.arange(time_steps)[:, None] <= last  # (T, B): simulate computes step 0 of every sample
    silent = {index + 2: 1.0 - with_a_spike[index][simulated].sum() / (simulated.sum() * np.prod(layers[index].output_shape[:2]))
              for index in convolutions}
    density = {index + 2: spiking_inputs[index][simulated].sum() / (simulated.sum() * np.prod(layers[index].input_shape))
               for index in convolutions}
    return silent, density


def sparse_product_slowdown(layer, density, rows, repeats=20):
    """How many times longer a sparse patch matrix times the kernel takes than the dense convolution.

    Both compute W (*) spikes for `rows` samples of random spikes (rows, *layer.input_shape) of which
    a share `density` is +1 or -1, in float32 on the calling threads; the sparse product's work
    follows the spikes (an event-driven simulator's), the convolution's does not.
    """
    generator = np.random.default_rng(0)
    shape = (rows, *layer.input_shape)
    spikes = tf.constant((generator.random(shape) < density) * generator.choice([-1.0, 1.0], shape), tf.float32)
    kernel = tf.constant(layer.kernel, tf.float32)  # (size, size, C_in, C_out)
    size, stride = kernel.shape[0], layer.stride

    @tf.function(autograph=False)
    def dense(x):
        return tf.nn.conv2d(x, kernel, stride, "VALID")

    @tf.function(autograph=False)
    def sparse(x):  # patches ordered (kh, kw, C_in), as the kernel's rows
        patches = tf.image.extract_patches(x, [1, size, size, 1], [1, stride, stride, 1], [1, 1, 1, 1], "VALID")
        patches = tf.reshape(patches, (-1, patches.shape[-1]))  # (rows * H_out * W_out, size * size * C_in)
        where = tf.where(patches != 0)
        matrix = tf.SparseTensor(where, tf.gather_nd(patches, where), tf.shape(patches, out_type=tf.int64))
        return tf.reshape(tf.sparse.sparse_dense_matmul(matrix, tf.reshape(kernel, (-1, kernel.shape[-1]))),
                          (rows, *layer.output_shape))

    seconds, results = [], []
    for product in (dense, sparse):
        results.append(product(spikes).numpy())  # traced and warmed up
        started = time.perf_counter()
        for _ in range(repeats):
            product(spikes).numpy()
        seconds.append(time.perf_counter() - started)
    if not np.allclose(*results, atol=1e-3):
        raise RuntimeError("the sparse patch product disagrees with the convolution")
    return seconds[1] / seconds[0]


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_simulation_flags(parser, "k2", "samples simulated under the profiler")
    parser.add_argument("--patch-samples", type=positive_int, default=200,
                        help="samples of the float64 simulation that counts silent patches (default: %(default)s)")
    parser.add_argument(readme_rows.FLAG, action="store_true", help=readme_rows.FLAG_HELP)
    args = parser.parse_args(argv)
    snn_engine.configure_threads()
    _, network, frames, _ = load_network(MODEL, args)

    wall, calls, kinds = profiled_simulation(network, frames, args.time_steps)
    rows = snn_engine.pool_rows(args.samples)
    step_seconds = sum(kinds.values())
    print(f"simulate: {wall:.1f} s; {calls} steps of {rows} rows, {1e3 * step_seconds / calls:.1f} ms each (one thread)")
    for kind, seconds in kinds.items():
        print(f"  {kind:30s} {100 * seconds / step_seconds:5.1f} %  ({1e3 * seconds / calls:.1f} ms per step)")

    # The convolutions run by Conv2D: the inputs of layers 3..L (layer 2's is an XLA matrix product).
    conv_macs = {number: macs for number, (layer, macs) in enumerate(zip(network.layers, layer_macs(MODEL, args.dataset)), start=1)
                 if number >= 3 and layer.kind == "conv"}  # {layer number: multiply-adds per sample}
    if not kinds["convolutions"]:
        raise UserError("the profile holds no Conv2D operation: this TensorFlow names its convolutions otherwise")
    conv_rate = 2.0 * sum(conv_macs.values()) * rows * calls / kinds["convolutions"] / 1e9
    product_rate = matrix_product_rate()
    rates = (f"{conv_rate:.0f} GFLOP/s per thread, {100 * conv_rate / product_rate:.0f} % of the rate of {PRODUCT_SIZE}³ "
             f"float32 matrix products in the same run ({product_rate:.0f} GFLOP/s per thread)")
    print(f"convolutions: {rates}")

    shares, densities = input_sparsity(network, frames[: args.patch_samples], args.time_steps)
    removable = sum(conv_macs[number] * share for number, share in shares.items()) / sum(conv_macs.values())
    conv_share = kinds["convolutions"] / step_seconds
    silent = (", ".join(f"layer {number} {100 * share:.0f} %" for number, share in shares.items())
              + f", so skipping every silent patch would remove at most {100 * removable:.0f} % of the convolutions' "
                f"work, {100 * removable * conv_share:.0f} % of a step")
    print(f"silent input patches ({args.patch_samples} samples, float64): {silent}")
    layers = dict(enumerate(network.layers, start=1))
    sparse = "; ".join(f"layer {number} ({100 * density:.0f} % of its inputs spike) "
                       f"{sparse_product_slowdown(layers[number], density, rows):.1f}× slower, "
                       f"{sparse_product_slowdown(layers[number], density / 10, rows):.1f}× at a tenth of that density"
                       for number, density in densities.items())
    print(f"sparse patch products against the dense convolutions, at those samples' spike densities: {sparse}")
    if args.update_docs:
        readme_rows.update_row(
            f"SNN step profile,{dataset_label(args.dataset)} LeNet {args.precision}, {args.samples:,} samples, T = {args.time_steps}",
            f"{calls} steps of {rows} rows, {1e3 * step_seconds / calls:.1f} ms each per worker thread: "
            + "; ".join(f"{kind} {100 * seconds / step_seconds:.0f} %" for kind, seconds in kinds.items())
            + f"; the convolutions at {rates}; silent input patches in a float64 run of {args.patch_samples} "
              f"samples up to their last spike: {silent}; sparse patch products against the dense "
              f"convolutions at those samples' spike densities: {sparse}",
            "–")


if __name__ == "__main__":
    run_main(main)
