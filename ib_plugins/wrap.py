"""``wrap_model``: add the IB-RAR regulariser (and optionally the channel mask) to any ``nn.Module``.

The returned :class:`IBModel` behaves exactly like the wrapped model: ``forward`` returns the
model's output unchanged, eval-mode and no-grad forwards run no extra code beyond a flag check, and
the wrapped model's ``state_dict`` keys appear unchanged under the ``model.`` prefix. During
training-mode forwards with gradients enabled it records the hooked layers' activations, and
:meth:`IBModel.ib_loss` turns the record into ``α·Σ nHSIC(T_l, X) − β·Σ nHSIC(T_l, Y)``. "Training
mode" is the wrapped network's own ``training`` flag, and a forward that calls the network directly
(``model.model(x)``, as ART's AWP and OAAT trainers call ``classifier.model(x)``) is recorded too:
a forward pre-hook and an always-called forward hook on the network, owned and removed with the
others, see to it.

Example:
    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> model = wrap_model(net, ib_layers=["2"], num_classes=10)
    >>> x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    >>> logits = model.train()(x)
    >>> loss = nn.functional.cross_entropy(logits, y) + model.ib_loss(x, y)
    >>> loss.backward()
    >>> plain = model.unwrap()
    >>> plain is net, len(net[2]._forward_hooks)
    (True, 0)
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins.activation_capture import ActivationCapture
from ib_plugins.bottleneck import HSICBottleneck, IBTerms, _check_labels
from ib_plugins.channel_mask import ChannelMask
from ib_plugins.errors import LayerNotFiredError, NonFiniteActivationError, NoTrainingForwardError
from ib_plugins.hsic import Kernel
from ib_plugins.layer_selection import LayerSpec, expand_layer_spec, resolve_layers
from ib_plugins.presets import preset_for_model

__all__ = ["IBModel", "ForwardRecord", "wrap_model"]

logger = logging.getLogger(__name__)


@dataclass
class ForwardRecord:
    """What one training-mode forward left behind.

    Attributes:
        inputs: the first positional input of the forward.
        output: the forward's output (compared by identity to find the record of given logits).
        activations: hooked layers' outputs (``name``, ``name#1``... for reused modules).
        fired: names of the hooked layers that ran.

    Example:
        >>> import torch, torch.nn as nn
        >>> m = wrap_model(nn.Sequential(nn.Linear(2, 2)), ib_layers=["0"])
        >>> out = m.train()(torch.rand(3, 2))
        >>> record = m.find_record(out)
        >>> record.batch_size, sorted(record.fired)
        (3, ['0'])
    """

    inputs: Tensor
    output: Any
    activations: dict[str, Tensor]
    fired: set[str]

    @property
    def batch_size(self) -> int:
        """Number of samples of the forward.

        Example:
            >>> ForwardRecord(inputs=torch.zeros(4, 2), output=None, activations={}, fired=set()).batch_size
            4
        """
        return int(self.inputs.shape[0])


#: Training forwards without an IB term after which an :class:`IBModel` warns (once) that its loss
#: never calls ``ib_loss``; TRADES-like trainers run two forwards per batch and use one.
_NO_IB_WARN_AFTER = 8


class IBModel(nn.Module):
    """A model with IB-RAR's hooks; build it with :func:`wrap_model`.

    Args:
        model: the model to wrap (kept as the submodule ``model``).
        layers: dotted names of the layers regularised by the IB term.
        bottleneck: the regulariser's configuration.
        mask: optional channel mask; attached to ``mask_layer``.
        mask_layer: dotted name of the masked layer (required with ``mask``).
        record_masked: when the mask layer is also an IB layer, record its output after the mask
            (True, the authors' VGG-16) or before it (False, the authors' ResNet-18).
        check_finite: raise :class:`~ib_plugins.errors.NonFiniteActivationError` naming the layer when
            an activation holds NaN/inf. The check reads the ``[L]`` per-layer HSIC values (a
            non-finite activation makes its layer's values non-finite), never the activations
            themselves, and scans them only to name the culprit once something failed. ``None``
            (default) checks where that is free, on CPU tensors, and skips it on accelerators,
            where reading a value on the host would stall the device once per :meth:`ib_loss`
            (the :class:`~ib_plugins.training.Trainer` still stops on a non-finite epoch loss);
            ``True`` checks everywhere (one host synchronisation per call); ``False`` never.
        max_records: how many training forwards are remembered (TRADES-like trainers run two before
            computing their loss).
        global_batch: in a multi-process run, gather activations (with gradients), inputs and labels
            from every rank before estimating HSIC, so the value equals the single-process one on the
            global batch (see :mod:`ib_plugins.distributed`). Settable later as an attribute.

    Example:
        >>> import torch, torch.nn as nn
        >>> m = IBModel(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), layers=["1"], bottleneck=HSICBottleneck())
        >>> m.layers
        ('1',)
    """

    # class-level defaults, so IBModels pickled before these counters existed still load
    _forwards_without_ib = 0
    _warned_no_ib = False
    _forward_depth = 0
    _direct_handles: list[Any] = []  # IBModels pickled before the direct-call hooks existed have none

    def __init__(
        self,
        model: nn.Module,
        *,
        layers: Sequence[str],
        bottleneck: HSICBottleneck,
        mask: ChannelMask | None = None,
        mask_layer: str | None = None,
        record_masked: bool = True,
        check_finite: bool | None = None,
        max_records: int = 4,
        global_batch: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, IBModel):
            raise TypeError("model: this model is already an IBModel; unwrap() it first or configure it directly")
        if not isinstance(max_records, int) or max_records < 1:
            raise ValueError(f"max_records: expected an int >= 1, got {max_records!r}")
        self.model = model
        self.bottleneck = bottleneck
        if check_finite is not None and not isinstance(check_finite, bool):
            raise TypeError(f"check_finite: expected None, True or False, got {check_finite!r}")
        if not isinstance(record_masked, bool):
            raise TypeError(f"record_masked: expected True or False, got {record_masked!r}")
        self.check_finite = check_finite
        self.record_masked = record_masked
        self.global_batch = bool(global_batch)
        resolve_layers(model, layers)  # validate before registering anything
        self._layers = tuple(layers)
        self._records: deque[ForwardRecord] = deque(maxlen=max_records)
        self._forwards_without_ib = 0  # recorded training forwards since an IB term last used one
        self._warned_no_ib = False
        self._recording = True
        self._unwrapped = False
        self._capture: ActivationCapture | None = ActivationCapture(
            model, self._layers, clone=True, when="train", reset_on_forward=False
        )
        self._capture.enabled = False
        self._forward_depth = 0
        self._direct_calls: list[tuple[int, Any]] = []
        self._direct_handles = [
            model.register_forward_pre_hook(self._direct_pre_hook, with_kwargs=True),
            model.register_forward_hook(self._direct_hook, with_kwargs=True, always_call=True),
        ]
        self.mask: ChannelMask | None = None
        if mask is not None:
            if mask_layer is None:
                self._remove_own_hooks()
                raise ValueError("mask_layer: a channel mask needs the dotted name of the layer it masks, got None")
            try:
                # The capture's hooks are already registered: prepending the mask's makes the IB term
                # record the masked output; appending it, the unmasked one.
                mask.attach(model, mask_layer, prepend=record_masked)
            except BaseException:
                self._remove_own_hooks()
                raise
            self.mask = mask

    # -- the forward ---------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped model; in training mode with gradients, record the hooked activations.

        "Training mode" is the wrapped network's ``training`` flag (what its BatchNorm and dropout
        follow). Calling the network itself (``self.model(x)``) records in the same way.

        Args:
            *args: passed to the wrapped model (the first one is taken as the input batch).
            **kwargs: passed to the wrapped model.

        Returns:
            The wrapped model's output, unchanged.

        Warns:
            UserWarning: once, when 8 training forwards in a row were recorded and no IB term used
                any of them (a loss that never calls :meth:`ib_loss`, e.g. ART's
                ``PyTorchClassifier`` built with ``nn.CrossEntropyLoss``); not when α = β = 0.

        Example:
            >>> import torch, torch.nn as nn
            >>> net = nn.Linear(2, 2)
            >>> m = wrap_model(nn.Sequential(net), ib_layers=["0"], num_classes=2).eval()
            >>> x = torch.rand(3, 2)
            >>> torch.equal(m(x), net(x))
            True
        """
        x = args[0] if args else next(iter(kwargs.values()), None)
        state = self._enter_forward(x, self.model.training and torch.is_grad_enabled())
        self._forward_depth += 1  # the network's own hooks (direct calls) stand aside
        try:
            out = self.model(*args, **kwargs)
        except BaseException:
            self._exit_forward(state, x, None)
            raise
        finally:
            self._forward_depth -= 1
        self._exit_forward(state, x, out)
        return out

    def _enter_forward(self, x: Any, training: bool) -> int:
        """Prepare one forward of the network: 0 plain, 1 masked only, 2 recorded (and masked)."""
        if not training or not isinstance(x, Tensor):
            return 0
        capture = self._capture
        if capture is None or not self._recording:
            if self.mask is None:
                return 0
            self.mask.set_input(x)  # a paused recording still masks (code mode needs the input)
            return 1
        capture.reset()
        capture.enabled = True
        if self.mask is not None:
            self.mask.set_input(x)
        return 2

    def _exit_forward(self, state: int, x: Any, out: Any) -> None:
        """Finish a forward begun by :meth:`_enter_forward`; ``out`` None = it raised (nothing recorded)."""
        if state == 0:
            return
        capture = self._capture
        if state == 2 and capture is not None:
            capture.enabled = False
        if self.mask is not None:
            self.mask.set_input(None)
        if state != 2 or capture is None or out is None:
            if capture is not None:
                capture.reset()
            return
        fired = capture.fired()
        self._records.append(ForwardRecord(inputs=x, output=out, activations=capture.pop(), fired=fired))
        self._forwards_without_ib += 1
        if self._forwards_without_ib == _NO_IB_WARN_AFTER and not self._warned_no_ib:
            self._warn_no_ib()

    # The network's own top-level hooks: a training forward that calls the network directly (ART's
    # AWP and OAAT trainers call ``classifier.model(x)``, which is the network) is recorded and
    # masked exactly as one through :meth:`forward`; inside :meth:`forward` they stand aside.
    def _direct_pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._forward_depth:
            return
        x = args[0] if args else next(iter(kwargs.values()), None)
        state = self._enter_forward(x, module.training and torch.is_grad_enabled())
        self._direct_calls.append((state, x))

    def _direct_hook(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if self._forward_depth or not self._direct_calls:
            return
        state, x = self._direct_calls.pop()
        self._exit_forward(state, x, output)  # output is None when the forward raised (always_call)

    # -- labels for the mask -------------------------------------------------------------------
    @contextmanager
    def labels(self, y: Tensor) -> Iterator[bool]:
        """Mark one training batch and give its labels to the channel mask.

        Every training forward inside the block belongs to this batch; whether the mask acts is
        decided once per batch by its schedule. Without a mask this is a no-op.

        Args:
            y: the batch's class indices.

        Yields:
            Whether the mask acts on this batch.

        Example:
            >>> import torch, torch.nn as nn
            >>> m = wrap_model(nn.Sequential(nn.Linear(2, 2)), ib_layers=["0"], num_classes=2)
            >>> with m.labels(torch.tensor([0, 1])) as masked:
            ...     masked
            False
        """
        if self.mask is None:
            yield False
            return
        active = self.mask.begin_batch(y)
        try:
            yield active
        finally:
            self.mask.end_batch()

    def start_epoch(self) -> None:
        """Restart the mask's per-epoch schedule (the authors count batches within each epoch).

        Example:
            >>> import torch.nn as nn
            >>> wrap_model(nn.Sequential(nn.Linear(2, 2)), ib_layers=["0"]).start_epoch()
        """
        if self.mask is not None:
            self.mask.reset_schedule()

    @contextmanager
    def capturing(self, enabled: bool) -> Iterator[None]:
        """Temporarily switch recording of training forwards on or off.

        Args:
            enabled: whether training forwards inside the block are recorded.

        Yields:
            Nothing.

        Example:
            >>> import torch, torch.nn as nn
            >>> m = wrap_model(nn.Sequential(nn.Linear(2, 2)), ib_layers=["0"])
            >>> with m.capturing(False):
            ...     _ = m.train()(torch.rand(2, 2))
            >>> m.num_records
            0
        """
        previous = self._recording
        self._recording = bool(enabled)
        try:
            yield
        finally:
            self._recording = previous

    # -- records -------------------------------------------------------------------------------
    @property
    def layers(self) -> tuple[str, ...]:
        """The regularised layers' dotted names."""
        return self._layers

    @property
    def num_records(self) -> int:
        """How many training forwards are remembered and not yet consumed."""
        return len(self._records)

    @property
    def activations(self) -> Mapping[str, Tensor]:
        """Read-only view of the latest recorded forward's activations (empty if none).

        Example:
            >>> import torch, torch.nn as nn
            >>> m = wrap_model(nn.Sequential(nn.Linear(2, 2)), ib_layers=["0"])
            >>> _ = m.train()(torch.rand(4, 2))
            >>> list(m.activations)
            ['0']
        """
        if not self._records:
            return MappingProxyType({})
        return MappingProxyType(self._records[-1].activations)

    def find_record(self, output: Any) -> ForwardRecord | None:
        """The remembered forward whose output *is* ``output`` (identity, not equality).

        Args:
            output: a tensor returned by a training forward of this model.

        Returns:
            The record, or None (e.g. for an attack's eval-mode forward).

        Example:
            >>> import torch, torch.nn as nn
            >>> m = wrap_model(nn.Sequential(nn.Linear(2, 2)), ib_layers=["0"])
            >>> out = m.train()(torch.rand(4, 2))
            >>> m.find_record(out) is not None, m.find_record(out.clone())
            (True, None)
        """
        for record in reversed(self._records):
            if record.output is output:
                return record
        return None

    def clear_records(self) -> None:
        """Forget every remembered forward (frees their activations and graphs).

        Example:
            >>> import torch.nn as nn
            >>> wrap_model(nn.Sequential(nn.Linear(2, 2)), ib_layers=["0"]).clear_records()
        """
        self._records.clear()

    def _find_record(self, output: Any) -> ForwardRecord:
        """The record :meth:`ib_terms` would use, left in place (consumed only once the call is valid)."""
        if self._unwrapped:
            raise RuntimeError(
                "this IBModel was unwrapped: its hooks are gone and it records nothing; "
                "wrap the model again with ib_plugins.wrap_model(...)"
            )
        if output is None:
            if not self._records:
                raise NoTrainingForwardError(
                    "ib_loss needs the activations of a training-mode forward with gradients enabled, "
                    "and none was recorded since the last ib_loss call; call model.train() and run the "
                    "forward first (eval-mode and torch.no_grad() forwards are not recorded)"
                )
            return self._records[-1]
        for record in reversed(self._records):
            if record.output is output:
                return record
        if not isinstance(output, Tensor):
            raise TypeError(
                "output: expected the output of a remembered training-mode forward of this model (matched by "
                f"identity; a torch.Tensor for a model returning logits), got a {type(output).__name__} that no "
                "remembered forward returned"
            )
        raise NoTrainingForwardError(
            "no remembered training-mode forward produced this output (it came from an eval-mode or "
            "no-grad forward, was already consumed by ib_loss, or is older than the last "
            f"{self._records.maxlen} forwards)"
        )

    def _warn_no_ib(self) -> None:
        if self.bottleneck.alpha == 0.0 and self.bottleneck.beta == 0.0:
            return  # the IB term is 0 anyway (e.g. a mask-only model): nothing is lost
        self._warned_no_ib = True
        warnings.warn(
            f"IBModel: {_NO_IB_WARN_AFTER} training forwards in a row recorded activations that no IB term used: the "
            "model is training without the information-bottleneck term (its loss never calls ib_loss). With ART, "
            "build the classifier with ib_plugins.adapters.art_training.make_art_classifier (its loss, "
            "IBCrossEntropyLoss, adds the term) instead of PyTorchClassifier(model=ib_model, "
            "loss=nn.CrossEntropyLoss()); in your own loop, add model.ib_loss(x, y) to the loss.",
            UserWarning,
            stacklevel=3,
        )

    def _consume(self, record: ForwardRecord) -> None:
        self._forwards_without_ib = 0
        for i in range(len(self._records) - 1, -1, -1):
            if self._records[i] is record:
                del self._records[i]
                return

    # -- the loss ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        """The configured number of classes (None: inferred from the logits)."""
        return self.bottleneck.num_classes

    def ib_terms(self, x: Tensor | None, y: Tensor, *, output: Any = None) -> IBTerms:
        """The IB regulariser and its per-layer parts for one recorded forward (consumes it).

        Args:
            x: the inputs X of the ``I(X, T)`` term, ``[m, ...]`` (the authors use the clean batch,
                also when T comes from the adversarial forward); None = the forward's own input.
            y: class indices ``[m]`` (or targets ``[m, C]``).
            output: the output of the forward to use (matched by identity); None = the latest.

        Returns:
            :class:`~ib_plugins.bottleneck.IBTerms` with per-layer values in :attr:`layers` order
            (reused modules add entries).

        Raises:
            NoTrainingForwardError: no matching training forward was recorded.
            LayerNotFiredError: a hooked layer did not run in that forward.
            NonFiniteActivationError: an activation or the IB terms hold NaN/inf (see ``check_finite``).
            ValueError: batch sizes differ, labels are out of range, fewer than 2 samples, a 0-d
                ``x``/``y``, or ``x``/``y`` on another device than the recorded activations.
            TypeError: ``x``/``y`` is not a tensor (a list or numpy array), ``y`` holds booleans,
                ``x`` is not floating point (with α > 0), or ``output`` is no remembered forward's
                output and not a tensor.

        The inputs are validated before the record is consumed: after an error raised for the
        arguments, the corrected call still finds the forward.

        Example:
            >>> import torch, torch.nn as nn
            >>> m = wrap_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), ib_layers=["1"])
            >>> x, y = torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
            >>> terms = m.train().ib_terms(x, y, output=m(x))
            >>> terms.hx.shape
            torch.Size([1])
        """
        # Validate everything first and consume the record last: a call rejected for its arguments
        # leaves the forward in place, so the corrected call can still use it.
        _check_ib_arg("x", x, allow_none=True)
        _check_ib_arg("y", y)
        if y.dtype == torch.bool or y.is_complex():
            raise TypeError(f"y: expected integer class indices or floating-point targets, got dtype {y.dtype}")
        uses_x = self.bottleneck.alpha > 0  # X enters only through alpha * nHSIC(T, X)
        if x is not None and uses_x and not x.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor (the inputs X of I(X, T)), got dtype {x.dtype}")
        record = self._find_record(output)
        missing = [name for name in self._layers if name not in record.fired]
        if missing:
            if not record.fired and any(getattr(m, "_compiled_call_impl", None) is not None for m in self.modules()):
                raise LayerNotFiredError(
                    f"none of the hooked layers ran during the recorded forward of the compiled "
                    f"{type(self.model).__name__}: torch.compile reused a graph traced without these hooks (dynamo "
                    "does not guard on module hooks by default, so a graph compiled for another instance of the same "
                    "class, or before wrap_model, is replayed). Set torch._dynamo.config.skip_nnmodule_hook_guards = "
                    "False before the first compiled call, or call torch._dynamo.reset() after wrapping"
                )
            raise LayerNotFiredError(
                f"layer(s) {', '.join(map(repr, missing))} did not run during the recorded forward of "
                f"{type(self.model).__name__}: they are not on its forward path for this input; choose "
                "layers that run (see ib_plugins.list_layer_names)"
            )
        m = record.batch_size
        x = record.inputs if x is None else x
        if uses_x and not x.is_floating_point():  # the forward's own input (e.g. token ids): no X kernel on it
            raise TypeError(
                f"x: the recorded forward's input has dtype {x.dtype}; pass the floating-point inputs X explicitly"
            )
        if x.shape[0] != m:
            raise ValueError(f"x has batch size {x.shape[0]}, but the recorded forward had {m} samples")
        if y.shape[0] != m:
            raise ValueError(f"y has batch size {y.shape[0]}, but the recorded forward had {m} samples")
        if m < 2:
            raise ValueError(f"HSIC needs a batch of at least 2 samples, got {m}")
        names = list(record.activations)
        acts = [record.activations[name] for name in names]
        if acts:
            device = acts[0].device
            for name, t in (("x", x), ("y", y)):
                if t.device != device:
                    raise ValueError(
                        f"{name}: expected a tensor on the device of the recorded activations ({device}), "
                        f"got {t.device}"
                    )
        num_classes = self.bottleneck.num_classes
        if num_classes is None:
            out = record.output
            if not (isinstance(out, Tensor) and out.dim() == 2):
                raise ValueError(
                    "num_classes: cannot infer the number of classes from the model output; pass "
                    "num_classes= to wrap_model"
                )
            num_classes = int(out.shape[1])
        _check_labels(y, num_classes)  # range on CPU tensors only (no host read elsewhere)
        self._consume(record)
        if self.global_batch:
            from ib_plugins.distributed import gather_batch

            gathered = gather_batch([*acts, x, y], with_grad=[True] * len(acts) + [False, False])
            acts, x, y = gathered[: len(acts)], gathered[-2], gathered[-1]
        terms = self.bottleneck(acts, x, y, num_classes=num_classes)
        check = self.check_finite if self.check_finite is not None else terms.loss.device.type == "cpu"
        if check:
            _raise_if_not_finite(terms, names, acts, x)
        return terms

    def ib_loss(self, x: Tensor | None, y: Tensor, *, output: Any = None) -> Tensor:
        """``α·Σ_l nHSIC(T_l, X) − β·Σ_l nHSIC(T_l, Y)`` for a recorded forward (consumes it).

        Args:
            x: the inputs X (clean batch in the authors' code); None = the forward's own input.
            y: class indices ``[m]``.
            output: which forward (by its output's identity); None = the latest.

        Returns:
            A differentiable scalar to add to the task loss.

        Raises:
            NoTrainingForwardError: no matching training forward was recorded.
            LayerNotFiredError: a hooked layer did not run.
            NonFiniteActivationError: an activation or the IB terms hold NaN/inf (see ``check_finite``).
            ValueError: inconsistent batch sizes, devices or labels.
            TypeError: ``x``, ``y`` or ``output`` of the wrong type (see :meth:`ib_terms`).

        Nothing is consumed when the arguments are rejected: fix them and call again.

        Example:
            >>> import torch, torch.nn as nn
            >>> m = wrap_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), ib_layers=["1"])
            >>> try:
            ...     m.ib_loss(torch.rand(4, 4), torch.zeros(4, dtype=torch.long))
            ... except Exception as err:
            ...     print(type(err).__name__)
            NoTrainingForwardError
        """
        return self.ib_terms(x, y, output=output).loss

    # -- configuration and lifecycle -----------------------------------------------------------
    def ib_config(self) -> dict[str, Any]:
        """The IB configuration as a JSON-serialisable dict (for results files and checkpoints).

        Example:
            >>> import torch.nn as nn
            >>> wrap_model(nn.Sequential(nn.Linear(2, 2)), ib_layers=["0"]).ib_config()["layers"]
            ['0']
        """
        return {
            "layers": list(self._layers),
            **self.bottleneck.config(),
            "mask": None if self.mask is None else {**self.mask.config(), "record_masked": self.record_masked},
        }

    @property
    def has_hooks(self) -> bool:
        """Whether any of this wrapper's hooks are still registered."""
        capture_hooks = self._capture is not None and self._capture.num_hooks > 0
        return capture_hooks or bool(self._direct_handles) or (self.mask is not None and self.mask.is_attached)

    def _remove_own_hooks(self) -> None:
        if self._capture is not None:
            self._capture.remove()
            self._capture = None
        while self._direct_handles:
            self._direct_handles.pop().remove()

    def remove_hooks(self) -> None:
        """Remove every hook this wrapper registered (idempotent); forwards keep working.

        Example:
            >>> import torch.nn as nn
            >>> m = wrap_model(nn.Sequential(nn.Linear(2, 2)), ib_layers=["0"])
            >>> m.remove_hooks(); m.has_hooks
            False
        """
        self._remove_own_hooks()
        if self.mask is not None:
            self.mask.detach()
        self._records.clear()

    def unwrap(self) -> nn.Module:
        """Remove every hook and return the original module (no hooks of ours left on it).

        Returns:
            The wrapped model, the same object that was passed to :func:`wrap_model`.

        Example:
            >>> import torch.nn as nn
            >>> net = nn.Sequential(nn.Linear(2, 2))
            >>> wrap_model(net, ib_layers=["0"]).unwrap() is net
            True
        """
        self.remove_hooks()
        self._unwrapped = True
        return self.model

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["_records"] = deque(maxlen=self._records.maxlen)  # graphs cannot be copied or pickled
        state["_direct_calls"] = []
        state["_forward_depth"] = 0
        return state

    def extra_repr(self) -> str:
        return f"layers={list(self._layers)}"


def _check_ib_arg(name: str, value: object, *, allow_none: bool = False) -> None:
    """``x``/``y`` of :meth:`IBModel.ib_terms`: a tensor with a batch dimension (lists, arrays refused)."""
    if value is None and allow_none:
        return
    if not isinstance(value, Tensor):
        expected = "a torch.Tensor or None" if allow_none else "a torch.Tensor"
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}")
    if value.dim() == 0:
        raise ValueError(f"{name}: expected a batch [m, ...], got a 0-d tensor (a scalar)")


