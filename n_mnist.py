"""N-MNIST recordings and frames (ALGORITHM.md §1 and §6).

- `decode_events`: one `.bin` recording (40-bit events) -> x, y, polarity, timestamp arrays.
- `encode_events`: the inverse, used by the demo emulator and the tests.
- `on_event_frame`: ON events counted per pixel, `frame[y, x]`; `on_event_frames`: the same for many
  recordings in one numpy pass, what the converter uses.
- `list_recordings`, `open_split`, `iter_recordings`: the recordings of a split, from a folder or
  straight from a zip archive (never extracted).
- `save_frames` / `load_frames`: the frame dataset `.npz` and the loader every later script uses.
"""
import contextlib
import functools
import lzma
import re
import struct
import threading
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from architectures import DATASETS
from cli import REPO_ROOT, UserError, atomic_path, load_npz_arrays

SENSOR_SIZE = 34  # the ATIS sensor crop used by N-MNIST: 34 x 34 pixels
EVENT_BYTES = 5  # 40 bits per event
OVERFLOW_MARKER_Y = 240  # a record with y == 240 is a timestamp-overflow marker, not an event
OVERFLOW_STEP_US = 2**13  # what each marker adds to the timestamps after it (the dataset reader's constant)
MAX_TIMESTAMP_US = 2**23 - 1  # the 23-bit timestamp field
MAX_PIXEL_COUNT = np.iinfo(np.uint16).max  # frames store counts as uint16
FRAME_SCALE = DATASETS["n_mnist"].input_scale  # network input = ON count / 32
SPLITS = ("Train", "Test")
DIGITS = tuple(str(d) for d in range(10))
PUBLISHED_MD5 = {
    "Train.zip": "20959b8e626244a1b502305a9e6e2031",
    "Test.zip": "69ca8762b2fe404d9b9bad1103e97832",
}
IGNORED_PREFIXES = ("__MACOSX", ".")  # macOS and hidden folders (.ipynb_checkpoints, ...) beside the digit folders
DEFAULT_DATA = REPO_ROOT / "data" / "n_mnist.npz"  # defaults live in the repository, wherever the command runs from


@dataclass
class Events:
    """Events of one recording, in file order. All arrays have shape (n_events,)."""

    x: np.ndarray  # uint8, 0..33
    y: np.ndarray  # uint8, 0..33
    polarity: np.ndarray  # uint8, 1 = ON (brighter), 0 = OFF
    timestamp: np.ndarray  # int64, microseconds

    def __len__(self):
        return len(self.x)


def decode_events(source, name=None):
    """Decode one recording from a path or from its bytes; `name` labels errors.

    Records with y == 240 are overflow markers: each adds 2**13 µs to every later event and is
    dropped. Raises UserError for a size that is not a multiple of 5 or coordinates outside 0..33.
    """
    if isinstance(source, np.ndarray) and source.dtype == np.uint8:  # the bytes of a recording, as numpy holds them
        source = source.tobytes()
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "<bytes>"
    else:
        name = name or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as error:
            raise UserError(f"{name}: cannot read ({error.strerror})") from None
    if len(data) % EVENT_BYTES:
        raise truncated(name, len(data))
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, EVENT_BYTES)  # (n_records, 5)
    x, y, polarity = records[:, 0], records[:, 1], records[:, 2] >> 7
    # Bytes 1-4 of each record, read as one big-endian 32-bit word, hold y (bits 31-24), polarity
    # (bit 23) and the timestamp (bits 22-0): one strided view instead of per-byte shifts.
    words = (np.ndarray(len(records), dtype=">u4", buffer=data, offset=1, strides=EVENT_BYTES)
             if len(records) else np.zeros(0, dtype=">u4"))
    timestamp = (words & MAX_TIMESTAMP_US).astype(np.int64)
    if len(records) and max(x.max(), y.max()) >= SENSOR_SIZE:  # the rare path: markers or bad coordinates
        is_marker, outside = markers_and_strays(x, y)
        if outside.any():
            record = int(np.flatnonzero(outside)[0])  # counted from 0 in the file, markers included
            raise off_sensor(name, record, x[record], y[record])
        overflows_before = np.cumsum(is_marker) - is_marker  # markers strictly before each record
        timestamp = timestamp + OVERFLOW_STEP_US * overflows_before
        keep = ~is_marker
        x, y, polarity, timestamp = x[keep], y[keep], polarity[keep], timestamp[keep]
    return Events(x=x, y=y, polarity=polarity, timestamp=timestamp)


