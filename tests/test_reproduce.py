"""reproduce.py: the whole study end to end on tiny data, skipping of complete stages, RESULTS.md, bad input."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

import models
import paths
import report
import reproduce
import training
from architectures import DISPLAY_NAMES, FIGURE_PREFIXES, MODEL_FOLDERS, MODEL_NAMES, PRECISIONS, TIE_RULES, ann_ops_per_sample
from cli import UserError
from paper_results import PAPER_RESULTS
from result_files import LOSSLESS_KEYS, SNN_KEYS, results_match

REPO = reproduce.REPO_ROOT
TINY_RUN = ["--epochs", "1", "--train-limit", "200", "--test-limit", "50", "--time-steps", "12"]
N_STAGES = 1 + 8 + 8 + 6 + 2  # data, trainings, ANN evaluations, SNNs, figures


@pytest.fixture(scope="module")
def study(frame_data, tmp_path_factory):
    """A complete tiny study under a temporary out-root: (out_root, stdout of the run)."""
    out_root = tmp_path_factory.mktemp("study")
    stdout = run_reproduce(["--data", str(frame_data), "--out-root", str(out_root), *TINY_RUN])
    return out_root, stdout


def run_reproduce(argv):
    """Run reproduce.main in a fresh interpreter (its own TensorFlow state); return stdout."""
    result = subprocess.run([sys.executable, "reproduce.py", *argv], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def stage_lines(stdout):
    return [line for line in stdout.splitlines() if re.match(r"\[\s*\d+/\d+\]", line)]


def test_the_whole_study_produces_every_output(study):
    out_root, stdout = study
    for model in MODEL_NAMES:
        folder = out_root / MODEL_FOLDERS[model]
        for precision in PRECISIONS:
            ann = json.loads((folder / "checkpoints" / precision / "ann_results.json").read_text())
            assert (ann["model"], ann["precision"], ann["n_test"]) == (model, precision, 50)
        for precision in PRECISIONS[1:]:
            snn = json.loads((folder / "figs" / precision / "snn_results.json").read_text())
            assert snn["time_steps"] == 12 and len(snn["accuracy_per_step"]) == 12
            assert snn["tie_rule"] == "paper"
            assert {rule: check["other_mismatching_neurons"] for rule, check in snn["lossless_check"].items()} == {
                "paper": 0, "exact": 0}
            assert snn["lossless_check"]["exact"]["mismatching_neurons"] == 0
        for name in ("accuracy", "sop", "spike_neuron"):
            png = folder / "figs" / f"{FIGURE_PREFIXES[model]}_{name}_n_mnist.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out_root / "RESULTS.md").is_file()
    done = [line for line in stage_lines(stdout) if "done in" in line]
    assert len(done) == N_STAGES - 1  # the data file exists already: its stage is complete
    # one screen line per stage, with the stage's outcome; the full output went to the stage log
    assert len(stage_lines(stdout)) == N_STAGES
    assert any(re.search(r"\] SNN mlp k1: \d+\.\d\d% after \d+ of 12 steps; predictions that differ from the "
                         r"quantized ANN's: \d+ under the paper rule, 0 under the exact rule", line) for line in done)
    assert "lossless check:" in (out_root / reproduce.STAGE_LOG_FILE).read_text()


def test_results_table_is_computed_from_the_result_files(study):
    out_root, _ = study
    results = (out_root / "RESULTS.md").read_text()
    for model in MODEL_NAMES:
        folder = out_root / MODEL_FOLDERS[model]
        ann = json.loads((folder / "checkpoints" / "k1" / "ann_results.json").read_text())
        snn = json.loads((folder / "figs" / "k1" / "snn_results.json").read_text())
        row = next(line for line in results.splitlines()
                   if line.startswith(f"| {DISPLAY_NAMES[model]} | k1 |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[3] == f"{100 * ann['accuracy']:.2f}%"
        assert cells[5] == f"{100 * snn['final_accuracy']:.2f}%"
        assert cells[6].endswith(f"/ {snn['steps_to_final']}")
        assert cells[7].endswith(f"/ {snn['positive_spikes_per_sample']:,.1f}")
        assert cells[9].endswith(f"/ {snn['sops_per_sample']:,.0f}")
    assert "| LeNet | k1 | 97.86% |" in results  # the paper's numbers, quoted beside ours
    assert "Stage wall times" in results and "train lenet k1" in results


def test_a_rerun_skips_complete_stages_and_redoes_only_what_changed(study, frame_data, tmp_path):
    out_root, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out_root, copy)
    (copy / "MLP" / "figs" / "k1" / "snn_results.json").unlink()
    stdout = run_reproduce(["--data", str(frame_data), "--out-root", str(copy), *TINY_RUN])
    redone = [line for line in stage_lines(stdout) if "done in" in line]
    assert [line.split("] ")[1].split(":")[0] for line in redone] == ["SNN mlp k1", "figures mlp"]
    assert sum("complete, skipped" in line for line in stage_lines(stdout)) == N_STAGES - 2


def test_a_narrowed_rerun_still_draws_the_other_precisions_logs_that_are_this_run_s(study, frame_data, tmp_path):
    copy = copy_of(study, tmp_path)
    (copy / "MLP" / "figs" / "k1" / "snn_results.json").unlink()
    stdout = run_reproduce(["--data", str(frame_data), "--out-root", str(copy), "--models", "mlp",
                            "--precisions", "k1", *TINY_RUN])
    redone = [line.split("] ")[1] for line in stage_lines(stdout) if "done in" in line]
    assert [line.split(":")[0] for line in redone] == ["SNN mlp k1", "figures mlp"]
    assert "3 figures of k0, k1, k2 in" in redone[1]  # k0 and k2: same test samples and T, newer than their models
    # a later full run finds the figures complete, and they hold every precision
    stdout = run_reproduce(["--data", str(frame_data), "--out-root", str(copy), "--models", "mlp", *TINY_RUN])
    assert not [line for line in stage_lines(stdout) if "done in" in line]


def test_a_failing_stage_stops_the_run_and_keeps_completed_stages(study, frame_data, tmp_path):
    out_root, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out_root, copy)
    (copy / "MLP" / "checkpoints" / "k1" / "model_n_mnist.npz").write_bytes(b"not an npz")
    (copy / "LeNet" / "checkpoints" / "k2" / "ann_results.json").unlink()  # a stage that runs before the failing one
    result = subprocess.run([sys.executable, "reproduce.py", "--data", str(frame_data), "--out-root", str(copy), *TINY_RUN],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: stage 'ANN mlp k1' failed: ")
    assert re.search(r"\] ANN lenet k2: test accuracy .* \(done in", result.stdout)
    assert "SNN mlp k2" not in result.stdout  # nothing after the failing stage ran
    redone = json.loads((copy / "LeNet" / "checkpoints" / "k2" / "ann_results.json").read_text())
    assert redone["n_test"] == 50  # the completed stage's output stays


@pytest.mark.parametrize("flags", [["--models", "resnet"], ["--precisions", "k3"], ["--epochs", "0"]])
def test_unknown_names_and_bad_numbers_are_one_line_errors(flags):
    with pytest.raises(UserError):
        reproduce.parse_args(flags)
    result = subprocess.run([sys.executable, "reproduce.py", *flags], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_missing_raw_data_fails_in_the_data_stage(tmp_path):
    result = subprocess.run([sys.executable, "reproduce.py", "--raw", str(tmp_path / "nothing"), "--data",
                             str(tmp_path / "frames.npz"), "--out-root", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: stage 'data' failed: ")
    assert not (tmp_path / "frames.npz").exists()


def copy_of(study, tmp_path):
    out_root, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out_root, copy)
    return copy


def test_force_redoes_every_selected_stage(study, tmp_path):
    from test_n_mnist import make_split, write_dataset
    import numpy as np

    copy = copy_of(study, tmp_path)
    rng = np.random.default_rng(5)
    write_dataset(tmp_path / "raw", {"Train": make_split(rng, 60), "Test": make_split(rng, 20)})
    before = (copy / "MLP" / "checkpoints" / "k1" / "training_state.json").stat().st_mtime_ns
    stdout = run_reproduce(["--raw", str(tmp_path / "raw"), "--data", str(tmp_path / "frames.npz"), "--out-root",
                            str(copy), "--models", "mlp", "--precisions", "k1", "--force", *TINY_RUN])
    names = [line.split("] ")[1].split(":")[0] for line in stage_lines(stdout)]
    assert names == ["data", "train mlp k1", "ANN mlp k1", "SNN mlp k1", "figures mlp"]
    assert all("done in" in line for line in stage_lines(stdout))
    assert (copy / "MLP" / "checkpoints" / "k1" / "training_state.json").stat().st_mtime_ns > before
    assert json.loads((copy / "MLP" / "figs" / "k1" / "snn_results.json").read_text())["n_test"] == 20
    # --force on a narrowed run keeps the data, which the models it leaves out were made from
    data_time = (tmp_path / "frames.npz").stat().st_mtime_ns
    stdout = run_reproduce(["--raw", str(tmp_path / "raw"), "--data", str(tmp_path / "frames.npz"), "--out-root",
                            str(copy), "--models", "mlp", "mlp", "--precisions", "full", "--force", *TINY_RUN])
    names = [line.split("] ")[1] for line in stage_lines(stdout)]
    assert names[0] == "data: complete, skipped" and len(names) == 3  # data, train mlp full, ANN mlp full
    assert (tmp_path / "frames.npz").stat().st_mtime_ns == data_time


def test_full_precision_alone_needs_no_figures_and_reports_only_its_rows(study, frame_data, tmp_path):
    copy = copy_of(study, tmp_path)
    stdout = run_reproduce(["--data", str(frame_data), "--out-root", str(copy), "--models", "mlp",
                            "--precisions", "full", *TINY_RUN])
    names = [line.split("] ")[1].split(":")[0] for line in stage_lines(stdout)]
    assert names == ["data", "train mlp full", "ANN mlp full"]
    rows = [line for line in (copy / "RESULTS.md").read_text().splitlines() if line.startswith("| MLP")]
    assert len(rows) == 1 and rows[0].startswith("| MLP 400-400 | full |")


def test_a_malformed_results_file_makes_its_stage_run_again(study, frame_data, tmp_path):
    copy = copy_of(study, tmp_path)
    (copy / "MLP" / "figs" / "k2" / "snn_results.json").write_text('{"time_steps": 12}')
    stdout = run_reproduce(["--data", str(frame_data), "--out-root", str(copy), "--models", "mlp", *TINY_RUN])
    redone = [line.split("] ")[1].split(":")[0] for line in stage_lines(stdout) if "done in" in line]
    assert redone == ["SNN mlp k2", "figures mlp"]
    assert "final_accuracy" in json.loads((copy / "MLP" / "figs" / "k2" / "snn_results.json").read_text())


def test_results_report_the_epochs_trained_and_which_times_are_from_earlier_runs(study):
    out_root, _ = study
    args = reproduce.parse_args(["--out-root", str(out_root), *TINY_RUN, "--epochs", "7"])
    timings = json.loads((out_root / reproduce.TIMINGS_FILE).read_text())
    markdown = report.results_markdown(args, timings, ran_now={"ANN mlp k1"})
    assert "; 1 training epochs;" in markdown  # what the training states say, not --epochs
    assert f"| ANN mlp k1 | {timings['ANN mlp k1']:.1f} | this run |" in markdown
    assert f"| train mlp k1 | {timings['train mlp k1']:.1f} | an earlier run |" in markdown
    assert f"Total: {timings['ANN mlp k1']:.0f} s in this run, plus" in markdown


def test_an_out_root_that_cannot_be_written_is_a_one_line_error(tmp_path):
    (tmp_path / "a_file").write_text("keep me")
    with pytest.raises(UserError, match="a_file: cannot write there"):
        reproduce.main(["--out-root", str(tmp_path / "a_file"), "--models", "mlp", "--precisions", "full"])
    assert (tmp_path / "a_file").read_text() == "keep me"


def test_models_and_precisions_named_twice_run_once_and_the_demo_file_is_named_as_such():
    args = reproduce.parse_args(["--models", "mlp", "lenet", "mlp", "--precisions", "k1", "k1", "full"])
    assert args.models == ["mlp", "lenet"] and args.precisions == ["k1", "full"]
    assert not report.is_demo_data(args)
    assert report.is_demo_data(reproduce.parse_args(["--data", str(REPO / "data" / "n_mnist_demo.npz")]))
    assert report.is_demo_data(reproduce.parse_args(["--demo"]))


def test_update_readme_refuses_another_out_root_or_a_narrowed_run(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    # were the refusal broken, the run must not start the real study inside the repository
    monkeypatch.setattr(reproduce, "build_stages", lambda *args: pytest.fail("the run started"))
    with pytest.raises(UserError, match="leave out --out-root"):
        reproduce.main(["--out-root", str(tmp_path), "--update-readme"])
    with pytest.raises(UserError, match="leave out --models and --precisions"):
        reproduce.main(["--update-readme", "--models", "mlp"])
    assert not list(tmp_path.iterdir()) and (REPO / "README.md").read_text() == readme


def test_other_run_settings_redo_the_stages_they_change(study, frame_data, tmp_path):
    copy = copy_of(study, tmp_path)
    tiny = [flag for flag in TINY_RUN]
    tiny[tiny.index("--test-limit") + 1] = "30"  # the study used 50 test samples
    stdout = run_reproduce(["--data", str(frame_data), "--out-root", str(copy), "--models", "mlp",
                            "--precisions", "k1", *tiny])
    redone = [line.split("] ")[1].split(":")[0] for line in stage_lines(stdout) if "done in" in line]
    assert redone == ["ANN mlp k1", "SNN mlp k1", "figures mlp"]  # the training did not use test samples
    assert json.loads((copy / "MLP" / "figs" / "k1" / "snn_results.json").read_text())["n_test"] == 30
    tiny[tiny.index("--train-limit") + 1] = "100"
    stdout = run_reproduce(["--data", str(frame_data), "--out-root", str(copy), "--models", "mlp",
                            "--precisions", "k1", *tiny])
    redone = [line.split("] ")[1].split(":")[0] for line in stage_lines(stdout) if "done in" in line]
    assert redone == ["train mlp k1", "ANN mlp k1", "SNN mlp k1", "figures mlp"]  # retrained afresh on 100
    state = json.loads((copy / "MLP" / "checkpoints" / "k1" / "training_state.json").read_text())
    assert state["settings"]["n_train"] == 100 and state["epochs_done"] == 1
    # other data of the same size: trained afresh, not "resumed" from the finished run on the old data;
    # and the figures draw this run's k1 only, never the (here malformed) k0 logs it did not make
    from n_mnist import load_frame_counts, save_frames

    arrays = load_frame_counts(frame_data)
    arrays["x_train"][:, 0, 0] += 1
    other = tmp_path / "other.npz"
    save_frames(other, **arrays)
    (copy / "MLP" / "figs" / "k0" / "sop_num.txt").write_text("abc\n")
    stdout = run_reproduce(["--data", str(other), "--out-root", str(copy), "--models", "mlp", "--precisions", "k1", *tiny])
    redone = [line.split("] ")[1] for line in stage_lines(stdout) if "done in" in line]
    assert [line.split(":")[0] for line in redone] == ["train mlp k1", "ANN mlp k1", "SNN mlp k1", "figures mlp"]
    assert "3 figures of k1 in" in redone[-1]  # k0 and k2 were simulated on the old data
    new_state = json.loads((copy / "MLP" / "checkpoints" / "k1" / "training_state.json").read_text())
    assert new_state["settings"]["data_crc32"] != state["settings"]["data_crc32"]
    assert "starting afresh" in (copy / reproduce.STAGE_LOG_FILE).read_text().split("==== train mlp k1")[-1]


def test_result_files_count_as_complete_only_when_well_formed(tmp_path):
    path = tmp_path / "snn_results.json"
    good = {"final_accuracy": 0.9, "steps_to_final": 4, "positive_spikes_per_sample": 1.5,
            "negative_spikes_per_sample": 0.5, "sops_per_sample": 10.0, "n_test": 50, "time_steps": 12,
            "tie_rule": "paper", "lossless_check": {rule: {key: 0 for key in LOSSLESS_KEYS} for rule in TIE_RULES}}
    good["lossless_check"]["exact"]["first_step_all_predictions_match"] = None  # never: allowed
    cases = {"good": (good, True), "a string": ({**good, "final_accuracy": "0.9"}, False),
             "a missing key": ({key: value for key, value in good.items() if key != "sops_per_sample"}, False),
             "a partial check": ({**good, "lossless_check": {"paper": {"mismatching_neurons": 0}}}, False),
             "one rule only": ({**good, "lossless_check": {"paper": good["lossless_check"]["paper"]}}, False),
             "another tie rule": ({**good, "tie_rule": "exact"}, False),
             "another T": ({**good, "time_steps": 40}, False), "another n_test": ({**good, "n_test": 30}, False)}
    for case, (results, complete) in cases.items():
        path.write_text(json.dumps(results))
        assert results_match(path, SNN_KEYS, lossless=True, n_test=50, time_steps=12, tie_rule="paper") == complete, case
    path.write_text("[1, 2")
    assert not results_match(path, SNN_KEYS)


def test_a_malformed_timings_cache_counts_as_empty(tmp_path):
    path = tmp_path / reproduce.TIMINGS_FILE
    for text, expected in [("[1]", {}), ('{"data": "x", "train mlp k1": 2.5}', {"train mlp k1": 2.5}), ("{", {})]:
        path.write_text(text)
        assert reproduce.read_timings(path) == expected
    assert reproduce.read_timings(tmp_path / "absent.json") == {}


def test_lossless_verdicts():
    check, exact = {key: 0 for key in LOSSLESS_KEYS}, {key: 0 for key in LOSSLESS_KEYS}
    row = {"check": {"paper": check, "exact": exact}, "n_test": 359}
    check["first_step_all_predictions_match"] = 3
    assert report.lossless_text(row) == ("paper: yes, 0 of 359 predictions differ · "
                                         "exact: yes, 0 of 359 predictions differ")
    check.update(mismatching_neurons=7, rounding_tie_neurons=2, downstream_of_ties_neurons=5, mismatching_predictions=1)
    assert report.lossless_text(row).startswith("paper: no, at rounding ties, 1 of 359 predictions differ "
                                                "(7 neurons: 2 ties, 5 downstream) · exact: yes")
    check.update(samples_still_spiking_at_the_last_step=3, unsettled_neurons=40)
    assert report.lossless_text(row).startswith("paper: not settled (3 samples still spiking)")
    check.update(other_mismatching_neurons=1)
    assert report.lossless_text(row).startswith("paper: **no**")


# ---------------------------------------------------------------------------------------------
# Found by mutation testing: behaviour no other test pinned down


def table_rows(markdown):
    rows = {}
    for line in markdown.splitlines():
        if line.startswith(("| MLP", "| LeNet")):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0], cells[1]] = cells
    return rows


ALGORITHM_MD = REPO.parent / "shared" / "reference" / "ALGORITHM.md"
PAPER_COLUMNS = {"ann": "ANN", "snn": "SNN (final)", "steps": "steps", "positive": "positive spikes",
                 "negative": "negative spikes", "sops": "SOPs"}  # paper_results.FIELDS: §7's column


def section_7_table():
    """{(model, precision): cells} of ALGORITHM.md §7's table, and its header; skipped when the file is absent."""
    if not ALGORITHM_MD.is_file():
        pytest.skip("../shared/reference/ALGORITHM.md is absent")
    section = ALGORITHM_MD.read_text().split("\n## 7.")[1].split("\n## ")[0]
    header, _, *rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
                        for line in section.splitlines() if line.startswith("|")]
    model_names = {name: model for model, name in DISPLAY_NAMES.items()}
    return {(model_names[cells[0]], cells[1].replace("=", "")): cells for cells in rows}, header


