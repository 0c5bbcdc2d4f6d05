"""Shared fixtures: a tiny learnable frame dataset, random §6 parameter sets, script runners.

Nothing here touches the network; everything is generated under pytest's tmp directories.
"""
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `import models`, `from benchmarks import ...`

import numpy as np  # noqa: E402
import pytest  # noqa: E402

N_TRAIN, N_TEST = 400, 100


def pytest_configure(config):
    # Keras 3 on NumPy 2 warns about `__array__(copy=...)` on every tensor conversion: pure noise here
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword")
SIDE = 34


# ---------------------------------------------------------------------------------------------
# Tiny frame dataset: one Gaussian blob per class (its position encodes the digit) plus noise.


def make_frames(n, seed):
    """(counts uint16 (n, 34, 34), labels uint8 (n,)): learnable class-dependent blobs + noise."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    angle = 2 * np.pi * labels / 10
    cy = 17 + 10 * np.sin(angle) + rng.uniform(-1.5, 1.5, n)
    cx = 17 + 10 * np.cos(angle) + rng.uniform(-1.5, 1.5, n)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    blob = 10.0 * np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / (2 * 3.0**2))
    counts = rng.poisson(blob + 0.3)
    return counts.astype(np.uint16), labels


@pytest.fixture(scope="session")
def frame_data(tmp_path_factory):
    """Path of a tiny §6 frame dataset written with n_mnist.save_frames (400 train / 100 test)."""
    from n_mnist import save_frames

    x_train, y_train = make_frames(N_TRAIN, seed=1)
    x_test, y_test = make_frames(N_TEST, seed=2)
    path = tmp_path_factory.mktemp("data") / "tiny_n_mnist.npz"
    save_frames(path, x_train, y_train, x_test, y_test)
    return path


@pytest.fixture(scope="session")
def frames(frame_data):
    """(x_train, y_train, x_test, y_test) as the networks see them: float32 (N, 34, 34, 1) = count / 32."""
    from n_mnist import load_frames

    return load_frames(frame_data)


# ---------------------------------------------------------------------------------------------
# Random §6 parameter sets


def conv2d_valid(x, kernel, stride):
    """Valid cross-correlation in float64, written here independently of the production code.

    x: (B, H, W, C_in); kernel: (kh, kw, C_in, C_out) -> (B, H_out, W_out, C_out).
    """
    x = np.asarray(x, dtype=np.float64)
    size = kernel.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    batch, out_h, out_w = windows.shape[:3]
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(batch * out_h * out_w, -1)  # (kh, kw, C_in) order
    return (patches @ kernel.reshape(-1, kernel.shape[-1])).reshape(batch, out_h, out_w, kernel.shape[-1])


def weighted_sum(spec, kernel, activation):
    """W (*) activation for one hidden layer spec (architectures.HiddenLayer)."""
    if spec.kind == "conv":
        return conv2d_valid(activation, kernel, spec.stride)
    return np.asarray(activation, dtype=np.float64).reshape(len(activation), -1) @ kernel


def random_parameters(model, k, seed=0, frames=None, negative_gamma_share=0.25, dataset="n_mnist"):
    """A §6 parameter dict as models.load_parameters returns it: float64 arrays holding float32 values.

    He-normal kernels; gammas of both signs (about `negative_gamma_share` negative); with `frames`
    (float (B, 34, 34, 1)) each BN's mean and variance are the statistics of its pre-activations on
    those frames, so that BN(z) has unit scale and the spike counts stay modest. A `dataset` other
    than n_mnist gives its architecture and a 'dataset' entry (frames then of its input shape).
    """
    import models
    from architectures import BN_EPSILON, QUANTIZER_TIE_NUDGE, architecture

    rng = np.random.default_rng(seed)
    f32 = lambda a: np.asarray(a, dtype=np.float32).astype(np.float64)  # noqa: E731
    shapes = models.parameter_shapes(model, dataset)
    params = {"model": model, "k": k} if dataset == "n_mnist" else {"model": model, "k": k, "dataset": dataset}
    activation = None if frames is None else np.asarray(frames, dtype=np.float64)
    for index, layer in enumerate(architecture(model, dataset), start=1):
        shape = shapes[f"{layer.name}_kernel"]
        fan_in = int(np.prod(shape[:-1]))
        kernel = f32(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape))
        units = shape[-1]
        magnitude = rng.uniform(0.5, 1.5, units)
        sign = np.where(rng.random(units) < negative_gamma_share, -1.0, 1.0)
        sign[0] = -1.0  # at least one negative gamma per layer
        gamma, beta = f32(magnitude * sign), f32(rng.uniform(-0.5, 0.8, units))
        if activation is None:
            mean, var = f32(rng.normal(0.0, 0.1, units)), f32(rng.uniform(0.5, 2.0, units))
        else:
            z = weighted_sum(layer, kernel, activation)
            axes = tuple(range(z.ndim - 1))
            mean, var = f32(z.mean(axis=axes)), f32(np.maximum(z.var(axis=axes), 1e-3))
            bn = gamma * (z - mean) / np.sqrt(var + BN_EPSILON) + beta
            scale = 2.0 ** max(k, 0)
            activation = np.round(np.maximum(bn, 0) * scale + QUANTIZER_TIE_NUDGE) / scale
        params[f"{layer.name}_kernel"] = kernel
        params.update({f"bn{index}_gamma": gamma, f"bn{index}_beta": beta, f"bn{index}_mean": mean, f"bn{index}_var": var})
    out_shape = shapes["out_kernel"]
    params["out_kernel"] = f32(rng.normal(0.0, np.sqrt(1.0 / out_shape[0]), out_shape))
    return params


def file_arrays(params):
    """The arrays of a §6 file for a parameter dict: float32 arrays, `model` string, `k` integer (and `dataset`)."""
    tags = ("model", "k", "dataset")
    arrays = {name: np.asarray(value, dtype=np.float32) for name, value in params.items() if name not in tags}
    arrays.update({"model": np.array(params["model"]), "k": np.array(params["k"], dtype=np.int64)})
    if "dataset" in params:
        arrays["dataset"] = np.array(params["dataset"])
    return arrays


def write_parameters(path, params):
    """Save a parameter dict as a §6 file with models.save_parameters; returns the path."""
    import models

    models.save_parameters(path, file_arrays(params))
    return Path(path)


@pytest.fixture(scope="session")
def make_params():
    """The `random_parameters(model, k, seed=0, frames=None)` helper."""
    return random_parameters


@pytest.fixture(scope="session")
def save_params():
    """The `write_parameters(path, params)` helper."""
    return write_parameters


# ---------------------------------------------------------------------------------------------
# Subprocesses


# TensorFlow's start-up and compilation notices, which no script of ours may let through (cli.import_tensorflow)
NOTICE_PATTERNS = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard", "XLA service",
                   "Compiled cluster using XLA", "StreamExecutor")


def script_env():
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}  # the scripts' own default
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def run_script(script, *args, timeout=300):
    """Run a thin script (path relative to the repository root) in a fresh interpreter from the root."""
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(completed, *fragments):
    """Non-zero exit, exactly one `error:` line on stderr naming `fragments`, and no traceback."""
    assert completed.returncode != 0, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr, completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, completed.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="session")
def script_runner():
    return run_script


# ---------------------------------------------------------------------------------------------
# The thin scripts, run once per session: one fresh interpreter per model/precision, started from
# the repository root, runs that precision's training script, then its ANN inference script, then
# (k >= 0) its SNN script. Each script file is executed as __main__ (runpy) with its own argv, so
# TensorFlow is imported once per model/precision instead of once per script.

SCRIPT_DRIVER = r"""
import json, runpy, sys
for argv in json.loads(sys.argv[1]):
    print(f"@@@ BEGIN {argv[0]}", flush=True); print(f"@@@ BEGIN {argv[0]}", file=sys.stderr, flush=True)
    sys.argv = list(argv)
    try:
        runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = 0 if exit.code is None else exit.code if isinstance(exit.code, int) else 1
    print(f"@@@ EXIT {argv[0]} {code}", flush=True); print(f"@@@ END {argv[0]}", file=sys.stderr, flush=True)
    if code:
        break