def truncated(name, size):
    """The error for a recording whose size is not a whole number of events."""
    return UserError(f"{name}: truncated recording ({size} bytes is not a multiple of {EVENT_BYTES})")


def off_sensor(name, record, x, y):
    """The error for a record (counted from 0, markers included) with coordinates outside the sensor."""
    return UserError(f"{name}: record {record} has coordinates x={x}, y={y} outside 0..{SENSOR_SIZE - 1}")


def pixel_overflow(name, count):
    """The error for a pixel with more ON events than a uint16 frame holds."""
    return UserError(f"{name}: a pixel has {count:,} ON events, more than the frame's uint16 holds")


def markers_and_strays(x, y):
    """(is_marker, outside): overflow-marker records, and the other records that fall off the sensor."""
    is_marker = y == OVERFLOW_MARKER_Y
    return is_marker, ((x >= SENSOR_SIZE) | (y >= SENSOR_SIZE)) & ~is_marker


def encode_events(events):
    """Bytes of a recording in the official 40-bit format (no overflow markers are written)."""
    if len(events) and (events.timestamp.min() < 0 or events.timestamp.max() > MAX_TIMESTAMP_US):
        raise ValueError("timestamps must lie in 0..2**23-1 µs")
    for field, top in (("x", 255), ("y", 255), ("polarity", 1)):  # what its bits hold; more would wrap silently
        values = np.asarray(getattr(events, field))
        if len(values) and (values.min() < 0 or values.max() > top):
            raise ValueError(f"{field} must lie in 0..{top}")
    records = np.empty((len(events), EVENT_BYTES), dtype=np.uint8)
    timestamp = np.asarray(events.timestamp, dtype=np.int64)
    records[:, 0] = events.x
    records[:, 1] = events.y
    records[:, 2] = (np.asarray(events.polarity, dtype=np.int64) << 7) | (timestamp >> 16)
    records[:, 3] = (timestamp >> 8) & 0xFF
    records[:, 4] = timestamp & 0xFF
    return records.tobytes()


def on_event_frame(events, name="<recording>"):
    """ON events counted per pixel: uint16 array (34, 34) indexed [y, x].

    Every event is counted into one of 2 x 1156 bins, [polarity, y, x], and the ON half is kept:
    faster than selecting the ON events first. Index arithmetic in uint16 (max 2311) is cheap.
    A pixel with more ON events than uint16 holds (65,535; real pixels see a few dozen) is an error.
    """
    index = (events.polarity.astype(np.uint16) * SENSOR_SIZE + events.y) * SENSOR_SIZE + events.x
    counts = np.bincount(index, minlength=2 * SENSOR_SIZE * SENSOR_SIZE)[SENSOR_SIZE * SENSOR_SIZE:]
    if len(events) > MAX_PIXEL_COUNT and counts.max() > MAX_PIXEL_COUNT:
        raise pixel_overflow(name, counts.max())
    return counts.reshape(SENSOR_SIZE, SENSOR_SIZE).astype(np.uint16)


# on_event_frames sorts every record into one bin of its recording with one lookup on the record's
# first 17 bits, x << 9 | y << 1 | polarity: the ON events by pixel, then three bins that are not counted
# into the frame (OFF events, overflow markers, records off the sensor).
PIXELS = SENSOR_SIZE * SENSOR_SIZE
OFF_BIN, MARKER_BIN, STRAY_BIN = PIXELS, PIXELS + 1, PIXELS + 2
BINS_PER_RECORDING = PIXELS + 3


