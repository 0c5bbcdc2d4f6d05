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
from pathlib import Path

import numpy as np
from tqdm import tqdm

import n_mnist
from cli import UserError, run_main

DEFAULT_RAW = Path("data") / "N-MNIST"
DEFAULT_DEMO_RAW = Path("data") / "n_mnist_demo"
DEFAULT_DEMO_OUT = Path("data") / "n_mnist_demo.npz"
DEFAULT_DEMO_SEED = 0


def file_md5(path, chunk_bytes=1 << 22):
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def check_archive_md5(raw):
    """Warn (never fail) when Train.zip / Test.zip differ from the published MD5 sums."""
    for archive, expected in n_mnist.PUBLISHED_MD5.items():
        path = Path(raw) / archive
        if path.is_file() and not (Path(raw) / archive.removesuffix(".zip")).is_dir():
            actual = file_md5(path)
            if actual != expected:
                print(f"warning: {path}: MD5 {actual} differs from the published {expected}", file=sys.stderr)


def convert_split(raw, split, skip_bad=False, progress=True):
    """Frames and labels of one split: uint16 (N, 34, 34), uint8 (N,), plus per-sample event counts.

    Returns (frames, labels, events_per_sample, n_skipped).
    """
    listing = n_mnist.list_recordings(raw, split)
    entries = listing[2]
    frames = np.zeros((len(entries), n_mnist.SENSOR_SIZE, n_mnist.SENSOR_SIZE), dtype=np.uint16)
    labels = np.zeros(len(entries), dtype=np.uint8)
    events_per_sample = np.zeros(len(entries), dtype=np.int64)
    kept = skipped = 0
    recordings = n_mnist.iter_recordings(raw, split, listing)
    for label, name, data in tqdm(recordings, total=len(entries), desc=split, unit="file", disable=not progress):
        try:
            events = n_mnist.decode_events(data, name=name)
        except UserError as error:
            if not skip_bad:
                raise
            print(f"skipped {error}", file=sys.stderr)
            skipped += 1
            continue
        frames[kept] = n_mnist.on_event_frame(events)
        labels[kept] = label
        events_per_sample[kept] = len(events)
        kept += 1
    if kept == 0:
        raise UserError(f"{raw}: the {split} split holds no usable recordings")
    return frames[:kept], labels[:kept], events_per_sample[:kept], skipped


def convert_dataset(raw, out, skip_bad=False, progress=True):
    """Convert both splits of `raw` and write `out` atomically; returns the summary text."""
    check_archive_md5(raw)
    results = {split: convert_split(raw, split, skip_bad, progress) for split in n_mnist.SPLITS}
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


def build_demo(out, raw=DEFAULT_DEMO_RAW, seed=DEFAULT_DEMO_SEED, progress=True):
    """Emulate recordings of scikit-learn's digits into `raw`, then convert them like real data."""
    import saccade_emulator  # only the demo needs scikit-learn

    summary = saccade_emulator.write_demo_recordings(raw, seed=seed, progress=progress)
    return summary + "\n" + convert_dataset(raw, out, progress=progress)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW,
                        help="folder with Train/ and Test/ (digit sub-folders of .bin files) or Train.zip and Test.zip (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"frame dataset to write (default: {n_mnist.DEFAULT_DATA}, or {DEFAULT_DEMO_OUT} with --demo)")
    parser.add_argument("--demo", action="store_true",
                        help=f"emulate recordings of scikit-learn's digits into {DEFAULT_DEMO_RAW}/ and convert those")
    parser.add_argument("--seed", type=int, default=DEFAULT_DEMO_SEED, help="demo emulator seed (default: %(default)s)")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad recordings (counted in the summary) instead of stopping")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.demo:
        print(build_demo(args.out or DEFAULT_DEMO_OUT, seed=args.seed, progress=not args.quiet))
    else:
        if not args.raw.is_dir():
            raise UserError(f"{args.raw}: folder not found (download N-MNIST there, or run with --demo)")
        print(convert_dataset(args.raw, args.out or n_mnist.DEFAULT_DATA, args.skip_bad, progress=not args.quiet))


if __name__ == "__main__":
    run_main(main)