"""


def split_driver_output(text, marker_end):
    """{script: text} from the driver's output, cut at its BEGIN markers."""
    parts, current = {}, None
    for line in text.splitlines():
        if line.startswith("@@@ BEGIN "):
            current = line[len("@@@ BEGIN "):]
            parts[current] = []
        elif current is not None and not line.startswith(marker_end):
            parts[current].append(line)
    return {name: "\n".join(lines) for name, lines in parts.items()}


def script_paths(model, precision):
    from architectures import MODEL_FOLDERS

    folder, short = MODEL_FOLDERS[model], {"lenet": "lenet", "mlp": "mlp"}[model]
    paths = {"train": f"{folder}/training_{precision}_{short}_n_mnist.py",
             "ann": f"{folder}/inference_{precision}_{short}_n_mnist.py"}
    if precision != "full":
        paths["snn"] = f"{folder}/inference_{precision}_s{short}_n_mnist.py"
    return paths


@pytest.fixture(scope="session")
def script_runs(frame_data, tmp_path_factory):
    """{(model, precision): run} for all 8 model/precisions, each run a dict with the model dir,
    log dir, and per script ("train", "ann", "snn"): exit code, stdout and stderr."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    from architectures import MODEL_NAMES, PRECISIONS

    root = tmp_path_factory.mktemp("scripts")

    def chain(model, precision):
        model_dir, log_dir = root / model / precision, root / model / f"logs_{precision}"
        paths = script_paths(model, precision)
        common = ["--data", str(frame_data), "--model-dir", str(model_dir)]
        # 3 epochs of 20 updates: BN's moving variance, which starts at 1, has then come down to the batches'
        # (§2's small initial kernels), so the networks spike
        argvs = [[paths["train"], "--epochs", "3", "--train-limit", "200", "--test-limit", "50",
                  "--batch-size", "10", "--lr", "1e-3", *common],
                 [paths["ann"], "--test-limit", "50", *common]]
        if "snn" in paths:
            argvs.append([paths["snn"], "--test-limit", "20", "--time-steps", "10", "--log-dir", str(log_dir),
                          "--quiet", *common])
        completed = subprocess.run([sys.executable, "-c", SCRIPT_DRIVER, json.dumps(argvs)], cwd=REPO,
                                   env=script_env(), capture_output=True, text=True, timeout=600)
        out = split_driver_output(completed.stdout, "@@@ EXIT ")
        err = split_driver_output(completed.stderr, "@@@ END ")
        codes = {line.split()[2]: int(line.split()[3]) for line in completed.stdout.splitlines()
                 if line.startswith("@@@ EXIT ")}
        run = {"model_dir": model_dir, "log_dir": log_dir, "returncode": completed.returncode,
               "stdout": completed.stdout, "stderr": completed.stderr}
        for role, path in paths.items():
            run[role] = {"code": codes.get(path), "stdout": out.get(path, ""), "stderr": err.get(path, "")}
        return run

    keys = [(model, precision) for model in MODEL_NAMES for precision in PRECISIONS]
    keys.sort(key=lambda key: key[0] != "lenet")  # the slower LeNet chains first
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(chain, *key) for key in keys}
        return {key: future.result() for key, future in futures.items()}
