"""The quantized ANNs (ALGORITHM.md §2), their training and resume, and the §6 parameter file."""
import inspect
import json
import math
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import checkpointing
import commands
import evaluation
import models
import paths
import training
from architectures import ARCHITECTURES, BN_EPSILON, BN_MOMENTUM, DATASETS, MODEL_NAMES, PRECISIONS, precision_to_k
from cli import UserError
from conftest import REPO, assert_one_line_error, file_arrays, random_parameters, run_script, weighted_sum, write_parameters
from quantization import QuantizedReLU

KS = (0, 1, 2)
ALL = [(model, precision) for model in MODEL_NAMES for precision in PRECISIONS]


def quantize(values, k):
    layer = QuantizedReLU(k)
    return keras.ops.convert_to_numpy(layer(np.asarray(values, dtype=np.float32)))


# ---------------------------------------------------------------------------------------------
# The quantizer q_k


@pytest.mark.parametrize("k", KS)
def test_quantizer_outputs_multiples_of_the_step(k):
    rng = np.random.default_rng(k)
    values = np.concatenate([rng.normal(0, 3, 5000), rng.uniform(0, 40, 5000)]).astype(np.float32)
    # values a few float32 ulps around every rounding tie up to 20
    ties = (np.arange(0, 20 * 2**k) + 0.5) / 2**k
    near = np.concatenate([np.nextafter(ties.astype(np.float32), np.float32(np.inf)),
                           np.nextafter(ties.astype(np.float32), np.float32(-np.inf)), ties.astype(np.float32)])
    values = np.concatenate([values, near])
    out = quantize(values, k)
    levels = out * 2**k
    np.testing.assert_array_equal(levels, np.round(levels))  # exact multiples of 2**-k, bit for bit
    # and it is the §2 formula, evaluated in float64 on the same float32 inputs
    expected = np.round(np.maximum(values.astype(np.float64), 0) * 2**k + 1e-5) / 2**k
    exact_tie_free = np.abs((values.astype(np.float64) * 2**k) % 1 - 0.5) > 1e-3
    np.testing.assert_array_equal(out[exact_tie_free], expected[exact_tie_free])
    assert np.all(np.abs(out - np.maximum(values, 0)) <= (0.5 + 1e-5) / 2**k + 1e-6)


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("level,expected_level", [(0.5, 1), (1.5, 2), (2.5, 3), (3.5, 4), (10.5, 11)])
def test_quantizer_ties_round_up(k, level, expected_level):
    # a * 2**k exactly on a tie: the 1e-5 nudge rounds up (banker's rounding would give 0, 2, 2, 4, 10)
    a = level / 2**k
    assert quantize([a], k)[0] == expected_level / 2**k


@pytest.mark.parametrize("k,expected", [(0, 7.0), (1, 7.5), (2, 7.25)])
def test_quantizer_has_no_upper_clip(k, expected):
    assert quantize([7.3], k)[0] == pytest.approx(expected, abs=1e-6)
    assert quantize([1000.2], k)[0] == pytest.approx(np.round(1000.2 * 2**k) / 2**k, abs=1e-3)


@pytest.mark.parametrize("k", KS)
def test_quantizer_is_zero_for_negatives_and_small_values(k):
    out = quantize([-100.0, -1.0, -0.5, -1e-7, 0.0, 0.49 / 2**k, 0.4999 / 2**k], k)
    np.testing.assert_array_equal(out, np.zeros(7, dtype=np.float32))


@pytest.mark.parametrize("k", KS)
def test_quantizer_gradient_is_relu_gradient(k):
    x = tf.constant(np.array([-3.0, -0.7, -0.01, 0.01, 0.3, 0.5, 0.74, 1.26, 7.3, 20.0], dtype=np.float32))
    upstream = tf.constant(np.arange(1, 11, dtype=np.float32))
    layer = QuantizedReLU(k)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        quantized = tf.reduce_sum(layer(x) * upstream)
        relu = tf.reduce_sum(tf.nn.relu(x) * upstream)
    np.testing.assert_array_equal(tape.gradient(quantized, x).numpy(), tape.gradient(relu, x).numpy())
    np.testing.assert_array_equal(tape.gradient(quantized, x).numpy(), np.where(x.numpy() > 0, upstream.numpy(), 0))


@pytest.mark.parametrize("k", KS)
def test_quantizer_config_round_trip_and_model_save_load(k, tmp_path):
    layer = QuantizedReLU(k, name="q")
    config = layer.get_config()
    assert config["k"] == k
    clone = QuantizedReLU.from_config(config)
    assert clone.k == k and clone.name == "q"

    inputs = keras.Input((5,))
    outputs = QuantizedReLU(k, name="act")(keras.layers.Dense(3, use_bias=False, name="d")(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(k).normal(0, 2, (64, 5)).astype(np.float32)
    path = tmp_path / "q.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("act"), QuantizedReLU) and loaded.get_layer("act").k == k
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("k", [-1, 1.5, "x", True])
def test_quantizer_rejects_bad_k(k):
    with pytest.raises((ValueError, TypeError)):
        QuantizedReLU(k)


# ---------------------------------------------------------------------------------------------
# The Keras models


# ALGORITHM.md §2, typed from its tables (not from architectures.py): (layer, kernel shape, output shape).
SECTION_2 = {
    "lenet": [("conv1", (5, 5, 1, 12), (30, 30, 12)), ("conv2", (2, 2, 12, 12), (15, 15, 12)),
              ("conv3", (4, 4, 12, 64), (12, 12, 64)), ("conv4", (2, 2, 64, 64), (6, 6, 64)),
              ("out", (2304, 10), (10,))],
    "mlp": [("dense1", (1156, 400), (400,)), ("dense2", (400, 400), (400,)), ("out", (400, 10), (10,))],
}


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_layers_are_those_of_section_2(model):
    net = models.build_model(model, 1)
    for name, kernel_shape, output_shape in SECTION_2[model]:
        layer = net.get_layer(name)
        assert tuple(layer.kernel.shape) == kernel_shape, name
        assert tuple(layer.output.shape[1:]) == output_shape, name
    assert [layer.strides for layer in net.layers if isinstance(layer, keras.layers.Conv2D)] == (
        [(1, 1), (2, 2), (1, 1), (2, 2)] if model == "lenet" else [])


TRUNCATED_AT_2_STDDEV = 0.8796  # stddev of a normal cut at ±2 stddev, relative to the untruncated one


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_initial_weights_are_the_authors(model):
    """§2: hidden kernels N(0, 0.02) and the output kernel N(0, 0.1), both cut at 2 stddev; gamma N(1, 0.002), beta 0."""
    keras.utils.set_random_seed(3)
    net = models.build_model(model, 1)
    hidden = [net.get_layer(layer.name).kernel.numpy().ravel() for layer in ARCHITECTURES[model]]
    out = net.get_layer("out").kernel.numpy().ravel()
    bns = [net.get_layer(f"bn{i}") for i in range(1, len(ARCHITECTURES[model]) + 1)]
    gamma = np.concatenate([bn.gamma.numpy() for bn in bns])
    for kernel, stddev in [(np.concatenate(hidden), 0.02), (out, 0.1)]:
        assert np.abs(kernel).max() <= 2 * stddev
        assert np.abs(kernel).max() > 1.9 * stddev  # truncated at 2 stddev, not narrower
        assert abs(kernel.mean()) < 4 * stddev / np.sqrt(kernel.size)
        assert kernel.std() == pytest.approx(TRUNCATED_AT_2_STDDEV * stddev, rel=0.05)
    for kernel in hidden:  # each layer draws its own values
        assert kernel.std() == pytest.approx(TRUNCATED_AT_2_STDDEV * 0.02, rel=0.25)
    assert abs(gamma.mean() - 1.0) < 4 * 0.002 / np.sqrt(gamma.size)
    assert gamma.std() == pytest.approx(0.002, rel=0.25)
    assert all((bn.beta.numpy() == 0).all() for bn in bns)


def test_initial_weights_follow_the_seed():
    keras.utils.set_random_seed(5)
    first = models.build_model("mlp", 0).get_weights()
    keras.utils.set_random_seed(5)
    second = models.build_model("mlp", 0).get_weights()
    keras.utils.set_random_seed(6)
    third = models.build_model("mlp", 0).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], third[0])


