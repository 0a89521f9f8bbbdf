"""Argument validation shared across the library: the ``_check_*`` helpers of more than one module.

Each raises ``TypeError``/``ValueError`` with a message that names the argument and says "expected X,
got Y" (docs/CONVENTIONS.md); the texts are part of the tested behaviour.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn
from torch import Tensor


# Numbers
def _check_eps(eps: object, norm: str, *, arg: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{arg}: expected a float, got {type(eps).__name__}")
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{arg}: expected a finite value >= 0, got {eps!r}")
    if norm == "linf" and eps > 1:
        raise ValueError(f"{arg}: expected an L-inf radius in [0, 1] for inputs in [0, 1], got {eps!r}")
    return eps


def _check_count(value: object, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{arg}: expected an int >= 1 (a count of iterations), got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{arg}: expected an int >= 1 (a count of iterations), got {value}")
    return int(value)


def _check_int(value: object, arg: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg}: expected an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{arg}: expected an int >= {minimum}, got {value}")
    return value



# Models and attack inputs
def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return model


def _check_xy(
    x: object, y: object, *, reason: str = "torchattacks would silently clamp them"
) -> tuple[Tensor, Tensor]:
    """Validate an attack's inputs (shared with the AutoAttack adapter): x in [0, 1], y class indices."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if not isinstance(y, Tensor):
        raise TypeError(f"y: expected a torch.Tensor, got {type(y).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if x.device.type == "meta":
        raise ValueError(
            "x: expected a tensor with values (on the CPU or an accelerator), got a tensor on the meta device"
        )
    if y.device != x.device:
        raise ValueError(f"y: expected a tensor on x's device ({x.device}), got {y.device}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x: expected a non-empty batch [N, ...], got shape {list(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y: expected class indices of shape [{x.shape[0]}], got shape {list(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y: expected an integer tensor of class indices, got dtype {y.dtype}")
    if bool(torch.isnan(x).any()):
        raise ValueError("x: expected values in [0, 1], got NaN")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(
            f"x: expected values in [0, 1] ({reason}), got min {lo:.4g}, max {hi:.4g}; inputs are not clamped "
            "silently: put any normalisation inside the model (ib_plugins.models.Normalize)"
        )
    if int(y.min()) < 0:
        raise ValueError(f"y: expected class indices >= 0, got {int(y.min())}")
    return x, y.long()


def _check_model_dtype(model: nn.Module, x: Tensor) -> None:
    """The attacks feed ``x`` (and perturbations of its dtype) to the model: the dtypes must agree."""
    for t in model.parameters():
        if t.is_floating_point():
            if t.dtype != x.dtype:
                raise TypeError(
                    f"x: expected dtype {t.dtype} (the dtype of the model's parameters), got {x.dtype}; "
                    f"convert one of them (x.to({t.dtype}) or model.to({x.dtype}))"
                )
            return


def _check_labels_fit(y: Tensor, n_out: int) -> None:
    y_max = int(y.max())
    if y_max >= n_out:
        raise ValueError(f"y: expected class indices < {n_out} (the model's outputs), got {y_max}")

