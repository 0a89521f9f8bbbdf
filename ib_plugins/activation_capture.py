"""Capture the outputs of named layers with removable forward hooks.

Activations are cloned inside the hook: in-place operations that run later in the forward (a
residual ``out += identity``, ``ReLU(inplace=True)``) would otherwise change what was captured.
By default capture happens only in training mode with gradients enabled, so attacks (eval mode)
and ``torch.no_grad()`` evaluation see an ordinary model.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> with capture_activations(net, ["0", "1"], when="always") as cap:
    ...     _ = net(torch.rand(3, 4))
    ...     shapes = {k: tuple(v.shape) for k, v in cap.activations.items()}
    >>> shapes
    {'0': (3, 8), '1': (3, 8)}
    >>> len(net[0]._forward_hooks)
    0
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins.layer_selection import resolve_layers

__all__ = ["ActivationCapture", "capture_activations", "When"]

When = Literal["train", "always"]


def _repeat_key(name: str, index: int) -> str:
    return name if index == 0 else f"{name}#{index}"


class ActivationCapture:
    """Forward hooks on named layers that store the layers' outputs.

    A module that runs several times in one forward (a reused module) contributes one entry per
    call, keyed ``name``, ``name#1``, ``name#2``...

    Args:
        model: the model whose layers are hooked.
        layers: dotted ``named_modules()`` names.
        clone: store ``output.clone()`` (default) rather than the output itself.
        detach: detach stored tensors from the autograd graph (for analysis only).
        when: ``"train"`` stores only when the hooked layer is in training mode and gradients are
            enabled; ``"always"`` stores on every forward.
        reset_on_forward: clear the store at the start of each forward of ``model`` (a forward
            pre-hook on the root), so :attr:`activations` holds the latest forward only.

    Raises:
        UnknownLayerError: a layer name is not a submodule of ``model``.
        ValueError: ``when`` is unknown.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        >>> cap = ActivationCapture(net, ["1"], when="always")
        >>> _ = net(torch.rand(2, 4))
        >>> cap.activations["1"].shape
        torch.Size([2, 4])
        >>> cap.remove()
        >>> cap.num_hooks
        0
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        clone: bool = True,
        detach: bool = False,
        when: When = "train",
        reset_on_forward: bool = True,
    ) -> None:
        if when not in ("train", "always"):
            raise ValueError(f"when: expected 'train' or 'always', got {when!r}")
        self.modules = resolve_layers(model, layers)
        self.clone = clone
        self.detach = detach
        self.when = when
        #: Set to False to pause capture without removing the hooks.
        self.enabled = True
        self._store: dict[str, list[Tensor]] = {}
        self._handles: list[Any] = []
        try:
            if reset_on_forward:
                self._handles.append(model.register_forward_pre_hook(self._reset_hook))
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(partial(self._hook, name)))
        except BaseException:
            self.remove()
            raise

    # -- hooks ---------------------------------------------------------------------------------
    def _reset_hook(self, module: nn.Module, args: Any) -> None:
        self._store.clear()

    def _hook(self, name: str, module: nn.Module, args: Any, output: Any) -> None:
        if not self.enabled:
            return
        if self.when == "train" and not (module.training and torch.is_grad_enabled()):
            return
        if not isinstance(output, Tensor):
            raise TypeError(
                f"layer {name!r} ({type(module).__name__}) returned {type(output).__name__}, not a "
                f"tensor; hook one of its submodules that returns a tensor instead"
            )
        if self.detach:
            output = output.detach()
        if self.clone:
            output = output.clone()
        self._store.setdefault(name, []).append(output)

    # -- access --------------------------------------------------------------------------------
    @property
    def layer_names(self) -> tuple[str, ...]:
        """The hooked layer names, in the order given.

        Example:
            >>> import torch.nn as nn
            >>> ActivationCapture(nn.Sequential(nn.ReLU()), ["0"]).layer_names
            ('0',)
        """
        return tuple(self.modules)

    @property
    def activations(self) -> dict[str, Tensor]:
        """The stored outputs, one entry per call (``name``, ``name#1``...), in hook order.

        Example:
            >>> import torch, torch.nn as nn
            >>> relu = nn.ReLU()
            >>> net = nn.Sequential(relu, relu)
            >>> cap = ActivationCapture(net, ["0"], when="always")
            >>> _ = net(torch.rand(1, 2))
            >>> list(cap.activations)
            ['0', '0#1']
        """
        out: dict[str, Tensor] = {}
        for name in self.modules:
            for i, t in enumerate(self._store.get(name, ())):
                out[_repeat_key(name, i)] = t
        return out

    def fired(self) -> set[str]:
        """Names of the hooked layers that stored at least one output since the last reset.

        Returns:
            The set of layer names.

        Example:
            >>> import torch.nn as nn
            >>> ActivationCapture(nn.Sequential(nn.ReLU()), ["0"]).fired()
            set()
        """
        return {name for name, ts in self._store.items() if ts}

    def pop(self) -> dict[str, Tensor]:
        """Return :attr:`activations` and clear the store (read-once semantics).

        Returns:
            The stored outputs.

        Example:
            >>> import torch, torch.nn as nn
            >>> net = nn.Sequential(nn.ReLU())
            >>> cap = ActivationCapture(net, ["0"], when="always")
            >>> _ = net(torch.rand(1, 2))
            >>> len(cap.pop()), len(cap.activations)
            (1, 0)
        """
        out = self.activations
        self._store.clear()
        return out

    def reset(self) -> None:
        """Forget every stored output.

        Example:
            >>> import torch.nn as nn
            >>> ActivationCapture(nn.Sequential(nn.ReLU()), ["0"]).reset()
        """
        self._store.clear()

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def num_hooks(self) -> int:
        """How many hooks this object still has registered.

        Example:
            >>> import torch.nn as nn
            >>> ActivationCapture(nn.Sequential(nn.ReLU()), ["0"]).num_hooks
            2
        """
        return len(self._handles)

    def remove(self) -> None:
        """Remove every hook (idempotent); outputs already stored stay readable.

        Example:
            >>> import torch.nn as nn
            >>> cap = ActivationCapture(nn.Sequential(nn.ReLU()), ["0"])
            >>> cap.remove(); cap.remove()
        """
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> ActivationCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (
            f"ActivationCapture(layers={list(self.modules)}, when={self.when!r}, clone={self.clone}, "
            f"hooks={self.num_hooks})"
        )