def table_number(cell):
    """A table cell as a number: 96.43% -> 0.9643, 1,573.6 -> 1573.6, – -> None."""
    if cell == "–":
        return None
    if cell.endswith("%"):
        return float(cell[:-1]) / 100
    return float(cell.replace(",", ""))


def test_the_paper_numbers_are_those_of_algorithm_md():
    table, header = section_7_table()
    assert list(table) == list(PAPER_RESULTS)  # every row, in §7's order
    for (model, precision), paper in PAPER_RESULTS.items():
        cells = dict(zip(header, table[model, precision]))
        assert set(paper) == set(PAPER_COLUMNS)
        for field, column in PAPER_COLUMNS.items():
            expected = table_number(cells[column])
            if expected is None:
                assert paper[field] is None, (model, precision, field)
            else:
                assert paper[field] == pytest.approx(expected, rel=1e-12), (model, precision, field)
        assert table_number(cells["ANN ops (§5)"]) == ann_ops_per_sample(model)


def test_results_table_columns(tmp_path):
    snn = {"final_accuracy": 0.5, "steps_to_final": 3, "positive_spikes_per_sample": 11.25,
           "negative_spikes_per_sample": 2.5, "sops_per_sample": 1234.0, "n_test": 8, "time_steps": 5,
           "tie_rule": "paper", "lossless_check": {rule: {key: 0 for key in LOSSLESS_KEYS} for rule in TIE_RULES}}
    path = paths.log_dir("mlp", "k0", tmp_path) / "snn_results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(snn))
    args = reproduce.parse_args(["--out-root", str(tmp_path)])
    rows = table_rows(report.results_markdown(args, {}, set()))
    assert rows["MLP 400-400", "k0"][2:10] == ["–", "–", "96.39%", "50.00%", "4 / 3", "380.9 / 11.2", "17.1 / 2.5",
                                             "68,648 / 1,234"]
    assert rows["LeNet", "k1"][2:6] == ["97.86%", "–", "97.86%", "–"]
    assert rows["LeNet", "full"][2:6] == ["97.93%", "–", "–", "–"]


