import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root
# Accuracy vs time step of the converted SNNs (ALGORITHM.md §5): one curve per k, a flat line at
# the full-precision ANN's accuracy, and a zoomed panel on the approach to the final accuracy.
import numpy as np

import paths
from architectures import DISPLAY_NAMES
from cli import run_main
from figs.snn_logs import (ANN_COLOR, K_COLORS, dataset_name, figure_parser, load_figure_inputs, percent, pyplot,
                           save_figure)

ZOOM_HEADROOM = 0.6  # percentage points above 100% in the zoomed panel, so a 100% curve and its marker show whole
K_MARKERS = {0: "o", 1: "s", 2: "^"}  # different shapes, so that curves lying on top of each other stay visible

DESCRIPTION = ("Plot SNN test accuracy against the time step for k = 0, 1, 2 "
               "(<prefix>_accuracy_<dataset>.png).")


def curve_label(k, log, source=None):
    """`k=1: 97.86% after 14 steps`, from the log itself."""
    steps = "step" if log.steps_to_final == 1 else "steps"
    who = f" ({source})" if source else ""
    return f"k={k}{who}: {percent(log.final_accuracy)} after {log.steps_to_final} {steps}"


def zoom_window(all_logs, ann_accuracy):
    """(x_max, y_low, y_high) in steps and %, framing the approach to the final accuracies."""
    finals = [100 * log.final_accuracy for log in all_logs]
    if ann_accuracy is not None:
        finals.append(100 * ann_accuracy)
    spread = max(finals) - min(finals)
    y_low = max(0.0, min(finals) - max(2.0, 1.5 * spread))
    y_high = min(100.0 + ZOOM_HEADROOM, max(finals) + max(0.5, 0.3 * spread))  # a curve at 100% stays whole
    longest = max(log.time_steps for log in all_logs)
    x_max = min(longest, max(log.steps_to_final for log in all_logs) + 6)
    return max(x_max, min(longest, 5)), y_low, y_high


def plot_accuracy(model, logs, ann_accuracy=None, compare_logs=None, compare_label="authors", dataset="n_mnist"):
    """The figure for one model: left all steps at 0-100 %, right a zoom on the final accuracies."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    compare_logs = compare_logs or {}
    figure, (whole, zoom) = plt.subplots(1, 2, figsize=(12, 4.9))
    groups = {"own": [], "compare": [], "reference": []}  # legend columns: ours, compared, ANN + markers

    def draw(log, k, dashed, label):
        steps = np.arange(1, log.time_steps + 1)
        style = dict(color=K_COLORS[k], linestyle="--" if dashed else "-", linewidth=1.4 if dashed else 1.8,
                     marker=None if dashed else K_MARKERS[k], markersize=3.5, markerfacecolor="none" if k == 2 else None)
        (line,) = whole.plot(steps, 100 * log.accuracy, label=label, **style)
        zoom.plot(steps, 100 * log.accuracy, **style)
        # the step from which the accuracy stays final
        marker = dict(marker="D", markersize=9, markerfacecolor="none", markeredgecolor=K_COLORS[k],
                      markeredgewidth=1.5) if dashed else dict(
                      marker="*", markersize=12, color=K_COLORS[k], markeredgecolor="black",
                      markeredgewidth=0.6)
        zoom.plot([log.steps_to_final], [100 * log.final_accuracy], linestyle="none", zorder=5, **marker)
        groups["compare" if dashed else "own"].append(line)

    for k, log in logs.items():
        draw(log, k, False, curve_label(k, log))
    for k, log in compare_logs.items():
        draw(log, k, True, curve_label(k, log, compare_label))
    if ann_accuracy is not None:
        for axes in (whole, zoom):
            line = axes.axhline(100 * ann_accuracy, color=ANN_COLOR, linestyle=":", linewidth=1.8, zorder=4,
                                label=f"full-precision ANN{' (ours)' if compare_logs else ''}: {percent(ann_accuracy)}")
        groups["reference"].append(line)

    all_logs = list(logs.values()) + list(compare_logs.values())
    longest = max(log.time_steps for log in all_logs)
    x_max, y_low, y_high = zoom_window(all_logs, ann_accuracy)
    whole.set_xlim(0.5, longest + 0.5)
    whole.set_ylim(0, 100.5)
    whole.add_patch(plt.Rectangle((0.7, y_low), x_max - 0.4, y_high - y_low, fill=False,
                                  edgecolor="0.4", linestyle="--", linewidth=1))
    whole.set_title("all time steps")
    zoom.set_xlim(0.7, x_max + 0.3)
    zoom.set_ylim(y_low, y_high)
    zoom.set_title("near the final accuracy")
    groups["reference"].append(Line2D([], [], linestyle="none", marker="*", markersize=12, color="0.6",
                                markeredgecolor="black", markeredgewidth=0.6,
                                label="step from which the accuracy stays final"))
    if compare_logs:
        groups["reference"].append(Line2D([], [], linestyle="none", marker="D", markersize=8,
                                    markerfacecolor="none", markeredgecolor="0.4", markeredgewidth=1.5,
                                    label=f"the same, {compare_label}"))
    for axes in (whole, zoom):
        axes.set_xlabel("time step")
        axes.set_ylabel("test accuracy (%)")
        axes.grid(True, alpha=0.3)
    for axes in (whole, zoom):
        axes.xaxis.get_major_locator().set_params(integer=True)  # time steps are whole numbers
    compared = f" (dashed: {compare_label}, {dataset_name(compare_logs.values())})" if compare_logs else ""
    figure.suptitle(f"{DISPLAY_NAMES[model]} on {dataset_name(logs.values(), dataset)}{compared}: SNN accuracy vs time step",
                    fontsize=14)
    figure.tight_layout()
    # one legend column per group (ours, compared, ANN and markers), below the panels
    handles = legend_columns(list(groups.values()))
    columns = sum(1 for group in groups.values() if group)
    figure.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=columns,
                  frameon=False)
    return figure


def legend_columns(groups):
    """Handles laid out one group per legend column (matplotlib fills columns top to bottom)."""
    from matplotlib.lines import Line2D

    groups = [group for group in groups if group]
    height = max(len(group) for group in groups)
    blank = Line2D([], [], linestyle="none", label=" ")
    return [handle for group in groups for handle in group + [blank] * (height - len(group))]


def main(argv=None):
    args = figure_parser(DESCRIPTION, compare=True).parse_args(argv)
    for inputs in load_figure_inputs(args):
        figure = plot_accuracy(inputs.model, inputs.logs, inputs.ann_accuracy, inputs.compare_logs,
                               args.compare_label, inputs.dataset)
        save_figure(figure, paths.figure_path(inputs.model, "accuracy", args.out_dir, inputs.dataset))


if __name__ == "__main__":
    run_main(main)
