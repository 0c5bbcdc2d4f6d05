"""Checkpoints, resume and the training's output files: what makes a 150-epoch run safe to kill.

After every finished epoch, each written atomically: a Keras checkpoint, `training_state.json`
(the commit point: it names the checkpoint of the last finished epoch and is written after it),
then `model_n_mnist.npz` (§6) and `training_log.csv`. A run killed at any moment therefore resumes
from a complete epoch, and `--resume` continues it exactly as if it had never stopped.

One callback (`EpochCheckpoint`) does what Keras' ModelCheckpoint + CSVLogger + BackupAndRestore
would do, because those write their files in place (a kill mid-write leaves a torn file), keep no
commit point tying checkpoint, CSV and parameter file to one epoch, and BackupAndRestore deletes
its backup when a run ends, so a finished run could not be extended with a larger --epochs.
"""
import json
import math
import time
import zlib
from pathlib import Path

import keras
import numpy as np

import models
from architectures import k_to_precision
from cli import UserError, atomic_path, is_number, write_text_atomic
from paths import parameters_file
from quantization import QuantizedReLU

STATE_FILE = "training_state.json"  # the commit point: which checkpoint is complete, and the history
STATE_TYPES = {"model": str, "k": int, "epochs_done": int, "checkpoint": str, "history": list}
LOG_FILE = "training_log.csv"
LOG_COLUMNS = ("epoch", "loss", "accuracy", "seconds")


def checkpoint_name(epoch):
    """The checkpoint file of a finished epoch, e.g. checkpoint_epoch0012.keras."""
    return f"checkpoint_epoch{epoch:04d}.keras"


