"""Convert N-MNIST recordings into the frame dataset (ON events counted per pixel).

Real data (a folder holding Train/ and Test/, or Train.zip and Test.zip, read without extracting):
    python preprocessing_n_mnist.py --raw data/N-MNIST
Offline demo (emulated recordings of scikit-learn's digits, no download):
    python preprocessing_n_mnist.py --demo
"""
import argparse
import hashlib
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

import n_mnist
from cli import REPO_ROOT, ArgumentParser, UserError, check_output_file, run_main, shown

DEFAULT_RAW = REPO_ROOT / "data" / "N-MNIST"
DEFAULT_DEMO_RAW = REPO_ROOT / "data" / "n_mnist_demo"
DEFAULT_DEMO_OUT = REPO_ROOT / "data" / "n_mnist_demo.npz"
DEFAULT_DEMO_SEED = 0
# Conversion threads. Reading files, inflating zip members and numpy's passes over a whole chunk
# release Python's lock, so two threads convert side by side (bench_preprocessing.py).
WORKERS = 2
CHUNK_RECORDINGS = 256  # recordings per task of a conversion thread


def is_demo_file(path):
    """True for the demo's frame dataset, recognised by its file name wherever it lies."""
    return Path(path).name == DEFAULT_DEMO_OUT.name


