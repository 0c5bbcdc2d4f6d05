"""The saccade emulator behind `preprocessing_n_mnist.py --demo`: valid, realistic, reproducible.

Recordings are emulated per image on a few digits; `write_demo_recordings` runs only on a small
subset of the source images, so the whole file takes a few seconds.
"""
import numpy as np
import pytest

import n_mnist
import saccade_emulator


@pytest.fixture(scope="module")
def source():
    """(images (1797, 28, 28), labels) from scikit-learn's bundled digits."""
    return saccade_emulator.demo_source_images()


@pytest.fixture(scope="module")
def recordings(source):
    """[(label, Events)] of one image per digit 0..9, recorded by one sensor."""
    images, labels = source
    rng = np.random.default_rng(11)
    sensor = saccade_emulator.make_sensor(rng)
    first_of_each = [int(np.flatnonzero(labels == digit)[0]) for digit in range(10)]
    return [(digit, saccade_emulator.emulate_recording(images[index], rng, sensor))
            for digit, index in zip(range(10), first_of_each)]


def test_source_images_are_mnist_like(source):
    images, labels = source
    assert images.shape == (1797, 28, 28) and labels.shape == (1797,)
    assert images.min() >= 0.0 and images.max() == pytest.approx(1.0)
    assert set(labels.tolist()) == set(range(10))
    assert images[:, :4].max() < 0.05 and images[:, -4:].max() < 0.05  # a blank margin, the digit centred
    assert images[:, :, :4].max() < 0.05 and images[:, :, -4:].max() < 0.05


def test_events_stay_on_the_sensor_and_are_sorted(recordings):
    for digit, events in recordings:
        assert len(events) > 1000, digit
        assert events.x.max() < n_mnist.SENSOR_SIZE and events.y.max() < n_mnist.SENSOR_SIZE
        assert events.timestamp.min() >= 0 and events.timestamp.max() <= n_mnist.MAX_TIMESTAMP_US
        assert np.all(np.diff(events.timestamp) >= 0), digit


def test_both_polarities_in_about_equal_numbers(recordings):
    for digit, events in recordings:
        assert 0.4 < events.polarity.mean() < 0.6, digit


def test_three_saccades_last_about_300_ms(recordings):
    for digit, events in recordings:
        duration_ms = (events.timestamp.max() - events.timestamp.min()) / 1000
        assert 280 <= duration_ms <= 330, digit
        per_10_ms = np.bincount(events.timestamp // 10_000)
        # the eye rests at each corner of the triangle: event rate dips near 100 and 200 ms
        for corner_bin in (10, 20):
            assert per_10_ms[corner_bin] < 0.5 * per_10_ms.max(), digit


def test_on_frame_shows_the_upright_digit(source, recordings):
    """The ON frame matches the source image placed at the sensor's centre better than its transpose."""
    images, labels = source
    upright, transposed = [], []
    for digit, events in recordings:
        image = np.pad(images[int(np.flatnonzero(labels == digit)[0])], 3)  # (34, 34)
        frame = n_mnist.on_event_frame(events).astype(np.float64).ravel()
        upright.append(np.corrcoef(frame, image.ravel())[0, 1])
        transposed.append(np.corrcoef(frame, image.T.ravel())[0, 1])
    assert np.mean(upright) > np.mean(transposed) + 0.05  # about 0.59 against 0.48


def test_same_seed_same_bytes_other_seed_other_bytes(source):
    image = source[0][5]

    def recorded(seed):
        return n_mnist.encode_events(saccade_emulator.emulate_recording(image, np.random.default_rng(seed)))

    assert recorded(3) == recorded(3)
    assert recorded(3) != recorded(4)


def test_demo_plan_splits_by_source_image(source):
    _, labels = source
    plan = saccade_emulator.demo_plan(labels, seed=0)
    train, test = set(plan["Train"].tolist()), set(plan["Test"].tolist())
    assert not train & test
    assert train | test == set(range(len(labels)))
    assert len(plan["Test"]) >= 300
    assert len(plan["Train"]) == saccade_emulator.TRAIN_REPEATS * len(train)
    assert len(set(labels[plan["Test"]].tolist())) == 10
    assert len(set(labels[plan["Train"][:20]].tolist())) >= 5  # consecutive ids mix digits
    other = saccade_emulator.demo_plan(labels, seed=1)
    assert not np.array_equal(other["Test"], plan["Test"])


def test_write_demo_recordings_is_reproducible_and_official(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    stale = first / "Train" / "3" / "99999.bin"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old run")
    summary = saccade_emulator.write_demo_recordings(first, seed=5, progress=False, max_images=40, train_repeats=2)
    saccade_emulator.write_demo_recordings(second, seed=5, progress=False, max_images=40, train_repeats=2)

    assert not stale.exists()
    files = sorted(path.relative_to(first) for path in first.glob("*/*/*.bin"))
    assert files == sorted(path.relative_to(second) for path in second.glob("*/*/*.bin"))
    assert all((first / name).read_bytes() == (second / name).read_bytes() for name in files)
    assert len(files) == 32 * 2 + 8  # 40 images: 8 for testing, 32 recorded twice for training

    for split in n_mnist.SPLITS:
        _, _, entries = n_mnist.list_recordings(first, split)
        ids = [int(path.stem) for _, path in entries]
        assert ids == list(range(1, len(entries) + 1))
        assert all(len(path.stem) == 5 for _, path in entries)
    train_labels = [label for label, _ in n_mnist.list_recordings(first, "Train")[2]]
    assert train_labels != sorted(train_labels)  # file order mixes digits
    assert "demo" in summary