def _record_bins():
    """The lookup: (2**17,) int32, the bin of every possible (x, y, polarity)."""
    x, y, polarity = np.meshgrid(np.arange(256), np.arange(256), np.arange(2), indexing="ij")  # flat: x << 9 | y << 1 | p
    bins = np.where(polarity == 1, y * SENSOR_SIZE + x, OFF_BIN).astype(np.int32)
    bins[(x >= SENSOR_SIZE) | (y >= SENSOR_SIZE)] = STRAY_BIN
    bins[y == OVERFLOW_MARKER_Y] = MARKER_BIN
    return bins.reshape(-1)


RECORD_BINS = _record_bins()


def on_event_frames(recordings, names):
    """ON-event frames of many recordings at once: the batch form of decode_events + on_event_frame.

    recordings: [bytes]; names label the errors. Returns (frames uint16 (n, 34, 34) [y, x], events
    int64 (n,) per recording without the overflow markers, errors {position: UserError} for the
    recordings that decode_events refuses; their frames and counts are zeros). One lookup and one
    bincount over all the records replace some twenty small calls per recording, so numpy holds
    Python's lock only briefly and threads convert batches side by side. Timestamps are not
    computed: frames do not use them. The tests compare both forms on random recordings, markers
    and bad recordings included.
    """
    n = len(recordings)
    sizes = np.array([len(data) for data in recordings], dtype=np.int64)
    errors = {int(at): truncated(names[at], sizes[at]) for at in np.flatnonzero(sizes % EVENT_BYTES)}
    n_records = np.where(sizes % EVENT_BYTES, 0, sizes // EVENT_BYTES)
    joined = b"".join(data for data, count in zip(recordings, n_records) if count)
    # Each record's bytes 0-3 as one big-endian word: x (bits 31-24), y (23-16), polarity (15), ...
    words = np.ndarray(len(joined) // EVENT_BYTES, dtype=">u4", buffer=joined, strides=EVENT_BYTES)
    index_type = np.int32 if n * BINS_PER_RECORDING < 2**31 else np.int64
    first_bin = np.repeat(np.arange(n, dtype=index_type) * BINS_PER_RECORDING, n_records)  # (records,): its recording's
    bins = np.bincount(RECORD_BINS[words >> 15] + first_bin, minlength=n * BINS_PER_RECORDING).reshape(n, BINS_PER_RECORDING)
    events = n_records - bins[:, MARKER_BIN]
    for at in np.flatnonzero(bins[:, STRAY_BIN]).tolist():  # the rare path: name the first record off the sensor
        records = np.frombuffer(recordings[at], dtype=np.uint8).reshape(-1, EVENT_BYTES)
        record = int(np.flatnonzero(markers_and_strays(records[:, 0], records[:, 1])[1])[0])
        errors[at] = off_sensor(names[at], record, records[record, 0], records[record, 1])
    counts = bins[:, :PIXELS]
    for at in np.flatnonzero(counts.max(axis=1, initial=0) > MAX_PIXEL_COUNT).tolist():
        errors.setdefault(at, pixel_overflow(names[at], counts[at].max()))
    frames = counts.astype(np.uint16).reshape(n, SENSOR_SIZE, SENSOR_SIZE)
    frames[sorted(errors)], events[sorted(errors)] = 0, 0
    return frames, events, dict(sorted(errors.items()))


# ---------------------------------------------------------------------------------------------
# Finding recordings: <raw>/Train/<digit>/<id>.bin or <raw>/Train.zip holding Train/<digit>/<id>.bin


def _sort_key(stem):
    """MNIST order: numeric file names sort by their number, others by name after them."""
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def _list_folder_split(split_dir):
    """[(stem, label, path)] of the .bin files under split_dir/<digit>/."""
    entries, digit_folders = [], set()
    for child in sorted(split_dir.iterdir()):
        if not child.is_dir() or child.name.startswith(IGNORED_PREFIXES):
            continue
        if child.name not in DIGITS:
            raise UserError(f"{child}: folder name is not a digit 0..9")
        digit_folders.add(int(child.name))
        entries += [(path.stem, int(child.name), path) for path in child.glob("*.bin")]
    _check_all_digits(split_dir, digit_folders)
    return entries


def _list_zip_split(archive_path, split):
    """[(stem, label, member name)] of the .bin members <split>/<digit>/<id>.bin of a zip archive."""
    entries, digit_folders = [], set()
    names = [info.filename for info in zip_directory(archive_path)]
    twice = [name for name, count in Counter(names).items() if count > 1]
    if twice:
        raise UserError(f"{archive_path}: member {twice[0]!r} is in the archive twice")
    for member in names:
        # Split as PurePosixPath would (empty and "." parts dropped), but with plain strings: a path
        # object per member took a tenth of a zip conversion. Some Windows tools write backslashes.
        normalized = member.replace("\\", "/")
        parts = [part for part in normalized.split("/") if part not in ("", ".")]
        if normalized.startswith("/") or re.match(r"^[A-Za-z]:", member) or ".." in parts:
            raise UserError(f"{archive_path}: unsafe archive member path {member!r}")
        parts = parts[1:] if parts[:1] == [split] else parts
        if not parts or parts[0].startswith(IGNORED_PREFIXES):
            continue
        is_folder = member.endswith("/") or len(parts) > 1
        if is_folder and parts[0] not in DIGITS:
            raise UserError(f"{archive_path}: member {member!r}: folder name is not a digit 0..9")
        if is_folder:
            digit_folders.add(int(parts[0]))
        if len(parts) == 2 and member.endswith(".bin"):
            entries.append((parts[1][:-4] if parts[1] != ".bin" else parts[1], int(parts[0]), member))  # the stem
    _check_all_digits(archive_path, digit_folders)
    return entries


def zip_directory(path):
    """The members (ZipInfo) of a zip archive, in archive order; UserError if it is not a readable zip.

    Listing a split and reading it both need them: the central directory (70,000 entries in
    N-MNIST's archives, about a tenth of a second) is parsed once per version of the file.
    """
    try:
        status = Path(path).stat()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})") from None
    try:
        return _zip_directory(str(Path(path).resolve()), status.st_ino, status.st_size, status.st_mtime_ns)
    except (OSError, zipfile.BadZipFile) as error:
        raise UserError(f"{path}: not a readable zip archive ({error})") from None


