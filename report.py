"""The study's report: RESULTS.md, and the generated blocks of README.md.

Every number comes from a result file (result_files.py) or from the paper (paper_results.py);
none is typed here. TensorFlow is imported only to name the machine, so reproduce.py can import
this module and still answer --help at once.
"""
import os
import platform
from pathlib import Path

import paths
import preprocessing_n_mnist
from architectures import DATASETS, DISPLAY_NAMES, PRECISIONS, TIE_RULES, ann_ops_per_sample
from cli import UserError, shown, write_text_atomic
from paper_results import PAPER_RESULTS_BY_DATASET, PAPER_SECTIONS
from paths import ANN_RESULTS_FILE, SNN_RESULTS_FILE
from result_files import ANN_KEYS, SNN_KEYS, read_results

# README.md's generated blocks, one per dataset: N-MNIST's demo table (as in RESULTS.md) and
# Fashion-MNIST's short real-data table (fashion_readme_markdown)
README_BLOCKS = {
    "n_mnist": ("<!-- results:start -->", "<!-- results:end -->"),
    "fashion_mnist": ("<!-- fashion_mnist:start -->", "<!-- fashion_mnist:end -->"),
}


def fmt(value, kind):
    """A table cell: `kind` is "percent" (of a fraction), "int" or "float"; "–" for no value."""
    if value is None:
        return "–"
    if kind == "percent":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def results_rows(root, models, precisions, dataset="n_mnist"):
    """One dict per (model, precision) with ours and the paper's numbers, read from the result files under `root`."""
    import checkpointing

    rows = []
    paper_results = PAPER_RESULTS_BY_DATASET[dataset]
    for model in models:
        for precision in precisions:
            model_dir = paths.model_dir(model, precision, root, dataset)
            ann_path = model_dir / ANN_RESULTS_FILE
            snn_path = paths.log_dir(model, precision, root, dataset) / SNN_RESULTS_FILE
            ann = read_results(ann_path, ANN_KEYS) if ann_path.is_file() else {}
            snn = read_results(snn_path, SNN_KEYS, lossless=True) if snn_path.is_file() else {}
            state = checkpointing.read_state_or_none(model_dir)
            rows.append(dict(
                model=model, precision=precision, paper=paper_results.get((model, precision), {}),
                ann=ann.get("accuracy"), snn=snn.get("final_accuracy"), steps=snn.get("steps_to_final"),
                positive=snn.get("positive_spikes_per_sample"), negative=snn.get("negative_spikes_per_sample"),
                sops=snn.get("sops_per_sample"), ann_ops=ann_ops_per_sample(model, dataset), n_test=ann.get("n_test") or snn.get("n_test"),
                time_steps=snn.get("time_steps"), check=snn.get("lossless_check", {}),
                epochs=state["epochs_done"] if state else None,
                training_seconds=sum(epoch["seconds"] for epoch in state["history"]) if state else None,
            ))
    return rows


def lossless_text(row):
    """The lossless check of one SNN under each tie rule, e.g. `paper: yes, 0 of 359 predictions differ
    (1,341 neurons: 76 ties, 1,265 downstream) · exact: yes, 0 of 359 predictions differ`."""
    if not row["check"]:
        return "–"
    parts = []
    for rule, check in row["check"].items():
        if check["other_mismatching_neurons"] > 0:
            verdict = "**no**"
        elif check["samples_still_spiking_at_the_last_step"] > 0:
            verdict = f"not settled ({check['samples_still_spiking_at_the_last_step']:,} samples still spiking)"
        elif check["mismatching_predictions"] > 0:
            verdict = "no, at rounding ties"
        else:
            verdict = "yes"
        neurons = check["mismatching_neurons"]
        detail = (f" ({neurons:,} neurons: {check['rounding_tie_neurons']:,} ties, "
                  f"{check['downstream_of_ties_neurons']:,} downstream"
                  + (f", {check['other_mismatching_neurons']:,} otherwise" if check["other_mismatching_neurons"] else "")
                  + ")" if neurons else "")
        parts.append(f"{rule}: {verdict}, {check['mismatching_predictions']} of {row['n_test']:,} predictions "
                     f"differ{detail}")
    return " · ".join(parts)


