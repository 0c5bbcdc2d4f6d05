"""The N-MNIST reader and converter (ALGORITHM.md §1 and §6).

Covers the 40-bit decoder on hand-built bytes, both dataset layouts (folders and zips) against an
independent count, every kind of bad input through the real command line, the frame loader's
checks, and the orientation of the real sample in ../shared (skipped when that is absent).
"""
import io
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import n_mnist
import preprocessing_n_mnist
from saccade_emulator import REAL_SAMPLE
from cli import UserError

REPO = Path(__file__).resolve().parents[1]
SIZE = n_mnist.SENSOR_SIZE


# ---------------------------------------------------------------------------------------------
# Helpers: random recordings, datasets in both layouts, the command line


def random_events(rng, n_events):
    """Events spread over the sensor with sorted timestamps within 300 ms."""
    return n_mnist.Events(
        x=rng.integers(0, SIZE, n_events).astype(np.uint8),
        y=rng.integers(0, SIZE, n_events).astype(np.uint8),
        polarity=rng.integers(0, 2, n_events).astype(np.uint8),
        timestamp=np.sort(rng.integers(0, 300_000, n_events)),
    )


def on_count(events):
    """The ON frame counted independently of n_mnist: np.add.at over the generated arrays, [y, x]."""
    frame = np.zeros((SIZE, SIZE), dtype=np.int64)
    on = events.polarity == 1
    np.add.at(frame, (events.y[on].astype(int), events.x[on].astype(int)), 1)
    return frame


def make_split(rng, n_files):
    """[(file id, label, Events)] in a shuffled id order; every digit appears."""
    labels = rng.permutation(np.arange(n_files) % 10)
    return [(file_id, int(label), random_events(rng, int(rng.integers(0, 400))))
            for file_id, label in zip(rng.permutation(n_files) + 1, labels)]


