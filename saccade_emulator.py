"""An offline stand-in for N-MNIST: static digit images recorded the way N-MNIST was made.

N-MNIST (ALGORITHM.md §1) was recorded by an ATIS event camera looking at MNIST digits on a
monitor while it made three saccades (a triangle, about 100 ms each). This module emulates that
recording so the whole pipeline runs without the 1 GB download:

- source images: scikit-learn's bundled 8 x 8 digits, upscaled smoothly to 28 x 28 (an 18 x 18
  digit centred like MNIST's);
- motion: the 28 x 28 image moves over the 34 x 34 sensor along a triangle, each side a smooth
  saccade (still at both ends, fastest in the middle);
- sensor: each pixel fires an ON (OFF) event whenever its log intensity has risen (fallen) by its
  contrast threshold since its last event, several events in one time step if the change spans
  several thresholds; thresholds differ a little from pixel to pixel;
- noise: sparse background events everywhere and one hot pixel, as in the real recordings.

`python preprocessing_n_mnist.py --demo` calls `write_demo_recordings`, which writes
`Train/<digit>/<id>.bin` and `Test/<digit>/<id>.bin` in the official 40-bit format.
"""
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

import n_mnist
from cli import UserError

SENSOR_SIZE = n_mnist.SENSOR_SIZE  # 34
IMAGE_SIZE = 28  # MNIST image side
DIGIT_BOX = 18  # MNIST fits digits in a centred 20 x 20 box; scikit-learn's bolder digits need 18 to match (calibrated)
UPSCALE_BLUR = 0.4  # Gaussian resampling width, in source (8 x 8) pixels: smooth, yet sharp strokes
STROKE_GAIN = 1.5  # brightens the blurred strokes and clips them at white, as MNIST's strokes are saturated

# Motion: image offset (x, y) in sensor pixels at the triangle's corners; the image may move by up
# to 34 - 28 = 6 pixels. The shape follows the event centroids of the real recordings: down and a
# little right, then up and right, then back left.
SACCADE_CORNERS = ((0.5, 0.5), (2.8, 5.5), (5.5, 0.5))
CORNER_JITTER_PX = 0.35  # per-recording standard deviation of each corner (real saccades vary)
SACCADE_US = 103_000  # each of the three saccades; the real recordings last about 310 ms
STEP_US = 1_000  # simulation time step; event timestamps are jittered within it

# Sensor. Intensity 0..1 on the monitor seen through a black level, log-compressed by the pixel.
BLACK_LEVEL = 0.35  # monitor black relative to white: sets the contrast of an edge (calibrated)
CONTRAST_THRESHOLD = 0.17  # log-intensity change that fires one event (calibrated)
THRESHOLD_MISMATCH = 0.1  # relative standard deviation of the threshold across pixels
NOISE_RATE_HZ = 0.5  # background events per pixel per second (real data: about 0.5 at the borders)
HOT_PIXEL_RATE_HZ = 50.0  # the hot pixel's event rate (real data: about 16 events per recording)

TEST_FRACTION = 0.2  # share of the source images kept for the test split (359 of 1,797)
TRAIN_REPEATS = 2  # each training image is recorded this many times, with different jitter and noise
BATCH_SIZE = 8  # recordings simulated together (memory: about 15 MB per recording)
REAL_SAMPLE = Path(__file__).resolve().parent.parent / "shared" / "data" / "nmnist_real_sample"


# ---------------------------------------------------------------------------------------------
# Source images


