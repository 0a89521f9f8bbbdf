"""The entropic retraining loss ``CE + λ(Ê_T − σ·E_T_ref)²``: :class:`EntropicLoss`."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins.entropic.entropy import _REDUCTIONS, _TARGETS, EntropyMode, _check_mode, entropy_flow
from ib_plugins.errors import NonFiniteActivationError

# --------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------


class EntropicLossTerms(NamedTuple):
    """Components of :class:`EntropicLoss` (all tensors, with autograd history).

    Attributes:
        loss: ``ce + lam * penalty`` (scalar).
        ce: the mean cross-entropy (scalar).
        et: per-sample ``E_T_hat``, shape ``(B,)``.
        et_mean: ``et.mean()`` (scalar).
        penalty: ``(et_mean - target)**2`` or ``mean((et - target)**2)`` (scalar).
        target: the frozen target value (scalar, no gradient).

    Example:
        >>> import torch
        >>> t = EntropicLossTerms(*[torch.tensor(0.0)] * 6)
        >>> t._fields[:3]
        ('loss', 'ce', 'et')
    """

    loss: Tensor
    ce: Tensor
    et: Tensor
    et_mean: Tensor
    penalty: Tensor
    target: Tensor


class EntropicLoss(nn.Module):
    """Entropic-retraining loss ``CE(logits, y) + lam * (E_T_hat - sigma * E_T_ref)**2`` (Eq. 9-11).

    ``E_T_hat`` is the per-sample :func:`entropy_flow` of the model being retrained, averaged over
    the batch (never summed: the paper's batch sizes 4 and 64 would otherwise rescale it).
    ``E_T_ref`` is a constant, normally :func:`compute_reference_entropy_flow` of the pretrained
    model on the training set, stored as a frozen buffer.

    Because Eq. 8 telescopes, only the first hooked layer and the softmax output get gradient
    from the penalty, and M acts as a ``1/(M-1)**2`` factor on ``lam``.

    The paper picks ``sigma > 1`` "to increase E_T", which holds only when ``E_T_ref > 0``. When
    ``E_T_ref <= 0`` a :class:`UserWarning` is issued; ``target="abs"`` then uses
    ``E_T_ref + |E_T_ref| * (sigma - 1)``, which moves up for ``sigma > 1`` whatever the sign
    (not faithful to the paper; identical to it when ``E_T_ref > 0``).

    Args:
        reference: ``E_T_ref``, a finite real number.
        lam: ``lambda >= 0``, weight of the penalty (paper: 1).
        sigma: ``sigma > 0``, target factor (paper: 1.65 for MNIST, 1.01 for CIFAR-10).
        reduction: ``"batch_mean"`` for ``(mean_b E_T_hat - target)**2`` (paper, default) or
            ``"per_sample"`` for ``mean_b (E_T_hat_b - target)**2``.
        target: ``"faithful"`` for ``sigma * E_T_ref`` (default) or ``"abs"`` (see above).
        mode: treatment of negative activations, see :func:`entropy_terms`.
        check_finite: raise :class:`~ib_plugins.errors.NonFiniteActivationError` naming the cause
            when the loss is NaN/inf (a non-finite activation or logit, or a penalty beyond the
            dtype's range); None = on CPU tensors only (free there; on an accelerator it is a host
            read), True = everywhere, False = never (NaN/inf then propagate).

    Raises:
        ValueError: an argument is out of range or not one of the listed options; ``reference``
            (or the target ``sigma * reference``) so large that the squared penalty would overflow
            the default dtype (``|target| > sqrt(finfo.max) / 2``, about 9.2e18 in float32).
        TypeError: ``reference``, ``lam`` or ``sigma`` is not a real number, or ``check_finite``
            not a bool/None.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> y = torch.tensor([0, 1])
        >>> hs = [torch.full((2, 3), 0.5), torch.softmax(logits, dim=1)]
        >>> loss_fn = EntropicLoss(reference=0.5, lam=1.0, sigma=1.65)
        >>> terms = loss_fn.terms(logits, y, hs)
        >>> round(terms.target.item(), 4), round(terms.et_mean.item(), 4)
        (0.825, 0.6744)
        >>> torch.allclose(loss_fn(logits, y, hs), terms.ce + terms.penalty)
        True
    """

    reference: Tensor

    def __init__(
        self,
        *,
        reference: float,
        lam: float = 1.0,
        sigma: float = 1.65,
        reduction: Literal["batch_mean", "per_sample"] = "batch_mean",
        target: Literal["faithful", "abs"] = "faithful",
        mode: EntropyMode = "relu",
        check_finite: bool | None = None,
    ) -> None:
        super().__init__()
        ref = _real("reference", reference)
        lam_f = _real("lam", lam)
        sigma_f = _real("sigma", sigma)
        if not math.isfinite(ref):
            raise ValueError(f"reference: expected a finite E_T_ref, got {ref}")
        if not (math.isfinite(lam_f) and lam_f >= 0):
            raise ValueError(f"lam: expected a finite number >= 0, got {lam_f}")
        if not (math.isfinite(sigma_f) and sigma_f > 0):
            raise ValueError(f"sigma: expected a finite number > 0, got {sigma_f}")
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"reduction: expected one of {', '.join(repr(r) for r in _REDUCTIONS)}, "
                f"got {reduction!r}"
            )
        if target not in _TARGETS:
            raise ValueError(
                f"target: expected one of {', '.join(repr(t) for t in _TARGETS)}, got {target!r}"
            )
        _check_mode(mode)
        if check_finite is not None and not isinstance(check_finite, bool):
            raise TypeError(f"check_finite: expected None, True or False, got {check_finite!r}")
        dtype = torch.get_default_dtype()
        target_value = ref + abs(ref) * (sigma_f - 1.0) if target == "abs" else ref * sigma_f
        limit = math.sqrt(torch.finfo(dtype).max) / 2.0
        if not (abs(ref) <= limit and abs(target_value) <= limit):
            raise ValueError(
                f"reference: expected |E_T_ref| and |target| <= {limit:.3g} so that the squared penalty "
                f"(E_T_hat - target)**2 fits in {dtype}, got reference={ref:.4g} (target {target_value:.4g} "
                f"with sigma={sigma_f:g})"
            )
        if ref <= 0 and target == "faithful":
            effect = (
                "sigma has no effect (the target is 0 for every sigma, also with target='abs')"
                if ref == 0
                else f"sigma > 1 then *decreases* the target sigma * E_T_ref (sigma={sigma_f:g} "
                f"gives {sigma_f * ref:.4g}), the opposite of the paper's intent"
            )
            warnings.warn(
                f"EntropicLoss: reference E_T_ref = {ref:.4g} <= 0, so {effect}. Pass "
                "target='abs' to use E_T_ref + |E_T_ref| * (sigma - 1), which increases with "
                "sigma > 1 (not faithful to the paper).",
                UserWarning,
                stacklevel=2,
            )
        self.lam = lam_f
        self.sigma = sigma_f
        self.reduction = reduction
        self.target = target
        self.mode = mode
        self.check_finite = check_finite
        self.register_buffer("reference", torch.tensor(ref, dtype=dtype))

    def extra_repr(self) -> str:
        """Summarise the configuration for ``repr``.

        Example:
            >>> EntropicLoss(reference=1.0)
            EntropicLoss(reference=1.0, lam=1.0, sigma=1.65, reduction='batch_mean', target='faithful', mode='relu')
        """
        return (
            f"reference={round(float(self.reference), 6)!r}, lam={self.lam!r}, "
            f"sigma={self.sigma!r}, "
            f"reduction={self.reduction!r}, target={self.target!r}, mode={self.mode!r}"
        )

    def target_value(self) -> Tensor:
        """The frozen target of ``E_T_hat``: ``sigma * E_T_ref`` or its ``"abs"`` variant.

        Returns:
            A scalar tensor on the buffer's device.

        Example:
            >>> EntropicLoss(reference=2.0, sigma=1.5).target_value()
            tensor(3.)
        """
        ref = self.reference
        if self.target == "abs":
            return ref + ref.abs() * (self.sigma - 1.0)
        return ref * self.sigma

    def terms(self, logits: Tensor, targets: Tensor, hs: Sequence[Tensor]) -> EntropicLossTerms:
        """Compute the loss and its components (no host synchronisation off the CPU; see ``check_finite``).

        Args:
            logits: model output, shape ``(B, C)`` (or ``(B, C, *)``).
            targets: class indices ``(B,)`` (or class probabilities), as for
                :func:`torch.nn.functional.cross_entropy`.
            hs: ``[h_1, ..., h_{M-1}, softmax(logits)]`` from :class:`EntropyProbe`; ``M >= 2``.

        Returns:
            The :class:`EntropicLossTerms`.

        Raises:
            ValueError: ``hs`` has fewer than 2 layers or a batch size different from ``logits``;
                an empty batch.
            TypeError: ``logits`` is not a floating-point tensor, ``targets`` not a tensor (or
                boolean labels).
            NonFiniteActivationError: the loss is NaN/inf (see ``check_finite``).

        Example:
            >>> import torch
            >>> logits = torch.zeros(2, 2)
            >>> hs = [torch.full((2, 2), 0.5), torch.softmax(logits, dim=1)]
            >>> t = EntropicLoss(reference=1.0, lam=0.0).terms(logits, torch.tensor([0, 1]), hs)
            >>> round(t.loss.item(), 4) == round(t.ce.item(), 4) == 0.6931
            True
        """
        if not isinstance(logits, Tensor) or not logits.is_floating_point():
            got = f"dtype {logits.dtype}" if isinstance(logits, Tensor) else type(logits).__name__
            raise TypeError(f"logits: expected a floating-point tensor (B, C), got {got}")
        if logits.dim() < 2 or logits.shape[0] == 0:
            raise ValueError(f"logits: expected a non-empty batch of shape (B, C), got shape {tuple(logits.shape)}")
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets: expected a tensor of class indices (B,), got {type(targets).__name__}")
        if targets.dtype == torch.bool or targets.is_complex():
            raise TypeError(
                f"targets: expected integer class indices or class probabilities, got dtype {targets.dtype}"
            )
        et = entropy_flow(hs, mode=self.mode)  # type: ignore[arg-type]
        if et.shape[0] != logits.shape[0]:
            raise ValueError(
                f"hs: expected batch size {logits.shape[0]} (that of logits), got {et.shape[0]}"
            )
        ce = F.cross_entropy(logits, targets)
        target = self.target_value().to(device=et.device, dtype=et.dtype)
        et_mean = et.mean()
        if self.reduction == "batch_mean":
            penalty = (et_mean - target) ** 2
        else:
            penalty = ((et - target) ** 2).mean()
        loss = ce + self.lam * penalty
        check_finite = getattr(self, "check_finite", None)  # absent from modules pickled by older versions
        check = check_finite if check_finite is not None else loss.device.type == "cpu"
        if check and not bool(torch.isfinite(loss)):
            _raise_non_finite(logits, hs, et_mean, target)
        return EntropicLossTerms(loss, ce, et, et_mean, penalty, target)

    def forward(self, logits: Tensor, targets: Tensor, hs: Sequence[Tensor]) -> Tensor:
        """Return ``CE + lam * penalty``; see :meth:`terms` for the arguments and components.

        Args:
            logits: model output, shape ``(B, C)``.
            targets: class indices ``(B,)``.
            hs: ``[h_1, ..., h_{M-1}, softmax(logits)]``.

        Returns:
            The scalar loss.

        Example:
            >>> import torch
            >>> logits = torch.zeros(2, 2)
            >>> hs = [torch.full((2, 2), 0.5), torch.softmax(logits, dim=1)]
            >>> EntropicLoss(reference=1.0)(logits, torch.tensor([0, 1]), hs).shape
            torch.Size([])
        """
        return self.terms(logits, targets, hs).loss


def _raise_non_finite(logits: Tensor, hs: Sequence[Tensor], et_mean: Tensor, target: Tensor) -> None:
    """Name what made the entropic loss NaN/inf (called only once it is; reads values on the host)."""
    for i, h in enumerate(hs):
        if not bool(h.detach().isfinite().all()):
            raise NonFiniteActivationError(
                f"hs[{i}]: expected finite activations, got NaN or inf; the entropic loss would be NaN "
                "(lower the learning rate or check the inputs)"
            )
    if not bool(logits.detach().isfinite().all()):
        raise NonFiniteActivationError("logits: expected finite values, got NaN or inf; the entropic loss would be NaN")
    raise NonFiniteActivationError(
        f"hs: the activations are finite but the entropic loss overflows {et_mean.dtype} "
        f"(E_T_hat = {float(et_mean):.4g}, target = {float(target):.4g}): (E_T_hat - target)**2 or "
        "h log h exceeds the dtype's range; activations this large are outside what E_T can represent"
    )


def _real(arg: str, value: Any) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex():
            raise TypeError(
                f"{arg}: expected a real number, got a tensor of shape {tuple(value.shape)}"
            )
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{arg}: expected a real number, got {type(value).__name__}")
    return float(value)