def test_snn_logs_of_another_T_are_simulated_again(frame_data, tmp_path):
    model_file = paths.model_dir("mlp", "k1", tmp_path) / models.PARAMETERS_FILE
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes(b"x")
    os.utime(model_file, (1e9, 1e9))
    results = paths.log_dir("mlp", "k1", tmp_path) / "snn_results.json"
    results.parent.mkdir(parents=True)
    args = reproduce.parse_args(["--data", str(frame_data), "--out-root", str(tmp_path), "--models", "mlp",
                                 "--precisions", "k1", "--time-steps", "40"])
    complete = stage_checks(args)["SNN mlp k1"]
    good = {"final_accuracy": 0.9, "steps_to_final": 4, "positive_spikes_per_sample": 1.5,
            "negative_spikes_per_sample": 0.5, "sops_per_sample": 10.0, "n_test": 100, "time_steps": 40,
            "tie_rule": "paper", "lossless_check": {rule: {key: 0 for key in LOSSLESS_KEYS} for rule in TIE_RULES}}
    results.write_text(json.dumps(good))
    assert complete()
    results.write_text(json.dumps({**good, "time_steps": 12}))
    assert not complete()


def test_an_output_older_than_an_input_is_stale(tmp_path):
    output, source = tmp_path / "out.json", tmp_path / "model_n_mnist.npz"
    output.write_text("{}")
    source.write_text("x")
    os.utime(output, (1e9, 1e9))
    os.utime(source, (2e9, 2e9))
    assert not reproduce.newer(output, source)
    assert reproduce.newer(source, output) and reproduce.newer(output, tmp_path / "absent")


