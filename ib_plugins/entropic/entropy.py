"""The entropic maths: a layer's entropy (Eq. 6), the entropy flow ``E_T`` (Eq. 7) and its normalised form."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

EntropyMode = Literal["relu", "abs", "strict"]
"""How :func:`entropy_terms` treats negative activations: ``"relu"``, ``"abs"`` or ``"strict"``."""

_MODES: tuple[str, ...] = ("relu", "abs", "strict")
_REDUCTIONS: tuple[str, ...] = ("batch_mean", "per_sample")
_TARGETS: tuple[str, ...] = ("faithful", "abs")


# --------------------------------------------------------------------------------------------
# validation helpers (private)
# --------------------------------------------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(
            f"mode: expected one of {', '.join(repr(m) for m in _MODES)}, got {mode!r}"
        )


def _label(name: str | None, index: int | None = None) -> str:
    if name is not None:
        return repr(name)
    if index is not None:
        return f"hs[{index}]"
    return "the activation"


def _check_activation(h: Any, label: str) -> None:
    if not isinstance(h, Tensor):
        raise TypeError(f"{label}: expected a torch.Tensor, got {type(h).__name__}")
    if not h.is_floating_point():
        raise TypeError(f"{label}: expected a real floating-point tensor, got dtype {h.dtype}")


def _names(names: Sequence[str] | None, m: int) -> list[str]:
    return list(names) if names is not None else [f"hs[{i}]" for i in range(m)]


def _as_list(hs: Sequence[Tensor], names: Sequence[str] | None) -> tuple[list[Tensor], list[str]]:
    if isinstance(hs, Tensor) or not isinstance(hs, Iterable):
        raise TypeError(
            f"hs: expected a sequence of per-layer tensors [h_1, ..., h_M], got {type(hs).__name__}"
        )
    hs = list(hs)
    if names is None:
        labels = [_label(None, i) for i in range(len(hs))]
    else:
        if isinstance(names, str) or len(names) != len(hs):
            raise ValueError(
                f"names: expected a sequence of {len(hs)} layer names (one per tensor in hs), "
                f"got {names!r}"
            )
        labels = [_label(n) for n in names]
    batch: int | None = None
    for h, label in zip(hs, labels):
        _check_activation(h, label)
        if h.dim() < 2:
            raise ValueError(
                f"{label}: expected a tensor of shape (B, ...) with at least 2 dimensions, "
                f"got shape {tuple(h.shape)}"
            )
        if batch is None:
            batch = h.shape[0]
        elif h.shape[0] != batch:
            raise ValueError(
                f"{label}: expected batch size {batch} (that of the first layer), "
                f"got shape {tuple(h.shape)}"
            )
    return hs, labels


# --------------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------------


def entropy_terms(h: Tensor, *, mode: EntropyMode = "relu", name: str | None = None) -> Tensor:
    """Elementwise ``phi(h) = h log h`` with ``0 log 0 := 0`` and a NaN-free gradient (Eq. 6).

    Computed as ``where(h <= 0, 0, h * log(clamp_min(h, tiny)))`` (``tiny`` being the dtype's
    smallest normal number): value and gradient are finite at 0 and below, the gradient is
    ``log(h) + 1`` for ``h > 0`` and 0 elsewhere. NaN inputs give NaN.

    Args:
        h: activations of any shape, real floating point.
        mode: treatment of negative values: ``"relu"`` (``phi(max(h, 0))``, negatives give 0),
            ``"abs"`` (``|h| log |h|``) or ``"strict"`` (raise if any ``h < 0``; this check
            reads a value back from the device).
        name: layer name used in error messages.

    Returns:
        ``phi`` of every element (note the sign: ``E(h) = -sum phi``).

    Shape:
        Same as ``h``.

    Raises:
        ValueError: ``mode`` is unknown, or ``mode="strict"`` and ``h`` has negative values.
        TypeError: ``h`` is not a real floating-point tensor.

    Example:
        >>> import torch
        >>> h = torch.tensor([0.0, 0.5, 1.0, -2.0])
        >>> entropy_terms(h)
        tensor([ 0.0000, -0.3466,  0.0000,  0.0000])
        >>> entropy_terms(h, mode="abs")
        tensor([ 0.0000, -0.3466,  0.0000,  1.3863])
        >>> entropy_terms(h, mode="strict", name="conv1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: mode='strict': layer 'conv1' has negative activations (min -2); ...
    """
    _check_mode(mode)
    label = _label(name)
    _check_activation(h, f"layer {label}")
    if mode == "strict":
        if bool((h < 0).any()):
            raise ValueError(
                f"mode='strict': layer {label} has negative activations "
                f"(min {h.min().item():.4g}); "
                "expected h >= 0 (-h log h is undefined below 0). Hook the output of a "
                "non-negative activation, or pass mode='relu' (negatives contribute 0) or "
                "mode='abs' (|h| log |h|)"
            )
    elif mode == "abs":
        h = h.abs()
    tiny = torch.finfo(h.dtype).tiny
    return torch.where(h <= 0, 0.0, h * torch.log(h.clamp_min(tiny)))


def layer_entropy(h: Tensor, *, mode: EntropyMode = "relu", name: str | None = None) -> Tensor:
    """Per-sample layer entropy ``E(h) = -sum_j phi(h_j)`` (Eq. 6) over all non-batch elements.

    Args:
        h: activations of one layer, batch first.
        mode: treatment of negative values, see :func:`entropy_terms`.
        name: layer name used in error messages.

    Returns:
        ``E(h)`` for every sample.

    Shape:
        ``h``: ``(B, *)`` with at least 2 dimensions; output: ``(B,)``.

    Raises:
        ValueError: ``h`` has fewer than 2 dimensions, ``mode`` is unknown, or ``mode="strict"``
            and ``h`` has negative values.
        TypeError: ``h`` is not a real floating-point tensor.

    Example:
        >>> import torch
        >>> p = torch.full((2, 4), 0.25)          # uniform distributions over 4 classes
        >>> layer_entropy(p)                      # log(4) nats
        tensor([1.3863, 1.3863])
    """
    label = _label(name)
    _check_activation(h, f"layer {label}")
    if h.dim() < 2:
        raise ValueError(
            f"layer {label}: expected a tensor of shape (B, ...) with at least 2 dimensions, "
            f"got shape {tuple(h.shape)}"
        )
    return -entropy_terms(h, mode=mode, name=name).flatten(1).sum(dim=1)


def entropy_flow_terms(
    hs: Sequence[Tensor], *, mode: EntropyMode = "relu", names: Sequence[str] | None = None
) -> Tensor:
    """The M-1 unsimplified terms ``E(h_i) - E(h_{i+1})`` of Eq. 8, per sample.

    Their mean over the last dimension equals :func:`entropy_flow` (the telescoping identity);
    they are useful for inspecting how the value changes layer by layer.

    Args:
        hs: ``[h_1, ..., h_M]``, the hooked layer outputs in forward order, the last being
            ``softmax(logits)``; ``M >= 2``.
        mode: treatment of negative values, see :func:`entropy_terms`.
        names: optional layer names (one per tensor) for error messages.

    Returns:
        The consecutive differences.

    Shape:
        each ``h_i``: ``(B, *)``; output: ``(B, M-1)``.

    Raises:
        ValueError: fewer than 2 layers, mismatched batch sizes, or an error of
            :func:`layer_entropy`.
        TypeError: ``hs`` is not a sequence of real floating-point tensors.

    Example:
        >>> import torch
        >>> hs = [torch.full((1, 2), 0.5), torch.full((1, 4), 0.5), torch.full((1, 2), 0.5)]
        >>> entropy_flow_terms(hs)
        tensor([[-0.6931,  0.6931]])
        >>> entropy_flow_terms(hs).mean(dim=1) == entropy_flow(hs)
        tensor([True])
    """
    hs, _ = _as_list(hs, names)
    _check_mode(mode)
    if len(hs) < 2:
        raise ValueError(
            f"hs: expected at least 2 layers (E_T needs M >= 2: first hooked layer ... output "
            f"softmax), got {len(hs)}"
        )
    ents = [layer_entropy(h, mode=mode, name=n) for h, n in zip(hs, _names(names, len(hs)))]
    e = torch.stack(ents, dim=1)
    return e[:, :-1] - e[:, 1:]


def entropy_flow(
    hs: Sequence[Tensor], *, mode: EntropyMode = "relu", names: Sequence[str] | None = None
) -> Tensor:
    """Per-sample entropy flow ``E_T`` (Eq. 8), by its telescoped form.

    ``E_T = (1/(M-1)) sum_{i=1}^{M-1} [E(h_i) - E(h_{i+1})] = (E(h_1) - E(h_M)) / (M-1)``.
    Only the first and the last layer enter the value; the intermediate layers cancel and count
    only through M (so ``lam`` in :class:`EntropicLoss` acts with weight ``1/(M-1)**2``). They are
    still validated (batch size, dtype and, with ``mode="strict"``, sign). Not normalised per
    layer, as in the paper.

    Args:
        hs: ``[h_1, ..., h_M]``, the hooked layer outputs in forward order, the last being
            ``softmax(logits)``; ``M >= 2``.
        mode: treatment of negative values, see :func:`entropy_terms`.
        names: optional layer names (one per tensor) for error messages.

    Returns:
        ``E_T`` for every sample.

    Shape:
        each ``h_i``: ``(B, *)``; output: ``(B,)``.

    Raises:
        ValueError: fewer than 2 layers, mismatched batch sizes, an unknown ``mode``, or
            ``mode="strict"`` and a layer has negative values.
        TypeError: ``hs`` is not a sequence of real floating-point tensors.

    Example:
        >>> import torch
        >>> h1 = torch.tensor([[0.5, 0.5, 0.0]])     # E(h1) = log 2
        >>> out = torch.tensor([[1.0, 0.0]])         # a confident prediction: E = 0
        >>> entropy_flow([h1, out])
        tensor([0.6931])
        >>> entropy_flow([h1, torch.rand(1, 7), out])  # the middle layer only sets M = 3
        tensor([0.3466])
    """
    hs, _ = _as_list(hs, names)
    _check_mode(mode)
    m = len(hs)
    if m < 2:
        raise ValueError(
            f"hs: expected at least 2 layers (E_T needs M >= 2: first hooked layer ... output "
            f"softmax), got {m}"
        )
    labels = _names(names, m)
    if mode == "strict":
        for i in range(1, m - 1):
            entropy_terms(hs[i], mode="strict", name=labels[i])
    first = layer_entropy(hs[0], mode=mode, name=labels[0])
    last = layer_entropy(hs[-1], mode=mode, name=labels[-1])
    return (first - last) / (m - 1)


def normalized_entropy(
    hs: Sequence[Tensor], *, mode: EntropyMode = "relu", names: Sequence[str] | None = None
) -> Tensor:
    """Per-sample normalised network entropy ``E_N = (1/M) sum_i E(h_i) / N_i`` (Eq. 7).

    ``N_i`` is the number of elements of one sample's output of layer ``i``. The paper uses
    ``E_N`` for analysis only; it is not part of the loss.

    Args:
        hs: ``[h_1, ..., h_M]``, the hooked layer outputs (the last being ``softmax(logits)``);
            ``M >= 1``.
        mode: treatment of negative values, see :func:`entropy_terms`.
        names: optional layer names (one per tensor) for error messages.

    Returns:
        ``E_N`` for every sample.

    Shape:
        each ``h_i``: ``(B, *)``; output: ``(B,)``.

    Raises:
        ValueError: no layers, a layer with no elements per sample (``N_i = 0``), mismatched
            batch sizes, or an error of :func:`layer_entropy`.
        TypeError: ``hs`` is not a sequence of real floating-point tensors.

    Example:
        >>> import torch
        >>> hs = [torch.full((1, 2), 0.5), torch.full((1, 4), 0.25)]
        >>> normalized_entropy(hs)      # ((log 2)/2 + (log 4)/4) / 2
        tensor([0.3466])
    """
    hs, _ = _as_list(hs, names)
    _check_mode(mode)
    if len(hs) < 1:
        raise ValueError("hs: expected at least 1 layer, got 0")
    for h, n in zip(hs, _names(names, len(hs))):
        if math.prod(h.shape[1:]) == 0:
            raise ValueError(
                f"layer {_label(n)}: expected at least one element per sample (E_N divides by N_i), "
                f"got shape {tuple(h.shape)}"
            )
    terms = [
        layer_entropy(h, mode=mode, name=n) / math.prod(h.shape[1:])
        for h, n in zip(hs, _names(names, len(hs)))
    ]
    return torch.stack(terms, dim=1).mean(dim=1)