def is_demo_data(args):
    """True for the emulated demo dataset (--demo, or its file given with --data)."""
    return args.demo or (dataset_of(args) == "n_mnist" and preprocessing_n_mnist.is_demo_file(args.data))


def dataset_of(args):
    """reproduce.py's --dataset (n_mnist when the flags have none)."""
    return getattr(args, "dataset", "n_mnist")


def distinct(values):
    """`50`, or `1/50` when the rows differ, or `–` when none is known (no SNN, say)."""
    return "/".join(f"{value:,}" for value in sorted({value for value in values if value})) or "–"


def machine_description():
    """CPU, cores, system, Python, TensorFlow and GPUs: what the stage times were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, {'GPU: ' + ', '.join(g.name for g in gpus) if gpus else 'no GPU'}")


def results_table_markdown(args):
    """The §7 (or §8) table, ours beside the paper's, with the lossless check: RESULTS.md's and the README's.

    `args`: reproduce.py's flags (out_root, data, demo, models, precisions, tie_rule, dataset).
    """
    dataset = DATASETS[dataset_of(args)]
    rows = results_rows(args.out_root, args.models, args.precisions, dataset.name)
    paper_source = ("ALGORITHM.md §7, full N-MNIST, 150 epochs" if dataset.name == "n_mnist" else
                    f"ALGORITHM.md {PAPER_SECTIONS[dataset.name]}, full {dataset.title}, "
                    + ", ".join(f"{DISPLAY_NAMES[model]} {dataset.epochs[model]} epochs and T = {dataset.time_steps[model]}"
                                for model in dataset.nets))
    lines = [
        f"Data: `{shown(args.data)}` ({'offline demo recordings' if is_demo_data(args) else dataset.title}), "
        f"{distinct(row['n_test'] for row in rows)} test samples; {distinct(row['epochs'] for row in rows)} "
        f"training epochs; T = {distinct(row['time_steps'] for row in rows)}. "
        f"Generated by `reproduce.py` from the result files; the paper's numbers ({paper_source}) "
        "are quoted beside ours as *paper*.", "",
        "| net | precision | ANN (paper) | ANN (ours) | SNN (paper) | SNN (ours) | steps (paper / ours) "
        "| positive spikes (paper / ours) | negative spikes (paper / ours) | SOPs (paper / ours) | ANN ops | SNN = quantized ANN? |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        paper = row["paper"]
        lines.append("| " + " | ".join([
            DISPLAY_NAMES[row["model"]], row["precision"],
            fmt(paper.get("ann"), "percent"), fmt(row["ann"], "percent"),
            fmt(paper.get("snn"), "percent"), fmt(row["snn"], "percent"),
            f"{fmt(paper.get('steps'), 'int')} / {fmt(row['steps'], 'int')}",
            f"{fmt(paper.get('positive'), 'float')} / {fmt(row['positive'], 'float')}",
            f"{fmt(paper.get('negative'), 'float')} / {fmt(row['negative'], 'float')}",
            f"{fmt(paper.get('sops'), 'int')} / {fmt(row['sops'], 'int')}",
            fmt(row["ann_ops"], "int"), lossless_text(row),
        ]) + " |")
    lines += ["", "Steps: the first time step (from 1) from which the SNN accuracy stays at its final value "
              "(single predictions may still change after it while the count of correct ones stays, so the "
              "step from which all predictions match the quantized ANN's can be later). "
              "Spikes and SOPs: per test sample after the last step, under the "
              f"{args.tie_rule} tie rule. The lossless check compares every neuron's net spike count with 2^k × "
              "the quantized ANN activation (float64) and the SNN's predictions with the quantized ANN's, under "
              "the authors' spike rule (*paper*) and under ours (*exact*, docs/tie_rule.md)."]
    return "\n".join(lines)


def results_markdown(args, timings, ran_now):
    """RESULTS.md: the results table, then the stage times and the machine.

    `timings`: {stage: seconds} of the stages run now (`ran_now`) or in an earlier run.
    """
    title = "# Results" if dataset_of(args) == "n_mnist" else f"# Results: {DATASETS[dataset_of(args)].title}"
    lines = [title, "", results_table_markdown(args), "", "### Stage wall times", "",
             "| stage | seconds | run |", "|---|---|---|"]
    for name, seconds in timings.items():
        lines.append(f"| {name} | {seconds:.1f} | {'this run' if name in ran_now else 'an earlier run'} |")
    this_run = sum(seconds for name, seconds in timings.items() if name in ran_now)
    earlier = len(timings) - len(ran_now & set(timings))
    lines += ["", f"Total: {this_run:.0f} s in this run"
              + (f", plus {sum(timings.values()) - this_run:.0f} s of {earlier} stages done in an earlier run"
                 if earlier else "")
              + f", on {machine_description()}.", ""]
    return "\n".join(lines)


def duration(seconds):
    """`1 h 07 min`, `9 min`: a training's wall time."""
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def short_lossless_text(row):
    """`0 / 0 of 10,000` (predictions that differ from the quantized ANN's under the paper / exact rule)."""
    if not row["check"]:
        return "–"
    return f"{' / '.join(str(check['mismatching_predictions']) for check in row['check'].values())} of {row['n_test']:,}"


