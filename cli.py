"""Shared command-line plumbing: one-line user errors, atomic writes, path set-up.

Every entry point wraps its `main` with `run_main`, so a `UserError` (bad file, bad flag)
prints one line such as `error: data/n_mnist.npz: missing array 'x_test'` and exits with
status 2, without a traceback.
"""
import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent


def shown(path):
    """`path` as a user reads it: relative to the repository root when inside it, e.g. `data/n_mnist.npz`."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


class UserError(Exception):
    """A problem with the user's input: reported as one line, no traceback."""


SHOW_TF_NOTICES = "SHOW_TF_NOTICES"  # set to 1 to see TensorFlow's start-up notices (import_tensorflow)
TF_NOTICES_HELP = f"TensorFlow's start-up notices are hidden; {SHOW_TF_NOTICES}=1 shows them."  # --help of its users
TF_NOTICES = ("All log messages before absl::InitializeLog() is called",  # absl, before its logging is set up
              "oneDNN custom operations are on")  # the only lines TensorFlow writes at import, on a CPU


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad flag (`--time-steps abc`) reported as one `error:` line like any other."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def number_type(convert, accepts, expected):
    """An argparse type: `convert(text)`, refused with "expected <expected>, got '<text>'" unless `accepts` it."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = expected
    return parse


positive_int = number_type(int, lambda value: value >= 1, "a positive integer")  # --epochs, --time-steps, ...
non_negative_int = number_type(int, lambda value: value >= 0, "an integer of at least 0")  # --seed
positive_float = number_type(float, lambda value: value > 0 and value != float("inf"), "a positive number")  # --lr


@contextlib.contextmanager
def hidden_tf_notices():
    """Capture stderr at its file descriptor (where TensorFlow's C++ code writes) during the block;
    afterwards write every captured line again except TensorFlow's known start-up notices (TF_NOTICES).
    An exception inside the block still replays what was captured before it propagates."""
    sys.stderr.flush()
    real_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(real_stderr, 2)
            os.close(real_stderr)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not any(notice in line for notice in TF_NOTICES)))
            sys.stderr.flush()


def import_tensorflow():
    """Import TensorFlow without its start-up notices; anything else it writes still reaches stderr.

    Its C++ INFO lines (CPU features, the XLA service, "Compiled cluster using XLA") are hidden by
    TF_CPP_MIN_LOG_LEVEL=1, which keeps warnings and errors. Two notices are written before that
    setting is read, so the import runs under `hidden_tf_notices`. Numerics are untouched (oneDNN
    stays on). A TF_CPP_MIN_LOG_LEVEL of the user's is kept; with SHOW_TF_NOTICES=1 nothing is hidden.
    """
    if "tensorflow" in sys.modules or os.environ.get(SHOW_TF_NOTICES, "") not in ("", "0"):
        import tensorflow
        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    with hidden_tf_notices():
        import tensorflow
    return tensorflow


def run_main(main, argv=None):
    """Run `main(argv)`; turn a UserError into `error: ...` on stderr and exit status 2."""
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def check_output_file(path):
    """`path` as a Path; UserError when no file can be written there (a folder, or a folder that is
    a file), so that a long job can check its output before it starts."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name to write")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{path}: cannot write there ({existing} is a file, not a folder)")
    return path


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    A crash or Ctrl-C therefore never leaves a half-written file at `path`.
    `suffix` keeps the extension that some writers insist on (np.savez adds `.npz`).
    """
    path = check_output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix if suffix is None else suffix
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + suffix)
    except OSError as error:
        raise UserError(f"{path}: cannot write there ({error.strerror or error})") from None
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_npz_arrays(path, what):
    """{name: array} of an .npz file, never unpickling; UserError naming the file for anything else.

    `what` names the file's role in messages ("frame dataset", "parameter file"). A file that is
    not a zip archive would otherwise get numpy's misleading "contains pickled data" message.
    """
    import numpy as np

    try:
        with open(path, "rb") as handle:
            signature = handle.read(4)
    except OSError as error:
        raise UserError(f"{path}: cannot read the {what} ({error.strerror or error})") from None
    if signature[:2] != b"PK":
        raise UserError(f"{path}: not a {what} (an .npz file is a zip archive; this one is not)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:  # zipfile.BadZipFile, ValueError (pickled object arrays), OSError
        raise UserError(f"{path}: not a readable {what} ({type(error).__name__}: {error})") from None
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):  # a member that is not an .npy file comes back as bytes
            raise UserError(f"{path}: member {name!r} of the {what} is not a numpy array")
    return arrays


def write_text_atomic(path, text):
    """Write `text` to `path` through a temporary file."""
    with atomic_path(path) as temporary:
        Path(temporary).write_text(text)


def is_number(value):
    """True for an int or float read from JSON (not a bool, which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_json_object(path):
    """A JSON file that must hold an object (a results file); UserError naming the file otherwise."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object")
    return value