def test_a_missing_parameter_file_is_trained_again(study, frame_data, tmp_path):
    copy = copy_of(study, tmp_path)
    (copy / "MLP" / "checkpoints" / "k1" / models.PARAMETERS_FILE).unlink()
    stdout = run_reproduce(["--data", str(frame_data), "--out-root", str(copy), "--models", "mlp",
                            "--precisions", "k1", *TINY_RUN])
    redone = [line.split("] ")[1].split(":")[0] for line in stage_lines(stdout) if "done in" in line]
    assert redone == ["train mlp k1", "ANN mlp k1", "SNN mlp k1", "figures mlp"]
    assert (copy / "MLP" / "checkpoints" / "k1" / models.PARAMETERS_FILE).is_file()


# ---------------------------------------------------------------------------------------------
# Found by mutation testing: the main loop, run on stand-in stages, and what the stages count as complete

def run_stand_in_stages(monkeypatch, out_root, stages, *flags):
    """reproduce.main with `stages` in place of the real ones (seconds, not minutes)."""
    monkeypatch.setattr(reproduce, "build_stages", lambda args, screen=None: stages)
    reproduce.main(["--out-root", str(out_root), *flags])


def stand_in(name, ran, complete=True, seconds=0.0):
    def run():
        time.sleep(seconds)
        ran.append(name)
        return "ok"
    return reproduce.Stage(name, run, check=lambda: complete)