def write_dataset(raw, splits, form="folder"):
    """Write {split: [(id, label, Events)]} as raw/<split>/<digit>/<id>.bin or as raw/<split>.zip."""
    raw = Path(raw)
    for split, recordings in splits.items():
        members = {f"{split}/{label}/{file_id:05d}.bin": n_mnist.encode_events(events)
                   for file_id, label, events in recordings}
        if form == "zip":
            raw.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(raw / f"{split}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(f"{split}/", b"")  # folder entries, as real archives hold them
                for digit in n_mnist.DIGITS:
                    archive.writestr(f"{split}/{digit}/", b"")
                for name, data in members.items():
                    archive.writestr(name, data)
        else:
            for digit in n_mnist.DIGITS:
                (raw / split / digit).mkdir(parents=True, exist_ok=True)
            for name, data in members.items():
                (raw / name).write_bytes(data)


def expected_frames(recordings):
    """Frames and labels in MNIST order (by numeric id), counted independently."""
    ordered = sorted(recordings, key=lambda recording: recording[0])
    return np.array([on_count(events) for _, _, events in ordered]), np.array([label for _, label, _ in ordered])


@pytest.fixture
def dataset(tmp_path):
    """A small valid dataset in folder form: (raw path, {split: recordings})."""
    rng = np.random.default_rng(7)
    splits = {"Train": make_split(rng, 30), "Test": make_split(rng, 12)}
    write_dataset(tmp_path / "raw", splits)
    return tmp_path / "raw", splits


def run_cli(*args):
    """The converter as a user runs it: a fresh interpreter started from the repository root."""
    return subprocess.run([sys.executable, "preprocessing_n_mnist.py", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def assert_one_line_error(completed, *fragments):
    """Non-zero exit, a single `error:` line naming every fragment, and no traceback.

    A `warning:` line may come first (a home-made zip never has the published MD5).
    """
    assert completed.returncode != 0, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr, completed.stderr
    lines = [line for line in completed.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------
# The 40-bit decoder


def test_decoder_reads_every_bit_field_from_hand_built_bytes():
    data = bytes([
        5, 7, 0x80 | 0x12, 0x34, 0x56,  # ON; timestamp 0x123456 spread over bytes 2, 3 and 4
        33, 0, 0x7F, 0xFF, 0xFF,  # OFF; every timestamp bit set: 2**23 - 1
        0, 33, 0x80, 0x00, 0x01,  # ON; polarity bit set, timestamp 1
        17, 9, 0x00, 0x01, 0x00,  # OFF; timestamp 256 (byte 3 alone)
    ])
    events = n_mnist.decode_events(data)
    assert events.x.tolist() == [5, 33, 0, 17]
    assert events.y.tolist() == [7, 0, 33, 9]
    assert events.polarity.tolist() == [1, 0, 1, 0]
    assert events.timestamp.tolist() == [0x123456, 2**23 - 1, 1, 256]


def test_overflow_markers_add_2_pow_13_to_later_events_and_are_dropped():
    data = bytes([
        1, 2, 0x00, 0x00, 0x10,  # t = 16
        9, 240, 0x00, 0x00, 0x00,  # overflow marker (x is irrelevant)
        3, 4, 0x80, 0x00, 0x20,  # t = 32 + 2**13
        255, 240, 0x7F, 0xFF, 0xFF,  # a second marker: its x and timestamp bits are ignored
        5, 6, 0x00, 0x00, 0x30,  # t = 48 + 2 * 2**13
    ])
    events = n_mnist.decode_events(data)
    assert events.x.tolist() == [1, 3, 5]
    assert events.y.tolist() == [2, 4, 6]
    assert events.polarity.tolist() == [0, 1, 0]
    assert events.timestamp.tolist() == [16, 32 + 2**13, 48 + 2 * 2**13]


def test_decoder_takes_a_numpy_byte_array_like_bytes():
    data = n_mnist.encode_events(random_events(np.random.default_rng(8), 50))
    from_array = n_mnist.decode_events(np.frombuffer(data, dtype=np.uint8))
    from_bytes = n_mnist.decode_events(data)
    for field in ("x", "y", "polarity", "timestamp"):
        assert np.array_equal(getattr(from_array, field), getattr(from_bytes, field))


def test_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    events = random_events(rng, 5000)
    events.timestamp[-1] = n_mnist.MAX_TIMESTAMP_US  # the largest timestamp the format holds
    decoded = n_mnist.decode_events(n_mnist.encode_events(events))
    for field in ("x", "y", "polarity", "timestamp"):
        np.testing.assert_array_equal(getattr(decoded, field), getattr(events, field))
    assert len(n_mnist.decode_events(b"")) == 0


def with_markers(data, rng, n_markers):
    """The recording's bytes with overflow-marker records inserted at random places (x random too)."""
    records = np.frombuffer(data, np.uint8).reshape(-1, 5)
    for _ in range(n_markers):
        at = int(rng.integers(0, len(records) + 1))
        marker = np.array([[rng.integers(0, 256), n_mnist.OVERFLOW_MARKER_Y, 0, 0, 0]], np.uint8)
        records = np.concatenate([records[:at], marker, records[at:]])
    return records.tobytes()


def test_batch_counting_equals_decoding_each_recording():
    """on_event_frames (the converter's batch form) == decode_events + on_event_frame, errors included."""
    rng = np.random.default_rng(9)
    recordings = [with_markers(n_mnist.encode_events(random_events(rng, int(rng.integers(0, 300)))), rng,
                               int(rng.integers(0, 3))) for _ in range(40)]
    recordings[3] = b""  # no events at all
    recordings[7] += b"\x01\x02"  # truncated
    recordings[11] = with_markers(bytes([40, 3, 0x80, 0, 1]) + recordings[11], rng, 2)  # off the sensor
    recordings[12] = recordings[12] + bytes([2, 34, 0x80, 0, 9, 33, 35, 0, 0, 0])  # off the sensor twice
    recordings[20] = bytes([5, 6, 0x80, 0, 0]) * (n_mnist.MAX_PIXEL_COUNT + 1)  # more ON events than uint16 holds
    names = [f"r{index}.bin" for index in range(len(recordings))]
    frames, events, errors = n_mnist.on_event_frames(recordings, names)
    assert sorted(errors) == [7, 11, 12, 20]
    for index, data in enumerate(recordings):
        try:
            decoded = n_mnist.decode_events(data, name=names[index])
            expected = n_mnist.on_event_frame(decoded, name=names[index])
        except UserError as error:
            assert str(errors[index]) == str(error)
            assert not frames[index].any() and events[index] == 0
            continue
        assert index not in errors
        np.testing.assert_array_equal(frames[index], expected)
        assert events[index] == len(decoded)
    assert frames.dtype == np.uint16 and frames.shape == (40, SIZE, SIZE)


@pytest.mark.parametrize("field, value", [("x", 256), ("y", -1), ("polarity", 2)])
def test_encoder_refuses_values_its_bit_fields_cannot_hold(field, value):
    events = random_events(np.random.default_rng(0), 5)
    values = getattr(events, field).astype(np.int64)
    values[2] = value
    setattr(events, field, values)
    with pytest.raises(ValueError, match=f"{field} must lie in"):
        n_mnist.encode_events(events)


def test_encoder_refuses_timestamps_beyond_23_bits():
    events = random_events(np.random.default_rng(0), 3)
    events.timestamp[-1] = 2**23
    with pytest.raises(ValueError):
        n_mnist.encode_events(events)


# ---------------------------------------------------------------------------------------------
# Conversion of both layouts


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_converted_frames_equal_an_independent_count(tmp_path, form):
    rng = np.random.default_rng(1)
    splits = {"Train": make_split(rng, 40), "Test": make_split(rng, 15)}
    write_dataset(tmp_path / "raw", splits, form)
    out = tmp_path / "frames.npz"
    preprocessing_n_mnist.main(["--raw", str(tmp_path / "raw"), "--out", str(out), "--quiet"])
    arrays = n_mnist.load_frame_counts(out)
    for split, key in (("Train", "train"), ("Test", "test")):
        frames, labels = expected_frames(splits[split])
        np.testing.assert_array_equal(arrays[f"x_{key}"], frames)
        np.testing.assert_array_equal(arrays[f"y_{key}"], labels)


def test_a_zip_directory_is_parsed_once_per_conversion(tmp_path, monkeypatch):
    """Listing and reading a split share one parse of its archive's directory, and it is let go after."""
    write_dataset(tmp_path / "raw", {"Train": make_split(np.random.default_rng(2), 20),
                                     "Test": make_split(np.random.default_rng(3), 10)}, "zip")
    opened = []
    real_zipfile = zipfile.ZipFile

    def counting_zipfile(path, *args, **kwargs):
        if Path(path).parent == tmp_path / "raw":  # not the frame file, which np.savez writes as a zip
            opened.append(Path(path).name)
        return real_zipfile(path, *args, **kwargs)

    monkeypatch.setattr(zipfile, "ZipFile", counting_zipfile)
    preprocessing_n_mnist.convert_dataset(tmp_path / "raw", tmp_path / "frames.npz", progress=False)
    assert sorted(opened) == ["Test.zip", "Train.zip"]
    assert n_mnist._zip_directory.cache_info().currsize == 0


def test_a_rewritten_zip_is_listed_afresh(tmp_path):
    raw = tmp_path / "raw"
    write_dataset(raw, {"Train": make_split(np.random.default_rng(4), 20)}, "zip")
    assert len(n_mnist.list_recordings(raw, "Train")[2]) == 20
    write_dataset(raw, {"Train": make_split(np.random.default_rng(5), 30)}, "zip")
    kind, source, entries = n_mnist.list_recordings(raw, "Train")
    assert len(entries) == 30
    with n_mnist.open_split(kind, source) as read:
        assert all(len(read(name)) % n_mnist.EVENT_BYTES == 0 for _, name in entries)


def test_ids_are_read_in_mnist_order(tmp_path):
    """Numeric ids sort as numbers (9 before 10 before 100) across digit folders."""
    rng = np.random.default_rng(2)
    names = {"1": 7, "00002": 5, "9": 1, "10": 3, "100": 0, "0011": 8}  # stem: digit
    for split in n_mnist.SPLITS:
        for digit in n_mnist.DIGITS:
            (tmp_path / split / digit).mkdir(parents=True)
        for stem, digit in names.items():
            (tmp_path / split / str(digit) / f"{stem}.bin").write_bytes(n_mnist.encode_events(random_events(rng, 5)))
    _, _, entries = n_mnist.list_recordings(tmp_path, "Train")
    assert [path.stem for _, path in entries] == ["1", "00002", "9", "10", "0011", "100"]
    assert [label for label, _ in entries] == [7, 5, 1, 3, 8, 0]


def test_skip_bad_skips_and_counts_a_bad_recording(dataset, tmp_path):
    raw, splits = dataset
    file_id, label, _ = splits["Train"][0]
    bad = raw / "Train" / str(label) / f"{file_id:05d}.bin"
    bad.write_bytes(b"\x00" * 7)  # 7 bytes: truncated
    out = tmp_path / "frames.npz"
    completed = run_cli("--raw", raw, "--out", out, "--skip-bad", "--quiet")
    assert completed.returncode == 0, completed.stderr
    assert "Train: 29 samples (1 bad recordings skipped)" in completed.stdout
    assert bad.name in completed.stderr and "truncated" in completed.stderr
    frames, labels = expected_frames(splits["Train"][1:])
    arrays = n_mnist.load_frame_counts(out)
    np.testing.assert_array_equal(arrays["x_train"], frames)
    np.testing.assert_array_equal(arrays["y_train"], labels)


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the file, non-zero exit, no traceback, nothing written


def first_recording(raw, split="Train"):
    return sorted((Path(raw) / split).glob("*/*.bin"))[0]


def truncate_a_recording(raw):
    path = first_recording(raw)
    path.write_bytes(path.read_bytes() + b"\x00\x00")  # 2 extra bytes: not a multiple of 5
    return path.name, "truncated"


def put_an_event_off_the_sensor(raw):
    path = first_recording(raw)
    path.write_bytes(path.read_bytes() + bytes([34, 3, 0x80, 0, 1]))  # x = 34
    return path.name, "outside 0..33"


def remove_the_test_split(raw):
    for path in sorted((Path(raw) / "Test").glob("*/*.bin")):
        path.unlink()
    for folder in (Path(raw) / "Test").iterdir():
        folder.rmdir()
    (Path(raw) / "Test").rmdir()
    return str(raw), "missing split"


def remove_a_digit_folder(raw):
    folder = Path(raw) / "Train" / "7"
    for path in folder.glob("*.bin"):
        path.unlink()
    folder.rmdir()
    return str(Path(raw) / "Train"), "missing digit folder(s) 7"


def add_a_folder_that_is_not_a_digit(raw):
    (Path(raw) / "Train" / "extra").mkdir()
    return str(Path(raw) / "Train" / "extra"), "not a digit"


def empty_every_digit_folder(raw):
    for path in Path(raw).glob("*/*/*.bin"):
        path.unlink()
    return str(raw), "no usable recordings"


def zip_with_member(member):
    """A corruption that turns the Train split into a zip holding one unsafe member."""

    def corrupt(raw):
        rng = np.random.default_rng(3)
        recordings = make_split(rng, 10)
        for path in sorted((Path(raw) / "Train").glob("*/*.bin")):
            path.unlink()
        for folder in (Path(raw) / "Train").iterdir():
            folder.rmdir()
        (Path(raw) / "Train").rmdir()
        write_dataset(raw, {"Train": recordings}, form="zip")
        with zipfile.ZipFile(Path(raw) / "Train.zip", "a") as archive:
            archive.writestr(member, n_mnist.encode_events(random_events(rng, 3)))
        return "Train.zip", "unsafe archive member"

    return corrupt


def in_zip_form(change_members):
    """A corruption: both splits become zips, the Train members first passing through `change_members`.

    change_members({member name: bytes}) -> ({member name: bytes}, expected problem).
    """

    def corrupt(raw):
        raw = Path(raw)
        problem = None
        for split in n_mnist.SPLITS:
            members = {path.relative_to(raw).as_posix(): path.read_bytes() for path in sorted((raw / split).glob("*/*.bin"))}
            shutil.rmtree(raw / split)
            if split == "Train":
                members, problem = change_members(members)
            with zipfile.ZipFile(raw / f"{split}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
                for name, data in members.items():
                    archive.writestr(name, data)
        return "Train.zip", problem

    return corrupt


def truncate_first_member(members):
    first = next(iter(members))
    return {**members, first: members[first] + b"\x00\x00"}, "truncated"


def drop_digit_7_members(members):
    return {name: data for name, data in members.items() if not name.startswith("Train/7/")}, "missing digit folder(s) 7"


def add_a_member_under_a_non_digit_folder(members):
    return {**members, "Train/extra/00999.bin": next(iter(members.values()))}, "not a digit"


def add_a_backslash_member(members):
    return {**members, "Train\\..\\..\\evil.bin": next(iter(members.values()))}, "unsafe archive member"


def corrupt_the_data_of_a_zip_member(raw):
    """Both splits as zips, then one byte of a Train member's compressed data flipped (CRC or inflate error)."""
    where, _ = in_zip_form(lambda members: (members, None))(raw)
    archive_path = Path(raw) / "Train.zip"
    with zipfile.ZipFile(archive_path) as archive:
        info = next(info for info in archive.infolist() if info.filename.endswith(".bin") and info.compress_size > 8)
    data = bytearray(archive_path.read_bytes())
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    data_start = info.header_offset + 30 + name_length + extra_length
    data[data_start + info.compress_size // 2] ^= 0xFF
    archive_path.write_bytes(bytes(data))
    return info.filename, "cannot read from the archive"


def duplicate_a_zip_member(raw):
    """Both splits as zips, then a Train member written a second time (which copy is the recording?)."""
    in_zip_form(lambda members: (members, None))(raw)
    with zipfile.ZipFile(Path(raw) / "Train.zip") as archive:
        name = next(name for name in archive.namelist() if name.endswith(".bin"))
    with warnings.catch_warnings(), zipfile.ZipFile(Path(raw) / "Train.zip", "a") as archive:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name, and writes it
        archive.writestr(name, b"")
    return name, "is in the archive twice"


def replace_the_test_split_by_a_file_that_is_not_a_zip(raw):
    shutil.rmtree(Path(raw) / "Test")
    (Path(raw) / "Test.zip").write_bytes(b"not a zip archive")
    return "Test.zip", "not a readable zip archive"


def put_a_folder_named_like_a_recording(raw):
    (Path(raw) / "Train" / "2" / "77777.bin").mkdir()
    return "77777.bin", "cannot read"


def put_a_broken_link_named_like_a_recording(raw):
    (Path(raw) / "Train" / "1" / "55555.bin").symlink_to(Path(raw) / "nowhere.bin")
    return "55555.bin", "cannot read"


def remove_the_test_split_and_truncate_a_training_recording(raw):
    """The missing split is reported first: both splits are listed before any recording is read."""
    truncate_a_recording(raw)
    return remove_the_test_split(raw)


BAD_INPUTS = {
    "truncated recording": truncate_a_recording,
    "truncated recording in a zip": in_zip_form(truncate_first_member),
    "corrupt zip member": corrupt_the_data_of_a_zip_member,
    "a zip member twice": duplicate_a_zip_member,
    "a zip that is not one": replace_the_test_split_by_a_file_that_is_not_a_zip,
    "a folder named *.bin": put_a_folder_named_like_a_recording,
    "a broken link named *.bin": put_a_broken_link_named_like_a_recording,
    "missing digit folder in a zip": in_zip_form(drop_digit_7_members),
    "folder name not a digit in a zip": in_zip_form(add_a_member_under_a_non_digit_folder),
    "zip member with backslashes and ..": in_zip_form(add_a_backslash_member),
    "missing split before a bad recording": remove_the_test_split_and_truncate_a_training_recording,
    "coordinates outside 0..33": put_an_event_off_the_sensor,
    "missing split": remove_the_test_split,
    "missing digit folder": remove_a_digit_folder,
    "folder name not a digit": add_a_folder_that_is_not_a_digit,
    "zip member with an absolute path": zip_with_member("/Train/0/00099.bin"),
    "zip member with ..": zip_with_member("Train/../../00099.bin"),
    "empty dataset": empty_every_digit_folder,
}


@pytest.mark.parametrize("corrupt", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gives_one_line_error_and_writes_nothing(dataset, tmp_path, corrupt):
    raw, _ = dataset
    where, problem = corrupt(raw)
    out_dir = tmp_path / "out"
    completed = run_cli("--raw", raw, "--out", out_dir / "frames.npz", "--quiet")
    assert_one_line_error(completed, where, problem)
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize("corrupt", [corrupt_the_data_of_a_zip_member, put_a_folder_named_like_a_recording])
def test_skip_bad_also_skips_unreadable_recordings(dataset, tmp_path, corrupt):
    raw, splits = dataset
    where, _ = corrupt(raw)
    out = tmp_path / "frames.npz"
    completed = run_cli("--raw", raw, "--out", out, "--skip-bad", "--quiet")
    assert completed.returncode == 0, completed.stderr
    assert where in completed.stderr and "1 bad recordings skipped" in completed.stdout
    kept = [recording for recording in splits["Train"] if f"{recording[0]:05d}" != Path(where).stem]
    assert len(kept) == len(splits["Train"]) - (corrupt is corrupt_the_data_of_a_zip_member)
    frames, labels = expected_frames(kept)  # every other recording kept, each frame with its own label
    arrays = n_mnist.load_frame_counts(out)
    np.testing.assert_array_equal(arrays["x_train"], frames)
    np.testing.assert_array_equal(arrays["y_train"], labels)


def member_data_offset(archive_path, name):
    """(local header offset, data offset) of a member."""
    with zipfile.ZipFile(archive_path) as archive:
        info = archive.getinfo(name)
    data = archive_path.read_bytes()
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    return info.header_offset, info.header_offset + 30 + name_length + extra_length


def test_zip_members_of_every_kind_read_as_zipfile_reads_them(tmp_path):
    archive_path = tmp_path / "a.zip"
    payload = n_mnist.encode_events(random_events(np.random.default_rng(4), 500))
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("stored.bin", payload, zipfile.ZIP_STORED)
        archive.writestr("deflated.bin", payload, zipfile.ZIP_DEFLATED)
        archive.writestr("empty.bin", b"", zipfile.ZIP_DEFLATED)
        archive.writestr("lzma.bin", payload, zipfile.ZIP_LZMA)
        with archive.open("streamed.bin", "w", force_zip64=True) as member:  # data descriptor, zip64 extra
            member.write(payload)
    with zipfile.ZipFile(archive_path) as archive, n_mnist.open_split("zip", archive_path) as read:
        for name in archive.namelist():
            assert read(name) == archive.read(name), name


@pytest.mark.parametrize("damage", ["corrupt lzma data", "unsupported method", "bad local header", "cut short"])
def test_damaged_or_exotic_zip_members_are_user_errors(tmp_path, damage):
    archive_path = tmp_path / "a.zip"
    payload = n_mnist.encode_events(random_events(np.random.default_rng(5), 500))
    method = zipfile.ZIP_LZMA if damage == "corrupt lzma data" else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("m.bin", payload, method)
    header, data_start = member_data_offset(archive_path, "m.bin")
    data = bytearray(archive_path.read_bytes())
    if damage == "corrupt lzma data":
        data[data_start + 20] ^= 0xFF
    elif damage == "unsupported method":  # Deflate64 (9), which some Windows tools write
        central = data.rindex(b"PK\x01\x02")
        struct.pack_into("<H", data, header + 8, 9)
        struct.pack_into("<H", data, central + 10, 9)
    elif damage == "bad local header":
        data[header:header + 4] = b"XXXX"
    archive_path.write_bytes(bytes(data))
    with n_mnist.open_split("zip", archive_path) as read:
        if damage == "cut short":
            archive_path.write_bytes(bytes(data[:data_start + 10]))  # the archive shrinks while open
        with pytest.raises(UserError, match="a.zip:m.bin: cannot read from the archive"):
            read("m.bin")


def test_out_that_is_a_folder_or_under_a_file_is_a_one_line_error(dataset, tmp_path):
    raw, _ = dataset
    (tmp_path / "a_folder").mkdir()
    assert_one_line_error(run_cli("--raw", raw, "--out", tmp_path / "a_folder", "--quiet"), "a_folder", "is a folder")
    (tmp_path / "a_file").write_text("keep me")
    assert_one_line_error(run_cli("--raw", raw, "--out", tmp_path / "a_file" / "frames.npz", "--quiet"), "a_file", "cannot write")
    assert (tmp_path / "a_file").read_text() == "keep me"


def test_a_failing_write_leaves_the_previous_dataset_and_no_temporary_file(dataset, tmp_path, monkeypatch):
    raw, _ = dataset
    out = tmp_path / "frames.npz"
    preprocessing_n_mnist.convert_dataset(raw, out, progress=False)
    before = out.read_bytes()
    truncate_a_recording(raw)  # a different dataset...

    def write_half_then_fail(path, **arrays):
        Path(path).write_bytes(b"PK half")  # ...whose writer dies half-way
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        preprocessing_n_mnist.convert_dataset(raw, out, skip_bad=True, progress=False)
    assert out.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["frames.npz", "raw"]


def test_out_is_checked_before_any_recording_is_read(dataset, tmp_path, monkeypatch):
    raw, _ = dataset
    (tmp_path / "a_file").write_text("keep me")
    monkeypatch.setattr(preprocessing_n_mnist, "convert_dataset", lambda *a, **k: pytest.fail("converted first"))
    monkeypatch.setattr(preprocessing_n_mnist, "build_demo", lambda *a, **k: pytest.fail("emulated first"))
    for flags in (["--raw", str(raw)], ["--demo"]):
        with pytest.raises(UserError, match="a_file is a file, not a folder"):
            preprocessing_n_mnist.main([*flags, "--out", str(tmp_path / "a_file" / "frames.npz"), "--quiet"])


def test_demo_seed_below_zero_is_a_one_line_error(tmp_path):
    assert_one_line_error(run_cli("--demo", "--seed", "-1", "--out", tmp_path / "demo.npz", "--quiet"),
                          "--seed must be at least 0")


def test_demo_recordings_folder_that_is_a_file_is_refused_before_emulating(tmp_path, monkeypatch):
    import saccade_emulator

    (tmp_path / "demo").write_text("not a folder")
    monkeypatch.setattr(saccade_emulator, "demo_source_images", lambda: pytest.fail("emulated first"))
    with pytest.raises(UserError, match="demo: is a file, not a folder"):
        saccade_emulator.write_demo_recordings(tmp_path / "demo", seed=0, progress=False)
    assert (tmp_path / "demo").read_text() == "not a folder"


def test_hidden_folders_beside_the_digit_folders_are_ignored_in_both_forms(dataset, tmp_path):
    raw, _ = dataset
    expected = preprocessing_n_mnist.convert_split(raw, "Train", progress=False)
    (raw / "Train" / ".ipynb_checkpoints").mkdir()
    (raw / "Train" / ".ipynb_checkpoints" / "00001.bin").write_bytes(b"not a recording")
    for form_raw in (raw, in_zip_copy(raw, tmp_path / "zipped")):
        frames, labels, _, _ = preprocessing_n_mnist.convert_split(form_raw, "Train", progress=False)
        assert np.array_equal(frames, expected[0]) and np.array_equal(labels, expected[1])


def in_zip_copy(raw, target):
    """The dataset at `raw` as Train.zip and Test.zip in `target`, every file (hidden ones too) a member."""
    target.mkdir()
    for split in n_mnist.SPLITS:
        with zipfile.ZipFile(target / f"{split}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted((raw / split).rglob("*.bin")):
                archive.write(path, path.relative_to(raw).as_posix())
    return target


def test_a_member_whose_sizes_claim_more_than_the_archive_holds_is_refused_unread(tmp_path, monkeypatch):
    archive_path = tmp_path / "a.zip"
    payload = n_mnist.encode_events(random_events(np.random.default_rng(5), 500))
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("m.bin", payload, zipfile.ZIP_DEFLATED)
    data = bytearray(archive_path.read_bytes())
    central = data.rindex(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 20, 0xFFFFFFF0)  # compressed size: almost 4 GB
    archive_path.write_bytes(bytes(data))
    requested = []

    class SpyFile(io.BufferedReader):  # records how many bytes each read asks for
        def read(self, size=-1):
            requested.append(size)
            return super().read(size)

    monkeypatch.setattr(n_mnist, "open", lambda path, mode: SpyFile(io.FileIO(path, mode)), raising=False)
    with n_mnist.open_split("zip", archive_path) as read:
        with pytest.raises(UserError, match="a.zip:m.bin: cannot read from the archive .*ends inside this member"):
            read("m.bin")
    assert max(requested) <= archive_path.stat().st_size  # refused before asking for almost 4 GB


def test_a_member_that_inflates_beyond_its_declared_size_is_refused(tmp_path):
    archive_path = tmp_path / "a.zip"
    payload = bytes(5 * 4_000_000)  # 20 MB that deflate to a few kB
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("m.bin", payload, zipfile.ZIP_DEFLATED)
    data = bytearray(archive_path.read_bytes())
    for at, offset in ((data.index(b"PK\x03\x04"), 22), (data.rindex(b"PK\x01\x02"), 24)):
        struct.pack_into("<I", data, at + offset, 5)  # declared uncompressed size: one event
    archive_path.write_bytes(bytes(data))
    tracemalloc.start()
    with n_mnist.open_split("zip", archive_path) as read:
        with pytest.raises(UserError, match="bad CRC-32 or size"):
            read("m.bin")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000  # never inflated to its 20 MB


def test_md5_of_the_zips_is_checked_and_a_mismatch_only_warns(dataset, tmp_path, monkeypatch, capsys):
    raw, _ = dataset
    in_zip_form(lambda members: (members, None))(raw)
    out = tmp_path / "frames.npz"
    warnings = preprocessing_n_mnist.check_archive_md5(raw)
    assert [warning.split(":")[1].strip() for warning in warnings] == [str(raw / "Train.zip"), str(raw / "Test.zip")]
    assert "differs from the published" in capsys.readouterr().err
    preprocessing_n_mnist.convert_dataset(raw, out, progress=False)  # warns, converts anyway
    assert out.is_file()
    published = {name: preprocessing_n_mnist.file_md5(raw / name) for name in n_mnist.PUBLISHED_MD5}
    monkeypatch.setattr(n_mnist, "PUBLISHED_MD5", published)
    assert preprocessing_n_mnist.check_archive_md5(raw) == []


def test_a_pixel_count_beyond_uint16_is_an_error_not_a_wrap():
    n_events = n_mnist.MAX_PIXEL_COUNT + 2
    events = n_mnist.Events(x=np.full(n_events, 3, np.uint8), y=np.full(n_events, 4, np.uint8),
                            polarity=np.ones(n_events, np.uint8), timestamp=np.arange(n_events))
    with pytest.raises(UserError, match="hot.bin: a pixel has 65,537 ON events"):
        n_mnist.on_event_frame(events, name="hot.bin")
    events.polarity[1:] = 0  # many events, few ON: fine
    assert n_mnist.on_event_frame(events)[4, 3] == 1


def test_labels_out_of_range_are_refused_before_the_uint8_cast(tmp_path):
    x = np.zeros((2, SIZE, SIZE))
    with pytest.raises(UserError, match="labels outside 0..9"):
        n_mnist.save_frames(tmp_path / "f.npz", x, np.array([1, 256]), x, np.array([0, 1]))
    with pytest.raises(UserError, match="counts outside"):
        n_mnist.save_frames(tmp_path / "f.npz", x - 1, np.array([1, 2]), x, np.array([0, 1]))
    assert not (tmp_path / "f.npz").exists()


def test_coordinate_errors_count_records_in_the_file_markers_included():
    data = bytes([1, 2, 0x80, 0, 1,  0, n_mnist.OVERFLOW_MARKER_Y, 0, 0, 0,  40, 2, 0x80, 0, 2])
    with pytest.raises(UserError, match="r.bin: record 2 has coordinates x=40"):
        n_mnist.decode_events(data, name="r.bin")


def test_missing_raw_folder_is_a_one_line_error(tmp_path):
    completed = run_cli("--raw", tmp_path / "nowhere", "--out", tmp_path / "frames.npz", "--quiet")
    assert_one_line_error(completed, "nowhere", "not found")
    assert not (tmp_path / "frames.npz").exists()


def test_errors_raised_in_process_are_user_errors(dataset, tmp_path):
    raw, _ = dataset
    truncate_a_recording(raw)
    with pytest.raises(UserError, match="truncated"):
        preprocessing_n_mnist.main(["--raw", str(raw), "--out", str(tmp_path / "frames.npz"), "--quiet"])
    assert not (tmp_path / "frames.npz").exists()


# ---------------------------------------------------------------------------------------------
# The frame loader


def frame_arrays(n_train=6, n_test=4):
    rng = np.random.default_rng(4)
    return {
        "x_train": rng.integers(0, 30, (n_train, SIZE, SIZE)).astype(np.uint16),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 30, (n_test, SIZE, SIZE)).astype(np.uint16),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }


def test_loader_returns_scaled_frames(tmp_path):
    arrays = frame_arrays()
    path = tmp_path / "frames.npz"
    n_mnist.save_frames(path, **arrays)
    x_train, y_train, x_test, y_test = n_mnist.load_frames(path)
    assert x_train.shape == (6, SIZE, SIZE, 1) and x_train.dtype == np.float32
    np.testing.assert_array_equal(x_train[..., 0], arrays["x_train"] / np.float32(32))
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    assert y_train.dtype == np.int64


def test_a_split_that_is_not_needed_may_be_empty(tmp_path):
    arrays = frame_arrays()
    arrays.update(x_test=arrays["x_test"][:0], y_test=arrays["y_test"][:0])
    path = tmp_path / "train_only.npz"
    n_mnist.save_frames(path, **arrays)
    x_train, _, x_test, _ = n_mnist.load_frames(path, test_limit=0)  # training reads no test data
    assert len(x_train) == 6 and len(x_test) == 0
    with pytest.raises(UserError, match="the test split is empty"):
        n_mnist.load_frames(path)


@pytest.mark.parametrize("problem, change, message", [
    ("missing key", lambda a: a.pop("y_test"), "missing array(s) y_test"),
    ("wrong shape", lambda a: a.update(x_train=a["x_train"][:, :28, :28]), "x_train has shape (6, 28, 28)"),
    ("wrong dtype", lambda a: a.update(x_test=a["x_test"].astype(np.float32)), "x_test has dtype float32"),
    ("labels out of range", lambda a: a.update(y_train=a["y_train"] + 10), "labels outside 0..9"),
    ("pickled object array", lambda a: a.update(y_train=np.array([None] * 6, dtype=object)), "not a readable"),
    ("fewer labels than frames", lambda a: a.update(y_train=a["y_train"][:5]), "y_train has shape (5,), expected (6,)"),
    ("wider counts", lambda a: a.update(x_train=a["x_train"].astype(np.uint32)), "x_train has dtype uint32"),
])
def test_loader_refuses_bad_files(tmp_path, problem, change, message):
    arrays = frame_arrays()
    change(arrays)
    path = tmp_path / "frames.npz"
    np.savez(path, **arrays)  # written directly: save_frames would refuse most of these
    with pytest.raises(UserError) as error:
        n_mnist.load_frames(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_loader_names_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        n_mnist.load_frames(tmp_path / "absent.npz")
    with pytest.raises(UserError, match="is a folder, not a frame dataset"):
        n_mnist.load_frames(tmp_path)


def test_loader_refuses_a_member_that_is_not_an_array(tmp_path):
    path = tmp_path / "frames.npz"
    np.savez(path, **frame_arrays())
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("x_extra.npy", b"not an array at all")
    with pytest.raises(UserError, match="member 'x_extra' of the frame dataset is not a numpy array"):
        n_mnist.load_frames(path)


def test_frame_file_is_a_plain_npz_with_the_four_arrays(tmp_path):
    arrays = frame_arrays()
    n_mnist.save_frames(tmp_path / "frames.npz", **arrays)
    with zipfile.ZipFile(tmp_path / "frames.npz") as archive:  # stored: compressing cost more than converting
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    with np.load(tmp_path / "frames.npz", allow_pickle=False) as loaded:
        assert sorted(loaded.files) == sorted(arrays)
        for key, array in arrays.items():
            assert np.array_equal(loaded[key], array) and loaded[key].dtype == n_mnist.FRAME_KEYS[key]


# ---------------------------------------------------------------------------------------------
# The real sample in ../shared: decodes to upright digits


def ink_spread(frame):
    """Standard deviation of the ON-count mass along y and along x: (sd_y, sd_x)."""
    weights = frame / frame.sum()
    y, x = np.indices(frame.shape)
    mean_y, mean_x = (weights * y).sum(), (weights * x).sum()
    return np.sqrt((weights * (y - mean_y) ** 2).sum()), np.sqrt((weights * (x - mean_x) ** 2).sum())


def ink_offset_y(frame):
    """Centroid of the ON mass along y minus the middle of the rows holding its central 90 %.

    Negative: top-heavy (7, 9); positive: bottom-heavy (6).
    """
    rows = frame.sum(axis=1) / frame.sum()
    cumulative = np.cumsum(rows)
    middle = (np.searchsorted(cumulative, 0.05) + np.searchsorted(cumulative, 0.95)) / 2
    return (rows * np.arange(len(rows))).sum() - middle


def looks_upright(frames_by_digit):
    """1s are tall (x and y not swapped); 7s and 9s carry their ink high and 6s low (not upside down)."""
    ones = np.mean(frames_by_digit[1], axis=0)
    spread_y, spread_x = ink_spread(ones)
    top_heavy = np.mean([ink_offset_y(frame) for digit in (7, 9) for frame in frames_by_digit[digit]])
    bottom_heavy = np.mean([ink_offset_y(frame) for frame in frames_by_digit[6]])
    return spread_y > 1.2 * spread_x and top_heavy < -0.5 and bottom_heavy > 0.3


@pytest.fixture(scope="module")
def real_frames():
    """{digit: [ON frame (34, 34) float]} of the 100 real recordings."""
    if not (REAL_SAMPLE / "Train").is_dir():
        pytest.skip("../shared/data/nmnist_real_sample is absent")
    frames = {digit: [] for digit in range(10)}
    for label, name, data in n_mnist.iter_recordings(REAL_SAMPLE, "Train"):
        events = n_mnist.decode_events(data, name=name)
        assert np.all(np.diff(events.timestamp) >= 0), name
        assert 0.4 < events.polarity.mean() < 0.6, name
        frames[label].append(n_mnist.on_event_frame(events).astype(np.float64))
    return frames


def test_real_sample_decodes_to_upright_digits(real_frames):
    assert sum(len(frames) for frames in real_frames.values()) == 100
    assert looks_upright(real_frames)


def test_orientation_check_fails_for_swapped_or_flipped_frames(real_frames):
    """The check above would catch a decoder that swaps x and y or flips the image."""
    for name, transform in {"transposed": np.transpose, "upside down": np.flipud,
                            "rotated": lambda frame: np.rot90(frame)}.items():
        changed = {digit: [transform(frame) for frame in frames] for digit, frames in real_frames.items()}
        assert not looks_upright(changed), name


# ---------------------------------------------------------------------------------------------
# Found by mutation testing: behaviour no other test pinned down
# T01 (M01, M02)
@pytest.mark.parametrize("record", [[34, 3, 0x80, 0, 1], [3, 34, 0x00, 0, 1], [40, 3, 0x80, 0, 1]])
def test_decoder_refuses_a_record_off_the_sensor_in_a_file_without_markers(record):
    with pytest.raises(UserError, match="r.bin: record 1 has coordinates .* outside 0..33"):
        n_mnist.decode_events(bytes([1, 2, 0x80, 0, 0] + record), name="r.bin")


def test_a_pixel_with_exactly_65535_on_events_is_kept_in_both_forms():
    data = bytes([5, 6, 0x80, 0, 0]) * n_mnist.MAX_PIXEL_COUNT + bytes([1, 1, 0x00, 0, 0])  # + one OFF event
    assert n_mnist.on_event_frame(n_mnist.decode_events(data))[6, 5] == 65535
    frames, _, errors = n_mnist.on_event_frames([data], ["r.bin"])
    assert not errors and frames[0, 6, 5] == 65535


@pytest.mark.parametrize("member", ["C:/Train/0/00099.bin", "C:\\Train\\0\\00099.bin"])
def test_a_zip_member_with_a_drive_letter_is_unsafe(dataset, member):
    raw, _ = dataset
    zip_with_member(member)(raw)
    with pytest.raises(UserError, match="unsafe archive member path 'C:"):
        n_mnist.list_recordings(raw, "Train")


def test_a_zip_rewritten_at_the_same_size_is_read_afresh(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    archive_path = raw / "Train.zip"

    def write(fill):
        with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_STORED) as archive:
            for digit in n_mnist.DIGITS:
                archive.writestr(zipfile.ZipInfo(f"Train/{digit}/00001.bin"), bytes([int(digit), fill, 0x80, 0, 0]))

    def first_y():
        kind, source, entries = n_mnist.list_recordings(raw, "Train")
        with n_mnist.open_split(kind, source) as read:
            return read(entries[0][1])[1]

    write(1)
    assert first_y() == 1
    before = archive_path.stat()
    write(2)  # same members and sizes, same inode: only the data (and CRCs) differ
    os.utime(archive_path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # a later version of the file
    assert archive_path.stat().st_size == before.st_size
    assert first_y() == 2


def test_a_stored_member_longer_than_its_declared_size_is_refused(tmp_path):
    archive_path = tmp_path / "a.zip"
    payload = n_mnist.encode_events(random_events(np.random.default_rng(6), 10))
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("m.bin", payload, zipfile.ZIP_STORED)
    data = bytearray(archive_path.read_bytes())
    for at, offset in ((data.index(b"PK\x03\x04"), 22), (data.rindex(b"PK\x01\x02"), 24)):
        struct.pack_into("<I", data, at + offset, len(payload) - 5)  # declared: one event fewer; CRC still right
    archive_path.write_bytes(bytes(data))
    with n_mnist.open_split("zip", archive_path) as read:
        with pytest.raises(UserError, match="bad CRC-32 or size"):
            read("m.bin")


def test_an_encrypted_member_is_a_user_error(tmp_path):
    archive_path = tmp_path / "a.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("m.bin", n_mnist.encode_events(random_events(np.random.default_rng(6), 10)), zipfile.ZIP_STORED)
    data = bytearray(archive_path.read_bytes())
    for at, offset in ((data.index(b"PK\x03\x04"), 6), (data.rindex(b"PK\x01\x02"), 8)):
        data[at + offset] |= 0x01  # general purpose flag bit 0: encrypted
    archive_path.write_bytes(bytes(data))
    with n_mnist.open_split("zip", archive_path) as read:
        with pytest.raises(UserError, match="a.zip:m.bin: cannot read from the archive .*encrypted"):
            read("m.bin")


def test_save_frames_refuses_counts_and_labels_that_the_casts_would_wrap(tmp_path):
    x = np.zeros((2, SIZE, SIZE), dtype=np.int64)
    with pytest.raises(UserError, match="x_train holds counts outside 0..65535"):
        n_mnist.save_frames(tmp_path / "f.npz", x + 65536, np.array([1, 2]), x, np.array([0, 1]))
    with pytest.raises(UserError, match="y_train holds labels outside 0..9"):
        n_mnist.save_frames(tmp_path / "f.npz", x, np.array([-1, 2]), x, np.array([0, 1]))
    assert not (tmp_path / "f.npz").exists()


def test_the_conversion_itself_warns_about_an_md5_mismatch(dataset, tmp_path, capsys):
    raw, _ = dataset
    in_zip_form(lambda members: (members, None))(raw)
    preprocessing_n_mnist.convert_dataset(raw, tmp_path / "frames.npz", progress=False)
    assert capsys.readouterr().err.count("differs from the published") == 2


def test_a_zip_beside_its_extracted_folder_is_neither_read_nor_hashed(dataset, tmp_path, monkeypatch):
    raw, _ = dataset
    zipped = in_zip_copy(raw, tmp_path / "zipped")
    for split in n_mnist.SPLITS:
        shutil.copy(zipped / f"{split}.zip", raw / f"{split}.zip")
    monkeypatch.setattr(preprocessing_n_mnist, "file_md5", lambda path: pytest.fail(f"hashed {path}"))
    assert preprocessing_n_mnist.check_archive_md5(raw) == []


def test_an_extracted_split_is_read_before_a_zip_beside_it(dataset, tmp_path):
    raw, _ = dataset
    write_dataset(tmp_path / "other", {"Train": make_split(np.random.default_rng(99), 10)}, "zip")
    shutil.copy(tmp_path / "other" / "Train.zip", raw / "Train.zip")
    assert n_mnist.find_split(raw, "Train") == ("folder", raw / "Train")


def test_files_that_are_not_recordings_are_ignored_in_both_forms(dataset, tmp_path):
    raw, _ = dataset
    expected = preprocessing_n_mnist.convert_split(raw, "Train", progress=False)
    zipped = in_zip_copy(raw, tmp_path / "zipped")
    extras = {"Train/3/notes.txt": b"x", "Train/3/.DS_Store": bytes(7)}
    with zipfile.ZipFile(zipped / "Train.zip", "a") as archive:
        for name, data in extras.items():
            archive.writestr(name, data)
    for name, data in extras.items():
        (raw / name).write_bytes(data)
    for form_raw in (raw, zipped):
        frames, labels, _, _ = preprocessing_n_mnist.convert_split(form_raw, "Train", progress=False)
        assert np.array_equal(frames, expected[0]) and np.array_equal(labels, expected[1])

def test_published_md5_sums_are_those_of_the_specification():
    spec = REPO.parent / "shared" / "reference" / "ALGORITHM.md"
    if not spec.is_file():
        pytest.skip("../shared/reference/ALGORITHM.md is absent")
    text = " ".join(spec.read_text().split())
    for archive, md5 in n_mnist.PUBLISHED_MD5.items():
        assert f"{archive} `{md5}`" in text