def forget_zip_directories():
    """Drop the parsed zip directories, so that the next use parses the archive again."""
    _zip_directory.cache_clear()


@functools.lru_cache(maxsize=len(SPLITS))
def _zip_directory(path, inode, size, mtime_ns):  # the file and its version are the key: a changed file is parsed again
    with zipfile.ZipFile(path) as archive:
        return tuple(archive.infolist())


def _check_all_digits(where, digit_folders):
    """UserError naming the digit folders 0..9 that `where` lacks."""
    missing = sorted(set(range(10)) - digit_folders)
    if missing:
        raise UserError(f"{where}: missing digit folder(s) {', '.join(map(str, missing))}")


def find_split(raw, split):
    """Where a split lives: ('folder', path) or ('zip', path); UserError if neither exists."""
    raw = Path(raw)
    if (raw / split).is_dir():
        return "folder", raw / split
    if (raw / f"{split}.zip").is_file():
        return "zip", raw / f"{split}.zip"
    raise UserError(f"{raw}: missing split: neither {split}/ nor {split}.zip")


def list_recordings(raw, split):
    """The recordings of a split in MNIST order: (kind, source, [(label, name), ...])."""
    kind, source = find_split(raw, split)
    entries = _list_folder_split(source) if kind == "folder" else _list_zip_split(source, split)
    entries.sort(key=lambda entry: _sort_key(entry[0]))
    return kind, source, [(label, name) for _, label, name in entries]


