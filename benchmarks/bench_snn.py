"""SNN simulation speed: the fast engine against the reference simulator of the definition, in one run.

The task: LeNet, 10,000 test samples, T = 40 (Fashion-MNIST: T = 20), batch 50 (the authors' setting). The reference
simulator (spiking_utils.simulate_reference: §4 as written, float64) runs on a subset and is
extrapolated; the fast engine (snn_engine.simulate) runs on all samples; both logs are compared
line by line on the subset. The fast engine runs first, `--repeats` times, before TensorFlow has
done other work in the process (the reference's float64 operations before it made it measurably
slower), and its median time is compared.

    python benchmarks/bench_snn.py                    # uses LeNet/checkpoints/k1 (run reproduce.py --demo first)
    python benchmarks/bench_snn.py --model mlp --precision k2
    python benchmarks/bench_snn.py --dataset fashion_mnist   # FashionMNIST/LeNet/checkpoints/k1, data/fashion_mnist.npz
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import argparse
import resource
import time

import numpy as np

import data_sources
import models
import paths
import snn_engine
import snn_float64
import spiking_utils
from architectures import DATASET_NAMES, DATASETS, DISPLAY_NAMES, MODEL_FOLDERS, TIME_STEPS, precision_to_k
from benchmarks import readme_rows
from cli import ArgumentParser, UserError, positive_int, run_main, shown
from log_format import LOG_BATCH_SIZE, log_columns, read_column
from preprocessing_n_mnist import DEFAULT_DEMO_OUT

AUTHORS_LOGS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper_logs"  # <Model>/k<K>/
TARGET_SECONDS = 15.0  # N-MNIST LeNet, 10,000 samples, T = 40
TARGET_SPEEDUP = 20.0
TARGET_PEAK_GB = 2.0
TARGET_SPEEDUP_FASHION = 10.0  # Fashion-MNIST's five-layer LeNet, 10,000 samples, T = 20


def reset_peak_memory():
    """Restart the kernel's peak-RSS counter (Linux), so the peak covers the simulation alone."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_gb():
    """Peak resident memory of this process (TensorFlow's buffers included), in GB."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e6  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def benchmark_frames(data, n_samples, dataset="n_mnist"):
    """n_samples network inputs (N, *input shape) and labels: the test split, then training inputs, repeated if short."""
    x_train, y_train, x_test, y_test = data_sources.load_inputs(data, dataset)
    inputs, labels = np.concatenate([x_test, x_train]), np.concatenate([y_test, y_train]).astype(np.int64)
    rows = np.arange(n_samples) % len(inputs)
    return inputs[rows], labels[rows]


def last_spiking_step(fired):
    """fired (B, T) bool: a spike at (sample or batch, step) -> (B,) the last step with one, counted
    from 1; 0 where there is none."""
    return np.where(fired.any(axis=1), fired.shape[1] - np.argmax(fired[:, ::-1], axis=1), 0)


def settling_steps(spike_num):
    """spike_num log (batches, T), cumulative within each batch -> (batches,) its last step with a
    spike, counted from 1.

    How long a batch keeps spiking: the fast engine's time follows it (a sample retires after its last
    spike), the reference simulator's does not.
    """
    return last_spiking_step(np.diff(spike_num, axis=1, prepend=0) > 0)


def authors_settling_steps(model, precision, time_steps, dataset="n_mnist"):
    """settling_steps of the authors' own logs (real N-MNIST, T = 40), or None if absent or T differs."""
    path = AUTHORS_LOGS / MODEL_FOLDERS[model] / precision / "spike_num.txt"
    if dataset != "n_mnist" or time_steps != TIME_STEPS or not path.exists():
        return None
    return settling_steps(read_column(path).reshape(-1, time_steps))


def float64_steps(network, frames, time_steps):
    """§4 step by step in float64 (layer 1 in closed form, as simulate computes it).

    Yields (t, index, inputs, mem, spikes) for each step t and each layer 2..L in turn (index into
    network.layers[1:]): the spikes it received (B, *input_shape), its membrane after them and
    the spikes it fired (B, *output_shape).
    """
    first, *layers = network.layers
    first_counts = snn_float64.first_layer_spike_counts(first, frames.astype(np.float64) * 2.0**network.k, time_steps)
    mem = [np.zeros((len(frames), *layer.output_shape)) for layer in layers]
    counts = [np.zeros_like(m) for m in mem]
    for t in range(time_steps):
        spikes = (first_counts > t).astype(np.float64)
        for index, layer in enumerate(layers):
            inputs = spikes
            mem[index] = mem[index] + spiking_utils.synaptic_input(layer, inputs).numpy()
            spikes = np.asarray(spiking_utils.neuron_step(mem[index], counts[index], layer.threshold, layer.bound,
                                                          layer.tie_rule))
            counts[index] = counts[index] + spikes
            yield t, index, inputs, mem[index], spikes


