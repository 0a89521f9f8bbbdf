"""Hooks that collect the activations the entropy flow needs: :class:`EntropyProbe`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins.entropic.entropy import _check_activation
from ib_plugins.errors import LayerNotFiredError
from ib_plugins.layer_selection import resolve_layers

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