@pytest.mark.parametrize("model,precision", ALL)
def test_model_structure(model, precision):
    k = precision_to_k(precision)
    net = models.build_model(model, k)
    out = net.predict(np.zeros((3, 34, 34, 1), dtype=np.float32), verbose=0)
    assert out.shape == (3, 10)

    # parameters: exactly the §6 arrays, with their shapes; no bias variable anywhere
    assert not any("bias" in weight.path for weight in net.weights)
    for layer in net.layers:
        assert getattr(layer, "bias", None) is None, layer.name
        if hasattr(layer, "use_bias"):
            assert layer.use_bias is False, layer.name
    exported = models.export_parameters(net, model, k)
    shapes = models.parameter_shapes(model)
    assert {name: value.shape for name, value in exported.items() if name not in ("model", "k")} == shapes
    assert sum(int(np.prod(shape)) for shape in shapes.values()) == net.count_params()

    hidden = ARCHITECTURES[model]
    bns = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == len(hidden)
    for index, spec in enumerate(hidden, start=1):
        bn = net.get_layer(f"bn{index}")
        assert bn.momentum == BN_MOMENTUM == 0.9 and bn.epsilon == BN_EPSILON == 1e-5
        assert bn.center and bn.scale
        assert bn.input is net.get_layer(spec.name).output  # weight layer -> BN
        act = net.get_layer(f"act{index}")
        assert act.input is bn.output  # BN -> activation
        if k >= 0:
            assert isinstance(act, QuantizedReLU) and act.k == k
        else:
            assert type(act) is keras.layers.ReLU
            assert act.max_value is None and float(act.negative_slope) == 0.0 and float(act.threshold) == 0.0
    assert sum(isinstance(layer, QuantizedReLU) for layer in net.layers) == (len(hidden) if k >= 0 else 0)
    out_layer = net.get_layer("out")
    assert isinstance(out_layer, keras.layers.Dense) and out_layer.units == 10
    assert out_layer.activation is keras.activations.linear
    assert net.output is out_layer.output


def numpy_forward(params, frames):
    """§2 in float64: logits and per-layer activations (ReLU at k = -1, q_k otherwise)."""
    model, k = params["model"], params["k"]
    activation, activations = frames.astype(np.float64), []
    for index, spec in enumerate(ARCHITECTURES[model], start=1):
        kernel = params[f"{spec.name}_kernel"]
        z = weighted_sum(spec, kernel, activation)
        g, b, m, v = (params[f"bn{index}_{f}"] for f in ("gamma", "beta", "mean", "var"))
        a = np.maximum(g * (z - m) / np.sqrt(v + 1e-5) + b, 0)
        activation = a if k < 0 else np.round(a * 2**k + 1e-5) / 2**k
        activations.append(activation)
    return activation.reshape(len(activation), -1) @ params["out_kernel"], activations


@pytest.mark.parametrize("model,precision", ALL)
def test_model_computes_section_2(model, precision, frames, make_params):
    """Keras forward pass (inference mode) == the §2 formulas in float64, for random parameters."""
    k = precision_to_k(precision)
    x = frames[2][:20]
    params = make_params(model, k, seed=11, frames=x)
    net = models.build_model(model, k)
    models.assign_parameters(net, file_arrays(params), model)
    probe = keras.Model(net.input, [net.get_layer(f"act{i}").output for i in range(1, len(ARCHITECTURES[model]) + 1)]
                        + [net.output])
    *keras_activations, keras_logits = (keras.ops.convert_to_numpy(a) for a in probe(x, training=False))
    logits, activations = numpy_forward(params, x)
    for ours, theirs in zip(keras_activations, activations):
        if k < 0:
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
        else:  # float32 vs float64 may move a value across a rounding tie; nothing else may differ
            step = 2.0**-k
            assert np.all(np.abs(ours - theirs) <= step + 1e-6)
            assert np.mean(ours != theirs) <= 1e-3
            assert np.any(theirs > 0)
    if k < 0:
        np.testing.assert_allclose(keras_logits, logits, rtol=1e-4, atol=1e-3)
    assert np.mean(np.argmax(keras_logits, axis=1) == np.argmax(logits, axis=1)) >= 0.95


# ---------------------------------------------------------------------------------------------
# Training


def read_log(model_dir):
    lines = (Path(model_dir) / checkpointing.LOG_FILE).read_text().splitlines()
    assert lines[0] == "epoch,loss,accuracy,seconds"
    return [line.split(",") for line in lines[1:]]


def read_arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def assert_same_arrays(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].dtype == second[name].dtype and first[name].shape == second[name].shape, name
        assert first[name].tobytes() == second[name].tobytes(), name


def train_quietly(model, precision, data, model_dir, **kwargs):
    options = dict(epochs=3, batch_size=100, train_limit=200, verbose=0)
    options.update(kwargs)
    return training.train(model, precision, data=data, model_dir=model_dir, **options)


