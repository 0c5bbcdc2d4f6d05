import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root
# Computing operations (ALGORITHM.md §5): SOPs per sample of the converted SNNs after the last
# time step, for k = 0, 1, 2, beside the ANN's operations per sample (3 x MACs, first layer excluded).
from architectures import DISPLAY_NAMES, ann_ops_per_sample
from cli import run_main
from figs.snn_logs import (ANN_COLOR, K_COLORS, ann_label, dataset_name, figure_parser, k_label, label_bars,
                           load_figure_inputs, output_path, pyplot, save_figure, thousands,
                           thousands_axis)

DESCRIPTION = ("Plot SNN synaptic operations per sample at the last time step for k = 0, 1, 2 "
               "beside the ANN's operations per sample (<prefix>_sop_n_mnist.png).")


def plot_sops(model, logs, ann_accuracy=None):
    """Bars: SOPs per sample of each logged k, then the ANN's operations per sample."""
    plt = pyplot()
    ann_ops = ann_ops_per_sample(model)
    names = [k_label(k, log) for k, log in logs.items()] + [ann_label(ann_accuracy)]
    values = [log.sops[-1] for log in logs.values()] + [ann_ops]
    colors = [K_COLORS[k] for k in logs] + [ANN_COLOR]
    texts = [f"{thousands(value)}\n({value / ann_ops:.1%} of ANN)" for value in values[:-1]]
    texts.append(thousands(ann_ops))

    figure, axes = plt.subplots(figsize=(7.5, 5))
    bars = axes.bar(range(len(values)), values, color=colors, width=0.62, edgecolor="black",
                    linewidth=0.6)
    label_bars(axes, bars, texts)
    axes.set_xticks(range(len(values)), names)
    axes.set_ylim(0, 1.17 * max(values))
    axes.set_ylabel("operations per sample")
    thousands_axis(axes)
    axes.grid(True, axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    steps = sorted({log.time_steps for log in logs.values()})
    axes.set_title(f"{DISPLAY_NAMES[model]} on {dataset_name(logs.values())}: computing operations")
    axes.set_xlabel(f"SNN: synaptic operations after {'/'.join(map(str, steps))} time steps;  "
                    "ANN: 3 \u00d7 MACs of all layers but the first", fontsize=9.5, color="0.3")
    figure.tight_layout()
    return figure


def main(argv=None):
    args = figure_parser(DESCRIPTION).parse_args(argv)
    for inputs in load_figure_inputs(args):
        save_figure(plot_sops(inputs.model, inputs.logs, inputs.ann_accuracy),
                    output_path(args, inputs.model, "sop"))


if __name__ == "__main__":
    run_main(main)