def _raise_if_not_finite(terms: IBTerms, names: Sequence[str], acts: Sequence[Tensor], x: Tensor) -> None:
    """One host read of the [L] per-layer values; the activations are scanned only on failure."""
    ok = torch.isfinite(terms.hx) & torch.isfinite(terms.hy)
    if bool(ok.all() & torch.isfinite(terms.loss)):
        return
    for name, t in zip(names, acts):
        if not bool(t.detach().isfinite().all()):
            raise NonFiniteActivationError(
                f"layer {name.split('#')[0]!r} produced non-finite values (NaN or inf) in the recorded "
                "forward; the IB loss would be NaN (lower the learning rate or check the inputs)"
            )
    bad = [n.split("#")[0] for n, flag in zip(names, ok.tolist()) if not flag] or list(names)
    cause = (
        "the inputs x hold NaN/inf" if x.is_floating_point() and not bool(x.isfinite().all())
        else "check the labels, sigma and eps"
    )
    raise NonFiniteActivationError(
        f"the IB terms of layer(s) {', '.join(map(repr, bad))} are non-finite although their activations "
        f"are finite: {cause}"
    )


def wrap_model(
    model: nn.Module,
    ib_layers: LayerSpec,
    *,
    alpha: float = 0.008,
    beta: float = 0.08,
    num_classes: int | None = None,
    y_kernel: Kernel = "linear",
    sigma: float = 5.0,
    eps: float = 1e-5,
    mask_layer: str | None = None,
    mask: ChannelMask | str | None = None,
    record_masked: bool | None = None,
    check_finite: bool | None = None,
) -> IBModel:
    """Wrap ``model`` so that its chosen layers can be regularised by IB-RAR's HSIC bottleneck.

    Args:
        model: any ``nn.Module`` returning logits (it is not modified beyond forward hooks).
        ib_layers: dotted ``named_modules()`` names; or a preset name (``"vgg16"``,
            ``"vgg16:robust"``, see :func:`ib_plugins.presets.list_presets`); or ``"all"`` /
            ``"robust"`` for the model's own preset; or an int n (the preset's last n hook points).
        alpha: weight α of ``Σ nHSIC(T_l, X)`` (authors: 0.008).
        beta: weight β of ``Σ nHSIC(T_l, Y)`` (authors: 0.08).
        num_classes: number of classes for one-hot labels; None infers it from the logits (the
            channel mask needs it given).
        y_kernel: kernel on Y: ``"linear"`` (PGD-AT, masked CE scripts) or ``"gaussian"``.
        sigma: Gaussian bandwidth, scaled by the feature dimension (authors: 5).
        eps: the regulariser ε (authors: 1e-5).
        mask_layer: dotted name of the layer to mask; None with a mask = the preset's mask layer.
        mask: a :class:`~ib_plugins.channel_mask.ChannelMask`, or ``"paper"`` / ``"code"`` for one
            with that mode (code mode uses the preset's ``k``), or None. ``mask_layer`` alone implies
            ``"paper"``.
        record_masked: when the mask layer is also an IB layer, whether the IB term sees its output
            after the mask (True) or before it (False). None = the model's preset (the authors'
            order: VGG-16 masks block 5 before recording it, ResNet-18 records its pooled vector
            before masking it), True for models without a preset.
        check_finite: raise, naming the layer, on NaN/inf activations; None = where it is free
            (CPU), True = also on accelerators (one host synchronisation per loss), False = never.

    Returns:
        The :class:`IBModel`.

    Raises:
        UnknownLayerError: a layer name is not a submodule (close matches are listed).
        ValueError: bad weights, kernel, layer specification, or a mask without ``num_classes``.
        TypeError: ``model`` is not an ``nn.Module`` or is already wrapped.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 10))
        >>> m = wrap_model(net, ["1", "3"], mask_layer="1", mask="code", num_classes=10)
        >>> m.ib_config()["mask"]["mode"], m.layers
        ('code', ('1', '3'))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, IBModel):
        raise TypeError("model: this model is already an IBModel; unwrap() it first")
    layers = expand_layer_spec(model, ib_layers)
    bottleneck = HSICBottleneck(alpha=alpha, beta=beta, sigma=sigma, eps=eps, y_kernel=y_kernel, num_classes=num_classes)
    if mask is None and mask_layer is not None:
        mask = "paper"
    if isinstance(mask, str):
        if mask not in ("paper", "code"):
            raise ValueError(f"mask: expected None, 'paper', 'code' or a ChannelMask, got {mask!r}")
        preset = preset_for_model(model)
        k = preset.mask_k if preset is not None else 10
        mask = ChannelMask(mode=mask, k_low_y=k, k_high_x=k, num_classes=num_classes)
    if mask is not None:
        if not isinstance(mask, ChannelMask):
            raise TypeError(f"mask: expected None, 'paper', 'code' or a ChannelMask, got {type(mask).__name__}")
        if mask.num_classes is None:
            if num_classes is None:
                raise ValueError("num_classes: the channel mask needs the number of classes; pass num_classes=")
            mask.num_classes = num_classes
        if mask_layer is None:
            preset = preset_for_model(model)
            if preset is None or preset.mask_layer is None:
                raise ValueError(
                    f"mask_layer: {type(model).__name__} has no preset mask layer; pass the dotted name "
                    "of the layer to mask"
                )
            mask_layer = preset.mask_layer
    if record_masked is None:
        preset = preset_for_model(model)
        record_masked = preset.record_masked if preset is not None else True
    return IBModel(
        model, layers=layers, bottleneck=bottleneck, mask=mask, mask_layer=mask_layer, record_masked=record_masked,
        check_finite=check_finite,
    )
