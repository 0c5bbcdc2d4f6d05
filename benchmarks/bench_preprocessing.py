"""Preprocessing speed: decoding recordings and counting ON events, in files per second.

The project's path (`preprocessing_n_mnist.convert_split`: n_mnist.open_split + on_event_frames,
two threads, chunks of 256 recordings, then `n_mnist.save_frames` writing the frame .npz) runs on
every file, from a folder and from a zip archive; a per-event Python loop, the way the authors'
MATLAB converter walked the events, runs on a subset in the same run. Target: 10,000 files/s in
one process, i.e. the 70,000 N-MNIST files in under 10 s, the frame file written included.

    python benchmarks/bench_preprocessing.py
    python benchmarks/bench_preprocessing.py --files 5000 --baseline-files 100
"""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root

import argparse
import tempfile
import time
import zipfile
from itertools import islice
from pathlib import Path

import numpy as np

import n_mnist
import saccade_emulator
from benchmarks import readme_rows
from cli import ArgumentParser, positive_int, run_main
from preprocessing_n_mnist import convert_split

TARGET_FILES_PER_SECOND = 10_000
N_DATASET_FILES = 70_000
DEFAULT_FILES = 2_000
DEFAULT_BASELINE_FILES = 200
DEFAULT_REPEATS = 3
DISTINCT_RECORDINGS = 40  # emulated once, then written under many ids: realistic bytes, quick set-up


def write_benchmark_dataset(root, n_files, seed=0):
    """root/Train/<digit>/<id>.bin (folder form) and root/zip/Train.zip (members Train/<digit>/<id>.bin)."""
    images, labels = saccade_emulator.demo_source_images()
    rng = np.random.default_rng(seed)
    sensor = saccade_emulator.make_sensor(rng)
    chosen = rng.choice(len(images), DISTINCT_RECORDINGS, replace=False)
    recordings = [n_mnist.encode_events(events) for events in saccade_emulator.emulate_recordings(images[chosen], rng, sensor)]
    for digit in n_mnist.DIGITS:
        (root / "Train" / digit).mkdir(parents=True, exist_ok=True)
    (root / "zip").mkdir()
    with zipfile.ZipFile(root / "zip" / "Train.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for digit in n_mnist.DIGITS:
            archive.writestr(f"Train/{digit}/", b"")
        for file_id, source in zip(rng.permutation(n_files) + 1, np.arange(n_files) % DISTINCT_RECORDINGS):
            name = f"Train/{labels[chosen[source]]}/{file_id:05d}.bin"
            (root / name).write_bytes(recordings[source])
            archive.writestr(name, recordings[source])
    return sum(len(data) for data in recordings) / len(recordings) / n_mnist.EVENT_BYTES


def per_event_loop(data):
    """The baseline: walk the 5-byte events one at a time in Python, as the authors' MATLAB converter
    did, doing the project path's work: skip overflow markers, check coordinates, count ON events."""
    frame = [[0] * n_mnist.SENSOR_SIZE for _ in range(n_mnist.SENSOR_SIZE)]
    for start in range(0, len(data), n_mnist.EVENT_BYTES):
        x, y, third = data[start], data[start + 1], data[start + 2]
        if y == n_mnist.OVERFLOW_MARKER_Y:
            continue
        if x >= n_mnist.SENSOR_SIZE or y >= n_mnist.SENSOR_SIZE:
            raise ValueError(f"record {start // n_mnist.EVENT_BYTES} is off the sensor")
        if third >> 7:
            frame[y][x] += 1
    return frame


def convert_and_write(raw, out):
    """What preprocessing_n_mnist.convert_dataset does for one split: frames counted, then written.
    The zip directory is parsed again in every run, as a fresh conversion would."""
    n_mnist.forget_zip_directories()
    frames, labels, _, _ = convert_split(raw, "Train", progress=False)
    n_mnist.save_frames(out, frames, labels, frames[:0], labels[:0])


def best_seconds(task, repeats):
    """Fastest of `repeats` runs of task() (the least disturbed by other processes)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        task()
        times.append(time.perf_counter() - started)
    return min(times)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=positive_int, default=DEFAULT_FILES, help="recordings to convert (default: %(default)s)")
    parser.add_argument("--baseline-files", type=positive_int, default=DEFAULT_BASELINE_FILES,
                        help="recordings for the per-event loop (default: %(default)s)")
    parser.add_argument("--repeats", type=positive_int, default=DEFAULT_REPEATS, help="timed runs; the best counts (default: %(default)s)")
    parser.add_argument(readme_rows.FLAG, action="store_true", help=readme_rows.FLAG_HELP)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        events_per_file = write_benchmark_dataset(root, args.files)
        print(f"{args.files:,} generated recordings, {events_per_file:,.0f} events each on average, warm cache")
        convert_split(root, "Train", progress=False)  # warm the file cache (and check the data)

        out = root / "frames.npz"
        seconds = {form: best_seconds(lambda: convert_and_write(raw, out), args.repeats)
                   for form, raw in (("folder", root), ("zip", root / "zip"))}

        baseline_files = min(args.baseline_files, args.files)
        baseline_seconds = best_seconds(lambda: [
            per_event_loop(data) for _, _, data in islice(n_mnist.iter_recordings(root, "Train"), baseline_files)
        ], 1)

    baseline_rate = baseline_files / baseline_seconds
    for form, elapsed in seconds.items():
        rate = args.files / elapsed
        print(f"project path (frame file written), {form:<6}: {rate:>9,.0f} files/s ({args.files:,} files in {elapsed:.2f} s; "
              f"{N_DATASET_FILES:,} files in {N_DATASET_FILES / rate:.1f} s)")
    print(f"per-event loop (counting only)       : {baseline_rate:>9,.0f} files/s ({baseline_files:,} files in {baseline_seconds:.2f} s; "
          f"{N_DATASET_FILES:,} files in {N_DATASET_FILES / baseline_rate:.0f} s)")
    rates = {form: args.files / elapsed for form, elapsed in seconds.items()}
    print(f"speed-up over the per-event loop: {rates['folder'] / baseline_rate:,.0f}x (folder), "
          f"{rates['zip'] / baseline_rate:,.0f}x (zip)")
    verdicts = {form: "met" if rate >= TARGET_FILES_PER_SECOND else "NOT met" for form, rate in rates.items()}
    for form, verdict in verdicts.items():
        print(f"target >= {TARGET_FILES_PER_SECOND:,} files/s in one process, {form} form: {verdict}")
    if args.update_docs:
        readme_rows.update_row(
            "decode + count ON events + write the frame file",
            f"from folders {rates['folder']:,.0f} files/s (all {N_DATASET_FILES:,} files in "
            f"{N_DATASET_FILES / rates['folder']:.1f} s), straight from the zips {rates['zip']:,.0f} files/s "
            f"({N_DATASET_FILES / rates['zip']:.1f} s), best of {args.repeats} runs each, the .npz written included; a per-event Python loop counting "
            f"alone (markers skipped, coordinates checked, ON events counted) in the same run: "
            f"{baseline_rate:,.0f} files/s ({rates['folder'] / baseline_rate:.0f}x / {rates['zip'] / baseline_rate:.0f}x slower)",
            f"≥ {TARGET_FILES_PER_SECOND:,} files/s: folders **{verdicts['folder']}**, zips **{verdicts['zip']}**")


if __name__ == "__main__":
    run_main(main)