def float32_potential_error(network, frames, time_steps):
    """Largest |v_float32 - v_float64| per spiking layer 2..L, in threshold units, and the decision windows.

    Both potentials are driven by the same float64 spike trains (float64_steps), so the
    difference is float32's rounding alone, accumulated over all steps.
    """
    layers = network.layers[1:]
    fast = [snn_float64.fast_layer(layer) for layer in layers]
    potential = [np.broadcast_to(f.start.numpy(), (len(frames), *layer.output_shape)) for f, layer in zip(fast, layers)]
    largest = np.zeros(len(layers))
    drive = snn_engine.make_first_layer_drive(layers[0], fast[0])  # layer 2's float32 input, as simulate computes it
    step_zero = np.zeros(len(frames), np.int32)
    for _, index, inputs, mem, _ in float64_steps(network, frames, time_steps):
        layer, f = layers[index], fast[index]
        # Layer 1's spikes, read as spike counts, are those that are still to come at step 0.
        current32 = (drive(inputs, step_zero) if index == 0 else
                     spiking_utils.weighted_input(layer.kind, f.kernel, layer.stride, inputs.astype(np.float32)))
        potential[index] = potential[index] + current32.numpy()
        exact = (mem - layer.bound) / layer.threshold
        largest[index] = max(largest[index], np.abs(potential[index] - exact).max())
    return largest, np.array([f.window for f in fast])


def add_simulation_flags(parser, precision, samples_help):
    """The flags of the SNN benchmarks (this one and profile_snn.py): the model file, the inputs, T."""
    parser.add_argument("--dataset", default="n_mnist", choices=DATASET_NAMES, help="default: %(default)s")
    parser.add_argument("--precision", default=precision, choices=["k0", "k1", "k2"], help="default: %(default)s")
    parser.add_argument("--data", type=pathlib.Path, default=None,
                        help="inputs: the test split, then training inputs, repeated to --samples "
                             f"(default: {shown(DEFAULT_DEMO_OUT)}, or {shown(data_sources.default_data('fashion_mnist'))})")
    parser.add_argument("--model-dir", type=pathlib.Path, default=None,
                        help="folder holding model_<dataset>.npz (default: <Model>/checkpoints/<precision>/)")
    parser.add_argument("--samples", type=positive_int, default=10_000, help=f"{samples_help} (default: %(default)s)")
    parser.add_argument("--time-steps", type=positive_int, default=None, help="T (default: the dataset's, 40 or 20)")


def resolve_simulation_flags(model, args):
    """The defaults of add_simulation_flags that depend on the dataset: the data file and T."""
    if args.data is None:
        args.data = DEFAULT_DEMO_OUT if args.dataset == "n_mnist" else data_sources.default_data(args.dataset)
    if args.time_steps is None:
        args.time_steps = DATASETS[args.dataset].time_steps[model]
    return args


def dataset_label(dataset):
    """The dataset in a performance.md row's name: nothing for N-MNIST (the rows before there were two), " Fashion-MNIST"."""
    return "" if dataset == "n_mnist" else f" {DATASETS[dataset].title}"