def fashion_readme_markdown(args):
    """The README's short Fashion-MNIST table: every model and precision with a result file, paper beside ours."""
    dataset = DATASETS["fashion_mnist"]
    rows = [row for row in results_rows(args.out_root, dataset.nets, PRECISIONS, dataset.name)
            if row["ann"] is not None or row["snn"] is not None]
    rules = " / ".join(next((row["check"] for row in rows if row["check"]), TIE_RULES))
    lines = [
        "Generated by `python reproduce.py --dataset fashion_mnist --update-readme` from the result files; "
        f"*paper / ours*, the paper's numbers from ALGORITHM.md {PAPER_SECTIONS[dataset.name]} (it gives no spike or "
        f"SOP counts). Training: the epochs' summed wall times; written on {machine_description()}.", "",
        "| net | precision | ANN | SNN | steps | spikes + / − (ours) | SOPs (ours) "
        f"| predictions ≠ quantized ANN ({rules} rule) | training |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        paper = row["paper"]
        spikes = "–" if row["positive"] is None else f"{fmt(row['positive'], 'float')} / {fmt(row['negative'], 'float')}"
        lines.append("| " + " | ".join([
            DISPLAY_NAMES[row["model"]], row["precision"],
            f"{fmt(paper.get('ann'), 'percent')} / {fmt(row['ann'], 'percent')}",
            f"{fmt(paper.get('snn'), 'percent')} / {fmt(row['snn'], 'percent')}",
            f"{fmt(paper.get('steps'), 'int')} / {fmt(row['steps'], 'int')}",
            spikes, fmt(row["sops"], "int"), short_lossless_text(row),
            "–" if row["training_seconds"] is None else f"{duration(row['training_seconds'])} ({row['epochs']} epoch{'' if row['epochs'] == 1 else 's'})",
        ]) + " |")
    return "\n".join(lines)


def has_block(text, markers):
    return all(marker in text for marker in markers)


def replace_block(text, markers, content):
    """`text` with what lies between the two `markers` replaced by `content`."""
    start, end = markers
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    return f"{before}{start}\n{content}\n{end}{after}"


def update_readme(readme, results, dataset="n_mnist"):
    """Replace the README's block of `dataset` (README_BLOCKS) with `results`."""
    markers = README_BLOCKS[dataset]
    text = Path(readme).read_text()
    if not has_block(text, markers):
        raise UserError(f"{readme}: no {markers[0]} ... {markers[1]} block to update")
    write_text_atomic(readme, replace_block(text, markers, results))


def readme_markdown(args):
    """What --update-readme writes into the README: N-MNIST's results table, or Fashion-MNIST's short one."""
    return results_table_markdown(args) if dataset_of(args) == "n_mnist" else fashion_readme_markdown(args)