def iter_recordings(raw, split, listing=None, on_unreadable=None):
    """Yield (label, name, bytes) for every recording of a split, reading zips without extracting.

    `listing`: what list_recordings(raw, split) returned, when the caller has it already.
    A recording that cannot be read (a folder named `*.bin`, a broken link, a zip member whose data
    are corrupt) raises UserError, or, given `on_unreadable`, is passed to it as a UserError and skipped.
    """
    kind, source, entries = listing or list_recordings(raw, split)
    with open_split(kind, source) as read:
        for label, name in entries:
            try:
                data = read(name)
            except UserError as error:
                if on_unreadable is None:
                    raise
                on_unreadable(error)
                continue
            yield label, display_name(kind, source, name), data


def display_name(kind, source, name):
    """How errors name a recording: its path, or `archive.zip:member`."""
    return str(name) if kind == "folder" else f"{source}:{name}"


ZIP_READ_ERRORS = (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, struct.error, MemoryError,
                   zipfile.BadZipFile, zlib.error, lzma.LZMAError)  # what a damaged or exotic member can raise
LOCAL_HEADER = struct.Struct("<4s22xHH")  # a zip local file header: signature, ..., name and extra lengths


@contextlib.contextmanager
def open_split(kind, source):
    """Yield read(name) -> bytes for the recordings of a split; safe to call from several threads.

    Folder form: name is the file's path. Zip form: name is the member. Each thread reads members
    through its own handle on the archive, and deflated members are inflated with zlib directly
    (reading and inflating release the GIL, so threads work side by side); the local header's
    signature, the size and the CRC-32 are checked as zipfile would. Other compression methods go
    through zipfile. Errors are UserErrors naming the file.
    """
    if kind == "folder":
        def read_file(path):
            try:
                return Path(path).read_bytes()
            except OSError as error:
                raise UserError(f"{path}: cannot read ({error.strerror or error})") from None

        yield read_file
        return
    handles, per_thread, lock = [], threading.local(), threading.Lock()

    def own_handle():
        if not hasattr(per_thread, "handle"):
            per_thread.handle = open(source, "rb")
            with lock:
                handles.append(per_thread.handle)
        return per_thread.handle

    def read_exactly(handle, offset, size):
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise EOFError("the archive ends inside this member")
        return data

    archive_size = Path(source).stat().st_size
    members = {info.filename: info for info in zip_directory(source)}
    opened = []  # a zipfile.ZipFile, opened only for a member neither stored nor deflated

    def read_member(member):
        info = members[member]
        try:
            if info.flag_bits & 0x1:
                raise zipfile.BadZipFile("the member is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                with lock:  # zipfile itself, one thread at a time
                    if not opened:
                        opened.append(zipfile.ZipFile(source))
                    return opened[0].read(member)
            handle = own_handle()
            signature, name_length, extra_length = LOCAL_HEADER.unpack(
                read_exactly(handle, info.header_offset, LOCAL_HEADER.size))
            if signature != b"PK\x03\x04":
                raise zipfile.BadZipFile("bad local file header")
            start = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
            if start + info.compress_size > archive_size:  # checked before reading: sizes can be forged
                raise EOFError("the archive ends inside this member")
            stored = read_exactly(handle, start, info.compress_size)
            data = stored
            if info.compress_type == zipfile.ZIP_DEFLATED and stored:  # never inflate past the declared size
                data = zlib.decompressobj(-15).decompress(stored, info.file_size + 1)
            if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
                raise zipfile.BadZipFile("bad CRC-32 or size: the member's data are corrupt")
            return data
        except ZIP_READ_ERRORS as error:
            raise UserError(f"{source}:{member}: cannot read from the archive ({type(error).__name__}: {error})") from None

    try:
        yield read_member
    finally:
        for handle in handles + opened:
            handle.close()


# ---------------------------------------------------------------------------------------------
# The frame dataset (§6)

FRAME_KEYS = {"x_train": np.uint16, "y_train": np.uint8, "x_test": np.uint16, "y_test": np.uint8}


def save_frames(path, x_train, y_train, x_test, y_test):
    """Write the frame dataset atomically: uint16 counts (N, 34, 34) [sample, y, x], uint8 labels."""
    arrays = {"x_train": np.asarray(x_train), "y_train": np.asarray(y_train),
              "x_test": np.asarray(x_test), "y_test": np.asarray(y_test)}
    _check_frame_arrays(path, arrays)  # before the casts, which would wrap out-of-range values
    for key, array in arrays.items():
        if key.startswith("x_") and array.size and (array.min() < 0 or array.max() > MAX_PIXEL_COUNT):
            raise UserError(f"{path}: {key} holds counts outside 0..{MAX_PIXEL_COUNT}")
    arrays = {key: array.astype(FRAME_KEYS[key]) for key, array in arrays.items()}
    with atomic_path(path, suffix=".npz") as temporary:
        np.savez(temporary, **arrays)  # uncompressed: zlib would take longer than converting the recordings


def _check_frame_arrays(path, arrays):
    """UserError unless x_<split> is (N, 34, 34) and y_<split> is (N,) with labels 0..9."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (SENSOR_SIZE, SENSOR_SIZE):
            raise UserError(f"{path}: x_{split} has shape {x.shape}, expected (N, 34, 34)")
        if y.shape != (x.shape[0],):
            raise UserError(f"{path}: y_{split} has shape {y.shape}, expected ({x.shape[0]},)")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise UserError(f"{path}: y_{split} holds labels outside 0..9")


def check_data_file(path):
    """UserError unless `path` is a file: the first check of a frame dataset, made before any long import."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a frame dataset (.npz)")
    if not path.is_file():
        raise UserError(f"{path}: data file not found (make it with `python preprocessing_n_mnist.py --raw "
                        "data/N-MNIST`; for the offline demo, `python preprocessing_n_mnist.py --demo` and then "
                        "`--data data/n_mnist_demo.npz`)")


