"""What the two bar figures (sops.py, sparsity.py) share: tick labels, numbers on bars, axes, title and caption."""
from architectures import DISPLAY_NAMES
from figs.snn_logs import dataset_name, percent


def thousands(value, decimals=0):
    """`1,234.5`: counts written as §7's table writes them."""
    return f"{value:,.{decimals}f}"


def k_label(k, log=None):
    """Bar/tick label of precision k, with the SNN's final accuracy when known."""
    return f"SNN k={k}" + (f"\n{percent(log.final_accuracy)}" if log is not None else "")


def label_bars(axes, bars, texts, inside=False, color="black", offset=3):
    """Write `texts` on `bars`: centred inside each bar, or `offset` points above it."""
    for bar, text in zip(bars, texts):
        y = bar.get_y() + bar.get_height() / (2 if inside else 1)
        axes.annotate(text, (bar.get_x() + bar.get_width() / 2, y), xytext=(0, 0 if inside else offset),
                      textcoords="offset points", ha="center", va="center" if inside else "bottom", color=color,
                      fontsize=9.5)


def finish_bar_figure(figure, axes, model, logs, ylabel, subject, caption, dataset="n_mnist"):
    """What the two bar figures share: counts with thousands separators, a light grid, the title
    "<Model> on <data>: <subject>", and `caption` (its "{steps}" replaced by the logs' T) below."""
    from matplotlib.ticker import FuncFormatter

    axes.set_ylabel(ylabel)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))  # 1,000,000 rather than 1e6
    axes.grid(True, axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.set_title(f"{DISPLAY_NAMES[model]} on {dataset_name(logs.values(), dataset)}: {subject}")
    steps = "/".join(map(str, sorted({log.time_steps for log in logs.values()})))
    axes.set_xlabel(caption.replace("{steps}", steps), fontsize=9.5, color="0.3")
    figure.tight_layout()
    return figure
