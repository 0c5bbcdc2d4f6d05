"""Train a (quantized-activation) LeNet or MLP on N-MNIST frames (ALGORITHM.md §2).

Adam 1e-4, batch 200, 150 epochs, data reshuffled every epoch. After every epoch, atomically:
a resumable Keras checkpoint, `model_n_mnist.npz` (§6) and `training_log.csv`.

`model.fit` does the training; one callback of ours (`EpochCheckpoint`) does what Keras'
ModelCheckpoint + CSVLogger + BackupAndRestore would do, because those write their files in place
(a kill mid-write leaves a torn file), keep no commit point tying checkpoint, CSV and parameter
file to one epoch, and BackupAndRestore deletes its backup when a run ends, so a finished run
cannot be extended with a larger --epochs.

    python LeNet/training_k1_lenet_n_mnist.py --data data/n_mnist_demo.npz
    python LeNet/training_k1_lenet_n_mnist.py --data data/n_mnist_demo.npz --resume
"""
import gc
import json
import math
import sys
import time
import zlib
from pathlib import Path

import keras
import numpy as np

import models
import paths
from architectures import BATCH_SIZE, EPOCHS, LEARNING_RATE, SEED, k_to_precision, precision_to_k
from cli import UserError, atomic_path, is_number, write_text_atomic
from n_mnist import DEFAULT_DATA, load_frames
from paths import ANN_RESULTS_FILE
from quantization import QuantizedReLU
STATE_FILE = "training_state.json"  # the commit point: which checkpoint is complete, and the history
LOG_FILE = "training_log.csv"
LOG_COLUMNS = ("epoch", "loss", "accuracy", "seconds")


def epoch_order(n_samples, seed, epoch):
    """The sample order of one epoch; it depends only on (seed, epoch), so resumed runs match."""
    return np.random.default_rng([seed, epoch]).permutation(n_samples)


def shuffled_batches(x, y, batch_size, seed, first_epoch, epochs):
    """Yield the training batches of epochs first_epoch .. epochs-1, reshuffled every epoch.

    x: (N, 34, 34, 1), y: (N,). A plain generator: Keras consumes it in order, epoch after epoch,
    so a run resumed at epoch e sees exactly the batches an uninterrupted run would have seen.
    """
    for epoch in range(first_epoch, epochs):
        order = epoch_order(len(x), seed, epoch)
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            yield x[rows], y[rows]


STATE_TYPES = {"model": str, "k": int, "epochs_done": int, "checkpoint": str, "history": list}


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


def checkpoint_name(epoch):
    """The checkpoint file of a finished epoch, e.g. checkpoint_epoch0012.keras."""
    return f"checkpoint_epoch{epoch:04d}.keras"



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


class EpochCheckpoint(keras.callbacks.Callback):
    """After each finished epoch: checkpoint, parameter file, state and CSV, each written atomically.

    The state file names the checkpoint of the last finished epoch and is written after it, so a
    run killed at any moment resumes from a complete epoch. A non-finite loss stops training and
    keeps the last good checkpoint. The epoch's loss is measured before each update, so the weights
    its last update left are checked too, on `probe_x`, before they are saved.
    """

    def __init__(self, model_dir, model_name, k, history, settings, probe_x):
        super().__init__()
        self.model_dir, self.model_name, self.k = Path(model_dir), model_name, k
        self.history_rows = list(history)
        self.settings = settings  # what a resumed run must match
        self.probe_x = probe_x  # (n, 34, 34, 1) training inputs whose outputs must stay finite
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
        write_outputs(self.model_dir, self.model, self.model_name, self.k, self.history_rows)


def write_outputs(model_dir, keras_model, model_name, k, history_rows):
    """The files derived from a finished epoch: model_n_mnist.npz and training_log.csv."""
    models.save_parameters(Path(model_dir) / models.PARAMETERS_FILE, models.export_parameters(keras_model, model_name, k))
    lines = [",".join(LOG_COLUMNS)]
    lines += [f"{row['epoch']},{row['loss']:.6f},{row['accuracy']:.6f},{row['seconds']:.2f}" for row in history_rows]
    write_text_atomic(Path(model_dir) / LOG_FILE, "\n".join(lines) + "\n")


