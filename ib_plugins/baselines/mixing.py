"""Mixup, as HBaR's repository trains CIFAR-10 with it: :func:`mixup` and :func:`mixup_cross_entropy`."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ib_plugins.baselines._checks import _check_generator, _check_number


# ----------------------------------------------------------------------------- mixup
class MixupBatch(NamedTuple):
    """A mixed batch: ``x = lam·x_orig + (1 − lam)·x_orig[perm]``, ``y_b = y_a[perm]``.

    Attributes:
        x: the mixed inputs.
        y_a: the original labels.
        y_b: the labels of the partners.
        lam: the weight of ``y_a`` (a Python float in [0, 1]).
    """

    x: Tensor
    y_a: Tensor
    y_b: Tensor
    lam: float


def _uniform_open(n: int, generator: torch.Generator | None, device: torch.device) -> list[float]:
    """``n`` samples of U(0, 1] (``1 − U[0, 1)``, so that their log is finite)."""
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    return (1.0 - u).tolist()


def _log_standard_gamma(a: float, generator: torch.Generator | None, device: torch.device) -> float:
    """``log G`` with ``G ~ Gamma(a, 1)``: Marsaglia & Tsang (2000), boosted for ``a < 1``."""
    log_boost = 0.0
    if a < 1.0:  # Gamma(a) = Gamma(a + 1) · U^(1/a)
        log_boost = math.log(_uniform_open(1, generator, device)[0]) / a
        a += 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:  # acceptance > 95 % per candidate; 4 candidates per round trip
        normals = torch.randn(4, generator=generator, device=device, dtype=torch.float64).tolist()
        uniforms = _uniform_open(4, generator, device)
        for z, u in zip(normals, uniforms):
            v = 1.0 + c * z
            if v <= 0.0:
                continue
            v = v * v * v
            if math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
                return math.log(d * v) + log_boost


def _sample_symmetric_beta(alpha: float, generator: torch.Generator | None, device: torch.device) -> float:
    """``Beta(α, α)`` as ``G1 / (G1 + G2)`` with ``G_i ~ Gamma(α, 1)``, in log space."""
    diff = _log_standard_gamma(alpha, generator, device) - _log_standard_gamma(alpha, generator, device)
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    e = math.exp(diff)
    return e / (1.0 + e)


def mixup(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 0.0,
    generator: torch.Generator | None = None,
) -> MixupBatch:
    """Mixup (Zhang et al., 2018) as HBaR applies it: one ``lam ~ Beta(α, α)`` per batch.

    ``x_mixed = lam·x + (1 − lam)·x[perm]``, ``y_a = y``, ``y_b = y[perm]`` with ``perm`` a random
    permutation (drawn after ``lam``). Train with :func:`mixup_cross_entropy`. With ``alpha == 0``
    (the default: off, for comparisons under the same conditions; HBaR's CIFAR-10 runs use 0.3,
    spec A15) the batch is returned unchanged (``x`` itself, ``y_b = y``, ``lam = 1.0``) and no random
    numbers are drawn.

    ``torch.distributions.Beta`` cannot take a generator, so ``lam`` is sampled from two Gamma
    variables (Marsaglia-Tsang rejection, with the ``U^(1/α)`` boost for α < 1) built from
    ``torch.rand``/``torch.randn`` calls on ``generator``. The global RNG is untouched when a
    generator is given. Reading ``lam`` back is one small host transfer per batch.

    Args:
        x: inputs ``[m, ...]`` (floating point).
        y: labels ``[m, ...]`` (class indices or soft targets).
        alpha: α of ``Beta(α, α)``; ≥ 0, 0 = no mixing.
        generator: the random source, on any device (None: torch's default generator, which then
            advances like any torch sampling call).

    Returns:
        :class:`MixupBatch` ``(x, y_a, y_b, lam)``.

    Raises:
        ValueError: ``alpha`` out of range, no batch dimension, or batch sizes differ.
        TypeError: ``x`` is not a floating tensor or ``generator`` is not a ``torch.Generator``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(4, 3, generator=g), torch.arange(4)
        >>> xm, y_a, y_b, lam = mixup(x, y, alpha=0.3, generator=g)
        >>> torch.allclose(xm, lam * x + (1 - lam) * x[y_b]), 0.0 <= lam <= 1.0
        (True, True)
    """
    alpha = _check_number("alpha", alpha)
    generator = _check_generator(generator)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(y, Tensor):
        raise TypeError(f"y: expected a torch.Tensor, got {type(y).__name__}")
    if x.dim() == 0 or y.dim() == 0:
        raise ValueError("x, y: expected tensors with a batch dimension, got a scalar")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"y: expected the batch size of x ({x.shape[0]}), got {y.shape[0]}")
    if alpha == 0.0:
        return MixupBatch(x=x, y_a=y, y_b=y, lam=1.0)
    device = generator.device if generator is not None else torch.device("cpu")
    lam = _sample_symmetric_beta(alpha, generator, device)
    perm = torch.randperm(x.shape[0], generator=generator, device=device).to(x.device)
    mixed = lam * x + (1.0 - lam) * x[perm]
    return MixupBatch(x=mixed, y_a=y, y_b=y[perm.to(y.device)], lam=lam)


def mixup_cross_entropy(logits: Tensor, y_a: Tensor, y_b: Tensor, lam: float) -> Tensor:
    """``lam·CE(logits, y_a) + (1 − lam)·CE(logits, y_b)`` (HBaR's ``mixup_criterion``).

    Args:
        logits: ``[m, C]``.
        y_a: the original labels ``[m]``.
        y_b: the partners' labels ``[m]``.
        lam: the weight of ``y_a``.

    Returns:
        A scalar.

    Example:
        >>> import torch
        >>> logits, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
        >>> bool(torch.isclose(mixup_cross_entropy(logits, y, y.flip(0), 1.0),
        ...                    torch.nn.functional.cross_entropy(logits, y)))
        True
    """
    return lam * F.cross_entropy(logits, y_a) + (1.0 - lam) * F.cross_entropy(logits, y_b)


# ============================================================================= VIB
