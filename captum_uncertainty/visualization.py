"""Figures: inputs with their posterior predictive, decomposition panels and URR curves.

Maps are drawn by default with :func:`captum.attr.visualization.visualize_image_attr`, so every
panel looks like the Captum figures users know; ``plot_attribution_grid(..., colorbar=True)``
draws them instead on a scale in the uncertainty's units with a colour bar. All functions return
a matplotlib ``Figure`` and never call ``plt.show()``.
"""

from __future__ import annotations

import textwrap
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["plot_posterior_predictive", "plot_attribution_grid", "plot_curves", "to_hwc"]


def to_hwc(image: Tensor) -> np.ndarray:
    """``(C, H, W)`` tensor to an ``(H, W, C)`` array, the layout Captum's visualiser takes."""
    if image.dim() != 3:
        raise ValueError(f"image must have shape (C, H, W), got {tuple(image.shape)}")
    return image.detach().cpu().permute(1, 2, 0).numpy()


def plot_posterior_predictive(
    images: Tensor,
    predictive: Tensor,
    uncertainties: Dict[str, Tensor],
    class_names: Optional[Sequence[str]] = None,
):
    """Each input above the histogram of its posterior samples' class probabilities.

    Args:
        images (Tensor): ``(K, C, H, W)`` inputs.
        predictive (Tensor): ``(S, K, classes)`` per-sample probabilities
            (:meth:`~captum_uncertainty.UncertaintyForward.predictive`).
        uncertainties (dict): name -> ``(K,)`` values printed in each title, e.g. the three
            measures of :meth:`~captum_uncertainty.UncertaintyForward.decompose`.
        class_names (sequence of str, optional): bar labels. Default: class indices.

    Returns:
        matplotlib.figure.Figure: one column per input; the bars are the mean predictive, the
        dots each posterior sample's probability.
    """
    import matplotlib.pyplot as plt

    n_images = images.shape[0]
    if predictive.dim() != 3 or predictive.shape[1] != n_images:
        raise ValueError(f"predictive must have shape (S, {n_images}, classes), got {tuple(predictive.shape)}")
    classes = predictive.shape[2]
    names = list(class_names) if class_names is not None else [str(c) for c in range(classes)]
    fig, axes = plt.subplots(2, n_images, figsize=(1.9 * n_images, 4.2), squeeze=False)
    probs = predictive.detach().cpu()
    for k in range(n_images):
        image = to_hwc(images[k])
        axes[0, k].imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray")
        axes[0, k].axis("off")
        axes[0, k].set_title("\n".join(f"{n[:3]} {float(v[k]):.2f}" for n, v in uncertainties.items()), fontsize=7)
        axes[1, k].bar(range(classes), probs[:, k].mean(0).numpy(), color="#4c72b0")
        for sample in probs[:, k]:
            axes[1, k].plot(range(classes), sample.numpy(), ".", color="#dd8452", markersize=3)
        axes[1, k].set_ylim(0, 1)
        axes[1, k].set_xticks(range(classes))
        axes[1, k].set_xticklabels(names, fontsize=6)
        axes[1, k].tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    return fig


def plot_attribution_grid(
    images: Tensor,
    maps: Dict[str, Tensor],
    max_images: int = 6,
    colorbar: bool = False,
    rows: str = "images",
    units: str = "nats",
    show_inputs: bool = True,
    image_titles: Optional[Sequence[str]] = None,
    outline: bool = False,
    cmap: str = "RdBu_r",
):
    """Inputs and their maps, one column (or row) per method.

    By default (``colorbar=False``) every map is drawn with Captum's ``heat_map``, which scales
    each map to its own range: good for the shape of a map, silent about its size. With
    ``colorbar=True`` the maps keep their values: each method's maps share one symmetric
    diverging scale from ``-max|a|`` to ``+max|a|`` (the largest magnitude among that method's
    shown maps; with the default colour map red raises the uncertainty and blue lowers it) and
    one colour bar labelled ``units``, so that 0.01 nats and 1 nat look different.

    Args:
        images (Tensor): ``(K, C, H, W)`` inputs.
        maps (dict): method name -> ``(K, 1, H, W)`` or ``(K, C, H, W)`` maps (summed over
            channels).
        max_images (int): at most this many inputs.
        colorbar (bool): draw the maps' values on a shared per-method scale with a colour bar
            (see above). Default: False (Captum's per-map normalised heat maps).
        rows (str): ``"images"`` (default): one row per input, the input first, then one column
            per method (colour bars under the columns); ``"methods"``: one row per method (the
            inputs' row first), one column per input (colour bars right of the rows), which keeps
            the figure ``max_images`` columns wide whatever the number of methods.
        units (str): label of the colour bars. Default: ``"nats"``.
        show_inputs (bool): draw the inputs' column (or row). Default: True.
        image_titles (sequence of str, optional): one title per input, shown above the top row
            (``rows="methods"``) or left of each row (``rows="images"``).
        outline (bool): draw each input's outline (its contour halfway between its darkest and
            brightest value) over its maps, so that a map reads without the input beside it.
            Default: False.
        cmap (str): diverging colour map of the ``colorbar=True`` maps. Default: ``"RdBu_r"``.

    Returns:
        matplotlib.figure.Figure
    """
    if rows not in ("images", "methods"):
        raise ValueError(f"rows must be 'images' or 'methods', got {rows!r}")
    n_images = min(max_images, images.shape[0])
    if image_titles is not None and len(image_titles) < n_images:
        raise ValueError(f"image_titles needs {n_images} titles, got {len(image_titles)}")
    lines: List[Optional[str]] = ([None] if show_inputs else []) + list(maps)  # None: the inputs
    pictures = [to_hwc(images[k]) for k in range(n_images)]
    values = {
        name: [to_hwc(maps[name][k].detach().sum(0, keepdim=True)).squeeze(-1) for k in range(n_images)]
        for name in maps
    }
    titles = list(image_titles[:n_images]) if image_titles is not None else None
    draw = _scaled_grid if colorbar else _heat_map_grid
    return draw(pictures, values, lines, rows == "methods", titles, outline, units, cmap)


