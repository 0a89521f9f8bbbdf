"""PNG plots of training runs and representations (matplotlib, imported lazily).

Figures are built with :class:`matplotlib.figure.Figure` directly, so no pyplot state or global
backend is touched.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> plot_training_curves([{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "test_acc": 0.4},
    ...                       {"epoch": 2, "train_loss": 0.5, "train_acc": 0.8, "test_acc": 0.7}], path)
    >>> os.path.getsize(path) > 0
    True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ib_plugins._optional import require

__all__ = ["plot_training_curves", "plot_tsne"]


def _figure(ncols: int, width: float = 4.2, height: float = 3.2) -> Any:
    require("matplotlib", purpose="ib_plugins.plots")
    from matplotlib.figure import Figure

    return Figure(figsize=(width * ncols, height), layout="constrained")


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike[str], *, title: str = "") -> None:
    """Plot losses, accuracies, IB terms and E_N/E_T per epoch from a run's history.

    Panels are drawn only for the metrics present: loss parts (``train_*`` except accuracy),
    accuracies (``train_acc``, ``test_acc``), and the entropy metrics ``E_N``/``E_T``.

    Args:
        history: per-epoch metric dicts with an ``epoch`` key.
        path: PNG file to write.
        title: figure title.

    Raises:
        ValueError: an empty history.
        MissingOptionalDependencyError: matplotlib is not installed.
    """
    if not history:
        raise ValueError("history: expected at least one epoch of metrics, got none")
    epochs = [h["epoch"] for h in history]
    keys = sorted({k for h in history for k in h})
    loss_keys = [k for k in keys if k.startswith("train_") and k != "train_acc"]
    acc_keys = [k for k in ("train_acc", "test_acc") if k in keys]
    ent_keys = [k for k in ("E_N", "E_T") if k in keys]
    panels = [("loss and its parts", loss_keys), ("accuracy", acc_keys), ("entropy flow (E_N, E_T)", ent_keys)]
    panels = [(name, ks) for name, ks in panels if ks]
    fig = _figure(len(panels))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, ks) in zip(axes, panels):
        for k in ks:
            xs = [e for e, h in zip(epochs, history) if k in h]
            ax.plot(xs, [h[k] for h in history if k in h], marker="o", markersize=3, label=k)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)


def plot_tsne(
    features: Tensor, labels: Tensor, path: str | os.PathLike[str], *, title: str = "", seed: int = 0, max_points: int = 2000
) -> None:
    """2-D t-SNE of a layer's representation, coloured by class (IB-RAR Fig. 1).

    Args:
        features: representations ``[N, ...]`` (flattened per sample).
        labels: class indices ``[N]``.
        path: PNG file to write.
        title: figure title.
        seed: t-SNE random state.
        max_points: use at most this many points (the first ones).

    Raises:
        ValueError: mismatched lengths or fewer than 5 points.
        MissingOptionalDependencyError: matplotlib or scikit-learn is missing.
    """
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"features and labels must have the same length, got {features.shape[0]} and {labels.shape[0]}")
    n = min(features.shape[0], max_points)
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {n}")
    manifold = require("sklearn.manifold", purpose="ib_plugins.plots.plot_tsne", extra="data")
    feats = features[:n].reshape(n, -1).detach().double().cpu().numpy()
    emb = manifold.TSNE(n_components=2, random_state=seed, perplexity=min(30.0, (n - 1) / 3), init="pca").fit_transform(feats)
    fig = _figure(1, width=5.0, height=4.5)
    ax = fig.subplots()
    sc = ax.scatter(emb[:, 0], emb[:, 1], c=labels[:n].cpu().numpy(), cmap="tab10", s=6)
    fig.colorbar(sc, ax=ax, label="class")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=110)
