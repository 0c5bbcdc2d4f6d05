"""The Fashion-MNIST reader and converter (ALGORITHM.md §8).

Every IDX file here is generated (CI has no Debian package): the reader on hand-built bytes, each
kind of bad file, the §8 split in a small-count mode and at the real sizes, the loader's checks,
the network inputs, and the script through its command line.
"""
import gzip
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import fashion_mnist
import preprocessing_fashion_mnist
from cli import UserError
from conftest import REPO, assert_one_line_error, run_script

SMALL = {"train": 6, "val": 3, "test": 4}
TRAIN_IMAGES, TRAIN_LABELS = fashion_mnist.FILES["train"]
TEST_IMAGES, TEST_LABELS = fashion_mnist.FILES["t10k"]


# ---------------------------------------------------------------------------------------------
# Helpers: IDX files written independently of the reader


def idx_bytes(array):
    """An uncompressed IDX file of a uint8 array: magic 0x0000080<ndim>, the sizes (big-endian), the bytes."""
    return struct.pack(f">{1 + array.ndim}I", 0x800 + array.ndim, *array.shape) + array.tobytes()


def gz(payload):
    return gzip.compress(payload, compresslevel=1)


def numbered_split(n, first=0):
    """Images whose first pixels hold their index (low, high byte), labels index % 10: the order shows."""
    index = np.arange(first, first + n)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = index % 256, index // 256 % 256
    return images, (index % 10).astype(np.uint8)


def write_raw(folder, n_train, n_test):
    """The four .gz files in `folder`; returns (train images, train labels, test images, test labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test = numbered_split(n_train), numbered_split(n_test, first=1000)
    for (images_name, labels_name), (images, labels) in zip(fashion_mnist.FILES.values(), (train, test)):
        (folder / images_name).write_bytes(gz(idx_bytes(images)))
        (folder / labels_name).write_bytes(gz(idx_bytes(labels)))
    return *train, *test


@pytest.fixture
def small_raw(tmp_path):
    raw = tmp_path / "raw"
    write_raw(raw, SMALL["train"] + SMALL["val"], SMALL["test"])
    return raw


@pytest.fixture(scope="module")
def full_raw(tmp_path_factory):
    """The four files at the real sizes (60,000 and 10,000), numbered zero images."""
    raw = tmp_path_factory.mktemp("fashion_mnist")
    write_raw(raw, 60_000, 10_000)
    return raw


# ---------------------------------------------------------------------------------------------
# The reader


def test_reader_reads_every_header_field_and_the_data_row_major(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    header = bytes.fromhex("00000803") + bytes.fromhex("00000003") + bytes.fromhex("0000001c") * 2
    (tmp_path / "images.gz").write_bytes(gzip.compress(header + images.tobytes()))
    (tmp_path / "labels.gz").write_bytes(gzip.compress(bytes.fromhex("00000801 00000003 000907")))

    read = fashion_mnist.read_idx(tmp_path / "images.gz", fashion_mnist.IMAGE_MAGIC, count=3)
    assert read.dtype == np.uint8 and read.shape == (3, 28, 28)
    np.testing.assert_array_equal(read, images)
    assert read[1, 0, 1] == images.tobytes()[784 + 1]  # [sample, row, column], row-major
    labels = fashion_mnist.read_idx(tmp_path / "labels.gz", fashion_mnist.LABEL_MAGIC)
    assert labels.dtype == np.uint8 and labels.tolist() == [0, 9, 7]


IMAGES_9, LABELS_9 = numbered_split(9)  # what the train pair holds in the SMALL mode
# (file, its bytes, a fragment of the error)
BAD_FILES = [
    (TRAIN_LABELS, None, "file not found"),
    (TRAIN_IMAGES, idx_bytes(IMAGES_9), "not a readable gzip file"),
    (TRAIN_IMAGES, gz(b"<html>Not Found</html>"), "not an IDX file of images"),
    (TRAIN_IMAGES, gz(idx_bytes(LABELS_9)), "magic number 0x00000801, expected 0x00000803"),
    (TRAIN_LABELS, gz(idx_bytes(IMAGES_9)), "magic number 0x00000803, expected 0x00000801"),
    (TRAIN_IMAGES, gz(idx_bytes(IMAGES_9))[:-30], "truncated (the gzip stream ends early)"),
    (TRAIN_IMAGES, gz(idx_bytes(IMAGES_9)[:-1]), "truncated (the header announces 9 images"),
    (TRAIN_IMAGES, gz(bytes.fromhex("00000803 00000009")), "truncated (8 bytes"),
    (TRAIN_IMAGES, gz(idx_bytes(IMAGES_9) + b"\0"), "more bytes than the 9 images"),
    (TRAIN_IMAGES, gz(idx_bytes(np.zeros((9, 32, 32), np.uint8))), "images of 32 x 32 pixels"),
    (TRAIN_LABELS, gz(idx_bytes(np.array([0, 1, 2, 3, 10, 5, 6, 7, 8], np.uint8))), "label 10 of sample 4"),
    (TRAIN_LABELS, gz(idx_bytes(LABELS_9[:3])), "holds 3 labels, expected 9"),
    (TEST_IMAGES, gz(idx_bytes(IMAGES_9[:3])), "holds 3 images, expected 4"),
]


@pytest.mark.parametrize("name,content,fragment", BAD_FILES)
def test_each_bad_file_is_one_error_naming_it_and_nothing_is_written(small_raw, name, content, fragment):
    if content is None:
        (small_raw / name).unlink()
    else:
        (small_raw / name).write_bytes(content)
    out = small_raw.parent / "fashion_mnist.npz"
    out.write_bytes(b"previous dataset")
    with pytest.raises(UserError) as raised:
        fashion_mnist.build_dataset(small_raw, out, SMALL)
    message = str(raised.value)
    assert message.startswith(str(small_raw / name) + ": ") and fragment in message and "\n" not in message
    assert out.read_bytes() == b"previous dataset"
    assert sorted(path.name for path in small_raw.parent.iterdir()) == ["fashion_mnist.npz", "raw"]  # no temporary


def test_images_and_labels_that_disagree_are_refused(small_raw):
    (small_raw / TRAIN_LABELS).write_bytes(gz(idx_bytes(LABELS_9[:3])))
    with pytest.raises(UserError, match=f"{TRAIN_LABELS}: holds 3 labels for the 9 images of {TRAIN_IMAGES}"):
        fashion_mnist.read_pair(small_raw, "train")  # no expected count: the pair is checked against itself


# ---------------------------------------------------------------------------------------------
# The split (§8) and the dataset file


def test_the_split_keeps_the_first_training_images_for_training_and_the_last_for_validation(tmp_path):
    train_images, train_labels, test_images, test_labels = write_raw(tmp_path / "raw", 9, 4)
    out = tmp_path / "data" / "fashion_mnist.npz"
    fashion_mnist.build_dataset(tmp_path / "raw", out, SMALL)
    arrays = fashion_mnist.load_fashion_mnist(out)
    assert list(arrays) == ["x_train", "y_train", "x_val", "y_val", "x_test", "y_test"]
    expected = {"x_train": train_images[:6], "y_train": train_labels[:6], "x_val": train_images[6:],
                "y_val": train_labels[6:], "x_test": test_images, "y_test": test_labels}
    for key, array in expected.items():
        assert arrays[key].dtype == np.uint8
        np.testing.assert_array_equal(arrays[key], array, err_msg=key)


def test_the_real_sizes_through_the_command_line(full_raw, tmp_path):
    out = tmp_path / "fashion_mnist.npz"
    completed = run_script("preprocessing_fashion_mnist.py", "--raw", full_raw, "--out", out, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count("\n") == 1, completed.stdout
    assert "train 50000, val 10000, test 10000" in completed.stdout
    assert "train per class 0:5000 1:5000" in completed.stdout and "9:5000" in completed.stdout
    arrays = fashion_mnist.load_fashion_mnist(out)
    assert {key: array.shape for key, array in arrays.items()} == {
        "x_train": (50000, 28, 28), "y_train": (50000,), "x_val": (10000, 28, 28), "y_val": (10000,),
        "x_test": (10000, 28, 28), "y_test": (10000,)}
    for key, first, stop in (("x_train", 0, 50000), ("x_val", 50000, 60000), ("x_test", 1000, 11000)):
        marks = arrays[key][:, 0, 0] + 256 * arrays[key][:, 0, 1].astype(int)  # numbered_split's index
        np.testing.assert_array_equal(marks, np.arange(first, stop), err_msg=key)


def test_network_inputs_are_pixel_over_256_with_a_channel_axis():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 3, 4], images[1, 27, 27], images[1, 0, 0] = 255, 128, 1
    inputs = fashion_mnist.network_inputs(images)
    assert inputs.dtype == np.float32 and inputs.shape == (2, 28, 28, 1)
    assert inputs[0, 3, 4, 0] == 255 / 256 and inputs[1, 27, 27, 0] == 0.5 and inputs[1, 0, 0, 0] == 1 / 256
    assert inputs.max() < 1.0 and inputs.sum() == (255 + 128 + 1) / 256


GOOD = {"x_train": np.zeros((4, 28, 28), np.uint8), "y_train": np.arange(4, dtype=np.uint8),
        "x_val": np.zeros((2, 28, 28), np.uint8), "y_val": np.zeros(2, np.uint8),
        "x_test": np.zeros((3, 28, 28), np.uint8), "y_test": np.full(3, 9, np.uint8)}


@pytest.mark.parametrize("change,fragment", [
    ({"y_val": None}, "missing array(s) y_val"),
    ({"x_train": np.zeros((4, 28, 28), np.float32)}, "x_train has dtype float32, expected uint8"),
    ({"x_test": np.zeros((3, 34, 34), np.uint8)}, "x_test has shape (3, 34, 34), expected (N, 28, 28)"),
    ({"y_train": np.zeros(5, np.uint8)}, "y_train has shape (5,), expected (4,)"),
    ({"y_test": np.array([0, 10, 2], np.uint8)}, "y_test holds labels outside 0..9"),
])
def test_the_loader_refuses_a_bad_dataset_file_naming_it(tmp_path, change, fragment):
    arrays = {key: value for key, value in {**GOOD, **change}.items() if value is not None}
    path = tmp_path / "fashion_mnist.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserError) as raised:
        fashion_mnist.load_fashion_mnist(path)
    assert str(raised.value).startswith(f"{path}: ") and fragment in str(raised.value)


def test_the_loader_refuses_a_missing_file_and_one_that_is_not_npz(tmp_path):
    with pytest.raises(UserError, match="no_such.npz: data file not found .*preprocessing_fashion_mnist.py"):
        fashion_mnist.load_fashion_mnist(tmp_path / "no_such.npz")
    (tmp_path / "pickle.npz").write_bytes(b"\x80\x04not a zip")
    with pytest.raises(UserError, match="pickle.npz: not a Fashion-MNIST dataset"):
        fashion_mnist.load_fashion_mnist(tmp_path / "pickle.npz")


# ---------------------------------------------------------------------------------------------
# The script


def test_help_answers_without_importing_tensorflow():
    code = """
