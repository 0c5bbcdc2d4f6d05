"""The Fashion-MNIST dimension of the pipeline (ALGORITHM.md §8): architectures, SNN engine, files, reproduce.py.

Small generated data only: random parameters and images, tiny IDX files.
"""
import numpy as np
import pytest

import lossless
import models
import paths
import snn_engine
from architectures import (DATASETS, ann_ops_per_sample, architecture, layer_macs, layer_shapes,
                           spiking_neuron_count)
from conftest import random_parameters, write_parameters
from log_format import log_columns
from spiking_utils import convert, simulate_reference

FASHION = "fashion_mnist"


def test_fashion_lenet_has_the_five_spiking_layers_of_section_8():
    assert layer_shapes("lenet", FASHION) == [
        ((28, 28, 1), (24, 24, 32)),
        ((24, 24, 32), (12, 12, 32)),
        ((12, 12, 32), (8, 8, 64)),
        ((8, 8, 64), (4, 4, 64)),
        ((4, 4, 64), (1, 1, 1024)),
        ((1, 1, 1024), (10,)),
    ]
    macs = [24 * 24 * 32 * 5 * 5 * 1, 12 * 12 * 32 * 2 * 2 * 32, 8 * 8 * 64 * 5 * 5 * 32, 4 * 4 * 64 * 2 * 2 * 64,
            1024 * 4 * 4 * 64, 1024 * 10]
    assert layer_macs("lenet", FASHION) == macs
    assert ann_ops_per_sample("lenet", FASHION) == 3 * sum(macs[1:]) == 15_562_752
    assert spiking_neuron_count("lenet", FASHION) == 24 * 24 * 32 + 12 * 12 * 32 + 8 * 8 * 64 + 4 * 4 * 64 + 1024


def test_fashion_mlp_is_784_400_400_10():
    assert layer_shapes("mlp", FASHION) == [((28, 28, 1), (400,)), ((400,), (400,)), ((400,), (10,))]
    assert ann_ops_per_sample("mlp", FASHION) == 3 * (400 * 400 + 400 * 10)
    assert spiking_neuron_count("mlp", FASHION) == 800


def test_the_dataset_rows_hold_section_8_s_settings_and_n_mnist_is_unchanged():
    fashion, n_mnist = DATASETS[FASHION], DATASETS["n_mnist"]
    assert (fashion.input_shape, fashion.input_scale) == ((28, 28, 1), 256.0)
    assert fashion.epochs == {"lenet": 100, "mlp": 150} and fashion.time_steps == {"lenet": 20, "mlp": 40}
    assert (n_mnist.input_shape, n_mnist.epochs, n_mnist.time_steps) == ((34, 34, 1), {"lenet": 150, "mlp": 150},
                                                                          {"lenet": 40, "mlp": 40})
    assert len(architecture("lenet")) == 4 and layer_shapes("lenet")[0] == ((34, 34, 1), (30, 30, 12))
    assert paths.parameters_file() == paths.PARAMETERS_FILE == "model_n_mnist.npz"
    assert paths.parameters_file(FASHION) == "model_fashion_mnist.npz"
    root = paths.REPO_ROOT
    assert paths.model_dir("lenet", "k1") == root / "LeNet" / "checkpoints" / "k1"
    assert paths.log_dir("mlp", "k2", dataset=FASHION) == root / "FashionMNIST" / "MLP" / "figs" / "k2"
    assert paths.figure_path("lenet", "sop", dataset=FASHION) == \
        root / "FashionMNIST" / "LeNet" / "figs" / "scnn_sop_fashion_mnist.png"
    assert paths.figure_path("mlp", "accuracy").name == "smlp_accuracy_n_mnist.png"


def fashion_images(n, seed):
    """Network inputs as fashion_mnist.network_inputs makes them: pixel / 256, (n, 28, 28, 1), mostly dark."""
    rng = np.random.default_rng(seed)
    pixels = np.where(rng.random((n, 28, 28)) < 0.5, rng.integers(0, 256, (n, 28, 28)), 0)
    return (pixels.astype(np.float32) / 256.0)[..., None]


