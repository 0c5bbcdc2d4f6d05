import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root
# Computing operations (ALGORITHM.md §5): SOPs per sample of the converted SNNs after the last
# time step, for k = 0, 1, 2, beside the ANN's operations per sample (3 x MACs, first layer excluded).
import paths
from architectures import ann_ops_per_sample
from cli import run_main
from figs.bars import finish_bar_figure, k_label, label_bars, thousands
from figs.snn_logs import ANN_COLOR, K_COLORS, figure_parser, load_figure_inputs, percent, pyplot, save_figure

DESCRIPTION = ("Plot SNN synaptic operations per sample at the last time step for k = 0, 1, 2 "
               "beside the ANN's operations per sample (<prefix>_sop_<dataset>.png).")


def ann_label(ann_accuracy):
    return "ANN (full)" + (f"\n{percent(ann_accuracy)}" if ann_accuracy is not None else "")


def plot_sops(model, logs, ann_accuracy=None, dataset="n_mnist"):
    """Bars: SOPs per sample of each logged k, then the ANN's operations per sample."""
    plt = pyplot()
    ann_ops = ann_ops_per_sample(model, dataset)
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
    return finish_bar_figure(figure, axes, model, logs, "operations per sample", "computing operations",
                             "SNN: synaptic operations after {steps} time steps;  "
                             "ANN: 3 \u00d7 MACs of all layers but the first", dataset)


def main(argv=None):
    args = figure_parser(DESCRIPTION).parse_args(argv)
    for inputs in load_figure_inputs(args):
        save_figure(plot_sops(inputs.model, inputs.logs, inputs.ann_accuracy, inputs.dataset),
                    paths.figure_path(inputs.model, "sop", args.out_dir, inputs.dataset))


if __name__ == "__main__":
    run_main(main)
