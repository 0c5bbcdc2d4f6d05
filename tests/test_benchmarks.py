"""The benchmark scripts run end to end on tiny inputs and print their comparison (the real
measurements are long; their numbers are in docs/performance.md)."""
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, random_parameters, write_parameters


def run_benchmark(script, *args):
    completed = subprocess.run([sys.executable, f"benchmarks/{script}", *map(str, args)], cwd=REPO,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_preprocessing_benchmark_compares_both_forms_with_the_per_event_loop():
    out = run_benchmark("bench_preprocessing.py", "--files", 60, "--baseline-files", 10, "--repeats", 1)
    assert re.search(r"project path \(frame file written\), folder: +[\d,]+ files/s", out)
    assert re.search(r"project path \(frame file written\), zip +: +[\d,]+ files/s", out)
    assert re.search(r"speed-up over the per-event loop: [\d,]+x \(folder\), [\d,]+x \(zip\)", out)
    assert out.count("target >= 10,000 files/s in one process") == 2


@pytest.mark.parametrize("script, flag", [("bench_preprocessing.py", "--repeats"), ("bench_preprocessing.py", "--baseline-files"),
                                          ("bench_snn.py", "--repeats"), ("bench_snn.py", "--time-steps")])
def test_a_count_flag_below_one_is_a_one_line_error(script, flag):
    completed = subprocess.run([sys.executable, f"benchmarks/{script}", flag, "0"], cwd=REPO,
                               capture_output=True, text=True, timeout=300)
    assert_one_line_error(completed, flag, "expected a positive integer, got '0'")


def test_training_benchmark_times_both_precisions(frame_data):
    out = run_benchmark("bench_training.py", "--models", "mlp", "--samples", 400, "--epochs", 1)
    assert re.search(r"mlp", out) and re.search(r"k1", out) and "%" in out


def test_snn_benchmark_checks_the_logs_against_the_reference_simulator(frame_data, tmp_path, frames):
    write_parameters(tmp_path / "model_n_mnist.npz", random_parameters("mlp", 1, seed=3, frames=frames[2]))
    out = run_benchmark("bench_snn.py", "--model", "mlp", "--precision", "k1", "--data", frame_data,
                        "--model-dir", tmp_path, "--samples", 100, "--reference-samples", 50, "--time-steps", 12,
                        "--repeats", 1)
    assert "fast engine runs' logs identical to the reference's on the subset: [True]" in out
    assert re.search(r"speed-up [\d.]+x", out)


def test_settling_step_is_the_last_step_whose_cumulative_spike_count_grows():
    from benchmarks.bench_snn import settling_steps

    spike_num = np.array([[5, 9, 9, 12, 12], [0, 0, 0, 0, 0], [3, 3, 3, 3, 3], [1, 2, 3, 4, 5]])
    assert settling_steps(spike_num).tolist() == [4, 0, 1, 5]


def test_a_benchmark_replaces_only_its_own_row_of_the_performance_table(tmp_path, monkeypatch):
    from benchmarks import readme_rows

    doc = tmp_path / "performance.md"
    doc.write_text("intro\n<!-- benchmarks:start -->\n| what | command | measured | target |\n|---|---|---|---|\n"
                   "| a | `x` | 1 | t |\n| b | `y` | 2 | t |\n<!-- benchmarks:end -->\nafter\n")
    monkeypatch.setattr(sys, "argv", [str(REPO / "benchmarks" / "bench_x.py"), "--files", "5", "--update-docs"])
    readme_rows.update_row("a", "3 files/s", "**met**", doc=doc)
    readme_rows.update_row("c", "4", "–", doc=doc)
    assert doc.read_text() == (
        "intro\n<!-- benchmarks:start -->\n| what | command | measured | target |\n|---|---|---|---|\n"
        "| a | `python benchmarks/bench_x.py --files 5` | 3 files/s | **met** |\n| b | `y` | 2 | t |\n"
        "| c | `python benchmarks/bench_x.py --files 5` | 4 | – |\n<!-- benchmarks:end -->\nafter\n")


def test_the_benchmarks_write_into_the_performance_table_of_the_docs():
    from benchmarks import readme_rows

    text = readme_rows.PERFORMANCE_DOC.read_text()
    start, end = readme_rows.MARKERS
    assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)
    block = text.split(start)[1].split(end)[0]
    assert "| what | command | measured | target |" in block
    for script in ("bench_preprocessing.py", "bench_training.py", "bench_snn.py", "profile_snn.py"):
        assert f"`python benchmarks/{script}" in block, script