def read_state(model_dir):
    """The training state of `model_dir` (dict), or None when no epoch has finished there."""
    path = Path(model_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: unreadable training state ({error})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: malformed training state (not a JSON object)")
    for key, kind in STATE_TYPES.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise UserError(f"{path}: malformed training state ('{key}' missing or not {kind.__name__})")
    done = state["epochs_done"]
    problems = [
        (done < 1, "'epochs_done' is below 1"),
        (state["checkpoint"] != checkpoint_name(done), f"'checkpoint' is not {checkpoint_name(done)}"),
        (len(state["history"]) != done or not all(isinstance(row, dict) and is_number(row.get("loss"))
                                                  and is_number(row.get("accuracy")) for row in state["history"]),
         f"'history' is not {done} rows of loss and accuracy"),
        (not isinstance(state.get("settings", {}), dict), "'settings' is not an object"),
    ]
    for problem, message in problems:
        if problem:
            raise UserError(f"{path}: malformed training state ({message}); start afresh without --resume")
    return state


def read_state_or_none(model_dir):
    """The training state, or None when there is none or it is unreadable: for the study (reproduce.py,
    report.py), which only asks how far a run got; a run with an unreadable state is trained afresh."""
    try:
        return read_state(model_dir)
    except UserError:
        return None


def run_settings(batch_size, learning_rate, seed, x_train, y_train):
    """What a run is trained with, kept in its state: a resumed run must use the same.

    The training data are named by their number and a CRC-32 of their bytes, so that a run is
    never continued on other data (a regenerated demo, say) of the same size.
    """
    data_crc32 = zlib.crc32(np.ascontiguousarray(y_train), zlib.crc32(np.ascontiguousarray(x_train)))
    return {"batch_size": batch_size, "learning_rate": learning_rate, "seed": seed, "n_train": len(x_train),
            "data_crc32": f"{data_crc32:08x}"}


def changed_setting(state, settings):
    """(key, before, now) of the first of `settings` that differs from the run in `state`, or None.

    A setting the state does not record (written by an older version of this code) is not compared,
    so that such a run can still be resumed.
    """
    for key, value in settings.items():
        before = state.get("settings", {}).get(key, value)
        if before != value or type(before) is not type(value):
            return key, before, value
    return None


def check_same_settings(model_dir, state, settings):
    """UserError when a resumed run would use other settings than the run it continues."""
    changed = changed_setting(state, settings)
    if changed:
        key, before, value = changed
        flag = {"n_train": "--train-limit (training samples)", "learning_rate": "--lr",
                "data_crc32": "training data (CRC-32)"}.get(key, f"--{key.replace('_', '-')}")
        raise UserError(f"{model_dir}: the interrupted run used {flag} {before}, this one {value}; "
                        "resume with the same settings, or leave out --resume to start afresh")


def load_checkpoint(path, model, precision, k):
    """The Keras model of a checkpoint, checked to be `model` at precision k."""
    try:
        keras_model = keras.models.load_model(path)
    except Exception as error:  # a torn or foreign file: Keras raises ValueError, OSError, zipfile errors, ...
        raise UserError(f"{path}: cannot load the checkpoint ({type(error).__name__}: {str(error)[:200]})") from None
    quantizers = {layer.k for layer in keras_model.layers if isinstance(layer, QuantizedReLU)}
    if keras_model.name != f"{model}_{precision}" or quantizers != ({k} if k >= 0 else set()):
        raise UserError(f"{path}: the checkpoint holds model {keras_model.name!r} with quantizer k "
                        f"{sorted(quantizers) or 'none'}, not {model} {precision}")
    return keras_model


def resume_run(model_dir, model, precision, k, epochs, settings, dataset="n_mnist"):
    """(compiled Keras model, history rows) of the interrupted run in `model_dir`, checked to be the
    run asked for: same model and precision, no more epochs done than `epochs`, same settings."""
    state = read_state(model_dir)
    if state is None or not (model_dir / state["checkpoint"]).is_file():
        raise UserError(f"{model_dir}: no checkpoint to resume from")
    if state["model"] != model or state["k"] != k:
        raise UserError(f"{model_dir}: the checkpoint holds {state['model']} "
                        f"{k_to_precision(state['k'])}, not {model} {precision}")
    if state["epochs_done"] > epochs:
        raise UserError(f"{model_dir}: the run has finished {state['epochs_done']} epochs already, "
                        f"more than --epochs {epochs}")
    check_same_settings(model_dir, state, settings)
    keras_model = load_checkpoint(model_dir / state["checkpoint"], model, precision, k)
    print(f"resuming {model} {precision} from epoch {state['epochs_done']} of {epochs}")
    remove_files(temporary_files(model_dir, dataset))  # what a kill mid-write left
    return keras_model, state["history"]


def clear_earlier_run(model_dir, dataset="n_mnist"):
    """Delete everything an earlier run left in `model_dir`, so that nothing of it is mistaken for this
    run's output; its state is not even read (it may be what went wrong)."""
    if (model_dir / STATE_FILE).exists():
        print(f"note: starting afresh; the earlier run in {model_dir} is replaced (use --resume to continue it)")
    remove_files([*model_dir.glob("checkpoint_epoch*.keras"), *temporary_files(model_dir, dataset),
                  model_dir / STATE_FILE, model_dir / LOG_FILE, model_dir / parameters_file(dataset)])


class EpochCheckpoint(keras.callbacks.Callback):
    """After each finished epoch: checkpoint, state, parameter file and CSV, each written atomically.

    A non-finite loss stops training and keeps the last good checkpoint. The epoch's loss is
    measured before each update, so the weights its last update left are checked too, on
    `probe_x`, before they are saved.
    """

    def __init__(self, model_dir, model_name, k, history, settings, probe_x, dataset="n_mnist"):
        super().__init__()
        self.model_dir, self.model_name, self.k, self.dataset = Path(model_dir), model_name, k, dataset
        self.history_rows = list(history)
        self.settings = settings  # what a resumed run must match
        self.probe_x = probe_x  # (n, *input shape) training inputs whose outputs must stay finite
        self.bad_loss_epoch = None

    def weights_are_finite(self):
        """True when every weight, and the model's output on the probe inputs, is finite."""
        weights = [np.asarray(weight) for weight in self.model.get_weights()]
        if not all(np.isfinite(weight).all() for weight in weights):
            return False
        return bool(np.isfinite(keras.ops.convert_to_numpy(self.model(self.probe_x, training=False))).all())

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        logs = logs or {}
        if not math.isfinite(logs.get("loss", math.nan)) or not self.weights_are_finite():
            self.bad_loss_epoch = epoch + 1
            self.model.stop_training = True
            return
        checkpoint = self.model_dir / checkpoint_name(epoch + 1)
        with atomic_path(checkpoint, suffix=".keras") as temporary:
            self.model.save(temporary)
        self.history_rows.append(
            {"epoch": epoch + 1, "loss": float(logs["loss"]), "accuracy": float(logs["accuracy"]), "seconds": seconds}
        )
        state = {"model": self.model_name, "k": self.k, "epochs_done": epoch + 1,
                 "checkpoint": checkpoint.name, "settings": self.settings, "history": self.history_rows}
        write_text_atomic(self.model_dir / STATE_FILE, json.dumps(state, indent=1))
        for old in self.model_dir.glob("checkpoint_epoch*.keras"):
            if old.name != checkpoint.name:
                old.unlink()
        write_outputs(self.model_dir, self.model, self.model_name, self.k, self.history_rows, self.dataset)


def write_outputs(model_dir, keras_model, model_name, k, history_rows, dataset="n_mnist"):
    """The files derived from a finished epoch: model_<dataset>.npz and training_log.csv."""
    models.save_parameters(Path(model_dir) / parameters_file(dataset),
                           models.export_parameters(keras_model, model_name, k, dataset))
    lines = [",".join(LOG_COLUMNS)]
    lines += [f"{row['epoch']},{row['loss']:.6f},{row['accuracy']:.6f},{row['seconds']:.2f}" for row in history_rows]
    write_text_atomic(Path(model_dir) / LOG_FILE, "\n".join(lines) + "\n")


def make_model_dir(model_dir):
    """Create `model_dir`; UserError when it cannot be (a file in the way, no permission)."""
    try:
        Path(model_dir).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{model_dir}: cannot create the model folder ({error.strerror or error})") from None


def temporary_files(model_dir, dataset="n_mnist"):
    """The temporary files (cli.atomic_path's `.<name>.*.tmp*`) of this module's outputs in `model_dir`."""
    names = ["checkpoint_epoch*.keras", STATE_FILE, LOG_FILE, parameters_file(dataset)]
    return [path for name in names for path in Path(model_dir).glob(f".{name}.*.tmp*")]


def remove_files(paths):
    """Delete the files `paths` that exist; UserError naming the first one that cannot be deleted."""
    for path in paths:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as error:
            raise UserError(f"{path}: cannot remove it ({error.strerror or error})") from None