def test_force_redoes_complete_stages_and_the_data_only_for_the_whole_study(monkeypatch, tmp_path):
    ran = []
    stages = [stand_in(name, ran) for name in ("data", "train mlp k1", "ANN mlp k1")]
    run_stand_in_stages(monkeypatch, tmp_path, stages, "--models", "mlp", "--precisions", "k1")
    assert ran == []  # complete: skipped
    run_stand_in_stages(monkeypatch, tmp_path, stages, "--models", "mlp", "--precisions", "k1", "--force")
    assert ran == ["train mlp k1", "ANN mlp k1"]  # a narrowed run keeps the data
    ran.clear()
    run_stand_in_stages(monkeypatch, tmp_path, stages, "--precisions", "k1", "--force")
    assert ran == ["train mlp k1", "ANN mlp k1"]  # narrowed by --precisions alone: the data stays too
    ran.clear()
    run_stand_in_stages(monkeypatch, tmp_path, stages, "--force")
    assert ran == ["data", "train mlp k1", "ANN mlp k1"]  # the whole study: the data too


def test_a_failing_stage_keeps_its_output_in_the_stage_log_and_the_times_of_the_stages_before_it(monkeypatch, tmp_path):
    ran = []

    def fail():
        print("why it failed")
        raise UserError("broken")

    stages = [stand_in("data", ran, complete=False), reproduce.Stage("train mlp full", fail, check=lambda: False),
              stand_in("ANN mlp full", ran, complete=False)]
    with pytest.raises(UserError, match="stage 'train mlp full' failed: broken"):
        run_stand_in_stages(monkeypatch, tmp_path, stages, "--models", "mlp", "--precisions", "full")
    assert ran == ["data"]
    assert "why it failed" in (tmp_path / reproduce.STAGE_LOG_FILE).read_text().split("==== train mlp full")[1]
    assert list(json.loads((tmp_path / reproduce.TIMINGS_FILE).read_text())) == ["data"]
    assert not (tmp_path / reproduce.RESULTS_FILE).exists()


