"""The IB-RAR regulariser ``α·Σ_l nHSIC(T_l, X) − β·Σ_l nHSIC(T_l, Y)`` (paper Eq. 1/2).

:func:`ib_objective` is the pure function; :class:`HSICBottleneck` holds its configuration.
``R_X`` and ``R_Y`` are computed once per batch and shared by all layers, and the layers' operators
come from one batched solve.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(20, 1, 8, 8, generator=g)
    >>> y = torch.arange(20) % 10
    >>> acts = [torch.rand(20, 16, 4, 4, generator=g), torch.rand(20, 32, generator=g)]
    >>> terms = HSICBottleneck()(acts, x, y, num_classes=10)
    >>> terms.hx.shape, terms.hy.shape
    (torch.Size([2]), torch.Size([2]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins.hsic import (
    Bandwidth,
    Center,
    Kernel,
    centered_kernel,
    flatten_samples,
    hsic_operator,
    nhsic_from_operators,
    nocco_operator,
)

__all__ = ["IBTerms", "HSICBottleneck", "ib_objective", "labels_to_targets"]


class IBTerms(NamedTuple):
    """The value of the IB regulariser and its per-layer parts.

    Attributes:
        loss: ``α·Σ hx − β·Σ hy`` (a differentiable scalar).
        hx: ``nHSIC(T_l, X)`` per layer, shape ``[L]`` (zeros when α = 0 and not computed).
        hy: ``nHSIC(T_l, Y)`` per layer, shape ``[L]`` (zeros when β = 0 and not computed).

    Example:
        >>> t = IBTerms(loss=torch.tensor(-0.5), hx=torch.tensor([40.0]), hy=torch.tensor([8.0]))
        >>> float(t.hy.sum())
        8.0
    """

    loss: Tensor
    hx: Tensor
    hy: Tensor


def _check_labels(y: Tensor, num_classes: int) -> None:
    """Validate labels for :func:`labels_to_targets` (range checked on CPU tensors only: no host read elsewhere)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes: expected an int >= 2, got {num_classes!r}")
    if not isinstance(y, Tensor):
        raise TypeError(f"y: expected a tensor of class indices [batch] or targets [batch, C], got {type(y).__name__}")
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"y: expected integer class indices or floating-point targets, got dtype {y.dtype}")
    if y.is_floating_point():
        if y.dim() != 2 or y.shape[1] != num_classes:
            raise ValueError(
                f"y: float targets must have shape [batch, num_classes={num_classes}], got {tuple(y.shape)}"
            )
        return
    if y.dim() != 1:
        raise ValueError(f"y: expected class indices of shape [batch], got shape {tuple(y.shape)}")
    if y.device.type == "cpu" and y.numel() and bool(((y < 0) | (y >= num_classes)).any()):
        raise ValueError(
            f"y: labels must lie in [0, num_classes) = [0, {num_classes}), got values in "
            f"[{int(y.min())}, {int(y.max())}]"
        )