@pytest.mark.parametrize("k", [0, 1, 2])
def test_fast_engine_equals_the_reference_on_five_layer_lenets(k):
    images = fashion_images(6, seed=k)
    labels = np.arange(6) % 10
    params = random_parameters("lenet", k, seed=10 + k, frames=fashion_images(16, seed=99), dataset=FASHION)
    network = convert(params)
    assert [layer.output_shape for layer in network.layers][-1] == (1, 1, 1024)
    time_steps = 12
    reference = simulate_reference(network, images, time_steps, keep_counts=True, progress=False)
    fast = snn_engine.simulate(network, images, time_steps, keep_counts=True, progress=False)
    for name, values in log_columns(reference, labels).items():
        np.testing.assert_array_equal(log_columns(fast, labels)[name], values, err_msg=name)
    for fast_counts, reference_counts in zip(fast.final_counts, reference.final_counts):
        np.testing.assert_array_equal(fast_counts, reference_counts)


@pytest.mark.parametrize("model,k", [("lenet", 0), ("lenet", 1), ("lenet", 2), ("mlp", 1)])
def test_settled_counts_equal_2_to_the_k_times_the_quantized_activations(model, k):
    images = fashion_images(8, seed=20 + k)
    params = random_parameters(model, k, seed=30 + k, frames=fashion_images(16, seed=98), dataset=FASHION)
    network = convert(params, "exact")
    result = snn_engine.simulate(network, images, 60, keep_counts=True, progress=False)
    assert not result.still_spiking.any()
    ann_counts, ann_predictions = lossless.quantized_ann(params, images)
    for snn, ann in zip(result.final_counts, ann_counts):
        np.testing.assert_array_equal(snn, ann)
    np.testing.assert_array_equal(result.predictions[:, -1], ann_predictions)


def test_a_parameter_file_round_trip_keeps_the_dataset(tmp_path):
    params = random_parameters("lenet", 1, dataset=FASHION)
    path = write_parameters(tmp_path / "model_fashion_mnist.npz", params)
    loaded = models.load_parameters(path, model="lenet", k=1, dataset=FASHION)
    assert loaded["dataset"] == FASHION and loaded["conv5_kernel"].shape == (4, 4, 64, 1024)
    with pytest.raises(models.UserError, match="holds a fashion_mnist model, expected n_mnist"):
        models.load_parameters(path, dataset="n_mnist")
    n_mnist = write_parameters(tmp_path / "model_n_mnist.npz", random_parameters("lenet", 1))
    assert "dataset" not in np.load(n_mnist)
    assert models.load_parameters(n_mnist, dataset="n_mnist")["dataset"] == "n_mnist"


def test_export_parameters_names_the_dataset_of_fashion_mnist_only():
    for dataset, tagged in (("n_mnist", False), (FASHION, True)):
        keras_model = models.build_model("lenet", 1, dataset)
        assert tuple(keras_model.input.shape[1:]) == DATASETS[dataset].input_shape
        params = models.export_parameters(keras_model, "lenet", 1, dataset)
        assert ("dataset" in params) == tagged
        assert {name: value.shape for name, value in params.items() if name not in ("model", "k", "dataset")} == \
            models.parameter_shapes("lenet", dataset)


def test_first_layer_drive_of_the_fashion_lenet_uses_the_patches_and_equals_the_convolution():
    """Layer 2 is a 2 x 2 stride-2 convolution on 24 x 24: the space-to-depth case of make_first_layer_drive."""
    import snn_float64
    from conftest import weighted_sum

    network = convert(random_parameters("lenet", 1, seed=7, frames=fashion_images(8, seed=3), dataset=FASHION))
    layer, fast = network.layers[1], snn_float64.fast_layer(network.layers[1])
    counts = np.random.default_rng(0).integers(0, 9, (5, *layer.input_shape)).astype(np.int8)
    expected = weighted_sum(architecture("lenet", FASHION)[1], layer.kernel / layer.threshold, counts > 2)
    current = snn_engine.make_first_layer_drive(layer, fast)(counts, np.full(5, 2, np.int32)).numpy()
    assert current.shape == (5, 12, 12, 32)
    np.testing.assert_allclose(current, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


# ---------------------------------------------------------------------------------------------
# The paper's §8 table and reproduce.py --dataset fashion_mnist

ALGORITHM_MD = paths.REPO_ROOT.parent / "shared" / "reference" / "ALGORITHM.md"


def test_the_fashion_paper_numbers_are_those_of_algorithm_md_section_8():
    from paper_results import FASHION_PAPER_RESULTS

    if not ALGORITHM_MD.is_file():
        pytest.skip("../shared/reference/ALGORITHM.md is absent")
    section = ALGORITHM_MD.read_text().split("\n## 8.")[1].split("\n## ")[0]
    header, _, *rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
                        for line in section.split("The authors' results")[1].splitlines()
                        if line.strip().startswith("|")]
    number = lambda cell: None if cell == "–" else (float(cell[:-1]) / 100 if cell.endswith("%") else int(cell))  # noqa: E731
    table = {(cells[0].split()[0].lower(), cells[1].replace("=", "")): dict(zip(header, cells)) for cells in rows}
    assert list(table) == list(FASHION_PAPER_RESULTS)
    for (model, precision), paper in FASHION_PAPER_RESULTS.items():
        cells = table[model, precision]
        assert number(cells["epochs"]) == DATASETS[FASHION].epochs[model]
        assert paper["ann"] == pytest.approx(number(cells["ANN"]), rel=1e-12)
        assert paper["snn"] == (None if number(cells["SNN (final)"]) is None else
                                pytest.approx(number(cells["SNN (final)"]), rel=1e-12))
        assert paper["steps"] == number(cells["steps"])
        assert paper["positive"] is paper["negative"] is paper["sops"] is None