def make_model_dir(model_dir):
    """Create `model_dir`; UserError when it cannot be (a file in the way, no permission)."""
    try:
        Path(model_dir).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{model_dir}: cannot create the model folder ({error.strerror or error})") from None


def temporary_files(model_dir):
    """The temporary files (cli.atomic_path's `.<name>.*.tmp*`) of this module's outputs in `model_dir`."""
    names = ["checkpoint_epoch*.keras", STATE_FILE, LOG_FILE, models.PARAMETERS_FILE]
    return [path for name in names for path in Path(model_dir).glob(f".{name}.*.tmp*")]


def remove_files(paths):
    """Delete the files `paths` that exist; UserError naming the first one that cannot be deleted."""
    for path in paths:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as error:
            raise UserError(f"{path}: cannot remove it ({error.strerror or error})") from None


def train(model, precision, data=DEFAULT_DATA, model_dir=None, epochs=EPOCHS, batch_size=BATCH_SIZE,
          learning_rate=LEARNING_RATE, seed=SEED, resume=False, train_limit=None, verbose="auto", callbacks=()):
    """Train `model` at `precision` and return the training history rows (one dict per epoch).

    `callbacks`: extra Keras callbacks (reproduce.py's progress line).
    """
    k = precision_to_k(precision)
    model_dir = Path(model_dir or paths.model_dir(model, precision))
    x_train, y_train, _, _ = load_frames(data, train_limit=train_limit, test_limit=0)
    keras.utils.set_random_seed(seed)
    settings = run_settings(batch_size, learning_rate, seed, x_train, y_train)
    make_model_dir(model_dir)

    if resume:
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
        first_epoch, history = state["epochs_done"], state["history"]
        print(f"resuming {model} {precision} from epoch {first_epoch} of {epochs}")
        remove_files(temporary_files(model_dir))  # what a kill mid-write left
        if first_epoch == epochs:
            write_outputs(model_dir, keras_model, model, k, history)
            return history
    else:
        if (model_dir / STATE_FILE).exists():
            print(f"note: starting afresh; the earlier run in {model_dir} is replaced (use --resume to continue it)")
        # Everything an earlier run left (its state is not even read: it may be what went wrong), so that
        # nothing of it is mistaken for this run's output; temporary files of a killed run included.
        remove_files([*model_dir.glob("checkpoint_epoch*.keras"), *temporary_files(model_dir),
                      model_dir / STATE_FILE, model_dir / LOG_FILE, model_dir / models.PARAMETERS_FILE])
        keras_model = models.build_model(model, k)
        keras_model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        first_epoch, history = 0, []
    # The evaluation of earlier parameters does not describe the ones this run writes.
    remove_files([model_dir / ANN_RESULTS_FILE])

    batches = shuffled_batches(x_train, y_train, batch_size, seed, first_epoch, epochs)
    checkpoint = EpochCheckpoint(model_dir, model, k, history, settings, probe_x=x_train[:batch_size])
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    keras_model.fit(batches, epochs=epochs, initial_epoch=first_epoch, verbose=verbose, shuffle=False,
                    steps_per_epoch=math.ceil(len(x_train) / batch_size),
                    callbacks=[keras.callbacks.TerminateOnNaN(), checkpoint, *callbacks])
    if checkpoint.bad_loss_epoch is not None:
        del batches
        gc.collect()  # free fit's unfinished dataset iterator now: at exit, TensorFlow complains about it
        bad = checkpoint.bad_loss_epoch
        kept = f"kept the checkpoint of epoch {bad - 1}" if bad > 1 else "no epoch finished, nothing was written"
        raise UserError(f"{model_dir}: the loss or the weights became NaN or infinite in epoch {bad}; {kept} "
                        "(try a smaller --lr)")
    print(f"wrote {model_dir / models.PARAMETERS_FILE}")
    return checkpoint.history_rows
