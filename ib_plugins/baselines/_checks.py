"""Argument checks of the baselines (name first; shared by HBaR, mixup and VIB)."""

from __future__ import annotations

import math

import torch


# ----------------------------------------------------------------------------- validation helpers
def _check_number(name: str, value: object, *, positive: bool = False) -> float:
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    ok = value > 0 if positive else value >= 0
    if not (ok and math.isfinite(value)):
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return float(value)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def _check_generator(value: object) -> torch.Generator | None:
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"generator: expected None or a torch.Generator, got {type(value).__name__}")
    return value


# ============================================================================= HBaR