def write_idx_folder(folder, n_train, n_test, seed=0):
    """The four official file names holding tiny random images and labels (gzip-compressed IDX)."""
    import gzip
    import struct

    import fashion_mnist

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.where(rng.random((n, 28, 28)) < 0.3, rng.integers(0, 256, (n, 28, 28)), 0).astype(np.uint8)
        images[np.arange(n), labels, :] = 255  # a row per class: learnable in an epoch or so
        for array, name in zip((images, labels), fashion_mnist.FILES[prefix]):
            header = struct.pack(f">{1 + array.ndim}I", 0x800 + array.ndim, *array.shape)
            (folder / name).write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))


def test_reproduce_runs_the_fashion_mnist_study_end_to_end(tmp_path, monkeypatch):
    import fashion_mnist
    import reproduce

    raw, out = tmp_path / "raw", tmp_path / "out"
    write_idx_folder(raw, n_train=60, n_test=20)
    # the data stage cuts the train files as §8 does; tiny sizes here
    monkeypatch.setattr(fashion_mnist, "SIZES", {"train": 50, "val": 10, "test": 20})
    argv = ["--dataset", FASHION, "--raw", str(raw), "--data", str(tmp_path / "fashion.npz"), "--out-root", str(out),
            "--models", "mlp", "--precisions", "full", "k1", "--epochs", "1", "--train-limit", "40",
            "--test-limit", "12"]
    reproduce.main(argv)
    folder = out / "FashionMNIST" / "MLP"
    params = models.load_parameters(folder / "checkpoints" / "k1" / "model_fashion_mnist.npz", dataset=FASHION)
    assert params["dense1_kernel"].shape == (784, 400)
    import json

    snn = json.loads((folder / "figs" / "k1" / "snn_results.json").read_text())
    assert (snn["time_steps"], snn["n_test"], snn["dataset"]) == (40, 12, FASHION)
    assert snn["ann_ops_per_sample"] == ann_ops_per_sample("mlp", FASHION)
    for rule in ("paper", "exact"):
        assert snn["lossless_check"][rule]["other_mismatching_neurons"] == 0
    assert snn["lossless_check"]["exact"]["mismatching_predictions"] == 0
    for figure in paths.FIGURES:
        assert (folder / "figs" / f"smlp_{figure}_fashion_mnist.png").is_file()
    results = (out / "RESULTS_fashion_mnist.md").read_text()
    assert "Fashion-MNIST" in results and "88.79%" in results and "89.83%" in results
    assert not (out / "RESULTS.md").exists() and not (out / "LeNet").exists() and not (out / "MLP").exists()
    # the README's short table: one row per model and precision with results, paper / ours, read from the files
    import report

    readme_rows = [line.split(" | ") for line in report.fashion_readme_markdown(reproduce.parse_args(argv)).splitlines()
                   if line.startswith("| MLP")]
    ann = json.loads((folder / "checkpoints" / "k1" / "ann_results.json").read_text())["accuracy"]
    state = json.loads((folder / "checkpoints" / "k1" / "training_state.json").read_text())
    assert [row[1] for row in readme_rows] == ["full", "k1"]
    k1 = readme_rows[1]
    assert k1[2] == f"88.79% / {100 * ann:.2f}%" and k1[3] == f"88.79% / {100 * snn['final_accuracy']:.2f}%"
    assert k1[4] == f"11 / {snn['steps_to_final']}"
    assert k1[5] == f"{snn['positive_spikes_per_sample']:,.1f} / {snn['negative_spikes_per_sample']:,.1f}"
    assert k1[7] == f"{snn['lossless_check']['paper']['mismatching_predictions']} / 0 of 12"
    assert k1[8] == f"{round(sum(e['seconds'] for e in state['history']) / 60)} min (1 epoch) |"
    full_ann = json.loads((folder / "checkpoints" / "full" / "ann_results.json").read_text())["accuracy"]
    assert readme_rows[0][2:8] == [f"89.83% / {100 * full_ann:.2f}%", "– / –", "– / –", "–", "–", "–"]
    # a rerun skips every stage
    import contextlib
    import io

    screen = io.StringIO()
    with contextlib.redirect_stdout(screen):
        reproduce.main(argv)
    assert screen.getvalue().count("complete, skipped") == 1 + 2 + 2 + 1 + 1