def file_md5(path, chunk_bytes=1 << 22):
    """Hex MD5 of a file, read in 4 MB chunks (the zips are about 1 GB)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def check_archive_md5(raw):
    """Warn (never fail) when Train.zip / Test.zip differ from the published MD5 sums; returns the warnings."""
    warnings = []
    for archive, expected in n_mnist.PUBLISHED_MD5.items():
        path = Path(raw) / archive
        if path.is_file() and not (Path(raw) / archive.removesuffix(".zip")).is_dir():
            actual = file_md5(path)
            if actual != expected:
                warnings.append(f"warning: {path}: MD5 {actual} differs from the published {expected}")
                print(warnings[-1], file=sys.stderr)
    return warnings


def convert_split(raw, split, skip_bad=False, progress=True, listing=None, workers=WORKERS):
    """Frames and labels of one split: uint16 (N, 34, 34), uint8 (N,), plus per-sample event counts.

    Returns (frames, labels, events_per_sample, n_skipped). `listing`: n_mnist.list_recordings(raw,
    split), when the caller has it already. `workers` threads each read a chunk of recordings and
    count its ON events in one pass (n_mnist.on_event_frames).
    """
    kind, source, entries = listing or n_mnist.list_recordings(raw, split)
    frames = np.zeros((len(entries), n_mnist.SENSOR_SIZE, n_mnist.SENSOR_SIZE), dtype=np.uint16)
    events_per_sample = np.zeros(len(entries), dtype=np.int64)
    usable = np.ones(len(entries), dtype=bool)

    with n_mnist.open_split(kind, source) as read, ThreadPoolExecutor(workers) as pool:

        def convert_chunk(first, stop):  # -> [UserError] of the bad recordings among entries[first:stop], in order
            recordings, names, positions, errors = [], [], [], {}
            for index in range(first, stop):
                name = n_mnist.display_name(kind, source, entries[index][1])
                try:
                    recordings.append(read(entries[index][1]))
                    names.append(name)
                    positions.append(index)
                except UserError as error:
                    errors[index] = error
            chunk_frames, chunk_events, bad = n_mnist.on_event_frames(recordings, names)
            frames[positions], events_per_sample[positions] = chunk_frames, chunk_events
            errors.update({positions[at]: error for at, error in bad.items()})
            usable[list(errors)] = False
            return [errors[index] for index in sorted(errors)]

        chunks = [(first, min(first + CHUNK_RECORDINGS, len(entries))) for first in range(0, len(entries), CHUNK_RECORDINGS)]
        futures = []
        try:
            futures += [pool.submit(convert_chunk, first, stop) for first, stop in chunks]
            with tqdm(total=len(entries), desc=split, unit="file", disable=not progress) as bar:
                for future, (first, stop) in zip(futures, chunks):  # in file order: the first bad file is reported
                    for error in future.result():
                        if not skip_bad:
                            raise error
                        tqdm.write(f"skipped {error}", file=sys.stderr)
                    bar.update(stop - first)
        finally:
            for future in futures:
                future.cancel()  # after an error or Ctrl-C, start no further chunk
    if not usable.any():
        raise UserError(f"{raw}: the {split} split holds no usable recordings")
    labels = np.array([label for label, _ in entries], dtype=np.uint8)
    return frames[usable], labels[usable], events_per_sample[usable], int((~usable).sum())


def convert_dataset(raw, out, skip_bad=False, progress=True):
    """Convert both splits of `raw` and write `out` atomically; returns the summary text.

    Both splits are listed (and their folder structure checked) before any recording is read.
    """
    try:
        listings = {split: n_mnist.list_recordings(raw, split) for split in n_mnist.SPLITS}
        check_archive_md5(raw)
        results = {split: convert_split(raw, split, skip_bad, progress, listings[split]) for split in n_mnist.SPLITS}
    finally:
        n_mnist.forget_zip_directories()  # some 20 MB for N-MNIST's 70,000 members, not needed any more
    (x_train, y_train, ev_train, skip_train), (x_test, y_test, ev_test, skip_test) = results.values()
    n_mnist.save_frames(out, x_train, y_train, x_test, y_test)
    lines = [f"wrote {out}"]
    for split, (frames, labels, events, skipped) in results.items():
        per_digit = Counter(labels.tolist())
        lines.append(
            f"{split}: {len(labels)} samples"
            + (f" ({skipped} bad recordings skipped)" if skip_bad else "")
            + f"; per digit {' '.join(f'{d}:{per_digit[d]}' for d in range(10))}"
            + f"; events per sample mean {events.mean():.0f} (min {events.min()}, max {events.max()})"
            + f"; ON count per pixel peak mean {frames.reshape(len(frames), -1).max(1).mean():.1f}"
        )
    return "\n".join(lines)


def build_demo(out, raw=DEFAULT_DEMO_RAW, seed=DEFAULT_DEMO_SEED, progress=True, max_images=None):
    """Emulate recordings of scikit-learn's digits into `raw`, then convert them like real data.

    `max_images` uses only the first source images (quick tests); the summary compares the demo
    recordings with the real N-MNIST sample when ../shared/data/nmnist_real_sample/ exists.
    """
    import saccade_emulator  # only the demo needs scikit-learn

    summary = saccade_emulator.write_demo_recordings(raw, seed=seed, progress=progress, max_images=max_images)
    return summary + "\n" + convert_dataset(raw, out, progress=progress)


def parse_args(argv=None):
    """The command line; see the module docstring."""
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=None,
                        help=f"folder with Train/ and Test/ (digit sub-folders of .bin files) or Train.zip and Test.zip (default: {shown(DEFAULT_RAW)})")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"frame dataset to write (default: {shown(n_mnist.DEFAULT_DATA)}, or {shown(DEFAULT_DEMO_OUT)} with --demo)")
    parser.add_argument("--demo", action="store_true",
                        help=f"emulate recordings of scikit-learn's digits into {shown(DEFAULT_DEMO_RAW)}/ and convert those")
    parser.add_argument("--seed", type=int, default=DEFAULT_DEMO_SEED, help="demo emulator seed (default: %(default)s)")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad recordings (counted in the summary) instead of stopping")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None):
    """Convert --raw (or emulate and convert the demo) into the frame dataset; print the summary."""
    args = parse_args(argv)
    out = check_output_file(args.out or (DEFAULT_DEMO_OUT if args.demo else n_mnist.DEFAULT_DATA))
    if args.demo:
        if args.raw is not None or args.skip_bad:
            raise UserError("--demo emulates its own recordings: --raw and --skip-bad do not apply to it")
        if args.seed < 0:
            raise UserError(f"--seed must be at least 0, got {args.seed}")
        print(build_demo(out, seed=args.seed, progress=not args.quiet))
    else:
        raw = args.raw or DEFAULT_RAW
        if not raw.is_dir():
            raise UserError(f"{raw}: folder not found (download N-MNIST there, or run with --demo)")
        print(convert_dataset(raw, out, args.skip_bad, progress=not args.quiet))


if __name__ == "__main__":
    run_main(main)
