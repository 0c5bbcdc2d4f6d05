"""The SNN logs of ALGORITHM.md §4: written by the simulator, read by the figure scripts.

A log folder (e.g. LeNet/figs/k1/) holds four text files, one whole number per line, batch-major
(batch 0 steps 0..T-1, then batch 1, ...), each line summed over the samples of its batch:

    accuracy.txt       correct predictions at that step
    spike_num.txt      positive + negative spikes so far (cumulative within the batch)
    spike_collect.txt  positive - negative spikes so far
    sop_num.txt        synaptic operations so far

Our runs put snn_results.json beside them, which says T, the number of test samples N and the
batch size. The authors' logs have none: their reader is told T and the batch size.
Kept free of TensorFlow so that the figure scripts start quickly.
"""
import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from architectures import TIME_STEPS
from cli import UserError, atomic_path, read_json_object
from paths import SNN_RESULTS_FILE

LOG_FILES = ("accuracy.txt", "spike_num.txt", "spike_collect.txt", "sop_num.txt")
LOG_BATCH_SIZE = 50  # the authors' batch; the logs hold one line per (batch of 50, step)


def steps_to_final(accuracy_per_step):
    """The first step, counted from 1, from which the accuracy stays at its final value (§5)."""
    accuracy_per_step = np.asarray(accuracy_per_step)
    different = np.flatnonzero(accuracy_per_step != accuracy_per_step[-1])
    return int(different[-1]) + 2 if len(different) else 1


# --------------------------------------------------------------------------- writing

def log_columns(result, labels, log_batch_size=LOG_BATCH_SIZE):
    """The four logs as {file name: int64 array (n_batches, T)}: cumulative counters summed per batch."""
    n_samples = len(labels)
    batch_of_sample = np.arange(n_samples) // log_batch_size
    n_batches = batch_of_sample[-1] + 1

    def per_batch(per_sample):  # (N, T) -> (n_batches, T), summed over the samples of each batch
        summed = np.zeros((n_batches, per_sample.shape[1]), dtype=np.int64)
        np.add.at(summed, batch_of_sample, per_sample)
        return summed

    correct = (result.predictions == np.asarray(labels)[:, None]).astype(np.int64)
    return {
        "accuracy.txt": per_batch(correct),
        "spike_num.txt": per_batch(np.cumsum(result.spikes, axis=1)),
        "spike_collect.txt": per_batch(np.cumsum(result.net_spikes, axis=1)),
        "sop_num.txt": per_batch(np.cumsum(result.sops, axis=1)),
    }


def write_logs(log_dir, columns, extra_files=None):
    """Write the four logs (`log_columns`) into log_dir, plus `extra_files` ({name: text}, e.g. snn_results.json).

    Each goes through a temporary file; all are renamed at the end, `extra_files` last, so an
    interrupted run leaves the old files, and a new snn_results.json always sits beside its own logs.
    """
    log_dir = Path(log_dir)
    texts = dict(extra_files or {})  # first in, so renamed last: a new snn_results.json means new logs
    texts.update({name: "".join(f"{value}\n" for value in values.reshape(-1)) for name, values in columns.items()})
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as renames:  # renames happen only if every file was written
            for name, text in texts.items():
                temporary = renames.enter_context(atomic_path(log_dir / name))
                temporary.write_text(text)
    except OSError as error:
        raise UserError(f"{log_dir}: cannot write logs ({error.strerror or error})") from None
    return columns


# --------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class SnnLog:
    """One SNN run per time step, per test sample: arrays of length T, index t is step t + 1."""

    time_steps: int  # T
    n_test: int  # N
    n_batches: int
    accuracy: np.ndarray  # fraction of the N samples classified correctly
    spikes: np.ndarray  # spike_num / N: positive + negative spikes
    net_spikes: np.ndarray  # spike_collect / N: positive - negative spikes
    sops: np.ndarray  # sop_num / N
    positive: np.ndarray  # (spike_num + spike_collect) / 2 / N, §5
    negative: np.ndarray  # (spike_num - spike_collect) / 2 / N
    data: str = None  # the frame dataset simulated, as snn_results.json names it (None: not recorded)

    @property
    def final_accuracy(self):
        return float(self.accuracy[-1])

    @property
    def steps_to_final(self):
        return steps_to_final(self.accuracy)


def has_logs(folder):
    """True when `folder` holds at least one of the log files: a run was logged there."""
    return any((Path(folder) / name).exists() for name in LOG_FILES)


def whole_number(text):
    """int of `12` or `12.0` (the authors' spike_collect.txt); None for `1.5`, `abc`, `1_000`, `nan`."""
    if "_" in text:  # int() and float() accept 1_000; a log never holds it
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def read_column(path):
    """The whole numbers of one log file as int64; UserError naming the file and line otherwise."""
    path = Path(path)
    try:
        lines = path.read_text().rstrip().splitlines()  # trailing blank lines are fine, others are not
    except FileNotFoundError:
        raise UserError(f"{path}: missing log file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from None
    if not lines:
        raise UserError(f"{path}: empty log file")
    values = []
    for number, line in enumerate(lines, start=1):
        value = whole_number(line.strip())
        if value is None:
            raise UserError(f"{path}:{number}: expected a whole number, got {line.strip()!r}")
        if not -2**63 <= value < 2**63:
            raise UserError(f"{path}:{number}: {line.strip()!r} is too large for a count")
        values.append(value)
    return np.array(values, dtype=np.int64)


def read_results(path, model=None):
    """(T, N, batch size, data) as our run recorded them in snn_results.json; `model`, if given, must match."""
    results = read_json_object(path)
    for key in ("time_steps", "n_test", "batch_size"):
        value = results.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{path}: '{key}' must be a positive integer, got {value!r}")
    if model is not None and results.get("model") != model:
        raise UserError(f"{path}: logs of model {results.get('model')!r}, not {model!r} (check --log-root and --model)")
    return results["time_steps"], results["n_test"], results["batch_size"], results.get("data")


def read_logs(folder, time_steps=TIME_STEPS, batch_size=LOG_BATCH_SIZE, model=None):
    """The four logs of `folder` as an SnnLog, after checking that they can be what §4 describes.

    T, N and the batch size come from the folder's snn_results.json when it has one. Without it (the
    authors' logs) T is `time_steps` and every batch holds `batch_size` samples. A wrong T is caught
    where a cumulative counter then restarts inside a batch, or where the lines are not whole batches.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such log folder")
    columns = {name: read_column(folder / name) for name in LOG_FILES}
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise UserError(f"{folder}: log files have different lengths ({listing} lines)")

    results_path = folder / SNN_RESULTS_FILE
    if results_path.exists():
        time_steps, n_test, batch_size, data = read_results(results_path, model)
        given = f"{SNN_RESULTS_FILE}: time_steps {time_steps}, batch_size {batch_size}"
    else:
        n_test, data = None, None
        given = f"--time-steps {time_steps} --batch-size {batch_size}"
    count = lengths[LOG_FILES[0]]
    if count % time_steps:
        raise UserError(f"{folder / LOG_FILES[0]}: {count} lines is not a whole number of batches of "
                        f"{time_steps} steps ({given})")
    n_batches = count // time_steps
    n_test = n_batches * batch_size if n_test is None else n_test
    if not (n_batches - 1) * batch_size < n_test <= n_batches * batch_size:
        raise UserError(f"{results_path}: n_test {n_test} does not fit the logs' {n_batches} batches of at most "
                        f"{batch_size} samples")
    batch_sizes = np.minimum(batch_size, n_test - batch_size * np.arange(n_batches))  # the last may be short
    batches = {name: column.reshape(n_batches, time_steps) for name, column in columns.items()}
    check_counts(folder, batches, batch_sizes, given)
    correct, spikes, net, sops = (batches[name].sum(axis=0) for name in LOG_FILES)  # per step, over the batches
    return SnnLog(time_steps, n_test, n_batches, accuracy=correct / n_test, spikes=spikes / n_test,
                  net_spikes=net / n_test, sops=sops / n_test, positive=(spikes + net) / 2 / n_test,
                  negative=(spikes - net) / 2 / n_test, data=data)


def check_counts(folder, batches, batch_sizes, given):
    """UserError naming the file and line of the first count that §4 rules out; `batches` are (n_batches, T)."""
    time_steps = batches[LOG_FILES[0]].shape[1]

    def line(name, batch, step):  # `accuracy.txt:7`, counted from 1
        return f"{folder / name}:{batch * time_steps + step + 1}"

    for name, values in batches.items():
        if name != "spike_collect.txt" and values.min() < 0:
            batch, step = np.argwhere(values < 0)[0]
            raise UserError(f"{line(name, batch, step)}: negative count {values[batch, step]}")
    for name in ("spike_num.txt", "sop_num.txt"):  # cumulative (spike_collect need not be: it counts -1s too)
        falls = np.argwhere(np.diff(batches[name], axis=1) < 0)
        if len(falls):
            batch, step = falls[0]
            raise UserError(f"{line(name, batch, step + 1)}: the cumulative counter decreases inside a batch ({given})")
    spike_num, spike_collect = batches["spike_num.txt"], batches["spike_collect.txt"]
    beyond = np.argwhere(np.abs(spike_collect) > spike_num)
    if len(beyond):
        batch, step = beyond[0]
        raise UserError(f"{line('spike_collect.txt', batch, step)}: net spike count {spike_collect[batch, step]} "
                        f"exceeds spike_num {spike_num[batch, step]}")
    too_many = np.argwhere(batches["accuracy.txt"] > batch_sizes[:, None])
    if len(too_many):
        batch, step = too_many[0]
        raise UserError(f"{line('accuracy.txt', batch, step)}: {batches['accuracy.txt'][batch, step]} correct "
                        f"predictions in a batch of {batch_sizes[batch]} samples ({given})")
