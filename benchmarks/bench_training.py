"""Training speed: seconds per epoch of the quantized networks (k = 1) against full precision, in one run.

The project's path: models.build_model, compiled as in training.train (Adam 1e-4, sparse cross-entropy
on logits, accuracy), fed by training.shuffled_batches, batch 200, on 60,000 frames shaped like
N-MNIST's (random Poisson ON counts / 32 and random labels, or with --data the demo's training frames
repeated). Per model, one warm-up epoch per precision (tracing) is not timed; then the precisions
alternate epoch by epoch (full, k1, full, k1, ...) and the fastest epoch of each counts.
Target: the quantizer adds at most 15 % to an epoch.

    python benchmarks/bench_training.py
    python benchmarks/bench_training.py --models lenet --samples 10000 --epochs 3 --data
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import argparse
import math
import time

import keras
import numpy as np

import models
import training
from architectures import DISPLAY_NAMES, MODEL_NAMES, precision_to_k
from benchmarks import readme_rows
from cli import REPO_ROOT, ArgumentParser, UserError, run_main, shown
from n_mnist import FRAME_SCALE, SENSOR_SIZE, load_frames
from preprocessing_n_mnist import DEFAULT_DEMO_OUT

TARGET_OVERHEAD = 0.15
PRECISIONS = ("full", "k1")
MEAN_ON_COUNT = 1.9  # ON events per pixel, about the demo dataset's mean


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each epoch, measured as training.EpochCheckpoint measures the log's `seconds`."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.started


def benchmark_frames(data, n_samples, seed):
    """(N, 34, 34, 1) float32 frames and int64 labels: random, or `data`'s training frames repeated."""
    if data is None:
        rng = np.random.default_rng(seed)
        frames = rng.poisson(MEAN_ON_COUNT, (n_samples, SENSOR_SIZE, SENSOR_SIZE, 1)).astype(np.float32)
        frames /= FRAME_SCALE  # in place: 60,000 frames are 0.28 GB
        return frames, rng.integers(0, 10, n_samples)
    x_train, y_train, _, _ = load_frames(data, test_limit=0)
    rows = np.arange(n_samples) % len(x_train)
    return x_train[rows], y_train[rows]


def compiled_model(model, precision):
    """The Keras model exactly as training.train builds and compiles it."""
    keras_model = models.build_model(model, precision_to_k(precision))
    keras_model.compile(optimizer=keras.optimizers.Adam(training.LEARNING_RATE),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return keras_model


def epoch_seconds(keras_model, x, y, epoch):
    """Train one epoch (epoch `epoch` of a run) the way training.train feeds it; return its seconds."""
    timer = EpochTimer()
    batches = training.shuffled_batches(x, y, training.BATCH_SIZE, training.SEED, epoch, epoch + 1)
    keras_model.fit(batches, epochs=epoch + 1, initial_epoch=epoch, verbose=0, shuffle=False,
                    steps_per_epoch=math.ceil(len(x) / training.BATCH_SIZE), callbacks=[timer])
    return timer.seconds


def hours_minutes(seconds):
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), help="default: %(default)s")
    parser.add_argument("--samples", type=int, default=60_000, help="training samples per epoch (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per precision, after one warm-up (default: %(default)s)")
    parser.add_argument("--data", type=pathlib.Path, nargs="?", const=REPO_ROOT / DEFAULT_DEMO_OUT, default=None,
                        help=f"repeat this dataset's training frames instead of random ones (bare --data: {shown(DEFAULT_DEMO_OUT)})")
    parser.add_argument(readme_rows.FLAG, action="store_true", help=readme_rows.FLAG_HELP)
    args = parser.parse_args(argv)
    for flag in ("samples", "epochs"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    x, y = benchmark_frames(args.data, args.samples, training.SEED)
    source = f"training frames of {args.data}, repeated" if args.data else f"random frames (Poisson ON counts / {FRAME_SCALE:.0f})"
    print(f"{args.samples:,} {source}, batch {training.BATCH_SIZE}, {math.ceil(args.samples / training.BATCH_SIZE)} steps "
          f"per epoch; fastest of {args.epochs} timed epoch(s) after 1 warm-up epoch, precisions interleaved")
    results = {}  # model -> (fastest epoch per precision, quantizer overhead, verdict)
    for model in args.models:
        keras.backend.clear_session()
        keras.utils.set_random_seed(training.SEED)
        networks = {precision: compiled_model(model, precision) for precision in PRECISIONS}
        for precision, network in networks.items():
            epoch_seconds(network, x, y, 0)  # warm-up: tracing and compilation
        times = {precision: [] for precision in PRECISIONS}
        for epoch in range(1, args.epochs + 1):
            for precision, network in networks.items():
                times[precision].append(epoch_seconds(network, x, y, epoch))
        best = {precision: min(seconds) for precision, seconds in times.items()}
        for precision in PRECISIONS:
            print(f"{model:<5} {precision:<4}: {best[precision]:7.2f} s/epoch "
                  f"(epochs: {', '.join(f'{s:.2f}' for s in times[precision])}); "
                  f"{training.EPOCHS} epochs: {hours_minutes(best[precision] * training.EPOCHS)}")
        overhead = best["k1"] / best["full"] - 1
        verdict = "met" if overhead <= TARGET_OVERHEAD else "NOT met"
        print(f"{model:<5} quantizer overhead: {100 * overhead:+.1f} % (target <= {100 * TARGET_OVERHEAD:.0f} %: {verdict})")
        results[model] = (best, overhead, verdict)
    if args.update_docs:
        readme_rows.update_row(
            f"training epoch, {args.samples:,} frames",
            "; ".join(f"{DISPLAY_NAMES[model]} {best['full']:.2f} s full precision, {best['k1']:.2f} s k = 1 "
                      f"(quantizer {100 * overhead:+.1f} %; {training.EPOCHS} epochs at k = 1: {hours_minutes(best['k1'] * training.EPOCHS)})"
                      for model, (best, overhead, _) in results.items())
            + f"; fastest of {args.epochs} epochs each, precisions interleaved",
            f"quantizer ≤ +{100 * TARGET_OVERHEAD:.0f} %: " + ", ".join(
                f"{DISPLAY_NAMES[model]} **{verdict}**" for model, (_, _, verdict) in results.items()))


if __name__ == "__main__":
    run_main(main)