def labels_to_targets(y: Tensor, num_classes: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot targets from class indices, validating their range (soft targets pass through).

    Args:
        y: class indices ``[m]`` (integer) or soft/one-hot targets ``[m, num_classes]`` (float).
        num_classes: the number of classes (fixed, not inferred from the batch; spec A12).
        dtype: floating dtype of the result.

    Returns:
        Targets ``[m, num_classes]``.

    Raises:
        ValueError: labels outside ``[0, num_classes)`` (checked on CPU tensors; on accelerators
            the check is left to ``one_hot``'s device-side assert, so that a training step never
            waits on the host), or a shape that is neither.
        TypeError: ``y`` is not a tensor, or holds booleans or complex numbers (ambiguous as labels).

    Example:
        >>> labels_to_targets(torch.tensor([0, 2]), 3)
        tensor([[1., 0., 0.],
                [0., 0., 1.]])
    """
    _check_labels(y, num_classes)
    if y.is_floating_point():
        return y.to(dtype)
    # On accelerators the range check would read a value on the host (a stall per training step);
    # there out-of-range labels trip one_hot's device-side assert instead, as in F.cross_entropy.
    return F.one_hot(y.long(), num_classes).to(dtype)


def ib_objective(
    activations: Sequence[Tensor],
    x: Tensor,
    y_targets: Tensor,
    *,
    alpha: float = 0.008,
    beta: float = 0.08,
    sigma: float = 5.0,
    eps: float = 1e-5,
    t_kernel: Kernel = "gaussian",
    x_kernel: Kernel = "gaussian",
    y_kernel: Kernel = "linear",
    center: Center = "right",
    bandwidth: Bandwidth = "scaled",
) -> IBTerms:
    """``α·Σ_l nHSIC(T_l, X) − β·Σ_l nHSIC(T_l, Y)`` over the given activations.

    Gradients flow only through the activations; ``x`` and ``y_targets`` are constants.

    Args:
        activations: the layers' outputs ``T_l``, each ``[m, ...]``.
        x: the inputs ``[m, ...]`` (clean inputs in the authors' code).
        y_targets: one-hot (or soft) targets ``[m, C]`` (see :func:`labels_to_targets`).
        alpha: weight of ``I(X, T)`` (minimised).
        beta: weight of ``I(Y, T)`` (maximised).
        sigma: Gaussian bandwidth (scaled by the feature dimension).
        eps: the regulariser ε.
        t_kernel: kernel on the activations.
        x_kernel: kernel on the inputs.
        y_kernel: kernel on the targets (``"linear"`` in the PGD-AT and masked CE scripts,
            ``"gaussian"`` in TRADES/MART/CE-without-mask; spec §2.1).
        center: ``"right"`` or ``"both"``.
        bandwidth: ``"scaled"`` or ``"median"``.

    Returns:
        :class:`IBTerms`.

    Raises:
        ValueError: no activations, mismatched batch sizes, fewer than 2 samples, 0-d tensors,
            negative weights.
        TypeError: an input is not a floating-point tensor.

    Example:
        >>> x, t = torch.rand(8, 5), torch.rand(8, 3)
        >>> y = torch.eye(4)[torch.arange(8) % 4]
        >>> float(ib_objective([t], x, y, alpha=0.0, beta=0.0).loss)
        0.0
    """
    if not activations:
        raise ValueError("activations: expected at least one layer output, got none")
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    for name, t in (("x", x), ("y_targets", y_targets), *((f"activation {i}", t) for i, t in enumerate(activations))):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a floating-point tensor, got {type(t).__name__}")
        if not t.is_floating_point() and not (name == "x" and alpha == 0):  # X is unused when alpha = 0
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
        if t.dim() == 0:
            raise ValueError(f"{name}: expected a batch [m, ...], got a 0-d tensor (a scalar)")
    m = x.shape[0]
    for i, t in enumerate(activations):
        if t.shape[0] != m:
            raise ValueError(f"activation {i} has batch size {t.shape[0]}, but x has {m}")
    if y_targets.shape[0] != m:
        raise ValueError(f"y has batch size {y_targets.shape[0]}, but x has {m}")

    opts = {"sigma": sigma, "bandwidth": bandwidth, "center": center}
    kernels = [centered_kernel(flatten_samples(t), kernel=t_kernel, **opts) for t in activations]
    dtype = kernels[0].dtype
    for k in kernels[1:]:
        dtype = torch.promote_types(dtype, k.dtype)
    r_t = nocco_operator(torch.stack([k.to(dtype) for k in kernels]), eps=eps)  # [L, m, m]
    zeros = r_t.new_zeros(r_t.shape[0])
    hx = hy = zeros
    loss = zeros.sum()
    if alpha > 0:
        r_x = hsic_operator(x.detach(), kernel=x_kernel, eps=eps, **opts).to(dtype)
        hx = nhsic_from_operators(r_t, r_x)
        loss = loss + alpha * hx.sum()
    if beta > 0:
        r_y = hsic_operator(y_targets.detach(), kernel=y_kernel, eps=eps, **opts).to(dtype)
        hy = nhsic_from_operators(r_t, r_y)
        loss = loss - beta * hy.sum()
    return IBTerms(loss=loss, hx=hx, hy=hy)


class HSICBottleneck(nn.Module):
    """Configuration holder for the IB-RAR regulariser (see :func:`ib_objective`).

    Defaults are the authors': α = 0.008, β = 0.08, σ = 5, ε = 1e-5, Gaussian kernels on T and X,
    one-sided centring, d-scaled bandwidth, and a linear kernel on Y.

    Args:
        alpha: weight of ``I(X, T)``; ≥ 0.
        beta: weight of ``I(Y, T)``; ≥ 0.
        sigma: Gaussian bandwidth; > 0.
        eps: the regulariser ε; > 0.
        y_kernel: ``"linear"`` or ``"gaussian"``.
        x_kernel: kernel on X.
        t_kernel: kernel on the activations.
        center: ``"right"`` or ``"both"``.
        bandwidth: ``"scaled"`` or ``"median"``.
        num_classes: number of classes for one-hot targets; may instead be given per call.

    Raises:
        ValueError: an argument is out of range or unknown.

    Example:
        >>> b = HSICBottleneck(alpha=0.0, beta=0.1, y_kernel="gaussian")
        >>> b
        HSICBottleneck(alpha=0.0, beta=0.1, sigma=5.0, eps=1e-05, y_kernel='gaussian', num_classes=None)
    """

    def __init__(
        self,
        *,
        alpha: float = 0.008,
        beta: float = 0.08,
        sigma: float = 5.0,
        eps: float = 1e-5,
        y_kernel: Kernel = "linear",
        x_kernel: Kernel = "gaussian",
        t_kernel: Kernel = "gaussian",
        center: Center = "right",
        bandwidth: Bandwidth = "scaled",
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                value >= 0 and math.isfinite(value)
            ):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        for name, value in (("sigma", sigma), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                value > 0 and math.isfinite(value)
            ):
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        for name, value, choices in (
            ("y_kernel", y_kernel, ("linear", "gaussian")),
            ("x_kernel", x_kernel, ("linear", "gaussian")),
            ("t_kernel", t_kernel, ("linear", "gaussian")),
            ("center", center, ("right", "both")),
            ("bandwidth", bandwidth, ("scaled", "median")),
        ):
            if value not in choices:
                raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
            raise ValueError(f"num_classes: expected None or an int >= 2, got {num_classes!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.sigma = float(sigma)
        self.eps = float(eps)
        self.y_kernel: Kernel = y_kernel
        self.x_kernel: Kernel = x_kernel
        self.t_kernel: Kernel = t_kernel
        self.center: Center = center
        self.bandwidth: Bandwidth = bandwidth
        self.num_classes = num_classes

    def config(self) -> dict[str, object]:
        """The configuration as a JSON-serialisable dict.

        Returns:
            Every constructor argument and its value.

        Example:
            >>> HSICBottleneck().config()["beta"]
            0.08
        """
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "sigma": self.sigma,
            "eps": self.eps,
            "y_kernel": self.y_kernel,
            "x_kernel": self.x_kernel,
            "t_kernel": self.t_kernel,
            "center": self.center,
            "bandwidth": self.bandwidth,
            "num_classes": self.num_classes,
        }

    def forward(
        self,
        activations: Sequence[Tensor],
        x: Tensor,
        y: Tensor,
        *,
        num_classes: int | None = None,
    ) -> IBTerms:
        """Evaluate the regulariser.

        Args:
            activations: layer outputs ``T_l``, each ``[m, ...]``.
            x: inputs ``[m, ...]``.
            y: class indices ``[m]`` or targets ``[m, C]``.
            num_classes: overrides the configured number of classes.

        Returns:
            :class:`IBTerms`.

        Raises:
            ValueError: no number of classes is known, or the inputs are inconsistent.

        Example:
            >>> t, x = torch.rand(6, 4), torch.rand(6, 3)
            >>> HSICBottleneck()([t], x, torch.tensor([0, 1, 0, 1, 0, 1]), num_classes=2).loss.dim()
            0
        """
        classes = num_classes or self.num_classes
        if classes is None:
            raise ValueError("num_classes: the number of classes is needed for one-hot targets, got None")
        targets = labels_to_targets(y, classes, dtype=x.dtype if x.is_floating_point() else torch.float32)
        return ib_objective(
            activations,
            x,
            targets,
            alpha=self.alpha,
            beta=self.beta,
            sigma=self.sigma,
            eps=self.eps,
            t_kernel=self.t_kernel,
            x_kernel=self.x_kernel,
            y_kernel=self.y_kernel,
            center=self.center,
            bandwidth=self.bandwidth,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, sigma={self.sigma}, eps={self.eps}, "
            f"y_kernel={self.y_kernel!r}, num_classes={self.num_classes}"
        )