def test_stage_times_are_each_stage_s_own_and_those_of_earlier_runs_are_kept(monkeypatch, tmp_path):
    (tmp_path / reproduce.TIMINGS_FILE).write_text(json.dumps({"data": 12.5}))
    ran = []
    stages = [stand_in("data", ran), stand_in("train mlp full", ran, complete=False, seconds=0.4),
              stand_in("ANN mlp full", ran, complete=False, seconds=0.4)]
    run_stand_in_stages(monkeypatch, tmp_path, stages, "--models", "mlp", "--precisions", "full")
    timings = json.loads((tmp_path / reproduce.TIMINGS_FILE).read_text())
    assert timings["data"] == 12.5
    assert all(0.4 <= timings[name] < 0.75 for name in ("train mlp full", "ANN mlp full"))  # not since the run began
    results = (tmp_path / reproduce.RESULTS_FILE).read_text()
    assert "| data | 12.5 | an earlier run |" in results
    assert f"| ANN mlp full | {timings['ANN mlp full']:.1f} | this run |" in results


def test_update_readme_refuses_a_run_narrowed_by_precisions_alone(monkeypatch):
    monkeypatch.setattr(reproduce, "build_stages", lambda *args, **kwargs: pytest.fail("the study ran"))
    with pytest.raises(UserError, match="leave out --models and --precisions"):
        reproduce.main(["--update-readme", "--precisions", "k1"])


