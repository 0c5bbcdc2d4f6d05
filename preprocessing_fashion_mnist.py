"""Convert the four official Fashion-MNIST files (gzip-compressed IDX) into the dataset file.

    python preprocessing_fashion_mnist.py             # data/fashion_mnist/ if it holds them, else Debian's folder
    python preprocessing_fashion_mnist.py --raw DIR

Debian's package dataset-fashion-mnist installs the files in /usr/share/datasets/fashion-mnist/.
The training files are cut into the training and validation splits as ALGORITHM.md §8 says;
the t10k files are the test split.
"""
import argparse
from pathlib import Path

import fashion_mnist
from cli import REPO_ROOT, ArgumentParser, UserError, check_output_file, run_main, shown

LOCAL_RAW = REPO_ROOT / "data" / "fashion_mnist"
DEBIAN_RAW = Path("/usr/share/datasets/fashion-mnist")


def default_raw():
    """data/fashion_mnist/ when it holds the four files, otherwise Debian's folder."""
    names = [name for pair in fashion_mnist.FILES.values() for name in pair]
    return LOCAL_RAW if all((LOCAL_RAW / name).is_file() for name in names) else DEBIAN_RAW


def parse_args(argv=None):
    """The command line; see the module docstring."""
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, default=None,
                        help=f"folder with the four .gz files (default: {shown(LOCAL_RAW)}/ if it holds them, "
                             f"otherwise {DEBIAN_RAW}/)")
    parser.add_argument("--out", type=Path, default=fashion_mnist.DEFAULT_DATA,
                        help=f"dataset file to write (default: {shown(fashion_mnist.DEFAULT_DATA)})")
    return parser.parse_args(argv)


def main(argv=None):
    """Check and convert the four files; print the one-line summary."""
    args = parse_args(argv)
    out = check_output_file(args.out)
    raw = args.raw or default_raw()
    if not raw.is_dir():
        raise UserError(f"{raw}: folder not found (put the four .gz files in {shown(LOCAL_RAW)}/, install "
                        "Debian's dataset-fashion-mnist, or give --raw)")
    print(fashion_mnist.summary(out, fashion_mnist.build_dataset(raw, out)))


if __name__ == "__main__":
    run_main(main)