@contextmanager
def capture_activations(
    model: nn.Module,
    layers: Sequence[str],
    *,
    clone: bool = True,
    detach: bool = False,
    when: When = "train",
) -> Iterator[ActivationCapture]:
    """Temporarily hook ``layers`` of ``model``; the hooks are removed on exit and on exceptions.

    Args:
        model: the model.
        layers: dotted layer names (see :func:`ib_plugins.list_layer_names`).
        clone: clone outputs inside the hook (protects against later in-place operations).
        detach: detach stored tensors.
        when: ``"train"`` (default: training mode with gradients enabled only) or ``"always"``.

    Yields:
        The :class:`ActivationCapture`; its :attr:`~ActivationCapture.activations` hold the outputs
        of the latest forward.

    Raises:
        UnknownLayerError: a layer name is not a submodule of ``model``.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> net.train()  # doctest: +ELLIPSIS
        Sequential(...)
        >>> with capture_activations(net, ["1"]) as cap:
        ...     _ = net(torch.rand(5, 2))
        >>> cap.activations["1"].shape  # still readable; the hooks are gone
        torch.Size([5, 2])
        >>> with capture_activations(net, ["1"]) as cap, torch.no_grad():
        ...     _ = net(torch.rand(5, 2))  # not captured: gradients are disabled
        >>> cap.activations
        {}
    """
    cap = ActivationCapture(model, layers, clone=clone, detach=detach, when=when)
    try:
        yield cap
    finally:
        cap.remove()