def _line_label(name: Optional[str]) -> str:
    return "input" if name is None else name


def _heat_map_grid(pictures, values, lines, by_method: bool, titles, outline: bool, units: str, cmap: str):
    """One axes per input and method, each map drawn by Captum's ``heat_map`` on its own range."""
    import matplotlib.pyplot as plt

    n_images = len(pictures)
    shape = (len(lines), n_images) if by_method else (n_images, len(lines))
    figsize = (1.35 * n_images + 0.5, 1.35 * len(lines) + 0.3) if by_method else (1.6 * len(lines), 1.6 * n_images)
    fig, axes = plt.subplots(*shape, figsize=figsize, squeeze=False)
    for line, name in enumerate(lines):
        cells = [axes[line, k] if by_method else axes[k, line] for k in range(n_images)]
        for k, ax in enumerate(cells):
            if name is None:
                ax.imshow(pictures[k].squeeze(-1) if pictures[k].shape[-1] == 1 else pictures[k], cmap="gray")
            else:
                _draw_heat_map(fig, ax, values[name][k])
                if outline:
                    _draw_outline(ax, _gray(pictures[k]))
            _bare(ax)
            if titles is not None and line == 0:
                (ax.set_title if by_method else ax.set_ylabel)(titles[k], fontsize=7)
        if by_method:
            cells[0].set_ylabel(textwrap.fill(_line_label(name), 22), fontsize=8)
        else:
            cells[0].set_title(textwrap.fill(_line_label(name), 24), fontsize=7)
    fig.tight_layout()
    return fig


