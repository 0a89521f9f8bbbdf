"""Entropic retraining (Sperl & Böttinger): layer entropies, the entropy flow ``E_T`` and its loss.

The paper measures a layer's activation vector ``h_i`` (the output of layer ``i`` *after* its
activation function) with an entropy-like value (Eq. 6)::

    E(h_i) = - sum_j h_j log h_j          (per sample, over all N_i elements of the layer output)

and defines two network-level values over the M hooked layers, the last of which is the output
layer (Eq. 7 and Eq. 8)::

    E_N = (1/M) sum_i E(h_i) / N_i                                     (analysis only)
    E_T = (1/(M-1)) sum_{i=1}^{M-1} [E(h_i) - E(h_{i+1})] = (E(h_1) - E(h_M)) / (M-1)

Entropic retraining fine-tunes a pretrained model with (Eq. 9-11)::

    L = CE(y, y_hat) + lam * (E_T_hat - sigma * E_T_ref)^2

where ``E_T_ref`` is the pretrained model's value (a constant) and ``E_T_hat`` is computed on the
model being retrained; ``sigma > 1`` is meant to *increase* ``E_T``.

**The telescoping identity.** Eq. 8 telescopes: every intermediate layer is added once and
subtracted once, so ``E_T`` depends only on the first hooked layer and on the output layer. The
intermediate layers matter only through M, which scales ``E_T`` by ``1/(M-1)`` and therefore the
effect of ``lam`` on the squared penalty by ``1/(M-1)**2``. Report M together with ``lam``.
:func:`entropy_flow` uses the telescoped form; :func:`entropy_flow_terms` returns the M-1 explicit
differences, whose mean equals it.

**The output layer.** PyTorch models emit logits, so the last ``h`` is ``softmax(logits)``
(always positive and summing to 1; ``E(h_M)`` is the prediction entropy in nats).
:class:`EntropyProbe` builds the list ``[h_1, ..., h_{M-1}, softmax(logits)]`` from forward hooks.

**Zeros and negative activations** (``mode``). ``0 log 0`` is taken as 0, its continuous limit,
through ``phi(h) = where(h <= 0, 0, h * log(clamp_min(h, tiny)))``. Its value and its gradient are
finite everywhere (the gradient is 0 at and below zero, ``log(h) + 1`` above); ``torch.xlogy`` is
not used because its gradient is NaN at 0. ``h log h`` is undefined for ``h < 0``, which the paper
(ReLU networks) never meets; the choice is explicit:

* ``"relu"`` (default): ``phi(max(h, 0))``, negatives contribute 0. Faithful for ReLU networks,
  where hooked outputs are already non-negative.
* ``"abs"``: ``|h| log |h|``; a different quantity for layers with signed outputs.
* ``"strict"``: raise :class:`ValueError` naming the layer when any ``h < 0`` (this check
  synchronises with the device).

NaN activations propagate as NaN in every mode through the pure functions (they read no value, so
they stay free on accelerators); :class:`EntropicLoss` raises, naming the layer, on CPU tensors (its
``check_finite``). Values above 1 contribute negatively: ``E`` is not a true entropy. Logs are
natural; the base would only rescale ``E_T``.

Example:
    >>> import torch
    >>> import torch.nn as nn
    >>> from ib_plugins.entropic import EntropicLoss, EntropyProbe, entropy_flow
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    >>> with EntropyProbe(model, ["1"]) as probe:
    ...     logits, hs = probe.run(x)
    >>> [tuple(h.shape) for h in hs]
    [(5, 8), (5, 3)]
    >>> entropy_flow(hs).shape
    torch.Size([5])
    >>> loss = EntropicLoss(reference=1.0, lam=1.0, sigma=1.65)(logits, y, hs)
    >>> loss.backward()
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins._context import _inference_modes
from ib_plugins.errors import LayerNotFiredError, NonFiniteActivationError
from ib_plugins.layer_selection import resolve_layers

__all__ = [
    "EntropyMode",
    "entropy_terms",
    "layer_entropy",
    "entropy_flow",
    "entropy_flow_terms",
    "normalized_entropy",
    "EntropyProbe",
    "compute_reference_entropy_flow",
    "EntropicLossTerms",
    "EntropicLoss",
]

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------
# hooks
# --------------------------------------------------------------------------------------------


class EntropyProbe:
    """Context manager that hooks named layers and builds ``[h_1, ..., h_{M-1}, softmax(logits)]``.

    Layer names are validated at construction; forward hooks are registered on ``__enter__`` and
    removed on ``__exit__``, also when the ``with`` block raises. Each hook clones its layer's
    output (so later in-place operations, e.g. ``ReLU(inplace=True)``, cannot alter it) and keeps
    the autograd graph, so the list can be used in a loss. If a module runs more than once per
    forward, the last output is kept. Hook the outputs *after* the activation functions (for
    ``nn.Sequential`` models: the activation modules); with ReLU networks only the first listed
    layer enters ``E_T`` (see the module docstring), the rest define M.

    Args:
        model: the network; its forward must return logits of shape ``(B, C, *)``.
        layers: dotted ``named_modules()`` names of the hidden layers, in forward order. M is
            ``len(layers) + 1`` (the softmax output is appended).

    Raises:
        UnknownLayerError: a name is not a string or not a submodule of ``model`` (the message
            lists close matches; see :func:`ib_plugins.layer_selection.resolve_layers`).
        ValueError: ``layers`` is empty or has duplicates.
        TypeError: ``model`` is not a module, or ``layers`` is a single string.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> with EntropyProbe(model, ["1"]) as probe:
        ...     logits, hs = probe.run(torch.randn(6, 3))
        >>> len(hs), hs[-1].sum(dim=1).allclose(torch.ones(6))
        (2, True)
        >>> len(model[1]._forward_hooks)
        0
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if isinstance(layers, str):
            raise TypeError(
                f"layers: expected a sequence of dotted layer names, got the string {layers!r}; "
                f"pass [{layers!r}]"
            )
        layers = list(layers)
        if not layers:
            raise ValueError(
                "layers: expected at least one hidden layer name (E_T needs M >= 2), got []"
            )
        dupes = list(dict.fromkeys(n for n in layers if layers.count(n) > 1))
        if dupes:
            raise ValueError(f"layers: expected distinct names, got duplicates {dupes}")
        self.model = model
        self.layers: tuple[str, ...] = tuple(layers)
        self._modules = resolve_layers(model, self.layers)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._store: dict[str, Tensor] = {}

    @property
    def active(self) -> bool:
        """Whether the hooks are registered (inside the ``with`` block).

        Example:
            >>> import torch.nn as nn
            >>> probe = EntropyProbe(nn.Sequential(nn.ReLU()), ["0"])
            >>> probe.active
            False
        """
        return bool(self._handles)

    def _make_hook(self, name: str):  # noqa: ANN202 - private closure factory
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                raise TypeError(
                    f"EntropyProbe: layer {name!r} ({type(module).__name__}) returned "
                    f"{type(output).__name__}; expected a tensor"
                )
            self._store[name] = output.clone()

        return hook

    def __enter__(self) -> EntropyProbe:
        if self._handles:
            raise RuntimeError("EntropyProbe: already active; it cannot be entered twice")
        self._store.clear()
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook and drop captured activations (idempotent).

        Example:
            >>> import torch.nn as nn
            >>> probe = EntropyProbe(nn.Sequential(nn.ReLU()), ["0"]).__enter__()
            >>> probe.remove()
            >>> probe.active
            False
        """
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._store.clear()

    def collect(self, logits: Tensor) -> list[Tensor]:
        """Return ``[h_1, ..., h_{M-1}, softmax(logits, dim=1)]`` from the last forward.

        Reading clears the captured activations.

        Args:
            logits: the model output of that forward, shape ``(B, C, *)``.

        Returns:
            The M tensors, ready for :func:`entropy_flow`.

        Raises:
            RuntimeError: the probe is not active.
            LayerNotFiredError: a hooked layer did not run since the last read.
            TypeError: ``logits`` is not a floating-point tensor.
            ValueError: ``logits`` has fewer than 2 dimensions.

        Example:
            >>> import torch
            >>> import torch.nn as nn
            >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
            >>> with EntropyProbe(model, ["1"]) as probe:
            ...     hs = probe.collect(model(torch.randn(2, 3)))
            >>> [tuple(h.shape) for h in hs]
            [(2, 4), (2, 2)]
        """
        if not self._handles:
            raise RuntimeError("EntropyProbe: not active; use it as `with EntropyProbe(...) as p:`")
        _check_activation(logits, "logits")
        if logits.dim() < 2:
            raise ValueError(
                f"logits: expected shape (B, C, ...) with at least 2 dimensions, "
                f"got shape {tuple(logits.shape)}"
            )
        missing = [n for n in self.layers if n not in self._store]
        if missing:
            self._store.clear()
            raise LayerNotFiredError(
                f"EntropyProbe: layer(s) {missing} of {type(self.model).__name__} did not run "
                "during the forward pass (hooked outputs are read once per forward)"
            )
        hs = [self._store[n] for n in self.layers]
        self._store.clear()
        hs.append(torch.softmax(logits, dim=1))
        return hs

    def run(self, x: Any) -> tuple[Tensor, list[Tensor]]:
        """Run ``model(x)`` and return ``(logits, [h_1, ..., h_{M-1}, softmax(logits)])``.

        Args:
            x: the model input.

        Returns:
            The logits and the M activations (with autograd history unless under ``no_grad``).

        Raises:
            RuntimeError: the probe is not active.
            TypeError: the model does not return a tensor.
            LayerNotFiredError: a hooked layer did not run.

        Example:
            >>> import torch
            >>> import torch.nn as nn
            >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
            >>> with EntropyProbe(model, ["0", "1"]) as probe:
            ...     logits, hs = probe.run(torch.randn(2, 3))
            >>> len(hs)
            3
        """
        if not self._handles:
            raise RuntimeError("EntropyProbe: not active; use it as `with EntropyProbe(...) as p:`")
        self._store.clear()
        logits = self.model(x)
        if not isinstance(logits, Tensor):
            raise TypeError(
                f"EntropyProbe: {type(self.model).__name__} returned {type(logits).__name__}; "
                "expected a tensor of logits"
            )
        return logits, self.collect(logits)


# --------------------------------------------------------------------------------------------
# reference value
# --------------------------------------------------------------------------------------------


def _inputs_of(batch: Any) -> Any:
    if isinstance(batch, (list, tuple)):
        if not batch:
            raise ValueError("loader: expected batches (x, y, ...) or x, got an empty batch")
        return batch[0]
    return batch


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def compute_reference_entropy_flow(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    layers: Sequence[str],
    mode: EntropyMode = "relu",
    device: torch.device | str | None = None,
    progress: bool = True,
) -> float:
    """Mean per-sample ``E_T`` (Eq. 8) of a pretrained model over a data set: ``E_T_ref``.

    Runs the model in eval mode under ``torch.no_grad`` and averages over samples (not over
    batches, so the last short batch is weighted correctly). Every module's train/eval flag is
    restored afterwards, also on error, and the global RNG state is left untouched (the loop runs
    under :func:`torch.random.fork_rng`, so e.g. a shuffling ``DataLoader`` does not advance it).
    Use the *training* set, as the spec recommends (§4.3).

    Args:
        model: the pretrained network (returns logits); it is not moved.
        loader: an iterable of batches, each ``(x, y, ...)`` or ``x``.
        layers: dotted names of the hooked hidden layers, see :class:`EntropyProbe`.
        mode: treatment of negative values, see :func:`entropy_terms`.
        device: where inputs are moved; default: the device of the model's first parameter.
        progress: show a tqdm progress bar when tqdm is installed (on a terminal only).

    Returns:
        ``E_T_ref`` as a Python float.

    Raises:
        ValueError: the loader yields no samples, or ``mode``/``layers`` are invalid.
        UnknownLayerError: a layer name is not a submodule of ``model``.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> data = [(torch.randn(5, 4), torch.zeros(5)) for _ in range(3)]
        >>> ref = compute_reference_entropy_flow(model, data, layers=["1"], progress=False)
        >>> isinstance(ref, float), model.training
        (True, True)
    """
    _check_mode(mode)
    probe = EntropyProbe(model, layers)
    dev = torch.device(device) if device is not None else _model_device(model)

    iterator: Iterable[Any] = loader
    if progress:
        from ib_plugins._optional import is_available, require

        if is_available("tqdm"):
            tqdm = require("tqdm", purpose="compute_reference_entropy_flow(progress=True)")
            iterator = tqdm.tqdm(loader, desc="E_T reference", leave=False, disable=None)

    # fork the CPU RNG, and the RNG of the accelerator the inputs go to (if any)
    fork_kwargs: dict[str, Any] = {"devices": []}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        fork_kwargs = {"devices": [index], "device_type": "cuda"}
    elif dev.type not in ("cpu", "meta"):
        fork_kwargs = {"devices": [dev.index or 0], "device_type": dev.type}

    total: Tensor | None = None
    count = 0
    try:
        with _inference_modes(model), torch.random.fork_rng(**fork_kwargs), torch.no_grad(), probe:
            for batch in iterator:
                x = _inputs_of(batch)
                if isinstance(x, Tensor):
                    x = x.to(dev)
                _, hs = probe.run(x)
                et = entropy_flow(hs, mode=mode, names=[*probe.layers, "softmax(logits)"])
                batch_sum = et.double().sum()
                total = batch_sum if total is None else total + batch_sum
                count += et.shape[0]
    finally:
        close = getattr(iterator, "close", None)
        if iterator is not loader and callable(close):
            close()
    if total is None or count == 0:
        raise ValueError("loader: expected at least one sample, got none")
    value = float(total.item()) / count
    logger.debug("E_T reference over %d samples (M=%d): %.6g", count, len(layers) + 1, value)
    return value


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
