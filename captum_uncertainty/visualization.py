"""Figures: inputs with their posterior predictive, decomposition panels and URR curves.

Maps are drawn with :func:`captum.attr.visualization.visualize_image_attr`, so every panel
looks like the Captum figures users know. All functions return a matplotlib ``Figure`` and
never call ``plt.show()``.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

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


def plot_attribution_grid(images: Tensor, maps: Dict[str, Tensor], max_images: int = 6):
    """Rows of inputs and their maps, one column per method (Captum's ``heat_map``).

    Args:
        images (Tensor): ``(K, C, H, W)`` inputs.
        maps (dict): method name -> ``(K, 1, H, W)`` or ``(K, C, H, W)`` maps.
        max_images (int): at most this many rows.

    Returns:
        matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from captum.attr import visualization as viz

    rows = min(max_images, images.shape[0])
    cols = 1 + len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for r in range(rows):
        image = to_hwc(images[r])
        axes[r, 0].imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray")
        axes[r, 0].axis("off")
        for c, (name, values) in enumerate(maps.items(), start=1):
            attribution = to_hwc(values[r].sum(0, keepdim=True))
            if np.abs(attribution).max() > 0:
                sign = "all" if attribution.min() < 0 else "positive"
                viz.visualize_image_attr(
                    attribution, method="heat_map", sign=sign, plt_fig_axis=(fig, axes[r, c]), use_pyplot=False
                )
            axes[r, c].axis("off")
            if r == 0:
                axes[r, c].set_title(name, fontsize=7)
    fig.tight_layout()
    return fig


def plot_curves(curves: Dict[str, Tensor], xlabel: str = "fraction of pixels blurred", ylabel: str = "URR"):
    """Line plot of named curves (e.g. the median URR curve of each method)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, curve in curves.items():
        values = torch.as_tensor(curve).detach().cpu().numpy()
        ax.plot(np.linspace(0, 1, len(values)) if len(values) > 1 else [0], values, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig
