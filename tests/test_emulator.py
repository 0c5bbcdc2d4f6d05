"""The saccade emulator behind `preprocessing_n_mnist.py --demo`: valid, realistic, reproducible.

Recordings are emulated per image on a few digits; `write_demo_recordings` runs only on a small
subset of the source images, so the whole file takes a few seconds.
"""
import numpy as np
import pytest

import n_mnist
import preprocessing_n_mnist
import saccade_emulator
from cli import UserError

SIZE = n_mnist.SENSOR_SIZE


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


def test_a_brightening_pixel_fires_on_events_and_a_darkening_one_off_events():
    """The change detector: +5 thresholds of log intensity give 4-5 ON events, -5 give 4-5 OFF events."""
    n_frames = saccade_emulator.n_steps() + 1
    threshold = np.full((n_mnist.SENSOR_SIZE, n_mnist.SENSOR_SIZE), 0.2, np.float32)
    movie = np.zeros((1, n_frames, n_mnist.SENSOR_SIZE, n_mnist.SENSOR_SIZE))
    ramp = np.linspace(0.0, 5 * 0.2, n_frames)
    movie[0, :, 3, 4] = ramp  # brightens: [y=3, x=4]
    movie[0, :, 10, 20] = -ramp  # darkens
    counts = saccade_emulator.event_counts(movie, threshold, np.random.default_rng(0))[0]
    assert counts[:, 3, 4].min() >= 0 and counts[:, 3, 4].sum() in (4, 5)
    assert counts[:, 10, 20].max() <= 0 and counts[:, 10, 20].sum() in (-4, -5)
    counts[:, 3, 4] = counts[:, 10, 20] = 0
    assert not counts.any()  # nothing else changed, nothing else fired


def test_signed_counts_become_on_and_off_events_where_and_when_they_fired(monkeypatch):
    monkeypatch.setattr(saccade_emulator, "NOISE_RATE_HZ", 0.0)
    monkeypatch.setattr(saccade_emulator, "HOT_PIXEL_RATE_HZ", 0.0)
    rng = np.random.default_rng(1)
    counts = np.zeros((saccade_emulator.n_steps(), n_mnist.SENSOR_SIZE, n_mnist.SENSOR_SIZE), np.int8)
    counts[7, 3, 4] = 3  # three ON events at y=3, x=4 in step 7
    counts[50, 10, 20] = -2  # two OFF events at y=10, x=20 in step 50
    events = saccade_emulator.events_from_counts(counts, saccade_emulator.make_sensor(rng), rng)
    assert events.x.tolist() == [4, 4, 4, 20, 20] and events.y.tolist() == [3, 3, 3, 10, 10]
    assert events.polarity.tolist() == [1, 1, 1, 0, 0]
    step_us = saccade_emulator.STEP_US
    assert np.all((events.timestamp[:3] >= 7 * step_us) & (events.timestamp[:3] < 8 * step_us))
    assert np.all((events.timestamp[3:] >= 50 * step_us) & (events.timestamp[3:] < 51 * step_us))


def test_a_blank_image_records_only_sparse_noise_and_the_hot_pixel():
    rng = np.random.default_rng(2)
    sensor = saccade_emulator.make_sensor(rng)
    events = saccade_emulator.emulate_recording(np.zeros((28, 28), np.float32), rng, sensor)
    duration_s = saccade_emulator.n_steps() * saccade_emulator.STEP_US * 1e-6
    expected_noise = saccade_emulator.NOISE_RATE_HZ * n_mnist.SENSOR_SIZE**2 * duration_s  # about 179
    expected_hot = saccade_emulator.HOT_PIXEL_RATE_HZ * duration_s  # about 15
    per_pixel = np.zeros((n_mnist.SENSOR_SIZE, n_mnist.SENSOR_SIZE), int)
    np.add.at(per_pixel, (events.y, events.x), 1)
    hot_x, hot_y = sensor.hot_pixel
    assert abs(len(events) - expected_noise - expected_hot) < 5 * np.sqrt(expected_noise + expected_hot)
    assert per_pixel[hot_y, hot_x] >= expected_hot / 3 and per_pixel[hot_y, hot_x] == per_pixel.max()
    assert (per_pixel > 0).sum() > 100  # spread over the sensor, not a moving digit
    assert 0.3 < events.polarity.mean() < 0.7