def test_step_profile_splits_the_steps_after_the_compiling_call_by_kind_of_work():
    from benchmarks.profile_snn import step_time_breakdown

    events = [  # (name, start in ps, seconds), as read_trace returns them
        ("step", 0, 5.0), ("Conv2D:_MklNativeConv2D", 10, 1.0), ("CpuExecutable::ExecuteAsyncOnStream", 20, 1.0),
        ("step", 100, 1.0), ("Conv2D:_MklNativeConv2D", 110, 0.25), ("Conv2D_1:Conv2D", 120, 0.125),
        ("CpuExecutable::ExecuteAsyncOnStream", 130, 0.25), ("select_add_fusion", 131, 0.2),
        ("GatherNd_6:GatherNd", 140, 0.125), ("ExecutorState::Process", 150, 0.9),
        ("step", 200, 2.0), ("MatMul:MatMul", 210, 0.5), ("EagerLocalExecute: __inference_step_1", 200, 1.9)]
    calls, kinds = step_time_breakdown(events)
    assert calls == 2
    assert kinds == {"convolutions": 0.375, "XLA-compiled functions": 0.25, "other TensorFlow operations": 0.625,
                     "dispatch between operations": 1.75}


@pytest.mark.parametrize("layer_index, spike_at, expected", [
    (1, (0, 0, 0), 1), (1, (7, 7, 11), 16), (1, (14, 3, 5), 4),  # layer 3: 4 x 4 windows, stride 1, over 15 x 15
    (2, (0, 0, 0), 1), (2, (5, 6, 63), 1)])  # layer 4: 2 x 2 windows, stride 2: each input in one patch
def test_a_single_spike_lies_in_every_patch_that_covers_it(layer_index, spike_at, expected):
    from benchmarks.profile_snn import patches_with_a_spike
    from spiking_utils import convert

    layer = convert(random_parameters("lenet", 1)).layers[1 + layer_index]
    spikes = np.zeros((3, *layer.input_shape))
    spikes[1][spike_at] = -1.0
    spikes[2][spike_at] = 1.0
    spikes[2][tuple(side - 1 for side in layer.input_shape)] = 1.0  # the far corner: one more patch
    assert patches_with_a_spike(spikes, layer).tolist() == [0, expected, expected + 1]


def test_step_profile_runs_end_to_end(frame_data, tmp_path, frames):
    write_parameters(tmp_path / "model_n_mnist.npz", random_parameters("lenet", 2, seed=3, frames=frames[2]))
    out = run_benchmark("profile_snn.py", "--precision", "k2", "--data", frame_data, "--model-dir", tmp_path,
                        "--samples", 40, "--patch-samples", 10, "--time-steps", 12)
    shares = [float(share) for share in re.findall(r"^  [\w -]+? +([\d.]+) %", out, flags=re.MULTILINE)]
    assert len(shares) == 4 and abs(sum(shares) - 100) < 0.5, out
    assert re.search(r"convolutions: \d+ GFLOP/s per thread", out)
    assert re.search(r"silent input patches \(10 samples, float64\): layer 3 \d+ %, layer 4 \d+ %", out)
    assert re.search(r"sparse patch products .*: layer 3 \(\d+ % of its inputs spike\) [\d.]+× slower, [\d.]+× at a tenth "
                     r"of that density; layer 4 \(\d+ % of its inputs spike\) [\d.]+× slower", out)
