"""cli.py and commands.py: the shared command-line plumbing."""
import os
import subprocess
import sys

import pytest

from cli import UserError, read_json_object
from conftest import NOTICE_PATTERNS, REPO


def test_a_json_file_that_is_not_text_is_a_user_error(tmp_path):
    path = tmp_path / "ann_results.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="ann_results.json: cannot read"):
        read_json_object(path)


# A quiet, quick command line: flags are parsed before TensorFlow is imported, and its start-up
# notices stay off the terminal.

HELP_SCRIPTS = ["LeNet/training_k1_lenet_n_mnist.py", "MLP/inference_full_mlp_n_mnist.py",
                "LeNet/inference_k2_slenet_n_mnist.py", "reproduce.py", "figs/accuracy_speed.py", "figs/sops.py",
                "figs/sparsity.py", "preprocessing_n_mnist.py", "FashionMNIST/LeNet/training_k1_lenet_fashion_mnist.py",
                "FashionMNIST/MLP/inference_k1_smlp_fashion_mnist.py"]
RUN_AS_MAIN = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    print("exit", exit.code)
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def run_as_main(script, *args):
    return subprocess.run([sys.executable, "-c", RUN_AS_MAIN, str(REPO / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script", HELP_SCRIPTS)
def test_help_does_not_import_tensorflow(script):
    completed = run_as_main(script, "--help")
    assert "usage:" in completed.stdout and "exit 0" in completed.stdout, completed.stdout + completed.stderr
    assert "tensorflow imported: False" in completed.stdout
    assert ("SHOW_TF_NOTICES" in completed.stdout) == (not script.startswith(("figs/", "preprocessing")))


@pytest.mark.parametrize("script,args,fragment", [
    ("LeNet/training_k1_lenet_n_mnist.py", ["--epochs", "abc"], "--epochs"),
    ("LeNet/training_k1_lenet_n_mnist.py", ["--data", "no_such_frames.npz"], "no_such_frames.npz"),
    ("MLP/inference_k1_mlp_n_mnist.py", ["--model-dir", "no_such_folder"], "no_such_folder"),
    ("MLP/inference_k1_smlp_n_mnist.py", ["--time-steps", "0"], "--time-steps"),
    ("reproduce.py", ["--models", "resnet"], "resnet"),
    ("FashionMNIST/LeNet/inference_k1_slenet_fashion_mnist.py", ["--time-steps", "0"], "--time-steps"),
])
def test_bad_flags_and_missing_inputs_are_refused_without_tensorflow(script, args, fragment):
    completed = run_as_main(script, *args)
    assert "exit 2" in completed.stdout and "tensorflow imported: False" in completed.stdout
    assert completed.stderr.startswith("error: ") and fragment in completed.stderr, completed.stderr


def test_tensorflow_notices_are_hidden_and_everything_else_is_replayed():
    code = """
import os
import cli
with cli.hidden_tf_notices():
    os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see ...\\n")
    os.write(2, b"E0000 00:00:1.0 1 some_op.cc:12] a real TensorFlow error\\n")
tf = cli.import_tensorflow()
with cli.hidden_tf_notices():
    tf.linalg.inv(tf.zeros((2, 2), tf.float64))  # a failing op: its error must reach the user
"""
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                               env={key: value for key, value in os.environ.items()
                                    if key not in ("TF_CPP_MIN_LOG_LEVEL", "SHOW_TF_NOTICES")})
    assert completed.returncode != 0
    assert "a real TensorFlow error" in completed.stderr
    assert "not invertible" in completed.stderr and "Traceback" in completed.stderr
    assert not any(pattern in completed.stderr for pattern in NOTICE_PATTERNS), completed.stderr


def test_show_tf_notices_shows_them():
    completed = subprocess.run([sys.executable, "-c", "import cli; cli.import_tensorflow()"], cwd=REPO,
                               capture_output=True, text=True, timeout=120,
                               env={**{key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"},
                                    "SHOW_TF_NOTICES": "1"})
    assert "oneDNN custom operations" in completed.stderr