import sys, cli, preprocessing_fashion_mnist as script
try:
    cli.run_main(script.main, ["--help"])
except SystemExit as exit:
    print("exit", exit.code)
print("tensorflow imported:", "tensorflow" in sys.modules)
"""
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "usage:" in completed.stdout and "dataset-fashion-mnist" in completed.stdout, completed.stderr
    assert "exit 0" in completed.stdout and "tensorflow imported: False" in completed.stdout


def test_a_bad_file_exits_with_status_2_and_one_error_line(full_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(full_raw, raw)
    (raw / TEST_LABELS).write_bytes(b"not gzip")
    out = tmp_path / "fashion_mnist.npz"
    completed = run_script("preprocessing_fashion_mnist.py", "--raw", raw, "--out", out, timeout=60)
    assert completed.returncode == 2
    assert_one_line_error(completed, TEST_LABELS, "not a readable gzip file")
    assert not out.exists()


def test_the_default_folder_is_the_local_one_when_it_holds_the_files(tmp_path, monkeypatch):
    local, debian = tmp_path / "local", tmp_path / "debian"
    monkeypatch.setattr(preprocessing_fashion_mnist, "LOCAL_RAW", local)
    monkeypatch.setattr(preprocessing_fashion_mnist, "DEBIAN_RAW", debian)
    with pytest.raises(UserError, match=f"{debian}: folder not found .*--raw"):
        preprocessing_fashion_mnist.main(["--out", str(tmp_path / "out.npz")])
    write_raw(local, 9, 4)
    (local / TEST_LABELS).unlink()
    assert preprocessing_fashion_mnist.default_raw() == debian  # three files are not enough
    write_raw(local, 9, 4)
    assert preprocessing_fashion_mnist.default_raw() == local
