import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repository root
# Spike sparsity (ALGORITHM.md §5): positive and negative spikes per sample after the last time
# step, stacked, for k = 0, 1, 2, beside the number of spiking neurons of the network.
import paths
from architectures import spiking_neuron_count
from cli import run_main
from figs.bars import finish_bar_figure, k_label, label_bars, thousands
from figs.snn_logs import ANN_COLOR, figure_parser, load_figure_inputs, percent, pyplot, save_figure

DESCRIPTION = ("Plot positive and negative spikes per sample at the last time step for k = 0, 1, 2 "
               "beside the number of spiking neurons (<prefix>_spike_neuron_<dataset>.png).")
POSITIVE_COLOR = "tab:blue"
NEGATIVE_COLOR = "tab:red"
MIN_INSIDE_LABEL = 0.06  # a bar shorter than this share of the y axis gets its label on top instead


def plot_sparsity(model, logs, ann_accuracy=None, dataset="n_mnist"):
    """Stacked bars (positive, negative spikes per sample) per logged k, then the neuron count."""
    plt = pyplot()
    neurons = spiking_neuron_count(model, dataset)
    positive = [log.positive[-1] for log in logs.values()]
    negative = [log.negative[-1] for log in logs.values()]
    places = list(range(len(logs)))

    figure, axes = plt.subplots(figsize=(7.5, 5))
    style = dict(width=0.62, edgecolor="black", linewidth=0.6)
    low = axes.bar(places, positive, color=POSITIVE_COLOR, label="positive spikes", **style)
    high = axes.bar(places, negative, bottom=positive, color=NEGATIVE_COLOR, label="negative spikes",
                    **style)
    count = axes.bar([len(logs)], [neurons], color=ANN_COLOR, label="spiking neurons", **style)
    totals = [p + n for p, n in zip(positive, negative)]
    top = 1.27 * max(totals + [neurons])  # headroom: values, then the legend row
    axes.set_ylim(0, top)
    # A positive count goes inside its bar where the text fits, else on top of the stack, above the negative one.
    fits = [value >= MIN_INSIDE_LABEL * top for value in positive]
    label_bars(axes, [bar for bar, inside in zip(low, fits) if inside],
               [thousands(value, 1) for value, inside in zip(positive, fits) if inside], inside=True, color="white")
    label_bars(axes, [bar for bar, inside in zip(high, fits) if not inside],
               [thousands(value, 1) for value, inside in zip(positive, fits) if not inside],
               color=POSITIVE_COLOR, offset=16)
    label_bars(axes, high, [thousands(value, 1) for value in negative],
               color=NEGATIVE_COLOR)
    label_bars(axes, count, [thousands(neurons)])
    axes.set_xticks(places + [len(logs)], [k_label(k, log) for k, log in logs.items()]
                    + ["spiking\nneurons"])
    axes.legend(loc="upper center", ncol=3, frameon=False)
    caption = "spikes per sample after {steps} time steps"
    if ann_accuracy is not None:
        caption += f";  full-precision ANN accuracy {percent(ann_accuracy)}"
    return finish_bar_figure(figure, axes, model, logs, "spikes per sample", "spike sparsity", caption, dataset)


def main(argv=None):
    args = figure_parser(DESCRIPTION).parse_args(argv)
    for inputs in load_figure_inputs(args):
        save_figure(plot_sparsity(inputs.model, inputs.logs, inputs.ann_accuracy, inputs.dataset),
                    paths.figure_path(inputs.model, "spike_neuron", args.out_dir, inputs.dataset))


if __name__ == "__main__":
    run_main(main)