def resampling_weights(positions, n_source, width):
    """Gaussian interpolation weights (len(positions), n_source), rows summing to 1.

    Upscaling an image is `W_rows @ image @ W_cols.T`; Gaussian weights give a smooth result with
    no bilinear creases.
    """
    distance = np.asarray(positions)[:, None] - np.arange(n_source)[None, :]
    weights = np.exp(-0.5 * (distance / width) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def demo_source_images():
    """scikit-learn's 1,797 digits as MNIST-like images: float32 (1797, 28, 28) in [0, 1], int labels."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    n_small, rim = digits.images.shape[1], 2
    small = np.pad(digits.images / 16.0, ((0, 0), (rim, rim), (rim, rim)))  # (1797, 12, 12), [y, x]: blank rim to fade into
    # Centre of every 28 x 28 pixel in padded 8 x 8 coordinates; the 8 x 8 digit spans the central DIGIT_BOX pixels.
    margin = (IMAGE_SIZE - DIGIT_BOX) / 2
    centres = (np.arange(IMAGE_SIZE) - margin + 0.5) * n_small / DIGIT_BOX - 0.5 + rim
    weights = resampling_weights(centres, n_small + 2 * rim, UPSCALE_BLUR)  # (28, 12)
    images = weights @ small @ weights.T  # (1797, 28, 28)
    images = np.clip(STROKE_GAIN * images / images.max(axis=(1, 2), keepdims=True), 0.0, 1.0)  # solid strokes, as in MNIST
    return images.astype(np.float32), digits.target.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# The sensor and the recording


@dataclass
class Sensor:
    """What stays fixed across all recordings of one camera: thresholds and the hot pixel."""

    threshold: np.ndarray  # float32 (34, 34), log-intensity change per event, [y, x]
    hot_pixel: tuple  # (x, y)


def make_sensor(rng):
    """A sensor with per-pixel threshold mismatch and one hot pixel near the bottom centre."""
    spread = rng.normal(1.0, THRESHOLD_MISMATCH, size=(SENSOR_SIZE, SENSOR_SIZE))
    threshold = CONTRAST_THRESHOLD * np.clip(spread, 0.5, 1.5)
    hot_pixel = (int(rng.integers(12, 22)), int(rng.integers(26, 32)))
    return Sensor(threshold=threshold.astype(np.float32), hot_pixel=hot_pixel)


def n_steps():
    """Simulation steps of one recording (three saccades)."""
    return 3 * SACCADE_US // STEP_US


def saccade_offsets(n_recordings, rng):
    """Image offset on the sensor at every step boundary: float (n_recordings, n_steps + 1, 2), (x, y).

    Each side of the triangle is one saccade whose progress eases in and out, (1 - cos(pi u)) / 2,
    so the eye is still at the corners and fastest mid-way, as the real event rate shows.
    """
    corners = np.array(SACCADE_CORNERS + SACCADE_CORNERS[:1])  # (4, 2): A, B, C, back to A
    corners = corners + rng.normal(0.0, CORNER_JITTER_PX, size=(n_recordings, 4, 2))
    corners[:, 3] = corners[:, 0]  # the loop closes, so every pixel ends where it started
    time_us = np.arange(n_steps() + 1) * STEP_US
    saccade = np.minimum(time_us // SACCADE_US, 2)  # (n_steps + 1,)
    progress = (time_us - saccade * SACCADE_US) / SACCADE_US
    eased = (1.0 - np.cos(np.pi * progress)) / 2.0
    start, end = corners[:, saccade], corners[:, saccade + 1]  # (n_recordings, n_steps + 1, 2)
    return start + eased[None, :, None] * (end - start)


# p - i for sensor pixel p and image pixel i: (34, 28), shifted to index 0 at p - i = -27
SENSOR_MINUS_IMAGE = np.arange(SENSOR_SIZE)[:, None] - np.arange(IMAGE_SIZE)[None, :] + IMAGE_SIZE - 1


def shift_weights(offsets):
    """Bilinear weights placing a 28-pixel line at sub-pixel offsets: offsets (...) -> (..., 34, 28).

    Sensor pixel p sees image pixel i with weight max(0, 1 - |p - i - offset|). That weight
    depends on p - i only (61 values), so it is computed for those and then spread out.
    """
    gaps = np.arange(-(IMAGE_SIZE - 1), SENSOR_SIZE)  # every p - i, (61,)
    tent = np.maximum(0.0, 1.0 - np.abs(gaps - np.asarray(offsets)[..., None]))  # (..., 61)
    return np.take(tent, SENSOR_MINUS_IMAGE, axis=-1)  # C-contiguous (unlike tent[..., index]), so matmul uses BLAS


def log_intensity_movie(images, offsets):
    """Log intensity each sensor pixel sees at every step: float64 (batch, n_steps + 1, 34, 34).

    images: (batch, 28, 28) in [0, 1]; offsets: (batch, n_steps + 1, 2). The log image is moved
    with bilinear interpolation, separably (rows, then columns) as two matrix products.
    """
    background = np.log(BLACK_LEVEL)
    # Interpolate the log image's difference from the background, so that pixels off the image see black.
    log_images = np.log(BLACK_LEVEL + images.astype(np.float64)) - background  # (batch, 28, 28)
    rows = shift_weights(offsets[..., 1])  # (batch, steps, 34, 28)
    columns = shift_weights(offsets[..., 0])
    moved_rows = (rows.reshape(len(images), -1, IMAGE_SIZE) @ log_images).reshape(rows.shape)  # one product per image
    return moved_rows @ columns.transpose(0, 1, 3, 2) + background


def event_counts(log_movie, threshold, rng):
    """Signed events per pixel and step: int8 (batch, n_steps, 34, 34), + ON, - OFF.

    Each pixel remembers the log intensity of its last event as an integer number `level` of
    thresholds above a random starting reference. When the scaled intensity z has moved a whole
    threshold or more away, trunc(z - level) events fire and level moves by as many.
    """
    start = rng.uniform(-1.0, 1.0, size=(len(log_movie), SENSOR_SIZE, SENSOR_SIZE))  # (batch, 34, 34)
    scaled = ((log_movie - log_movie[:, :1]) / threshold + start[:, None]).astype(np.float32)  # z, in thresholds
    counts = np.empty_like(scaled[:, 1:])
    level = np.zeros_like(scaled[:, 0])
    for step in range(counts.shape[1]):
        np.subtract(scaled[:, step + 1], level, out=counts[:, step])
        np.trunc(counts[:, step], out=counts[:, step])
        level += counts[:, step]
    return counts.astype(np.int8)


def events_from_counts(counts, sensor, rng):
    """One recording's events, sorted by time: counts int8 (n_steps, 34, 34) plus noise -> Events."""
    flat = np.flatnonzero(counts)  # under 1 % of pixel-steps fire; flatnonzero is the fastest search
    signed = counts.ravel()[flat]
    step, y, x = np.unravel_index(flat, counts.shape)
    repeats = np.abs(signed)
    step, y, x, polarity = (np.repeat(a, repeats) for a in (step, y, x, signed > 0))
    timestamp = step * STEP_US + rng.integers(0, STEP_US, size=len(step))

    duration_us = n_steps() * STEP_US
    n_noise = rng.poisson(NOISE_RATE_HZ * SENSOR_SIZE**2 * duration_us * 1e-6)
    n_hot = rng.poisson(HOT_PIXEL_RATE_HZ * duration_us * 1e-6)
    noise_x = np.concatenate([rng.integers(0, SENSOR_SIZE, n_noise), np.full(n_hot, sensor.hot_pixel[0])])
    noise_y = np.concatenate([rng.integers(0, SENSOR_SIZE, n_noise), np.full(n_hot, sensor.hot_pixel[1])])
    noise_polarity = rng.random(n_noise + n_hot) < 0.5
    noise_timestamp = rng.integers(0, duration_us, size=n_noise + n_hot)

    timestamp = np.concatenate([timestamp, noise_timestamp])
    order = np.argsort(timestamp, kind="stable")
    return n_mnist.Events(
        x=np.concatenate([x, noise_x]).astype(np.uint8)[order],
        y=np.concatenate([y, noise_y]).astype(np.uint8)[order],
        polarity=np.concatenate([polarity, noise_polarity]).astype(np.uint8)[order],
        timestamp=timestamp[order].astype(np.int64),
    )


def emulate_recordings(images, rng, sensor):
    """Record a batch of images (batch, 28, 28) in [0, 1]: a list of Events, one per image."""
    offsets = saccade_offsets(len(images), rng)
    counts = event_counts(log_intensity_movie(images, offsets), sensor.threshold, rng)
    return [events_from_counts(counts[index], sensor, rng) for index in range(len(images))]


def emulate_recording(image, rng, sensor=None):
    """Record one image (28, 28) in [0, 1] as N-MNIST would: Events with µs timestamps, sorted.

    Without a `sensor`, a fresh one is drawn from `rng`.
    """
    sensor = make_sensor(rng) if sensor is None else sensor
    return emulate_recordings(np.asarray(image, dtype=np.float32)[None], rng, sensor)[0]


# ---------------------------------------------------------------------------------------------
# Statistics, shared by the demo and the real sample so the two are measured the same way

def recording_statistics(events):
    """(events, ON share, duration in ms, highest ON count of any pixel) of one recording."""
    on_share = float(events.polarity.mean()) if len(events) else 0.0
    duration_ms = float(events.timestamp.max() - events.timestamp.min()) / 1000 if len(events) else 0.0
    return len(events), on_share, duration_ms, int(n_mnist.on_event_frame(events).max())


def statistics_line(label, rows):
    """One aligned summary line of the means of `recording_statistics` rows (peak also as a range)."""
    rows = np.asarray(rows, dtype=np.float64)  # (n_recordings, 4)
    events, on_share, duration, peak = rows.mean(axis=0)
    return (
        f"{label:<24}{len(rows):>8,}{events:>18,.0f}{on_share:>10.3f}{duration:>13.1f}"
        f"{peak:>12.1f} ({rows[:, 3].min():.0f}-{rows[:, 3].max():.0f})"
    )


def statistics_header():
    """Column titles for `statistics_line`."""
    return f"{'statistics':<24}{'files':>8}{'events/sample':>18}{'ON share':>10}{'duration ms':>13}{'peak ON/pixel':>21}"


def real_sample_statistics(root=REAL_SAMPLE):
    """Statistics rows of the real recordings under root/Train, or None when the folder is absent."""
    if not (Path(root) / "Train").is_dir():
        return None
    return [
        recording_statistics(n_mnist.decode_events(data, name=name))
        for _, name, data in n_mnist.iter_recordings(root, "Train")
    ]


# ---------------------------------------------------------------------------------------------
# The demo dataset


def demo_plan(labels, seed, test_fraction=TEST_FRACTION, train_repeats=TRAIN_REPEATS):
    """Which source image each file records: {split: int array (n_files,) of image indices}.

    The split is by source image, so no digit image is in both splits. File i of a split gets id
    i + 1; the order is shuffled so consecutive ids mix digits, as in MNIST.
    """
    rng = np.random.default_rng([seed, 1])  # its own stream: the plan does not shift the recordings
    shuffled = rng.permutation(len(labels))
    n_test = int(round(test_fraction * len(labels)))
    test, train = shuffled[:n_test], shuffled[n_test:]
    return {"Train": rng.permutation(np.repeat(train, train_repeats)), "Test": rng.permutation(test)}


def recording_path(root, split, label, file_id):
    """root/<split>/<digit>/<5-digit id>.bin, the official layout."""
    return Path(root) / split / str(int(label)) / f"{file_id:05d}.bin"


def replace_folder(staging, root):
    """Put the finished `staging` folder at `root`, replacing an earlier demo (Train/ and Test/ only)."""
    root = check_replaceable(root)
    if root.exists():
        shutil.rmtree(root)
    os.replace(staging, root)


def check_replaceable(root):
    """`root` as a Path; UserError unless it is absent or a folder of earlier demo recordings only."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: is a file, not a folder for the demo recordings")
    if root.exists():
        unexpected = sorted(path.name for path in root.iterdir() if path.name not in n_mnist.SPLITS)
        if unexpected:
            raise UserError(f"{root}: holds {', '.join(unexpected)} besides Train/ and Test/: not replacing it with demo recordings")
    return root


def write_demo_recordings(root, seed, progress=True, max_images=None, train_repeats=TRAIN_REPEATS):
    """Emulate recordings of scikit-learn's digits into root/Train and root/Test; returns a summary.

    Same seed, same bytes. `max_images` uses only the first source images (for quick tests). The
    files are written into a temporary folder beside `root`, which replaces `root` when complete,
    so an interrupted run leaves the previous recordings (or none), never a partial set.
    """
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    started = time.perf_counter()
    check_replaceable(root)  # before the work, not only after it
    images, labels = demo_source_images()
    images, labels = images[:max_images], labels[:max_images]
    plan = demo_plan(labels, seed, train_repeats=train_repeats)
    rng = np.random.default_rng(seed)
    sensor = make_sensor(rng)
    Path(root).parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=Path(root).parent, prefix=f".{Path(root).name}.", suffix=".tmp"))
    for split in n_mnist.SPLITS:
        for digit in n_mnist.DIGITS:
            (staging / split / digit).mkdir(parents=True)

    statistics = []
    total = sum(len(indices) for indices in plan.values())
    try:
        # One BLAS thread: the many small matrix products only slow down when split across cores.
        with threadpool_limits(limits=1, user_api="blas"), tqdm(
            total=total, desc="emulate", unit="file", disable=not progress
        ) as bar:
            for split, indices in plan.items():
                for first in range(0, len(indices), BATCH_SIZE):
                    batch = indices[first:first + BATCH_SIZE]
                    for offset, events in enumerate(emulate_recordings(images[batch], rng, sensor)):
                        path = recording_path(staging, split, labels[batch[offset]], first + offset + 1)
                        path.write_bytes(n_mnist.encode_events(events))
                        statistics.append(recording_statistics(events))
                    bar.update(len(batch))
        replace_folder(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    n_train, n_test = len(plan["Train"]), len(plan["Test"])
    lines = [
        f"emulated {n_train:,} training recordings ({n_train // train_repeats:,} images x {train_repeats}) and "
        f"{n_test:,} test recordings (the other {n_test:,} images) into {root} in {time.perf_counter() - started:.1f} s",
        statistics_header(),
        statistics_line("demo", statistics),
    ]
    real = real_sample_statistics()
    if real:
        lines.append(statistics_line("real N-MNIST sample", real))
    return "\n".join(lines)