@pytest.mark.parametrize("dataset", ["n_mnist", "fashion_mnist"])
def test_update_readme_replaces_only_the_block_of_its_dataset(tmp_path, dataset):
    start, end = report.README_BLOCKS[dataset]
    other_start, other_end = report.README_BLOCKS["fashion_mnist" if dataset == "n_mnist" else "n_mnist"]
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{start}\nold table\n{end}\n{other_start}\nother\n{other_end}\nthe rest\n")
    report.update_readme(readme, "new table", dataset)
    assert readme.read_text() == f"intro\n{start}\nnew table\n{end}\n{other_start}\nother\n{other_end}\nthe rest\n"
    readme.write_text("no markers\n")
    with pytest.raises(UserError, match=f"README.md: no {start} ... {end} block"):
        report.update_readme(readme, "new table", dataset)
    assert readme.read_text() == "no markers\n"


def test_the_readme_has_the_block_of_each_dataset():
    readme = (REPO / "README.md").read_text()
    for start, end in report.README_BLOCKS.values():
        assert readme.count(start) == 1 and readme.count(end) == 1 and readme.index(start) < readme.index(end)


def test_the_demo_has_its_own_data_file_and_short_schedule():
    import n_mnist
    import preprocessing_n_mnist
    import training

    demo = reproduce.parse_args(["--demo"])
    assert (demo.data, demo.epochs) == (preprocessing_n_mnist.DEFAULT_DEMO_OUT, reproduce.DEMO_EPOCHS)
    real = reproduce.parse_args([])
    assert (real.data, real.epochs) == (n_mnist.DEFAULT_DATA, training.EPOCHS)
    assert reproduce.parse_args(["--demo", "--epochs", "3"]).epochs == 3


