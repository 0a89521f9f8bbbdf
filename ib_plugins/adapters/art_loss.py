"""The IB-RAR loss inside ART: :class:`IBCrossEntropyLoss` and the ART version the adapter was checked against.

The loss adds the IB term only to the logits of a recorded training forward (see
:mod:`ib_plugins.adapters.art_training` for the whole adapter); MART's regulariser comes from
:mod:`ib_plugins.training.losses`, the Trainer's.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._optional import require
from ib_plugins.wrap import IBModel

art = require("art", purpose="ib_plugins.adapters.art_training", extra="art")

import numpy as np  # noqa: E402  (ART depends on numpy and tqdm)

logger = logging.getLogger("ib_plugins.adapters.art_training")  # the name its records had before the split


TESTED_ART_VERSION = "1.20.1"

IBPass = Literal["trainer", "clean"]
XForIB = Literal["clean", "input"]


# ---------------------------------------------------------------------------------------------
# Version check
# ---------------------------------------------------------------------------------------------
class UntestedARTVersionWarning(UserWarning):
    """The installed ART is not the release this adapter was tested with.

    Example:
        >>> issubclass(UntestedARTVersionWarning, UserWarning)
        True
    """


def check_art_version(version: str | None = None) -> bool:
    """Warn when ``version`` (default: the installed ``art.__version__``) is not the tested one.

    The adapter relies on ART internals (``classifier._loss``, ``_batch_process``, the trainers'
    forward order), and :class:`IBAdversarialTrainer`, :class:`IBPyTorchClassifier` and
    :class:`IBAdversarialTrainerFBFPyTorch` contain adapted copies of ART 1.20.1 code.

    Args:
        version: a version string; None reads ``art.__version__``.

    Returns:
        True when the version is :data:`TESTED_ART_VERSION`.

    Warns:
        UntestedARTVersionWarning: naming both versions.

    Example:
        >>> check_art_version("1.20.1")
        True
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     check_art_version("1.17.0")
        False
        >>> "1.20.1" in str(caught[0].message)
        True
    """
    version = str(art.__version__ if version is None else version)
    if version == TESTED_ART_VERSION:
        return True
    warnings.warn(
        f"ib_plugins.adapters.art_training was tested with adversarial-robustness-toolbox "
        f"{TESTED_ART_VERSION}, but version {version} is installed; the trainers' internals it relies on may "
        f"have changed (pip install 'adversarial-robustness-toolbox=={TESTED_ART_VERSION}')",
        UntestedARTVersionWarning,
        stacklevel=2,
    )
    return False


check_art_version()


def source_fingerprint(obj: Any) -> str:
    """SHA-256 of ``inspect.getsource(obj)``: detects upstream changes to code this adapter copies.

    Args:
        obj: a function, method or class.

    Returns:
        The hex digest.

    Example:
        >>> len(source_fingerprint(check_art_version))
        64
    """
    return hashlib.sha256(inspect.getsource(obj).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _require_ib_model(model: Any, name: str) -> IBModel:
    if not isinstance(model, IBModel):
        raise TypeError(
            f"{name}: expected an ib_plugins.IBModel (build it with ib_plugins.wrap_model(model, ...)), "
            f"got {type(model).__name__}"
        )
    return model


def _check_hooks(model: IBModel) -> None:
    if not model.has_hooks:
        raise RuntimeError(
            "the IBModel held by this ART classifier was unwrapped (or its hooks were removed): it records no "
            "activations, so the IB term and the channel mask would silently be skipped. Wrap the network again "
            "with ib_plugins.wrap_model(...) and build a new classifier with make_art_classifier(...), or train "
            "with a plain torch.nn.CrossEntropyLoss if the IB term is no longer wanted"
        )


def _class_indices(y: Any, device: torch.device | str | None = None) -> Tensor:
    """ART labels (indices ``[m]``/``[m, 1]`` or one-hot ``[m, C]``, numpy or torch) -> int64 indices ``[m]``."""
    t = y if isinstance(y, Tensor) else torch.from_numpy(np.asarray(y))
    if t.dim() == 2:
        t = t.argmax(dim=1) if t.shape[1] > 1 else t[:, 0]
    return t.to(device=device, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------------
@dataclass
class CleanBatch:
    """The clean counterpart of the batch being trained on, row-aligned with it.

    Attributes:
        x: the clean inputs, preprocessed as the classifier feeds them to the model.
        y: class indices ``[m]``.
        output: the logits of the trainer's own clean training forward, when a trainer has one and
            knows it (:class:`AdversarialTrainerMARTPyTorch` sets it); None otherwise.

    Example:
        >>> CleanBatch(torch.zeros(2, 3), torch.tensor([0, 1])).output is None
        True
    """

    x: Tensor
    y: Tensor
    output: Tensor | None = None


class IBCrossEntropyLoss(nn.CrossEntropyLoss):
    """Cross-entropy plus the IB-RAR term of an :class:`~ib_plugins.IBModel`, for ART classifiers.

    ``forward(logits, target)`` returns ``CE + ib_model.ib_loss(X, target, output=logits)`` when
    ``logits`` is the output of a forward recorded by ``ib_model`` (training mode, gradients on),
    and plain CE otherwise, so attack gradients (eval mode) and proxy models see pure CE. With
    ``reduction="none"`` (ART's ``compute_loss``) the per-sample CE is returned without the IB term
    (it is a batch-level quantity); with ``"sum"`` the IB term is added once, unscaled.

    Args:
        ib_model: the wrapped model whose records the loss reads.
        ib_pass: ``"trainer"``: regularise the forward whose logits the trainer passes (see the
            module table); ``"clean"``: regularise the clean batch (needs an ``IB*`` trainer or
            :class:`IBAdversarialTrainer`, which provide it).
        x_for_ib: X of ``I(X, T)``: ``"clean"`` = the clean batch when a trainer provides it (the
            authors' choice), else the forward's input; ``"input"`` = always the forward's input.
        weight: as ``nn.CrossEntropyLoss``.
        ignore_index: as ``nn.CrossEntropyLoss``.
        reduction: as ``nn.CrossEntropyLoss``.
        label_smoothing: as ``nn.CrossEntropyLoss``.

    Attributes:
        num_calls: how many times the loss ran.
        num_ib_terms: how many of those added an IB term.
        num_extra_forwards: clean forwards run for ``ib_pass="clean"``.
        last_ib: the last IB term (detached), or None.

    Raises:
        TypeError: ``ib_model`` is not an :class:`~ib_plugins.IBModel`.
        ValueError: an unknown ``ib_pass`` or ``x_for_ib``.

    Example:
        >>> import torch.nn as nn
        >>> from ib_plugins import wrap_model
        >>> ib = wrap_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), ["1"], num_classes=3)
        >>> loss = IBCrossEntropyLoss(ib)
        >>> x, y = torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
        >>> train_value = loss(ib.train()(x), y)
        >>> eval_value = loss(ib.eval()(x), y)   # no record: plain cross-entropy
        >>> loss.num_calls, loss.num_ib_terms
        (2, 1)
    """

    def __init__(
        self,
        ib_model: IBModel,
        *,
        ib_pass: IBPass = "trainer",
        x_for_ib: XForIB = "clean",
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        _require_ib_model(ib_model, "ib_model")
        if ib_pass not in ("trainer", "clean"):
            raise ValueError(f"ib_pass: expected 'trainer' or 'clean', got {ib_pass!r}")
        if x_for_ib not in ("clean", "input"):
            raise ValueError(f"x_for_ib: expected 'clean' or 'input', got {x_for_ib!r}")
        super().__init__(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
        # Stored outside nn.Module's registry on purpose: as a submodule, loss.train()/eval()/to()
        # and loss.state_dict() would act on the model too.
        object.__setattr__(self, "_ib_model", ib_model)
        self.ib_pass: IBPass = ib_pass
        self.x_for_ib: XForIB = x_for_ib
        self.num_calls = 0
        self.num_ib_terms = 0
        self.num_extra_forwards = 0
        self.last_ib: Tensor | None = None
        self._clean: CleanBatch | None = None
        self._warned_small = False

    @property
    def ib_model(self) -> IBModel:
        """The :class:`~ib_plugins.IBModel` whose records this loss reads."""
        return self._ib_model  # type: ignore[return-value]

    @property
    def wants_clean_batch(self) -> bool:
        """Whether trainers should provide the clean batch (:meth:`clean_batch`).

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> ib = wrap_model(nn.Sequential(nn.Linear(2, 2)), ["0"])
            >>> IBCrossEntropyLoss(ib, x_for_ib="input").wants_clean_batch
            False
        """
        return self.ib_pass == "clean" or self.x_for_ib == "clean"

    @property
    def current_clean_batch(self) -> CleanBatch | None:
        """The clean batch provided for the batch being trained on, or None."""
        return self._clean

    @contextmanager
    def clean_batch(self, x: Tensor, y: Tensor) -> Iterator[CleanBatch]:
        """Provide the clean counterpart of the batch trained on inside the block.

        Used by the ``IB*`` trainers; custom training loops may use it too.

        Args:
            x: clean inputs, preprocessed, row-aligned with the trained batch.
            y: class indices ``[m]``.

        Yields:
            The :class:`CleanBatch` (a trainer may set its ``output``).

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> loss = IBCrossEntropyLoss(wrap_model(nn.Sequential(nn.Linear(2, 2)), ["0"]))
            >>> with loss.clean_batch(torch.rand(3, 2), torch.tensor([0, 1, 0])) as clean:
            ...     loss.current_clean_batch is clean
            True
            >>> loss.current_clean_batch is None
            True
        """
        previous = self._clean
        self._clean = CleanBatch(x=x, y=_class_indices(y, device=x.device))
        try:
            yield self._clean
        finally:
            self._clean = previous

    def ib_term(self, output: Tensor, target: Tensor) -> Tensor | None:
        """The IB term for the recorded training forward that produced ``output`` (consumes it).

        Args:
            output: logits handed to the loss.
            target: the labels handed to the loss (class indices or ``[m, C]`` probabilities).

        Returns:
            The differentiable IB term, or None when ``output`` is not from a recorded training
            forward (attack or eval forwards, another model), when that forward's input requires
            grad (an input-gradient computation, e.g. ``loss_gradient(training_mode=True)``), or
            when the batch has fewer than 2 samples.

        Raises:
            RuntimeError: the model was unwrapped while still used for training, or
                ``ib_pass="clean"`` without a trainer that provides the clean batch.

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> ib = wrap_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), ["1"], num_classes=2)
            >>> loss = IBCrossEntropyLoss(ib)
            >>> loss.ib_term(ib.eval()(torch.rand(4, 4)), torch.tensor([0, 1, 0, 1])) is None
            True
        """
        model = self.ib_model
        if model.model.training and torch.is_grad_enabled():
            _check_hooks(model)
        record = model.find_record(output)
        if record is None or record.inputs.requires_grad:
            # No training record (eval/no-grad forward, another model), or a forward whose input
            # requires grad: an input-gradient computation such as ART's loss_gradient with
            # training_mode=True. Either way plain CE: the attack objective must not change.
            return None
        clean = self._clean
        x: Tensor | None = None
        y = target
        if self.ib_pass == "clean":
            if clean is None:
                raise RuntimeError(
                    "ib_pass='clean' needs the clean batch, which this trainer does not provide; use the IB* "
                    "trainer classes of ib_plugins.adapters.art_training (e.g. IBAdversarialTrainerMadryPGD, "
                    "IBAdversarialTrainerTRADESPyTorch) or ib_pass='trainer'"
                )
            x, y = clean.x, clean.y
            if clean.output is not None and model.find_record(clean.output) is not None:
                output = clean.output
            elif not (record.inputs is clean.x or torch.equal(record.inputs, clean.x)):
                output = model(clean.x)  # the trainer never forwarded the clean batch: one extra forward
                self.num_extra_forwards += 1
        elif self.x_for_ib == "clean" and clean is not None and clean.x.shape[0] == record.batch_size:
            x = clean.x
        batch = int(output.shape[0])
        if batch < 2:
            if not self._warned_small:
                logger.warning("IBCrossEntropyLoss: a batch of %d sample(s) gets no IB term (HSIC needs >= 2)", batch)
                self._warned_small = True
            return None
        ib = model.ib_loss(x, y, output=output)
        self.num_ib_terms += 1
        self.last_ib = ib.detach()
        return ib

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002 (nn.CrossEntropyLoss's names)
        """Cross-entropy, plus the IB term for a recorded training forward (see the class docs).

        Args:
            input: logits ``[m, C]``.
            target: class indices ``[m]`` or probabilities ``[m, C]``.

        Returns:
            The loss (per sample with ``reduction="none"``, then without the IB term).

        Raises:
            RuntimeError: see :meth:`ib_term`.

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> ib = wrap_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), ["1"], num_classes=2)
            >>> loss = IBCrossEntropyLoss(ib, reduction="none")
            >>> loss(ib.train()(torch.rand(4, 4)), torch.tensor([0, 1, 0, 1])).shape
            torch.Size([4])
        """
        self.num_calls += 1
        model = self.ib_model
        if model.model.training and torch.is_grad_enabled():
            _check_hooks(model)
        ce = super().forward(input, target)
        if self.reduction == "none":
            return ce
        ib = self.ib_term(input, target)
        return ce if ib is None else ce + ib

    def extra_repr(self) -> str:
        return f"ib_pass={self.ib_pass!r}, x_for_ib={self.x_for_ib!r}, reduction={self.reduction!r}"
