"""Figures drawn with matplotlib (headless): line plots and labelled image grids, saved as PNG."""

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def line_plot(series, path, *, title, xlabel, ylabel, bands=None, hline=None, size=(6.4, 4.0)):
    """Plot ``{label: (x, y)}`` as lines with markers and save a PNG; returns the path.

    ``bands``: optional ``{label: (low, high)}`` arrays shaded around that line (e.g. ± std).
    ``hline``: optional ``(y, label)`` reference line (e.g. a threshold or the random policy).
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=size, dpi=120)
    for label, (x, y) in series.items():
        line, = axes.plot(np.asarray(x), np.asarray(y, dtype=float), marker="o", markersize=3,
                          label=label)
        if bands and label in bands:
            low, high = bands[label]
            axes.fill_between(np.asarray(x), low, high, color=line.get_color(), alpha=0.2)
    if hline is not None:
        axes.axhline(hline[0], color="gray", linestyle="--", linewidth=1, label=hline[1])
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def image_grid(rows, path, *, title, column_labels=None, scale=1.0):
    """Save a grid of images, one labelled row per ``{row label: (N, H, W, 3) uint8}``."""
    plt = _pyplot()
    names = list(rows)
    columns = max(len(frames) for frames in rows.values())
    figure, axes = plt.subplots(len(names), columns, squeeze=False,
                                figsize=(scale * (1.1 * columns + 1.4), scale * 1.1 * len(names) + 0.6),
                                dpi=120)
    for row, name in enumerate(names):
        for column in range(columns):
            axis = axes[row][column]
            axis.set_xticks([])
            axis.set_yticks([])
            frames = rows[name]
            if column < len(frames):
                axis.imshow(frames[column])
            else:
                axis.axis("off")
            if column == 0:
                axis.set_ylabel(name.replace("_", " "), rotation=0, ha="right", va="center",
                                fontsize=8)
            if row == 0 and column_labels is not None and column < len(column_labels):
                axis.set_title(str(column_labels[column]), fontsize=8)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def _save(figure, path):
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
    return path