def load_frame_counts(path):
    """The raw arrays of a frame dataset, validated: {'x_train': uint16 (N, 34, 34), ...}."""
    path = Path(path)
    check_data_file(path)
    arrays = load_npz_arrays(path, "frame dataset")
    missing = [key for key in FRAME_KEYS if key not in arrays]
    if missing:
        raise UserError(f"{path}: missing array(s) {', '.join(missing)}")
    for key, dtype in FRAME_KEYS.items():
        if arrays[key].dtype != dtype:
            raise UserError(f"{path}: {key} has dtype {arrays[key].dtype}, expected {np.dtype(dtype).name}")
    _check_frame_arrays(path, arrays)
    return arrays


def load_frames(path, train_limit=None, test_limit=None):
    """Network inputs: (x_train, y_train, x_test, y_test).

    x: float32 (N, 34, 34, 1) = ON count / 32; y: int64 labels. `*_limit` keeps the first N samples;
    0 means that split is not needed (its arrays come back empty, and it may be empty in the file).
    """
    arrays = load_frame_counts(path)

    def prepare(split, limit):
        x, y = arrays[f"x_{split}"][:limit], arrays[f"y_{split}"][:limit]
        if len(x) == 0 and limit != 0:
            raise UserError(f"{path}: the {split} split is empty")
        return (x.astype(np.float32) / FRAME_SCALE)[..., None], y.astype(np.int64)

    x_train, y_train = prepare("train", train_limit)
    x_test, y_test = prepare("test", test_limit)
    return x_train, y_train, x_test, y_test