def load_network(model, args):
    """(params, network, frames, labels) named by the flags of add_simulation_flags; says what it simulates."""
    resolve_simulation_flags(model, args)
    model_dir = args.model_dir or paths.model_dir(model, args.precision, dataset=args.dataset)
    params = models.load_parameters(model_dir / paths.parameters_file(args.dataset), model,
                                    precision_to_k(args.precision), dataset=args.dataset)
    frames, labels = benchmark_frames(args.data, args.samples, args.dataset)
    print(f"{model} {args.precision} on {DATASETS[args.dataset].title} from {model_dir}, T = {args.time_steps}, "
          f"{args.samples} samples")
    return params, spiking_utils.convert(params), frames, labels


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet", choices=["lenet", "mlp"], help="default: %(default)s")
    add_simulation_flags(parser, "k1", "samples for the fast engine")
    parser.add_argument("--reference-samples", type=positive_int, default=400,
                        help="samples for the reference baseline (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="runs of the fast engine (default: %(default)s)")
    parser.add_argument(readme_rows.FLAG, action="store_true", help=readme_rows.FLAG_HELP)
    args = parser.parse_args(argv)
    if args.reference_samples % LOG_BATCH_SIZE or not 0 < args.reference_samples <= args.samples:
        raise UserError(f"--reference-samples must be a multiple of the log batch ({LOG_BATCH_SIZE}) "
                        f"and at most --samples, so that its log lines compare with whole batches")
    snn_engine.configure_threads()
    params, network, frames, labels = load_network(args.model, args)

    n_lines = -(-args.reference_samples // LOG_BATCH_SIZE)
    fast_times, peaks, fast_logs = [], [], []
    for run in range(1, args.repeats + 1):  # first, in a process where TensorFlow has done no other work
        reset_peak_memory()
        started = time.perf_counter()
        result = snn_engine.simulate(network, frames, args.time_steps, progress=False)
        fast_times.append(time.perf_counter() - started)
        peaks.append(peak_memory_gb())
        columns = log_columns(result, labels)
        fast_logs.append({name: values[:n_lines].reshape(-1) for name, values in columns.items()})
        print(f"fast engine run {run}: {fast_times[-1]:.1f} s, peak memory of the process {peaks[-1]:.2f} GB")

    subset = slice(0, args.reference_samples)
    started = time.perf_counter()
    reference = spiking_utils.simulate_reference(network, frames[subset], args.time_steps, progress=False)
    reference_logs = {name: values.reshape(-1) for name, values in log_columns(reference, labels[subset]).items()}
    reference_seconds = (time.perf_counter() - started) * args.samples / args.reference_samples
    print(f"reference float64 (§4 as written, batch 50): {reference_seconds:.1f} s for {args.samples} samples "
          f"(extrapolated from {args.reference_samples})")
    identical_logs = [all(np.array_equal(logs[name], reference_logs[name]) for name in reference_logs)
                      for logs in fast_logs]
    print(f"fast engine runs' logs identical to the reference's on the subset: {identical_logs}")
    fast_seconds, peak_gb = float(np.median(fast_times)), max(peaks)
    speedup = reference_seconds / fast_seconds
    active_steps = (result.spikes > 0).sum(axis=1).mean()
    print(f"samples spike on {active_steps:.1f} of {args.time_steps} steps on average")
    ours = settling_steps(columns["spike_num.txt"])  # the last run's logs, (batches, T)
    settling = (f"last step with a spike per log batch of {LOG_BATCH_SIZE}: mean {ours.mean():.1f}, "
                f"at most {ours.max()}")
    authors = authors_settling_steps(args.model, args.precision, args.time_steps, args.dataset)
    if authors is not None:
        settling += f" (the authors' logs on real N-MNIST: mean {authors.mean():.1f}, at most {authors.max()})"
    print(settling)
    decisions = result.float64_decisions
    neuron_steps = max(1, (result.spikes > 0).sum() * sum(layer.neurons for layer in network.layers[1:]))
    print(f"float32 decisions taken again in float64: {decisions['close_calls']} "
          f"({decisions['close_calls'] / neuron_steps:.1e} of the neuron updates of layers 2..L); float64 changed "
          f"{decisions['changed']} of them; exact ties (d within {snn_float64.TIE_MARGIN:g} theta of a threshold): "
          f"{decisions['ties']}")
    error, window = float32_potential_error(network, frames[subset], args.time_steps)
    print("largest float32 error of the potential v = (mem - b) / theta, layers 2..L (same subset): "
          + ", ".join(f"{e:.1e}" for e in error) + "; decision windows " + ", ".join(f"{w:.1e}" for w in window)
          + f" ({(window / np.maximum(error, 1e-30)).min():.0f}x the error or more)")
    print(f"fast engine, median of {args.repeats} runs: {fast_seconds:.1f} s, speed-up {speedup:.1f}x, "
          f"peak memory {peak_gb:.2f} GB; logs identical in every run: {all(identical_logs)}")
    targets = "–"
    # the task the targets are set for: LeNet, 10,000 samples, the dataset's T
    if args.model == "lenet" and args.samples == 10_000 and args.time_steps == DATASETS[args.dataset].time_steps["lenet"]:
        if args.dataset == "n_mnist":
            met = fast_seconds < TARGET_SECONDS and speedup >= TARGET_SPEEDUP and peak_gb < TARGET_PEAK_GB
            targets = (f"< {TARGET_SECONDS:.0f} s, ≥ {TARGET_SPEEDUP:.0f}×, < {TARGET_PEAK_GB:.0f} GB: "
                       f"**{'met' if met else 'NOT met'}**")
        else:
            targets = f"≥ {TARGET_SPEEDUP_FASHION:.0f}×: **{'met' if speedup >= TARGET_SPEEDUP_FASHION else 'NOT met'}**"
        print(f"targets ({targets.replace('*', '')})")
    if args.update_docs:
        readme_rows.update_row(
            f"SNN,{dataset_label(args.dataset)} {DISPLAY_NAMES[args.model]} {args.precision}, {args.samples:,} samples, T = {args.time_steps}",
            f"reference float64 simulator {reference_seconds:.1f} s (extrapolated from {args.reference_samples} samples, run after the fast engine); "
            f"fast engine {' / '.join(f'{t:.1f}' for t in fast_times)} s, median {fast_seconds:.1f} s: "
            f"**{speedup:.1f}× faster**; samples active on {active_steps:.1f} of {args.time_steps} steps on average (the reference "
            f"simulator always runs all {args.time_steps}); {settling}; peak memory {peak_gb:.2f} GB (whole process, TensorFlow included); logs identical "
            f"line by line in every run: {'yes' if all(identical_logs) else '**no**'}; {decisions['close_calls']:,} neuron updates "
            f"re-decided in float64 ({decisions['close_calls'] / neuron_steps:.1e} of all), {decisions['changed']} changed by it, "
            f"{decisions['ties']} exact ties; largest float32 error of v {error.max():.1e} θ, ≥ {(window / np.maximum(error, 1e-30)).min():.0f}× "
            f"inside the decision windows",
            targets)


if __name__ == "__main__":
    run_main(main)