@pytest.mark.parametrize("flags", [["--test-limit", "0"], ["--train-limit", "0"], ["--time-steps", "0"],
                                   ["--seed", "-1"]])
def test_every_number_below_its_minimum_is_refused(flags):
    with pytest.raises(UserError, match=flags[0]):
        reproduce.parse_args(flags)


def stage_checks(args):
    return {stage.name: stage.is_complete for stage in reproduce.build_stages(args)}


def test_figures_are_redrawn_when_one_is_missing_or_the_full_precision_ann_result_is_newer(study, frame_data, tmp_path):
    copy = copy_of(study, tmp_path)
    args = reproduce.parse_args(["--data", str(frame_data), "--out-root", str(copy), "--models", "mlp", *TINY_RUN])
    complete = stage_checks(args)["figures mlp"]
    assert complete()
    ann = copy / "MLP" / "checkpoints" / "full" / "ann_results.json"
    later = ann.stat().st_mtime + 3600
    os.utime(ann, (later, later))  # the full-precision ANN evaluated again: its accuracy line is drawn
    assert not complete()
    os.utime(ann, (1e9, 1e9))
    assert complete()
    (copy / "MLP" / "figs" / f"{FIGURE_PREFIXES['mlp']}_sop_n_mnist.png").unlink()
    assert not complete()


def test_a_training_of_fewer_epochs_than_asked_is_not_complete(study, frame_data):
    out_root, _ = study
    flags = ["--data", str(frame_data), "--out-root", str(out_root), "--models", "mlp", "--precisions", "k1", *TINY_RUN]
    assert stage_checks(reproduce.parse_args(flags))["train mlp k1"]()
    assert not stage_checks(reproduce.parse_args([*flags, "--epochs", "2"]))["train mlp k1"]()


def test_force_trains_afresh_rather_than_resuming_a_finished_run(study, frame_data, monkeypatch):
    out_root, _ = study
    resumed = []
    monkeypatch.setattr(training, "train", lambda *args, **kwargs: resumed.append(kwargs["resume"])
                        or [{"epoch": 1, "loss": 0.0, "accuracy": 0.0}])
    for force in ([], ["--force"]):
        args = reproduce.parse_args(["--data", str(frame_data), "--out-root", str(out_root), "--models", "mlp",
                                     "--precisions", "k1", *TINY_RUN, *force])
        train = {stage.name: stage.run for stage in reproduce.build_stages(args)}["train mlp k1"]
        train()
    assert resumed == [True, False]


def test_the_figures_draw_the_full_precision_ann_accuracy(study):
    out_root, _ = study
    log = (out_root / reproduce.STAGE_LOG_FILE).read_text()
    for model in MODEL_NAMES:
        drawn = log.split(f"==== figures {model}")[1].split("\n==== ")[0]
        assert "wrote" in drawn and "no ANN accuracy drawn" not in drawn