def test_the_thin_fashion_scripts_train_evaluate_and_simulate(tmp_path):
    """training -> inference -> spiking inference of FashionMNIST/MLP, k1, each in a fresh interpreter."""
    import json

    import fashion_mnist
    from conftest import run_script

    write_idx_folder(tmp_path / "raw", n_train=30, n_test=10)
    data = tmp_path / "fashion.npz"
    fashion_mnist.build_dataset(tmp_path / "raw", data, {"train": 24, "val": 6, "test": 10})
    model_dir, log_dir = tmp_path / "model", tmp_path / "logs"
    folder = paths.REPO_ROOT / "FashionMNIST" / "MLP"
    common = ["--data", data, "--model-dir", model_dir]
    for script, extra in (("training_k1_mlp_fashion_mnist.py", ["--epochs", "1"]),
                          ("inference_k1_mlp_fashion_mnist.py", []),
                          ("inference_k1_smlp_fashion_mnist.py", ["--log-dir", log_dir, "--check-lossless", "--quiet",
                                                                 "--tie-rule", "exact"])):
        completed = run_script(folder / script, *common, *extra)
        assert completed.returncode == 0, completed.stdout + completed.stderr
    assert models.load_parameters(model_dir / "model_fashion_mnist.npz", "mlp", 1, dataset=FASHION)
    assert json.loads((model_dir / "ann_results.json").read_text())["n_test"] == 10
    snn = json.loads((log_dir / "snn_results.json").read_text())
    assert snn["time_steps"] == DATASETS[FASHION].time_steps["mlp"] and snn["lossless_check"]["exact"]["mismatching_neurons"] == 0
    # the N-MNIST script looks for model_n_mnist.npz: a Fashion-MNIST folder holds none
    completed = run_script(paths.REPO_ROOT / "MLP" / "inference_k1_mlp_n_mnist.py", "--model-dir", model_dir,
                           "--data", data)
    assert completed.returncode != 0


def test_the_snn_benchmark_runs_the_five_layer_lenet(tmp_path):
    """benchmarks/bench_snn.py --dataset fashion_mnist: Fashion-MNIST's inputs and T, the fast engine's logs
    equal to the reference's (the ≥ 10× target is measured on the real model, docs/performance.md)."""
    import subprocess
    import sys

    import fashion_mnist

    write_idx_folder(tmp_path / "raw", n_train=30, n_test=10)
    data = tmp_path / "fashion.npz"
    fashion_mnist.build_dataset(tmp_path / "raw", data, {"train": 24, "val": 6, "test": 10})
    write_parameters(tmp_path / "model_fashion_mnist.npz",
                     random_parameters("lenet", 1, seed=5, frames=fashion_images(16, seed=4), dataset=FASHION))
    completed = subprocess.run(
        [sys.executable, "benchmarks/bench_snn.py", "--dataset", FASHION, "--data", str(data), "--model-dir", str(tmp_path),
         "--samples", "100", "--reference-samples", "50", "--repeats", "1"],
        cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "lenet k1 on Fashion-MNIST" in completed.stdout and "T = 20, 100 samples" in completed.stdout
    assert "fast engine runs' logs identical to the reference's on the subset: [True]" in completed.stdout
