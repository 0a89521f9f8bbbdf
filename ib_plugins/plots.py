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

__all__ = ["plot_training_curves", "plot_information_plane", "information_plane_layers", "plot_tsne"]


def _figure(ncols: int, width: float = 4.2, height: float = 3.2) -> Any:
    require("matplotlib", purpose="ib_plugins.plots")
    from matplotlib.figure import Figure

    return Figure(figsize=(width * ncols, height), layout="constrained")


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike[str], *, title: str = "") -> None:
    """Plot losses, accuracies, IB terms, the learning rate and E_N/E_T per epoch from a run's history.

    Panels are drawn only for the metrics present: loss parts (``train_*`` except accuracy),
    accuracies (``train_acc``, ``test_acc``, ``test_acc_ema`` and the validation curves
    ``val_clean_acc``/``val_robust_acc`` with their ``_ema`` twins, dashed for robust ones), the
    learning rate ``lr``, and the entropy metrics ``E_N``/``E_T``.

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
    acc_names = ("train_acc", "test_acc", "test_acc_ema", "val_clean_acc", "val_robust_acc", "val_clean_acc_ema",
                 "val_robust_acc_ema")
    acc_keys = [k for k in acc_names if k in keys]
    lr_keys = [k for k in ("lr",) if k in keys]
    ent_keys = [k for k in ("E_N", "E_T") if k in keys]
    panels = [("loss and its parts", loss_keys), ("accuracy", acc_keys), ("learning rate", lr_keys),
              ("entropy flow (E_N, E_T)", ent_keys)]
    panels = [(name, ks) for name, ks in panels if ks]
    fig = _figure(len(panels))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, ks) in zip(axes, panels):
        for k in ks:
            xs = [e for e, h in zip(epochs, history) if k in h]
            style = "--" if "robust" in k else "-"
            ax.plot(xs, [h[k] for h in history if k in h], style, marker="o", markersize=3, label=k)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)


def information_plane_layers(history: Sequence[dict[str, Any]]) -> list[str]:
    """The IB layers whose information-plane values (``hsic/<layer>/x`` and ``.../y``) a history holds.

    Args:
        history: per-epoch metric dicts (a training run's ``history.json``).

    Returns:
        Layer names in the order they first appear (empty for runs without an IB term).

    Example:
        >>> information_plane_layers([{"epoch": 1, "hsic/fc1/x": 0.5, "hsic/fc1/y": 0.2, "train_acc": 0.9}])
        ['fc1']
    """
    layers: list[str] = []
    for entry in history:
        for key in entry:
            if key.startswith("hsic/") and key.endswith("/x"):
                name = key[len("hsic/") : -len("/x")]
                if name not in layers and f"hsic/{name}/y" in entry:
                    layers.append(name)
    return layers


def plot_information_plane(history: Sequence[dict[str, Any]], path: str | os.PathLike[str], *, title: str = "") -> None:
    """The information plane of a training run: one trajectory per IB layer, epochs marked.

    Each layer ``l`` is a line through its per-epoch points (x: ``nHSIC(T_l, X)``, y:
    ``nHSIC(T_l, Y)``, the epoch means logged by the trainer as ``hsic/<l>/x`` and ``hsic/<l>/y``),
    as in the information-bottleneck literature (Shwartz-Ziv & Tishby 2017; HSIC bottleneck: Ma et
    al. 2020). The points are coloured by epoch (one colour bar), the first and last epochs are
    written next to their points, and the last point is a larger marker in the layer's colour.
    Compression shows as a move to the left, fitting as a move up.

    Args:
        history: per-epoch metric dicts with an ``epoch`` key (a training run's ``history.json``).
        path: PNG file to write.
        title: figure title.

    Raises:
        ValueError: no epoch holds information-plane values (a run without an IB term).
        MissingOptionalDependencyError: matplotlib is not installed.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "plane.png")
        >>> plot_information_plane([{"epoch": 1, "hsic/fc1/x": 0.9, "hsic/fc1/y": 0.3},
        ...                         {"epoch": 2, "hsic/fc1/x": 0.7, "hsic/fc1/y": 0.5}], path)
        >>> os.path.getsize(path) > 0
        True
    """
    layers = information_plane_layers(history)
    if not layers:
        raise ValueError(
            "history: expected per-layer information-plane values (keys 'hsic/<layer>/x' and 'hsic/<layer>/y', "
            "logged by runs with an IB term), got none"
        )
    points = {
        name: [(h["epoch"], h[f"hsic/{name}/x"], h[f"hsic/{name}/y"]) for h in history
               if f"hsic/{name}/x" in h and f"hsic/{name}/y" in h]
        for name in layers
    }
    all_epochs = [e for pts in points.values() for e, _, _ in pts]
    first, last = min(all_epochs), max(all_epochs)
    fig = _figure(1, width=6.4, height=4.8)
    ax = fig.subplots()
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    norm = Normalize(vmin=first, vmax=last if last > first else first + 1)
    cmap = colormaps["viridis"]
    palette = colormaps["tab10"]
    scatter = None
    for i, name in enumerate(layers):
        es, xs, ys = zip(*points[name])
        color = palette(i % 10)
        ax.plot(xs, ys, "-", color=color, linewidth=1.4, alpha=0.8, label=name, zorder=1)
        scatter = ax.scatter(xs, ys, c=es, cmap=cmap, norm=norm, s=28, edgecolors=color, linewidths=0.8, zorder=2)
        ax.scatter([xs[-1]], [ys[-1]], s=90, facecolors="none", edgecolors=color, linewidths=1.8, zorder=3)
        ax.annotate(str(es[0]), (xs[0], ys[0]), textcoords="offset points", xytext=(4, -10), fontsize=7, color=color)
        if len(es) > 1:
            ax.annotate(str(es[-1]), (xs[-1], ys[-1]), textcoords="offset points", xytext=(5, 4), fontsize=7,
                        color=color)
    if scatter is not None:
        from matplotlib.ticker import MaxNLocator

        fig.colorbar(scatter, ax=ax, label="epoch", ticks=MaxNLocator(integer=True))
    ax.set_xlabel("nHSIC(T, X)")
    ax.set_ylabel("nHSIC(T, Y)")
    ax.set_title(f"{title}: information plane" if title else "information plane")
    ax.grid(alpha=0.3)
    ax.legend(title="layer", fontsize=8)
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
