"""Shared command-line plumbing: one-line user errors, atomic writes, path set-up.

Every entry point wraps its `main` with `run_main`, so a `UserError` (bad file, bad flag)
prints one line such as `error: data/n_mnist.npz: missing array 'x_test'` and exits with
status 2, without a traceback.
"""
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent


class UserError(Exception):
    """A problem with the user's input: reported as one line, no traceback."""


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


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    A crash or Ctrl-C therefore never leaves a half-written file at `path`.
    `suffix` keeps the extension that some writers insist on (np.savez adds `.npz`).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name to write")
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


def write_text_atomic(path, text):
    """Write `text` to `path` through a temporary file."""
    with atomic_path(path) as temporary:
        Path(temporary).write_text(text)


def read_json_object(path):
    """A JSON file that must hold an object (a results file); UserError naming the file otherwise."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object")
    return value
