"""Analyses beyond one suite: noise accuracy, accuracy vs steps, misclassification tendency and its plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._context import _inference_modes, _resolve_device
from ib_plugins._markdown import md_cell
from ib_plugins._optional import require
from ib_plugins._types import PathLike
from ib_plugins._validation import _check_model, _check_xy
from ib_plugins.evaluation.runner import _forward, _predict, evaluate_suite
from ib_plugins.evaluation.suites import (
    _NORMS,
    _PURPOSE,
    _SUITE_ALIASES,
    SUITES,
    _canonical,
    _check_eps,
    _check_int,
    build_suite,
)

# --------------------------------------------------------------------------------------------------
# Noise, steps, misclassification tendencies, plots
# --------------------------------------------------------------------------------------------------


def random_noise(x: Tensor, *, norm: str, eps: float, generator: torch.Generator) -> Tensor:
    """Add uniform random noise of a given norm and radius, clipped to ``[0, 1]``.

    ``"linf"``: every element uniform in ``[-eps, eps]``. ``"l2"``: a direction uniform on the
    sphere (normalised Gaussian) scaled to L2 norm ``eps``. Clipping to ``[0, 1]`` only shrinks
    the perturbation, so its norm stays ``<= eps``. The noise is drawn on the generator's device
    (then moved to ``x``'s), so results do not depend on ``x``'s device.

    Args:
        x: inputs ``[N, ...]`` in ``[0, 1]``.
        norm: ``"linf"`` or ``"l2"``.
        eps: the radius.
        generator: source of randomness (never the global RNG).

    Returns:
        The noisy inputs, same shape, dtype and device as ``x``.

    Raises:
        ValueError: bad ``norm`` or ``eps``.
        TypeError: ``generator`` is not a ``torch.Generator``.

    Example:
        >>> x = torch.full((3, 1, 4, 4), 0.5)
        >>> noisy = random_noise(x, norm="l2", eps=0.2, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose((noisy - x).flatten(1).norm(dim=1), torch.full((3,), 0.2))
        True
    """
    norm = _canonical(norm, arg="norm", valid=_NORMS, aliases={"inf": "linf", "l-inf": "linf"})
    eps = _check_eps(eps, norm)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    shape, gdev = x.shape, generator.device
    if norm == "linf":
        delta = (torch.rand(shape, generator=generator, device=gdev, dtype=torch.float32) * 2 - 1) * eps
    else:
        delta = torch.randn(shape, generator=generator, device=gdev, dtype=torch.float32)
        flat = delta.flatten(1)
        delta = (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12) * eps).view(shape)
    return (x + delta.to(device=x.device, dtype=x.dtype)).clamp(0, 1)


def noise_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    eps: float,
    seed: int = 0,
    batch_size: int = 100,
    device: torch.device | str | None = None,
) -> float:
    """Accuracy under uniform random noise of a given norm and radius (entropic Tables V–VI).

    Uses :func:`random_noise` with a local ``torch.Generator().manual_seed(seed)``; the global RNG
    and the model's modes are untouched.

    Args:
        model: a classifier.
        x: inputs in ``[0, 1]``.
        y: class indices.
        norm: ``"linf"`` or ``"l2"``.
        eps: the noise radius (e.g. the suite's budget).
        seed: seed of the noise.
        batch_size: samples per forward.
        device: where the model runs; ``None`` = its device.

    Returns:
        The accuracy in ``[0, 1]``.

    Raises:
        ValueError: bad inputs, ``norm`` or ``eps``.

    Example:
        >>> import torch, torch.nn as nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
        >>> 0.0 <= noise_accuracy(model, x, y, norm="linf", eps=0.1) <= 1.0
        True
    """
    model = _check_model(model)
    x, y = _check_xy(x, y)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    seed = _check_int(seed, "seed")
    dev = _resolve_device(model, x, device)
    noisy = random_noise(x, norm=norm, eps=eps, generator=torch.Generator().manual_seed(seed))
    with _inference_modes(model):
        pred = _predict(model, noisy, dev, batch_size)
    return float((pred == y).float().mean())


_STEP_ATTACKS = {"ibrar": ("pgd", "cw", "fab", "nifgsm"), "entropic": ("linf-pgd", "bim", "cw", "l2-pgd")}


def accuracy_vs_steps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attack: str = "pgd",
    steps: Sequence[int] = (1, 10, 20, 30, 40, 50),
    suite: str = "ibrar",
    budget: str | None = None,
    dataset: str = "cifar10",
    num_classes: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    engine: str = "builtin",
) -> tuple[list[int], list[float]]:
    """Robust accuracy as a function of the number of attack steps (IB-RAR Fig. 3).

    Each point is one :func:`build_suite` attack with its step count replaced. Under the
    ``"ibrar-code"`` budget the PGD step size is ``2.3·eps/n``, so it shrinks as ``n`` grows, as
    in the authors' sweep (``test.py`` L354-371); NI-FGSM and FAB keep their step sizes.

    Args:
        model: a classifier.
        x: inputs in ``[0, 1]``.
        y: class indices.
        attack: an iterative attack of the suite (IB-RAR: pgd, cw, fab, nifgsm; entropic:
            linf-pgd, bim, cw, l2-pgd).
        steps: the step counts.
        suite: ``"ibrar"`` or ``"entropic"``.
        budget: the suite's budget (``None`` = default).
        dataset: selects the radii.
        num_classes: FAB's ``n_classes`` (``None`` = the dataset's).
        batch_size: samples per attack call.
        seed: seed of the attacks.
        device: where to run.
        progress: show tqdm bars.
        engine: ``"builtin"`` or ``"torchattacks"`` (see :func:`run_attack`).

    Returns:
        ``(steps, accuracies)``: the step counts and accuracies in ``[0, 1]``.

    Raises:
        ValueError: an attack without steps (e.g. fgsm) or not in the suite, or a bad step count.

    Example:
        >>> import torch, torch.nn as nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.arange(4) % 3
        >>> s, acc = accuracy_vs_steps(model, x, y, steps=(1, 2), dataset="digits", num_classes=3, progress=False)
        >>> s, len(acc)
        ([1, 2], 2)
    """
    suite = _canonical(suite, arg="suite", valid=tuple(SUITES), aliases=_SUITE_ALIASES)
    attack = _canonical(attack, arg="attack", valid=_STEP_ATTACKS[suite])
    if isinstance(steps, int) or not isinstance(steps, Sequence) or not steps:
        raise TypeError(f"steps: expected a non-empty sequence of ints, got {steps!r}")
    step_list = [_check_int(n, "steps", minimum=1) for n in steps]
    accs: list[float] = []
    for n in step_list:
        if attack in ("pgd", "linf-pgd", "l2-pgd"):
            spec = build_suite(suite, budget=budget, dataset=dataset, num_classes=num_classes, pgd_steps=n,
                               attacks=[attack])[0]
        elif attack == "cw":
            spec = build_suite(suite, budget=budget, dataset=dataset, num_classes=num_classes, cw_steps=n,
                               attacks=[attack])[0]
        else:
            spec = build_suite(suite, budget=budget, dataset=dataset, num_classes=num_classes, attacks=[attack])[0]
            spec = replace(spec, kwargs={**spec.kwargs, "steps": n})
        res = evaluate_suite(model, x, y, [spec], batch_size=batch_size, seed=seed, device=device, progress=progress,
                             engine=engine)
        accs.append(res.attacks[0].accuracy)
    return step_list, accs


def misclassification_tendency(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    x_adv: Tensor,
    *,
    num_classes: int | None = None,
    normalize: bool = False,
    batch_size: int = 100,
    device: torch.device | str | None = None,
) -> Tensor:
    """Which class each successfully attacked sample was pushed to (IB-RAR Table IV).

    Among the samples the model classifies correctly on ``x`` and wrongly on ``x_adv``, entry
    ``[i, j]`` counts those of true class ``i`` predicted as ``j`` after the attack (the diagonal is
    0).

    Args:
        model: a classifier.
        x: clean inputs in ``[0, 1]``.
        y: class indices.
        x_adv: adversarial inputs, same shape as ``x``.
        num_classes: matrix size; ``None`` = the model's number of outputs.
        normalize: return row-normalised rates (rows without successes stay 0) instead of counts.
        batch_size: samples per forward.
        device: where the model runs.

    Returns:
        ``[C, C]`` int64 counts, or float32 rates with ``normalize``, on CPU.

    Raises:
        ValueError: shapes differ or inputs are outside ``[0, 1]``.

    Example:
        >>> import torch, torch.nn as nn
        >>> class Pick(nn.Module):  # predicts the class stored in the first pixel
        ...     def forward(self, x):
        ...         return nn.functional.one_hot(x.flatten(1)[:, 0].mul(2).round().long(), 3).float()
        >>> x = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1)
        >>> x_adv = torch.tensor([0.5, 0.5, 0.0]).view(3, 1, 1, 1)
        >>> misclassification_tendency(Pick(), x, torch.tensor([0, 1, 2]), x_adv).tolist()
        [[0, 1, 0], [0, 0, 0], [1, 0, 0]]
    """
    model = _check_model(model)
    x, y = _check_xy(x, y)
    if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape:
        raise ValueError(
            f"x_adv: expected a tensor of shape {list(x.shape)}, got "
            f"{list(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__}"
        )
    _check_xy(x_adv, y)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    dev = _resolve_device(model, x, device)
    with _inference_modes(model):
        with torch.no_grad():
            n_out = _forward(model, x[:1].to(dev)).shape[1]
        clean = _predict(model, x, dev, batch_size).cpu()
        adv = _predict(model, x_adv, dev, batch_size).cpu()
    c = n_out if num_classes is None else _check_int(num_classes, "num_classes", minimum=2)
    yc = y.cpu()
    if int(yc.max()) >= c or int(adv.max()) >= c:
        raise ValueError(f"num_classes: expected more than the largest class index, got {c}")
    flipped = (clean == yc) & (adv != yc)
    counts = torch.bincount(yc[flipped] * c + adv[flipped], minlength=c * c).view(c, c)
    if not normalize:
        return counts
    rates = counts.float()
    totals = rates.sum(dim=1, keepdim=True)
    return torch.where(totals > 0, rates / totals.clamp_min(1), torch.zeros_like(rates))


def tendency_markdown(matrix: Tensor, *, class_names: Sequence[str] | None = None) -> str:
    """Render a :func:`misclassification_tendency` matrix as markdown.

    Rows are true classes, columns adversarial predictions; a last column names the most frequent
    adversarial class of each row (``-`` when the row is empty). Rates are shown as percentages.

    Args:
        matrix: ``[C, C]`` counts (integer) or rates (float).
        class_names: ``C`` labels; default ``0 .. C-1``.

    Returns:
        The table (no trailing newline).

    Raises:
        ValueError: ``matrix`` is not square or ``class_names`` has the wrong length.

    Example:
        >>> print(tendency_markdown(torch.tensor([[0, 2], [1, 0]]), class_names=["cat", "dog"]))
        | true \\ adv | cat | dog | most frequent |
        |---|---|---|---|
        | cat | 0 | 2 | dog |
        | dog | 1 | 0 | cat |
    """
    if not isinstance(matrix, Tensor) or matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix: expected a square [C, C] tensor, got {getattr(matrix, 'shape', type(matrix))}")
    c = matrix.shape[0]
    names = [str(i) for i in range(c)] if class_names is None else [md_cell(n) for n in class_names]
    if len(names) != c:
        raise ValueError(f"class_names: expected {c} names, got {len(names)}")
    is_float = matrix.is_floating_point()
    lines = ["| true \\ adv | " + " | ".join(names) + " | most frequent |", "|---|" + "---|" * (c + 1)]
    for i in range(c):
        row = matrix[i]
        cells = [f"{100 * float(v):.1f}" if is_float else str(int(v)) for v in row]
        top = names[int(row.argmax())] if float(row.sum()) > 0 else "-"
        lines.append(f"| {names[i]} | " + " | ".join(cells) + f" | {top} |")
    return "\n".join(lines)


def plot_accuracy_vs_steps(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    path: PathLike,
    *,
    title: str | None = None,
    ylabel: str = "Robust accuracy (%)",
) -> Path:
    """Plot accuracy-vs-steps curves (as returned by :func:`accuracy_vs_steps`) to a PNG.

    Uses :class:`matplotlib.figure.Figure` with the Agg canvas directly, never ``pyplot``, so no
    global backend state changes. Accuracies are given in ``[0, 1]`` and drawn in percent.

    Args:
        curves: ``label -> (steps, accuracies)``.
        path: the output file (parent folders are created).
        title: optional plot title.
        ylabel: the y-axis label.

    Returns:
        The written path.

    Raises:
        ValueError: empty ``curves`` or mismatched lengths.
        MissingOptionalDependencyError: matplotlib is not installed.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = plot_accuracy_vs_steps({"CE": ([1, 10], [0.5, 0.1])}, pathlib.Path(d) / "f.png")
        ...     p.stat().st_size > 0
        True
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves: expected a non-empty mapping label -> (steps, accuracies), got {curves!r}")
    for label, curve in curves.items():
        if not isinstance(curve, (tuple, list)) or len(curve) != 2 or len(curve[0]) != len(curve[1]):
            raise ValueError(f"curves[{label!r}]: expected (steps, accuracies) of equal length, got {curve!r}")
    require("matplotlib", purpose=f"{_PURPOSE}.plot_accuracy_vs_steps")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, (s, acc) in curves.items():
        ax.plot(list(s), [100 * float(a) for a in acc], marker="o", label=str(label))
    ax.set_xlabel("Attack steps")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)
    return out