def test_shuffled_batches_reshuffle_each_epoch_and_depend_only_on_seed_and_epoch():
    x = np.arange(10)[:, None, None, None] * np.ones((10, 34, 34, 1), dtype=np.float32)
    y = np.arange(10)
    batches = list(training.shuffled_batches(x, y, 4, seed=3, first_epoch=0, epochs=3))
    assert [len(b[1]) for b in batches] == [4, 4, 2] * 3
    epochs = [np.concatenate([b[1] for b in batches[i * 3:(i + 1) * 3]]) for i in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(10))
    assert not np.array_equal(epochs[0], epochs[1]) or not np.array_equal(epochs[1], epochs[2])
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0, 0, 0], yb)  # rows stay paired with their labels
    resumed = list(training.shuffled_batches(x, y, 4, seed=3, first_epoch=2, epochs=3))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in resumed]), epochs[2])
    other_seed = np.concatenate([b[1] for b in training.shuffled_batches(x, y, 4, 4, 0, 1)])
    assert not np.array_equal(other_seed, epochs[0])


@pytest.mark.parametrize("model,precision", [("mlp", "full"), ("mlp", "k0"), ("mlp", "k1"), ("mlp", "k2"), ("lenet", "k1")])
def test_training_lowers_the_loss(model, precision, frame_data, tmp_path):
    history = training.train(model, precision, data=frame_data, model_dir=tmp_path, epochs=4, batch_size=40,
                             learning_rate=1e-3, train_limit=400, verbose=0)
    losses = [row["loss"] for row in history]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert history[-1]["accuracy"] > 0.3  # chance is 0.1
    params = models.load_parameters(tmp_path / models.PARAMETERS_FILE, model=model, k=precision_to_k(precision))
    assert params["model"] == model
    assert len(read_log(tmp_path)) == 4


RESUME_CASES = [("mlp", "k1"), ("lenet", "k0")]


@pytest.fixture(scope="module")
def uninterrupted(frame_data, tmp_path_factory):
    """{(model, precision): model dir of an uninterrupted 3-epoch run}."""
    runs = {}
    for model, precision in RESUME_CASES:
        model_dir = tmp_path_factory.mktemp(f"full_{model}_{precision}")
        train_quietly(model, precision, frame_data, model_dir)
        runs[model, precision] = model_dir
    return runs


def assert_same_run(model_dir, reference_dir, epochs=3):
    assert_same_arrays(read_arrays(model_dir / models.PARAMETERS_FILE), read_arrays(reference_dir / models.PARAMETERS_FILE))
    rows, reference_rows = read_log(model_dir), read_log(reference_dir)
    assert [int(row[0]) for row in rows] == list(range(1, epochs + 1))
    assert [row[1:3] for row in rows] == [row[1:3] for row in reference_rows]  # loss and accuracy per epoch
    state = json.loads((model_dir / checkpointing.STATE_FILE).read_text())
    assert state["epochs_done"] == epochs and len(state["history"]) == epochs
    assert sorted(p.name for p in model_dir.glob("checkpoint_epoch*.keras")) == [f"checkpoint_epoch{epochs:04d}.keras"]
    assert not list(model_dir.glob(".*tmp*")), list(model_dir.iterdir())


@pytest.mark.parametrize("model,precision", RESUME_CASES)
def test_resume_equals_uninterrupted_run(model, precision, frame_data, tmp_path, uninterrupted):
    train_quietly(model, precision, frame_data, tmp_path, epochs=1)
    assert len(read_log(tmp_path)) == 1
    train_quietly(model, precision, frame_data, tmp_path, epochs=3, resume=True)
    assert_same_run(tmp_path, uninterrupted[model, precision])
    # resuming a run that is already complete trains nothing and keeps everything
    before = read_arrays(tmp_path / models.PARAMETERS_FILE)
    history = train_quietly(model, precision, frame_data, tmp_path, epochs=3, resume=True)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert_same_arrays(read_arrays(tmp_path / models.PARAMETERS_FILE), before)


class KilledMidEpoch(checkpointing.EpochCheckpoint):
    """Raises KeyboardInterrupt in the middle of the second epoch (after its first batch)."""

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current_epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.parametrize("model,precision", RESUME_CASES)
def test_resume_after_kill_mid_epoch(model, precision, frame_data, tmp_path, uninterrupted, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(checkpointing, "EpochCheckpoint", KilledMidEpoch)
        with pytest.raises(KeyboardInterrupt):
            train_quietly(model, precision, frame_data, tmp_path, epochs=3)
    state = json.loads((tmp_path / checkpointing.STATE_FILE).read_text())
    assert state["epochs_done"] == 1 and len(read_log(tmp_path)) == 1
    train_quietly(model, precision, frame_data, tmp_path, epochs=3, resume=True)
    assert_same_run(tmp_path, uninterrupted[model, precision])


def test_resume_after_kill_between_checkpoint_and_state(frame_data, tmp_path, uninterrupted, monkeypatch):
    """Killed after epoch 2's checkpoint was written but before the state named it: resume from epoch 1."""
    model, precision = RESUME_CASES[0]
    real_write = checkpointing.write_text_atomic

    def write(path, text):
        if Path(path).name == checkpointing.STATE_FILE and json.loads(text)["epochs_done"] == 2:
            raise KeyboardInterrupt
        real_write(path, text)

    with monkeypatch.context() as patch:
        patch.setattr(checkpointing, "write_text_atomic", write)
        with pytest.raises(KeyboardInterrupt):
            train_quietly(model, precision, frame_data, tmp_path, epochs=3)
    assert (tmp_path / "checkpoint_epoch0002.keras").is_file()  # orphan: the state still names epoch 1
    assert json.loads((tmp_path / checkpointing.STATE_FILE).read_text())["epochs_done"] == 1
    train_quietly(model, precision, frame_data, tmp_path, epochs=3, resume=True)
    assert_same_run(tmp_path, uninterrupted[model, precision])


@pytest.fixture(scope="module")
def one_epoch_mlp_k1(frame_data, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("one_epoch_mlp_k1")
    train_quietly("mlp", "k1", frame_data, model_dir, epochs=1)
    return model_dir


@pytest.mark.parametrize("model,precision,fragment", [("mlp", "k2", "mlp k1, not mlp k2"),
                                                      ("mlp", "full", "mlp k1, not mlp full"),
                                                      ("lenet", "k1", "mlp k1, not lenet k1")])
def test_resume_refuses_another_model_or_precision(model, precision, fragment, frame_data, one_epoch_mlp_k1,
                                                   tmp_path, capsys):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch_mlp_k1, model_dir)
    with pytest.raises(SystemExit) as exit:
        commands.train(model, precision, ["--data", str(frame_data), "--model-dir", str(model_dir), "--resume",
                                         "--epochs", "2", "--train-limit", "200"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err and str(model_dir) in err
    assert_same_arrays(read_arrays(model_dir / models.PARAMETERS_FILE),
                       read_arrays(one_epoch_mlp_k1 / models.PARAMETERS_FILE))  # nothing was touched


@pytest.mark.parametrize("remove", [checkpointing.STATE_FILE, "checkpoint_epoch0001.keras"])
def test_resume_without_state_or_checkpoint_is_an_error(remove, frame_data, one_epoch_mlp_k1, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch_mlp_k1, model_dir)
    (model_dir / remove).unlink()
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        train_quietly("mlp", "k1", frame_data, model_dir, epochs=2, resume=True)


def test_resume_checks_the_checkpoint_itself_not_only_the_state(frame_data, one_epoch_mlp_k1, tmp_path):
    k0_dir = tmp_path / "k0"
    train_quietly("mlp", "k0", frame_data, k0_dir, epochs=1)
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch_mlp_k1, model_dir)
    shutil.copy(k0_dir / "checkpoint_epoch0001.keras", model_dir / "checkpoint_epoch0001.keras")  # k0 in a k1 run
    with pytest.raises(UserError, match="holds model 'mlp_k0' with quantizer k \\[0\\], not mlp k1"):
        train_quietly("mlp", "k1", frame_data, model_dir, epochs=2, resume=True)
    (model_dir / "checkpoint_epoch0001.keras").write_bytes(b"PK torn")
    with pytest.raises(UserError, match="cannot load the checkpoint"):
        train_quietly("mlp", "k1", frame_data, model_dir, epochs=2, resume=True)


@pytest.mark.parametrize("change", ["[1, 2]", '{"model": "mlp", "k": 1}', "{not json", dict(epochs_done=0),
                                    dict(checkpoint="../other/checkpoint_epoch0001.keras"), dict(history=[1]),
                                    dict(settings=[1]), dict(epochs_done=True)])
def test_a_malformed_training_state_is_a_one_line_error(change, frame_data, one_epoch_mlp_k1, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch_mlp_k1, model_dir)
    state_path = model_dir / checkpointing.STATE_FILE
    state_path.write_text(change if isinstance(change, str) else json.dumps({**json.loads(state_path.read_text()), **change}))
    with pytest.raises(UserError, match="training_state.json: (malformed|unreadable) training state"):
        train_quietly("mlp", "k1", frame_data, model_dir, epochs=2, resume=True)
    # starting afresh does not even read it
    history = train_quietly("mlp", "k1", frame_data, model_dir, epochs=1)
    assert len(history) == 1 and json.loads(state_path.read_text())["epochs_done"] == 1


@pytest.mark.parametrize("change,flag", [(dict(learning_rate=1e-3), "--lr"), (dict(batch_size=50), "--batch-size"),
                                         (dict(seed=9), "--seed"), (dict(train_limit=100), "--train-limit"),
                                         (dict(epochs=0), "--epochs")])
def test_resume_refuses_other_settings_than_the_interrupted_run(change, flag, frame_data, one_epoch_mlp_k1, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch_mlp_k1, model_dir)
    options = {"epochs": 2, **change}
    with pytest.raises(UserError, match=flag if flag != "--epochs" else "finished 1 epochs already, more than --epochs 0"):
        train_quietly("mlp", "k1", frame_data, model_dir, resume=True, **options)
    assert json.loads((model_dir / checkpointing.STATE_FILE).read_text())["epochs_done"] == 1  # nothing was touched


def test_starting_afresh_removes_every_output_of_the_earlier_run(frame_data, one_epoch_mlp_k1, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch_mlp_k1, model_dir)
    (model_dir / paths.ANN_RESULTS_FILE).write_text("{}")
    with pytest.raises(UserError, match="NaN or infinite in epoch 1; no epoch finished, nothing was written"):
        train_quietly("mlp", "k1", frame_data, model_dir, epochs=2, learning_rate=1e38)
    assert sorted(path.name for path in model_dir.iterdir()) == []  # no stale parameters to evaluate by mistake


@pytest.mark.parametrize("flags", [["--seed", "-1"], ["--lr", "0"], ["--lr=-1e-4"]])
def test_negative_seed_or_non_positive_learning_rate_is_refused(flags):
    with pytest.raises(UserError, match=f"argument {flags[0].split('=')[0]}: expected"):
        commands.training_args("mlp", "k1", flags)


def test_default_paths_do_not_depend_on_the_working_directory():
    assert commands.training_args("lenet", "k1", []).data == REPO / "data" / "n_mnist.npz"
    help_text = subprocess.run([sys.executable, "training_k1_lenet_n_mnist.py", "--help"], cwd=REPO / "LeNet",
                               capture_output=True, text=True, timeout=120).stdout
    help_text = " ".join(help_text.split())  # argparse wraps lines
    assert "default: data/n_mnist.npz" in help_text and "default: LeNet/checkpoints/k1/" in help_text


def test_resume_flag_without_checkpoint_exits_with_one_line(frame_data, tmp_path):
    completed = run_script("MLP/training_k0_mlp_n_mnist.py", "--resume", "--epochs", "1", "--data", frame_data,
                           "--model-dir", tmp_path / "empty")
    assert completed.returncode == 2
    assert_one_line_error(completed, "no checkpoint to resume from", str(tmp_path / "empty"))


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size", "--train-limit", "--test-limit"])
def test_training_rejects_non_positive_numbers(flag, frame_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        commands.train("mlp", "k0", ["--data", str(frame_data), "--model-dir", str(tmp_path), flag, "0"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: argument {flag}: expected a positive integer, got '0'") and err.count("\n") == 1
    assert not (tmp_path / models.PARAMETERS_FILE).exists()


# ---------------------------------------------------------------------------------------------
# A NaN loss


def test_nan_loss_from_absurd_learning_rate(frame_data, tmp_path):
    with pytest.raises(UserError, match="NaN") as error:
        training.train("mlp", "k0", data=frame_data, model_dir=tmp_path, epochs=3, batch_size=50,
                       learning_rate=1e38, train_limit=200, verbose=0)
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)
    assert not (tmp_path / models.PARAMETERS_FILE).exists()  # no epoch finished with a finite loss
    assert not list(tmp_path.glob("checkpoint_epoch*.keras"))


def test_nan_loss_in_the_script_is_one_line_and_nothing_else_on_stderr(frame_data, tmp_path):
    completed = subprocess.run([sys.executable, "MLP/training_k1_mlp_n_mnist.py", "--data", str(frame_data), "--model-dir",
                                str(tmp_path / "run"), "--batch-size", "50", "--epochs", "2", "--lr", "1e38"], cwd=REPO,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}, capture_output=True, text=True, timeout=300)
    assert_one_line_error(completed, "NaN or infinite in epoch 1")
    assert completed.stderr.rstrip().splitlines()[-1].startswith("error: ")  # no TensorFlow complaint after it


def test_nan_loss_keeps_the_last_good_epoch(frame_data, tmp_path, monkeypatch, uninterrupted):
    real_end = checkpointing.EpochCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:  # the second epoch "diverged"
            logs = {**(logs or {}), "loss": float("nan")}
        return real_end(self, epoch, logs)

    monkeypatch.setattr(checkpointing.EpochCheckpoint, "on_epoch_end", on_epoch_end)
    with pytest.raises(UserError, match="NaN or infinite in epoch 2") as error:
        train_quietly("mlp", "k1", frame_data, tmp_path, epochs=3)
    assert "kept the checkpoint of epoch 1" in str(error.value)
    state = json.loads((tmp_path / checkpointing.STATE_FILE).read_text())
    assert state["epochs_done"] == 1 and [int(row[0]) for row in read_log(tmp_path)] == [1]  # training stopped
    assert [p.name for p in tmp_path.glob("checkpoint_epoch*.keras")] == ["checkpoint_epoch0001.keras"]
    saved = read_arrays(tmp_path / models.PARAMETERS_FILE)
    checkpoint = keras.models.load_model(tmp_path / "checkpoint_epoch0001.keras")
    assert_same_arrays(saved, models.export_parameters(checkpoint, "mlp", 1))
    # and that epoch is the good one: resuming (without the NaN) completes the uninterrupted run
    monkeypatch.undo()
    train_quietly("mlp", "k1", frame_data, tmp_path, epochs=3, resume=True)
    assert_same_run(tmp_path, uninterrupted["mlp", "k1"])


@pytest.mark.parametrize("bad_value", [np.inf, 1e38])
def test_diverged_weights_after_a_finite_loss_are_not_kept(bad_value, frame_data, tmp_path, monkeypatch):
    """The loss is measured before each update: weights the epoch's last update broke are caught too."""
    real_end = checkpointing.EpochCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:  # the second epoch's last update "diverged"; its mean loss stayed finite
            kernel = self.model.get_layer("dense1").kernel
            kernel.assign(np.full(kernel.shape, bad_value, np.float32))
        return real_end(self, epoch, logs)

    monkeypatch.setattr(checkpointing.EpochCheckpoint, "on_epoch_end", on_epoch_end)
    with pytest.raises(UserError, match="NaN or infinite in epoch 2; kept the checkpoint of epoch 1"):
        train_quietly("mlp", "k1", frame_data, tmp_path, epochs=3)
    saved = read_arrays(tmp_path / models.PARAMETERS_FILE)
    assert json.loads((tmp_path / checkpointing.STATE_FILE).read_text())["epochs_done"] == 1
    assert np.abs(saved["dense1_kernel"]).max() < 100  # epoch 1's weights, not the broken ones


def test_ann_evaluation_refuses_parameters_that_give_non_finite_outputs(frame_data, tmp_path):
    params = random_parameters("mlp", 1, seed=3)
    params["dense1_kernel"] = np.full_like(params["dense1_kernel"], 1e38)  # finite, but the sums overflow
    write_parameters(tmp_path / models.PARAMETERS_FILE, params)
    with pytest.raises(UserError, match="non-finite outputs") as error:
        evaluation.evaluate_ann("mlp", "k1", frame_data, tmp_path, test_limit=20)
    assert str(tmp_path / models.PARAMETERS_FILE) in str(error.value)
    assert not (tmp_path / paths.ANN_RESULTS_FILE).exists()


def test_a_test_limit_beyond_the_split_uses_it_all_and_says_so(frame_data, tmp_path, capsys):
    write_parameters(tmp_path / models.PARAMETERS_FILE, random_parameters("mlp", 1, seed=3))
    results = evaluation.evaluate_ann("mlp", "k1", frame_data, tmp_path, test_limit=1000)
    assert results["n_test"] == 100
    assert "holds 100 test samples, fewer than --test-limit 1,000: using them all" in capsys.readouterr().out


def test_a_model_dir_that_cannot_be_created_is_a_one_line_error(frame_data, tmp_path):
    (tmp_path / "a_file").write_text("keep me")
    for model_dir in (tmp_path / "a_file", tmp_path / "a_file" / "sub"):
        with pytest.raises(UserError, match="cannot create the model folder"):
            train_quietly("mlp", "k0", frame_data, model_dir, epochs=1)
    assert (tmp_path / "a_file").read_text() == "keep me"


def one_event_more(arrays):
    arrays["x_train"] = arrays["x_train"].copy()
    arrays["x_train"][0, 0, 0] += 1  # one ON event more in one pixel


def one_label_changed(arrays):
    arrays["y_train"] = arrays["y_train"].copy()
    arrays["y_train"][0] = (arrays["y_train"][0] + 1) % 10  # the frames the same


@pytest.mark.parametrize("change", [one_event_more, one_label_changed])  # the CRC-32 covers frames and labels
def test_resume_refuses_other_training_data_of_the_same_size(change, frame_data, one_epoch_mlp_k1, tmp_path):
    arrays = dict(np.load(frame_data, allow_pickle=False))
    change(arrays)
    other = tmp_path / "other.npz"
    np.savez(other, **arrays)
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch_mlp_k1, model_dir)
    with pytest.raises(UserError, match=r"training data \(CRC-32\)"):
        train_quietly("mlp", "k1", other, model_dir, epochs=2, resume=True)


def test_a_state_from_before_a_setting_was_recorded_still_resumes_and_counts_as_the_same_run():
    x, y = np.zeros((4, 34, 34, 1), np.float32), np.arange(4)
    settings = checkpointing.run_settings(200, 1e-4, 0, x, y)
    older = {"settings": {key: value for key, value in settings.items() if key != "data_crc32"}}
    assert checkpointing.changed_setting(older, settings) is None
    assert checkpointing.changed_setting({"settings": settings}, checkpointing.run_settings(200, 1e-4, 0, x + 1, y)) == (
        "data_crc32", settings["data_crc32"], checkpointing.run_settings(200, 1e-4, 0, x + 1, y)["data_crc32"])
    assert checkpointing.changed_setting({"settings": settings}, {**settings, "seed": 1})[0] == "seed"


def test_resume_removes_what_a_kill_left_and_the_stale_evaluation(frame_data, one_epoch_mlp_k1, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch_mlp_k1, model_dir)
    leftovers = [model_dir / ".model_n_mnist.npz.x1.tmp.npz", model_dir / ".checkpoint_epoch0002.keras.x2.tmp.keras",
                 model_dir / ".training_state.json.x3.tmp.json"]
    for path in leftovers:
        path.write_bytes(b"half")
    (model_dir / paths.ANN_RESULTS_FILE).write_text("{}")  # describes epoch 1's parameters
    train_quietly("mlp", "k1", frame_data, model_dir, epochs=2, resume=True)
    assert not any(path.exists() for path in leftovers)
    assert not (model_dir / paths.ANN_RESULTS_FILE).exists()


# ---------------------------------------------------------------------------------------------
# The §6 parameter file


@pytest.mark.parametrize("model,precision", ALL)
def test_parameter_file_round_trip(model, precision, frames, tmp_path):
    k = precision_to_k(precision)
    x = frames[2][:16]
    source = models.build_model(model, k)
    rng = np.random.default_rng(5)
    for weight in source.weights:  # random values everywhere, moving statistics included
        value = rng.normal(0, 0.3, weight.shape)
        if "moving_variance" in weight.path:
            value = rng.uniform(0.2, 2.0, weight.shape)
        weight.assign(value.astype(np.float32))
    exported = models.export_parameters(source, model, k)
    assert str(exported["model"]) == model and int(exported["k"]) == k
    path = tmp_path / models.PARAMETERS_FILE
    models.save_parameters(path, exported)
    assert [p.name for p in tmp_path.iterdir()] == [models.PARAMETERS_FILE]  # no temporary left behind
    with np.load(path, allow_pickle=False) as archive:
        assert set(archive.files) == set(models.parameter_shapes(model)) | {"model", "k"}
        for name in models.parameter_shapes(model):
            assert archive[name].dtype == np.float32
    loaded = models.load_parameters(path, model=model, k=k)
    assert loaded["model"] == model and loaded["k"] == k
    target = models.build_model(model, k)
    models.assign_parameters(target, loaded, model)
    for name in models.parameter_shapes(model):
        np.testing.assert_array_equal(loaded[name], exported[name])
    np.testing.assert_array_equal(target.predict(x, verbose=0), source.predict(x, verbose=0))


@pytest.fixture(scope="module")
def valid_mlp_k1():
    return file_arrays(random_parameters("mlp", 1, seed=3))


def corrupt(arrays, **changes):
    arrays = dict(arrays)
    for name, value in changes.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    return arrays


@pytest.mark.parametrize("case,changes,load_kwargs,fragment", [
    ("missing array", {"bn2_beta": None}, {}, "missing array 'bn2_beta'"),
    ("missing kernel", {"out_kernel": None}, {}, "missing array 'out_kernel'"),
    ("wrong shape", {"dense2_kernel": np.zeros((400, 399), np.float32)}, {}, "array 'dense2_kernel' has shape (400, 399)"),
    ("transposed", {"dense1_kernel": np.zeros((400, 1156), np.float32)}, {}, "expected (1156, 400)"),
    ("other model", {}, {"model": "lenet"}, "holds a mlp model, expected lenet"),
    ("other k", {}, {"k": 2}, "holds precision k1, expected k2"),
    ("full wanted", {}, {"k": -1}, "holds precision k1, expected full"),
    ("zero variance", {"bn1_var": np.zeros(400, np.float32)}, {}, "non-positive variance"),
    ("negative variance", {"bn2_var": np.full(400, -0.5, np.float32)}, {}, "non-positive variance"),
    ("nan", {"bn1_mean": np.full(400, np.nan, np.float32)}, {}, "not finite"),
    ("integer kernel", {"out_kernel": np.zeros((400, 10), np.int32)}, {}, "'out_kernel' is not finite floating point"),
    ("no k", {"k": None}, {}, "missing scalar entry 'k'"),
    ("no model", {"model": None}, {}, "missing scalar entry 'model'"),
    ("unknown model", {"model": np.array("resnet")}, {}, "unknown model 'resnet'"),
    ("k not a number", {"k": np.array("one")}, {}, "entry 'k' is not an integer"),
    ("k a float", {"k": np.array(1.5)}, {}, "entry 'k' is not an integer"),
])
def test_load_parameters_errors(case, changes, load_kwargs, fragment, valid_mlp_k1, tmp_path):
    path = tmp_path / "model_n_mnist.npz"
    np.savez(path, **corrupt(valid_mlp_k1, **changes))
    with pytest.raises(UserError) as error:
        models.load_parameters(path, **load_kwargs)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and fragment in message, message


def test_load_parameters_accepts_the_valid_file(valid_mlp_k1, tmp_path):
    path = tmp_path / "model_n_mnist.npz"
    np.savez(path, **valid_mlp_k1)
    params = models.load_parameters(path, model="mlp", k=1, quantized_only=True)
    assert params["model"] == "mlp" and params["k"] == 1
    assert all(params[name].dtype == np.float64 for name in models.parameter_shapes("mlp"))


def test_load_parameters_full_precision_refused_for_the_snn(tmp_path):
    path = write_parameters(tmp_path / "model_n_mnist.npz", random_parameters("mlp", -1, seed=1))
    assert models.load_parameters(path)["k"] == -1
    with pytest.raises(UserError, match="full-precision") as error:
        models.load_parameters(path, quantized_only=True)
    assert str(path) in str(error.value)


def test_load_parameters_pickled_missing_and_garbage_files(valid_mlp_k1, tmp_path):
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **corrupt(valid_mlp_k1, bn1_gamma=np.array([{"evil": 1}, None], dtype=object)))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive")
    missing = tmp_path / "nowhere" / "model_n_mnist.npz"
    for path, fragment in [(pickled, "not a readable parameter file"), (garbage, "not a parameter file (an .npz file is a zip archive; this one is not)"),
                           (missing, "parameter file not found")]:
        with pytest.raises(UserError) as error:
            models.load_parameters(path)
        message = str(error.value)
        assert "\n" not in message and str(path) in message and fragment in message, message


# ---------------------------------------------------------------------------------------------
# The 16 ANN thin scripts (one interpreter per model/precision: training, then inference)


@pytest.mark.parametrize("model,precision", ALL)
def test_ann_thin_scripts(model, precision, script_runs, frames):
    run = script_runs[model, precision]
    k = precision_to_k(precision)
    for role in ("train", "ann"):
        assert run[role]["code"] == 0, run["stdout"][-3000:] + run["stderr"][-3000:]
        assert "Traceback" not in run[role]["stderr"], run[role]["stderr"]
    assert f"wrote {run['model_dir'] / models.PARAMETERS_FILE}" in run["train"]["stdout"]
    assert "test accuracy:" in run["ann"]["stdout"]
    assert [int(row[0]) for row in read_log(run["model_dir"])] == [1, 2, 3]
    params = models.load_parameters(run["model_dir"] / models.PARAMETERS_FILE, model=model, k=k)

    results = json.loads((run["model_dir"] / "ann_results.json").read_text())
    assert {"model", "precision", "k", "accuracy", "n_test"} <= set(results)
    assert (results["model"], results["precision"], results["k"], results["n_test"]) == (model, precision, k, 50)
    assert isinstance(results["accuracy"], float) and 0.0 <= results["accuracy"] <= 1.0
    # the reported accuracy is the accuracy of the saved parameters on the first 50 test samples
    net = models.build_model(model, k)
    models.assign_parameters(net, params, model)
    predictions = np.argmax(net.predict(frames[2][:50], verbose=0), axis=1)
    assert results["accuracy"] == pytest.approx(np.mean(predictions == frames[3][:50]), abs=1e-12)


def test_ann_inference_without_parameter_file(frame_data, tmp_path, capsys, monkeypatch):
    script = "LeNet/inference_k2_lenet_n_mnist.py"
    monkeypatch.setattr(sys, "argv", [script, "--data", str(frame_data), "--model-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(str(Path(__file__).resolve().parents[1] / script), run_name="__main__")
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "parameter file not found" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# Found by mutation testing: behaviour no other test pinned down


# the nudge is 1e-5 in grid units, not 0 < nudge < 1e-5 nor floor(x + 0.5)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("level", [0, 1, 2, 5])
def test_quantizer_nudge_is_1e_5_grid_units(k, level):
    within = (level + 0.5 - 5e-6) / 2**k  # a * 2**k + 1e-5 passes the tie: rounds up
    beyond = (level + 0.5 - 3e-5) / 2**k  # the nudge does not reach the tie: rounds down
    out = quantize([within, beyond], k)
    assert out[0] == (level + 1) / 2**k and out[1] == level / 2**k


# the §2 defaults of the training scripts and of train()
def test_training_defaults_are_those_of_section_2():
    args = commands.training_args("mlp", "k1", [])
    assert (args.epochs, args.batch_size, args.lr, args.seed) == (150, 200, 1e-4, 0)
    defaults = {name: p.default for name, p in inspect.signature(training.train).parameters.items()}
    # epochs=None: the dataset's (architectures.DATASETS), 150 for N-MNIST
    assert (defaults["epochs"], defaults["batch_size"], defaults["learning_rate"]) == (None, 200, 1e-4)
    assert defaults["dataset"] == "n_mnist" and DATASETS["n_mnist"].epochs == {"lenet": 150, "mlp": 150}


# every training flag reaches train()
def test_training_main_passes_every_flag_on(frame_data, tmp_path):
    commands.train("mlp", "k0", ["--data", str(frame_data), "--model-dir", str(tmp_path), "--epochs", "1",
                                "--train-limit", "60", "--batch-size", "30", "--lr", "2e-3", "--seed", "7"])
    state = json.loads((tmp_path / checkpointing.STATE_FILE).read_text())
    assert state["epochs_done"] == 1
    assert {key: state["settings"][key] for key in ("n_train", "batch_size", "learning_rate", "seed")} == {
        "n_train": 60, "batch_size": 30, "learning_rate": 2e-3, "seed": 7}


# Adam at the given rate, and one update per batch, the last partial batch included
def test_training_uses_adam_and_one_update_per_batch(frame_data, tmp_path):
    train_quietly("mlp", "k1", frame_data, tmp_path, epochs=2, batch_size=80, train_limit=200)
    net = keras.models.load_model(tmp_path / checkpointing.checkpoint_name(2))
    assert type(net.optimizer) is keras.optimizers.Adam
    assert float(net.optimizer.learning_rate) == pytest.approx(1e-4)
    assert int(net.optimizer.iterations) == 2 * 3  # ceil(200 / 80) updates per epoch


# the logged loss is softmax cross-entropy on the logits, accuracy a fraction, both in the CSV columns
def test_logged_loss_and_accuracy_are_those_of_the_batches(frame_data, frames, tmp_path):
    history = train_quietly("mlp", "k1", frame_data, tmp_path, epochs=1, batch_size=50, train_limit=200,
                            learning_rate=1e-12)  # the weights stay those the epoch's batches saw
    net = keras.models.load_model(tmp_path / checkpointing.checkpoint_name(1))
    losses, hits = [], []
    for xb, yb in training.shuffled_batches(frames[0][:200], frames[1][:200], 50, training.SEED, 0, 1):
        logits = keras.ops.convert_to_numpy(net(xb, training=True)).astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        losses.append(-log_p[np.arange(len(yb)), yb].mean())
        hits.append(np.mean(np.argmax(logits, axis=1) == yb))
    assert history[0]["loss"] == pytest.approx(np.mean(losses), rel=1e-3)
    assert history[0]["accuracy"] == pytest.approx(np.mean(hits), abs=1e-6)
    (row,) = read_log(tmp_path)
    assert float(row[1]) == pytest.approx(history[0]["loss"], abs=1e-6)
    assert float(row[2]) == pytest.approx(history[0]["accuracy"], abs=1e-6)


# written files get the usual permissions (not mkstemp's 0600)
def test_parameter_file_has_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = write_parameters(tmp_path / models.PARAMETERS_FILE, random_parameters("mlp", 1, seed=3))
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# evaluate_ann over several batches: accuracy and largest activations of every batch, act (not BN) outputs
@pytest.mark.parametrize("k", [-1, 1])
def test_ann_evaluation_over_several_batches(k, frame_data, frames, tmp_path, monkeypatch):
    x = frames[2][:36]
    params = random_parameters("mlp", k, seed=4, frames=x)
    write_parameters(tmp_path / models.PARAMETERS_FILE, params)
    net = models.build_model("mlp", k)
    models.assign_parameters(net, file_arrays(params), "mlp")
    probe = keras.Model(net.input, [net.get_layer("act1").output, net.get_layer("act2").output, net.output])
    act1, act2, logits = (keras.ops.convert_to_numpy(a) for a in probe(x, training=False))
    # labels = the network's own predictions, so that any label misalignment shows
    labels = np.argmax(logits, axis=1)
    with np.load(frame_data, allow_pickle=False) as archive:
        arrays = dict(archive)
    arrays["x_test"], arrays["y_test"] = arrays["x_test"][:36], labels.astype(np.uint8)
    data = tmp_path / "own_labels.npz"
    np.savez(data, **arrays)
    monkeypatch.setattr(evaluation, "ANN_BATCH_SIZE", 7)  # 5 full batches and a last one of 1
    results = evaluation.evaluate_ann("mlp", "full" if k < 0 else f"k{k}", data, tmp_path)
    assert results["n_test"] == 36 and results["accuracy"] >= 35 / 36
    largest = results["max_activation_per_layer"]
    assert set(largest) == {"dense1", "dense2"}
    np.testing.assert_allclose([largest["dense1"], largest["dense2"]], [act1.max(), act2.max()], rtol=1e-6)
    saved = json.loads((tmp_path / paths.ANN_RESULTS_FILE).read_text())
    assert saved["max_activation_per_layer"] == largest


# evaluate_ann refuses a parameter file of another precision
def test_ann_evaluation_refuses_another_precision(frame_data, tmp_path):
    write_parameters(tmp_path / models.PARAMETERS_FILE, random_parameters("mlp", 2, seed=3))
    with pytest.raises(UserError, match="holds precision k2, expected k1"):
        evaluation.evaluate_ann("mlp", "k1", frame_data, tmp_path, test_limit=10)


# the SNN's quantized_only accepts k = 0
def test_load_parameters_quantized_only_accepts_k0(tmp_path):
    path = write_parameters(tmp_path / models.PARAMETERS_FILE, random_parameters("mlp", 0, seed=3))
    assert models.load_parameters(path, model="mlp", k=0, quantized_only=True)["k"] == 0


def test_resume_after_kill_between_the_last_state_and_the_outputs(frame_data, tmp_path, monkeypatch):
    real_write_outputs = checkpointing.write_outputs

    def write_outputs(model_dir, keras_model, model_name, k, history_rows, *dataset):
        if len(history_rows) == 2:
            raise KeyboardInterrupt
        real_write_outputs(model_dir, keras_model, model_name, k, history_rows, *dataset)

    with monkeypatch.context() as patch:
        patch.setattr(checkpointing, "write_outputs", write_outputs)
        with pytest.raises(KeyboardInterrupt):
            train_quietly("mlp", "k1", frame_data, tmp_path, epochs=2)
    assert json.loads((tmp_path / checkpointing.STATE_FILE).read_text())["epochs_done"] == 2
    assert [int(row[0]) for row in read_log(tmp_path)] == [1]  # the outputs still describe epoch 1
    history = train_quietly("mlp", "k1", frame_data, tmp_path, epochs=2, resume=True)
    assert [row["epoch"] for row in history] == [1, 2]
    assert [int(row[0]) for row in read_log(tmp_path)] == [1, 2]
    checkpoint = keras.models.load_model(tmp_path / checkpointing.checkpoint_name(2))
    assert_same_arrays(read_arrays(tmp_path / models.PARAMETERS_FILE), models.export_parameters(checkpoint, "mlp", 1))


# the checkpoint of another model at the same precision (same quantizer k) is refused too
def test_resume_refuses_a_checkpoint_of_another_model_at_the_same_precision(frame_data, one_epoch_mlp_k1, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch_mlp_k1, model_dir)
    models.build_model("lenet", 1).save(model_dir / "checkpoint_epoch0001.keras")  # LeNet k1 in an MLP k1 run
    with pytest.raises(UserError, match=r"holds model 'lenet_k1' with quantizer k \[1\], not mlp k1"):
        train_quietly("mlp", "k1", frame_data, model_dir, epochs=2, resume=True)


# the temporary file of a CSV log torn by a kill is removed, on --resume and on a fresh start
@pytest.mark.parametrize("resume", [True, False])
def test_a_torn_csv_log_temporary_is_removed(resume, frame_data, one_epoch_mlp_k1, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch_mlp_k1, model_dir)
    leftover = model_dir / f".{checkpointing.LOG_FILE}.x4.tmp.csv"
    leftover.write_text("epoch,loss,acc")
    train_quietly("mlp", "k1", frame_data, model_dir, epochs=2 if resume else 1, resume=resume)
    assert not leftover.exists()


# a state whose history has more (or fewer) rows than its finished epochs is malformed
def test_a_state_whose_history_does_not_match_its_epochs_is_refused(frame_data, one_epoch_mlp_k1, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch_mlp_k1, model_dir)
    state_path = model_dir / checkpointing.STATE_FILE
    state = json.loads(state_path.read_text())
    state["history"] = state["history"] * 2  # 2 rows, 1 epoch done: the CSV would get a phantom epoch
    state_path.write_text(json.dumps(state))
    with pytest.raises(UserError, match="'history' is not 1 rows of loss and accuracy"):
        train_quietly("mlp", "k1", frame_data, model_dir, epochs=2, resume=True)


# the end-of-epoch finiteness probe must not touch the weights (training=True would move the BN
# moving statistics towards the probe batch, and those biased statistics would be saved)
def test_the_finite_weights_probe_changes_no_weight(frames):
    net = models.build_model("mlp", 1)
    callback = checkpointing.EpochCheckpoint("unused", "mlp", 1, [], {}, probe_x=frames[0][:20])
    callback.set_model(net)
    before = [weight.copy() for weight in net.get_weights()]
    assert callback.weights_are_finite()
    for old, new in zip(before, net.get_weights()):
        np.testing.assert_array_equal(old, new)


# the parameter file is replaced atomically: a write interrupted half-way keeps the old file
def test_an_interrupted_parameter_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_parameters(tmp_path / models.PARAMETERS_FILE, random_parameters("mlp", 1, seed=3))
    before = path.read_bytes()

    def torn_savez(file, **arrays):
        Path(file).write_bytes(b"PK torn")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", torn_savez)
    with pytest.raises(KeyboardInterrupt):
        models.save_parameters(path, file_arrays(random_parameters("mlp", 1, seed=4)))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [models.PARAMETERS_FILE]  # no temporary left


# a zero gamma is refused only for the SNN (infinite threshold), not for the ANN, where it is
# a legitimate (dead) channel
def test_a_zero_gamma_is_accepted_for_the_ann(tmp_path):
    params = random_parameters("mlp", -1, seed=3)
    params["bn1_gamma"][0] = 0.0
    path = write_parameters(tmp_path / models.PARAMETERS_FILE, params)
    assert models.load_parameters(path, model="mlp", k=-1)["bn1_gamma"][0] == 0.0


# `model` and `k` must be scalars: a one-line error, not a TypeError traceback (k = [1]) nor a
# misleading "unknown model \"['mlp']\""
@pytest.mark.parametrize("name,value", [("k", np.array([1])), ("model", np.array(["mlp"]))])
def test_load_parameters_refuses_non_scalar_model_or_k(name, value, tmp_path):
    arrays = file_arrays(random_parameters("mlp", 1, seed=3))
    arrays[name] = value
    path = tmp_path / models.PARAMETERS_FILE
    np.savez(path, **arrays)
    with pytest.raises(UserError, match=f"missing scalar entry '{name}'"):
        models.load_parameters(path)