def test_the_demo_command_writes_the_frame_dataset_and_compares_with_the_real_sample(tmp_path):
    out = tmp_path / "demo.npz"
    summary = preprocessing_n_mnist.build_demo(out, raw=tmp_path / "recordings", seed=3, progress=False, max_images=40)
    arrays = n_mnist.load_frame_counts(out)
    assert len(arrays["y_train"]) == 64 and len(arrays["y_test"]) == 8  # 32 images twice, 8 once
    assert arrays["x_train"].sum(axis=(1, 2)).min() > 500  # every frame holds a recorded digit
    assert f"wrote {out}" in summary and "\ndemo " in summary
    has_real_sample = (saccade_emulator.REAL_SAMPLE / "Train").is_dir()
    assert ("real N-MNIST sample" in summary) == has_real_sample
    with pytest.raises(UserError, match="--raw and --skip-bad do not apply"):
        preprocessing_n_mnist.main(["--demo", "--raw", str(tmp_path), "--out", str(tmp_path / "other.npz")])


def test_an_interrupted_demo_leaves_the_previous_recordings_whole(tmp_path, monkeypatch):
    root = tmp_path / "recordings"
    saccade_emulator.write_demo_recordings(root, seed=1, progress=False, max_images=20)
    before = {path: path.read_bytes() for path in root.glob("*/*/*.bin")}
    calls = []

    def fail_on_the_second_batch(images, rng, sensor):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(images, rng, sensor)

    original = saccade_emulator.emulate_recordings
    monkeypatch.setattr(saccade_emulator, "emulate_recordings", fail_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        saccade_emulator.write_demo_recordings(root, seed=2, progress=False, max_images=20)
    assert {path: path.read_bytes() for path in root.glob("*/*/*.bin")} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["recordings"]  # no staging folder left


def test_the_demo_never_replaces_a_folder_holding_other_files(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="notes.txt"):
        saccade_emulator.write_demo_recordings(tmp_path / "mine", seed=0, progress=False, max_images=10)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_each_event_keeps_its_polarity_when_the_noise_is_sorted_in():
    rng = np.random.default_rng(1)
    counts = np.zeros((saccade_emulator.n_steps(), SIZE, SIZE), np.int8)
    counts[7, 3, 4] = 3  # ON at y=3, x=4 in step 7
    counts[250, 10, 20] = -2  # OFF at y=10, x=20 in step 250
    events = saccade_emulator.events_from_counts(counts, saccade_emulator.make_sensor(rng), rng)  # noise on
    step = events.timestamp // saccade_emulator.STEP_US
    on = (events.x == 4) & (events.y == 3) & (step == 7)
    off = (events.x == 20) & (events.y == 10) & (step == 250)
    assert events.polarity[on].tolist() == [1, 1, 1] and events.polarity[off].tolist() == [0, 0]


def test_training_files_of_one_image_are_not_neighbours():
    labels = saccade_emulator.demo_source_images()[1]
    train = saccade_emulator.demo_plan(labels, seed=0)["Train"]
    assert np.mean(train[1:] == train[:-1]) < 0.05  # shuffled: about 1 in 1,400; unshuffled pairs: 1 in 2


def test_timestamps_stay_inside_the_step_that_fired(monkeypatch):
    monkeypatch.setattr(saccade_emulator, "NOISE_RATE_HZ", 0.0)
    monkeypatch.setattr(saccade_emulator, "HOT_PIXEL_RATE_HZ", 0.0)
    rng = np.random.default_rng(1)
    counts = np.zeros((saccade_emulator.n_steps(), SIZE, SIZE), np.int8)
    counts[7] = 100  # 115,600 events in step 7
    events = saccade_emulator.events_from_counts(counts, saccade_emulator.make_sensor(rng), rng)
    assert events.timestamp.min() >= 7_000 and events.timestamp.max() < 8_000


def test_the_saccade_triangle_closes():
    offsets = saccade_emulator.saccade_offsets(4, np.random.default_rng(0))
    np.testing.assert_allclose(offsets[:, -1], offsets[:, 0])


def test_the_test_share_is_rounded():
    assert len(saccade_emulator.demo_plan(np.arange(38) % 10, seed=0)["Test"]) == 8  # 0.2 * 38 = 7.6