def _scaled_grid(pictures, values, lines, by_method: bool, titles, outline: bool, units: str, cmap: str):
    """One axes per method holding a mosaic of its maps (the inputs' order, white gaps), all on one
    symmetric scale ``[-max|a|, max|a|]``, with its colour bar in a narrow extra column (row)."""
    import matplotlib.pyplot as plt

    n_images = len(pictures)
    height, width = pictures[0].shape[:2]
    gap = max(1, round(0.1 * (width if by_method else height)))
    if by_method:
        shape = (len(lines), 2)
        ratios = {"width_ratios": [1.0, 0.07 / n_images]}
        figsize = (1.35 * n_images + 1.3, 1.35 * len(lines) * height / width + (0.45 if titles else 0.1))
    else:
        shape = (2, len(lines))
        ratios = {"height_ratios": [1.0, 0.07 / n_images]}
        figsize = (1.6 * len(lines) + (0.6 if titles else 0.1), 1.6 * n_images * height / width + 0.8)
    fig, axes = plt.subplots(*shape, figsize=figsize, squeeze=False, gridspec_kw=ratios, layout="constrained")
    outlines = _mosaic([_normalised(_gray(p)) for p in pictures], gap, by_method) if outline else None
    centres = [
        (k * ((width if by_method else height) + gap)) + ((width if by_method else height) - 1) / 2
        for k in range(n_images)
    ]
    for line, name in enumerate(lines):
        ax = axes[line, 0] if by_method else axes[0, line]
        cax = axes[line, 1] if by_method else axes[1, line]
        if name is None:
            if pictures[0].shape[-1] == 1:
                mosaic = _mosaic([_normalised(p.squeeze(-1)) for p in pictures], gap, by_method)
                ax.imshow(np.ma.masked_invalid(mosaic), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(_mosaic([np.clip(p, 0, 1) for p in pictures], gap, by_method, fill=1.0))
            cax.axis("off")
        else:
            finite = [np.nan_to_num(v.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0) for v in values[name]]
            limit = max(float(np.abs(v).max()) for v in finite)
            limit = limit if limit > 0 else 1e-12  # all-zero maps: a scale around 0, drawn white
            drawn = ax.imshow(np.ma.masked_invalid(_mosaic(finite, gap, by_method)), cmap=cmap, vmin=-limit, vmax=limit)
            bar = fig.colorbar(drawn, cax=cax, orientation="vertical" if by_method else "horizontal")
            bar.set_label(units, fontsize=8)
            bar.ax.tick_params(labelsize=7)
            if outlines is not None:
                ax.contour(np.ma.masked_invalid(outlines), levels=[0.5], colors="0.3", linewidths=0.6)
        _bare(ax)
        ax.set_anchor("E" if by_method else "S")  # any slack away from the colour bars
        if by_method:
            ax.set_ylabel(textwrap.fill(_line_label(name), 22), fontsize=8)
        else:
            ax.set_title(textwrap.fill(_line_label(name), 24), fontsize=7)
        if titles is not None and line == 0:
            if by_method:
                ax.set_xticks(centres, titles, fontsize=7)
                ax.xaxis.set_ticks_position("top")
            else:
                ax.set_yticks(centres, titles, fontsize=7)
            ax.tick_params(length=0)
    return fig


def _mosaic(arrays: List[np.ndarray], gap: int, side_by_side: bool, fill: float = np.nan) -> np.ndarray:
    """The arrays side by side (or stacked), ``gap`` pixels of ``fill`` between them."""
    axis = 1 if side_by_side else 0
    shape = list(arrays[0].shape)
    shape[axis] = gap
    spacer = np.full(shape, fill)
    pieces: List[np.ndarray] = []
    for k, array in enumerate(arrays):
        pieces += ([spacer] if k else []) + [array.astype(np.float64)]
    return np.concatenate(pieces, axis=axis)


def _gray(picture: np.ndarray) -> np.ndarray:
    return picture.mean(-1)


def _normalised(gray: np.ndarray) -> np.ndarray:
    """``gray`` scaled to ``[0, 1]`` (zeros when flat), as ``imshow`` scales one image."""
    low, high = float(gray.min()), float(gray.max())
    return (gray - low) / (high - low) if high > low else np.zeros_like(gray, dtype=np.float64)


def _bare(ax) -> None:
    """No ticks, no frame: room for labels and titles, unlike ``axis("off")``."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _draw_heat_map(fig, ax, attribution: np.ndarray) -> None:
    """Captum's ``heat_map`` of one map, scaled to its own range (the default grid)."""
    from captum.attr import visualization as viz

    if np.abs(attribution).max() > 0:
        sign = "all" if attribution.min() < 0 else "positive"
        viz.visualize_image_attr(
            attribution[..., None], method="heat_map", sign=sign, plt_fig_axis=(fig, ax), use_pyplot=False
        )


def _draw_outline(ax, gray: np.ndarray) -> None:
    """The input's contour halfway between its darkest and brightest value, in thin grey."""
    if float(gray.max()) > float(gray.min()):
        ax.contour(_normalised(gray), levels=[0.5], colors="0.3", linewidths=0.6)


#: Line styles of :func:`plot_curves`, taken in turn after every ten colours.
_LINE_STYLES = ("-", "--", ":", "-.")


def plot_curves(
    curves: Dict[str, Tensor],
    xlabel: str = "fraction of pixels blurred",
    ylabel: str = "URR",
    x_max: Optional[float] = None,
):
    """Line plot of named curves (e.g. the median URR curve of each method).

    The legend sits right of the axes, outside them, so it never covers a curve; past ten curves
    the colours repeat with another line style.

    Args:
        curves (dict): name -> ``(T,)`` values.
        xlabel (str): x-axis label.
        ylabel (str): y-axis label.
        x_max (float, optional): when given, value ``t = 1..T`` is drawn at ``x_max * t / T``
            (e.g. ``0.05`` for a blurring test at 5% of the pixels, whose step ``t`` has ``t / T``
            of the budget blurred) and the x-axis is labelled in percent. Default: the values
            spread evenly over ``[0, 1]``.

    Returns:
        matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    fig, ax = plt.subplots(figsize=(9, max(3.4, 0.5 + 0.17 * len(curves))), layout="constrained")
    for i, (name, curve) in enumerate(curves.items()):
        values = torch.as_tensor(curve).detach().cpu().numpy()
        if x_max is not None:
            x = x_max * np.arange(1, len(values) + 1) / len(values)
        else:
            x = np.linspace(0, 1, len(values)) if len(values) > 1 else np.zeros(1)
        style = _LINE_STYLES[(i // 10) % len(_LINE_STYLES)]
        ax.plot(x, values, label=name, color=f"C{i % 10}", linestyle=style, linewidth=1.3)
    if x_max is not None:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if curves:
        fig.legend(loc="outside right upper", fontsize=7, frameon=False)
    return fig
