"""Fashion-MNIST: the four official IDX files and the dataset file (ALGORITHM.md §8).

- `read_idx`: one gzip-compressed IDX file, every header field and its length checked.
- `read_pair`: the images and labels of one official split ("train" or "t10k"), checked together.
- `build_dataset`: the four files -> `data/fashion_mnist.npz`, split as §8 says (`SIZES`); `summary`: its line.
- `load_fashion_mnist` / `network_inputs`: the checked dataset file, and the network inputs;
  `load_inputs`: what training.py and evaluation.py read (data_sources.py picks it for Fashion-MNIST).

Numpy only, so that the converter's --help is instant.
"""
import contextlib
import gzip
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from architectures import DATASETS
from cli import REPO_ROOT, UserError, atomic_path, load_npz_arrays, shown

SIDE = 28  # images are 28 x 28 pixels
CLASSES = 10
PIXEL_SCALE = DATASETS["fashion_mnist"].input_scale  # network input = pixel / 256, in [0, 255/256]
# IDX magic numbers: unsigned bytes (0x08) in 3 dimensions (images) or 1 (labels), the last byte
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801
FILES = {prefix: (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz") for prefix in ("train", "t10k")}
# §8: the ANNs train on the first 50,000 training images; the last 10,000 are the authors' validation
# set (only printed); the test set is the 10,000 t10k images. So the train files hold train + val.
SIZES = {"train": 50_000, "val": 10_000, "test": 10_000}
SPLITS = tuple(SIZES)
DEFAULT_DATA = REPO_ROOT / "data" / "fashion_mnist.npz"


@contextlib.contextmanager
def read_errors(path):
    """Turn what gzip and the file system raise while reading `path` into one-line UserErrors."""
    try:
        yield
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except gzip.BadGzipFile as error:  # not gzip at all, or a failed CRC check at the end
        raise UserError(f"{path}: not a readable gzip file ({error})") from None
    except EOFError:
        raise UserError(f"{path}: truncated (the gzip stream ends early)") from None
    except zlib.error as error:
        raise UserError(f"{path}: corrupt gzip data ({error})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from None


def read_idx(path, magic, count=None):
    """The uint8 array of one gzip-compressed IDX file: (N, 28, 28) images or (N,) labels.

    `magic` is IMAGE_MAGIC or LABEL_MAGIC; `count`, when given, is the N the file must hold, checked
    from the header before the data is read. The file must end exactly where the data ends.
    """
    what = "images" if magic == IMAGE_MAGIC else "labels"
    header_size = 4 * (1 + (magic & 0xFF))  # the magic number, then one int32 per dimension
    with read_errors(path), gzip.open(path, "rb") as handle:
        header = handle.read(header_size)
        if len(header) >= 4 and struct.unpack(">I", header[:4])[0] != magic:
            found = struct.unpack(">I", header[:4])[0]
            raise UserError(f"{path}: not an IDX file of {what} (magic number 0x{found:08x}, expected 0x{magic:08x})")
        if len(header) < header_size:
            raise UserError(f"{path}: truncated ({len(header)} bytes, less than the {header_size}-byte IDX header)")
        shape = struct.unpack(f">{header_size // 4 - 1}I", header[4:])
        if magic == IMAGE_MAGIC and shape[1:] != (SIDE, SIDE):
            raise UserError(f"{path}: images of {shape[1]} x {shape[2]} pixels, expected {SIDE} x {SIDE}")
        if count is not None and shape[0] != count:
            raise UserError(f"{path}: holds {shape[0]} {what}, expected {count}")
        data = np.empty(shape, dtype=np.uint8)
        size = handle.readinto(data.reshape(-1))
        if size < data.size:
            raise UserError(f"{path}: truncated (the header announces {shape[0]} {what}, {data.size} bytes of "
                            f"data; the file holds {size})")
        if handle.read(1):
            raise UserError(f"{path}: more bytes than the {shape[0]} {what} its header announces")
    if magic == LABEL_MAGIC and data.size and data.max() >= CLASSES:
        index = int(np.argmax(data >= CLASSES))
        raise UserError(f"{path}: label {data[index]} of sample {index} is outside 0..{CLASSES - 1}")
    return data


def read_pair(raw, prefix, count=None):
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of the official split `prefix` in the folder `raw`."""
    images_name, labels_name = FILES[prefix]
    images = read_idx(Path(raw) / images_name, IMAGE_MAGIC, count)
    labels = read_idx(Path(raw) / labels_name, LABEL_MAGIC, count)
    if len(labels) != len(images):
        raise UserError(f"{Path(raw) / labels_name}: holds {len(labels)} labels for the {len(images)} images "
                        f"of {images_name}")
    return images, labels


def build_dataset(raw, out, sizes=SIZES):
    """Read and check the four files in `raw`, split them (§8) and write `out` atomically.

    Returns the six arrays written. Nothing is written when any file is bad. `sizes` (tests pass
    small ones) gives the samples of each split: the train files hold train + val, the t10k files test.
    """
    x_train, y_train = read_pair(raw, "train", sizes["train"] + sizes["val"])
    x_test, y_test = read_pair(raw, "t10k", sizes["test"])
    first = sizes["train"]
    arrays = {"x_train": x_train[:first], "y_train": y_train[:first], "x_val": x_train[first:],
              "y_val": y_train[first:], "x_test": x_test, "y_test": y_test}
    with atomic_path(out, suffix=".npz") as temporary:
        np.savez(temporary, **arrays)  # uncompressed: a quick load for every later script
    return arrays


def summary(out, arrays):
    """One line: where the dataset went, samples per split and per class of the training split."""
    per_class = Counter(arrays["y_train"].tolist())
    counts = ", ".join(f"{split} {len(arrays[f'y_{split}'])}" for split in SPLITS)
    return (f"wrote {shown(out)}: {counts}; train per class "
            + " ".join(f"{label}:{per_class[label]}" for label in range(CLASSES)))


def load_fashion_mnist(path=DEFAULT_DATA):
    """The six arrays of the dataset file, checked: x_<split> uint8 (N, 28, 28), y_<split> uint8 (N,) in 0..9."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: data file not found (make it with `python preprocessing_fashion_mnist.py`)")
    arrays = load_npz_arrays(path, "Fashion-MNIST dataset")
    missing = [f"{axis}_{split}" for split in SPLITS for axis in "xy" if f"{axis}_{split}" not in arrays]
    if missing:
        raise UserError(f"{path}: missing array(s) {', '.join(missing)}")
    for split in SPLITS:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        for key, array in ((f"x_{split}", x), (f"y_{split}", y)):
            if array.dtype != np.uint8:
                raise UserError(f"{path}: {key} has dtype {array.dtype}, expected uint8")
        if x.ndim != 3 or x.shape[1:] != (SIDE, SIDE):
            raise UserError(f"{path}: x_{split} has shape {x.shape}, expected (N, {SIDE}, {SIDE})")
        if y.shape != (len(x),):
            raise UserError(f"{path}: y_{split} has shape {y.shape}, expected ({len(x)},)")
        if y.size and y.max() >= CLASSES:
            raise UserError(f"{path}: y_{split} holds labels outside 0..{CLASSES - 1}")
    return {f"{axis}_{split}": arrays[f"{axis}_{split}"] for split in SPLITS for axis in "xy"}


def network_inputs(images):
    """What the networks see: float32 (N, 28, 28, 1) = pixel / 256 (exact in float32)."""
    return (np.asarray(images, dtype=np.float32) / PIXEL_SCALE)[..., None]


def check_data_file(path):
    """UserError unless `path` is a file: the first check of the dataset file, made before any long import."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not the Fashion-MNIST dataset file (.npz)")
    if not path.is_file():
        raise UserError(f"{path}: data file not found (make it with `python preprocessing_fashion_mnist.py`)")


def load_inputs(path=DEFAULT_DATA, train_limit=None, test_limit=None):
    """Network inputs as n_mnist.load_frames gives them: (x_train, y_train, x_test, y_test).

    x: float32 (N, 28, 28, 1) = pixel / 256; y: int64. Training uses the train split only (the
    validation split is the authors' printout, §8), evaluation the test split. `*_limit` keeps the
    first N samples; 0 means that split is not needed.
    """
    arrays = load_fashion_mnist(path)

    def prepare(split, limit):
        x, y = arrays[f"x_{split}"][:limit], arrays[f"y_{split}"][:limit]
        if len(x) == 0 and limit != 0:
            raise UserError(f"{path}: the {split} split is empty")
        return network_inputs(x), y.astype(np.int64)

    return (*prepare("train", train_limit), *prepare("test", test_limit))
