"""IB-RAR inside the Adversarial Robustness Toolbox (ART 1.20.1): loss, classifier and trainers.

The core mechanism is :class:`IBCrossEntropyLoss`, handed to ART's ``PyTorchClassifier`` as its
loss. It is a ``nn.CrossEntropyLoss`` (so ART keeps integer labels and may rewrite ``.reduction``)
that adds the IB term of an :class:`~ib_plugins.IBModel` only when the logits it receives *are* the
output of a recorded training-mode forward (matched by identity with
:meth:`~ib_plugins.IBModel.find_record`). Attack gradients are computed in eval mode, record
nothing, and therefore get plain cross-entropy: the attack objective never changes.
:func:`make_art_classifier` builds the classifier (an :class:`IBPyTorchClassifier`; the
:class:`~ib_plugins.IBModel` is not an ``nn.Sequential``, so ART never unrolls it).

Stock ART trainers then train with the IB term as they are; the ``IB*`` trainer classes below add
what the stock ones cannot do: they give each batch's labels to the channel mask (so the mask's
schedule counts *training batches* and restarts every epoch), let the IB term use the clean batch
as X, offer the clean-pass option, and fix FBF's eval-mode update.

Which forward the IB term regularises (``ib_pass="trainer"``, the default) is dictated by the
trainer: it is the pass whose logits the trainer hands to ``classifier._loss``.
``ib_pass="clean"`` always regularises the clean batch, reusing the trainer's clean forward when
there is one and otherwise running one extra clean training forward per batch (which also updates
BatchNorm running statistics). X of ``I(X, T)`` is the clean batch whenever an ``IB*`` class
provides it (``x_for_ib="clean"``, the authors' choice), else the forward's own input.

| trainer (ART 1.20.1)        | ``ib_pass="trainer"`` regularises | ``ib_pass="clean"``: class, cost |
|-----------------------------|-----------------------------------|----------------------------------|
| ``AdversarialTrainer``      | the mixed batch (share ``ratio``  | ``IBAdversarialTrainer``:        |
|                             | adversarial)                      | +1 forward                       |
| ``...MadryPGD``             | the adversarial batch             | ``IBAdversarialTrainerMadryPGD``:|
|                             |                                   | +1 forward                       |
| ``...TRADESPyTorch``        | the clean batch                   | ``IB...TRADESPyTorch``: reused   |
| ``...AWPPyTorch`` PGD       | the adversarial batch             | ``IB...AWPPyTorch``: +1 forward  |
| ``...AWPPyTorch`` TRADES    | the clean batch                   | ``IB...AWPPyTorch``: reused      |
| ``...FBFPyTorch``           | stock: nothing (eval-mode update);| ``IB...FBFPyTorch``: +1 forward  |
|                             | ``IB...FBFPyTorch``: the FGSM-RS  |                                  |
|                             | adversarial batch                 |                                  |
| ``...OAATPyTorch``          | the clean batch                   | ``IB...OAATPyTorch``: reused     |
| ``...MARTPyTorch`` (ours)   | the adversarial batch (CE term)   | ``IB...MARTPyTorch``: reused     |

``...X`` is ART's ``AdversarialTrainerX`` (ours: :class:`AdversarialTrainerMARTPyTorch`) and
``IB...X`` the matching ``IBAdversarialTrainerX`` class of this module.

"+1 forward": one extra clean training forward per batch; "reused": the trainer's own clean
forward is regularised, at no extra cost. X of ``I(X, T)`` is the clean batch with every ``IB*``
class (``x_for_ib="clean"``); with a stock trainer it is the regularised forward's own input, and
``ib_pass="clean"`` is unavailable (a clear error names the class to use). The channel mask
acts only where it is given labels: under the ``IB*`` classes, and under the stock
``AdversarialTrainer``/``AdversarialTrainerMadryPGD`` through :meth:`IBPyTorchClassifier.fit`; the
stock TRADES/AWP/FBF/OAAT trainers never give it labels, so there it stays off.

How the channel mask gets each batch's labels (it needs them before the masked layer runs):

* ``_batch_process`` trainers (TRADES, AWP, FBF, OAAT, MART): :class:`IBTrainerMixin` enters
  :meth:`IBModel.labels(y_batch) <ib_plugins.IBModel.labels>` around the whole batch (ART's one-hot
  labels converted to class indices) and restarts the schedule at every epoch;
* ``AdversarialTrainer``/``AdversarialTrainerMadryPGD`` call ``classifier.fit`` once per batch:
  :meth:`IBPyTorchClassifier.fit` enters the labels context around each batch it trains on;
  :class:`IBAdversarialTrainer` also restarts the schedule at every epoch (with the stock trainers
  it counts batches across epochs).

Attack forwards run in eval mode: they are never masked and never advance the schedule.

Example:
    >>> import numpy as np, torch, torch.nn as nn
    >>> from ib_plugins import wrap_model
    >>> from art.attacks.evasion import ProjectedGradientDescent
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3))
    >>> ib = wrap_model(net, ["1"], num_classes=3)
    >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
    ...                           input_shape=(1, 8, 8), nb_classes=3)
    >>> pgd = ProjectedGradientDescent(clf, eps=0.1, eps_step=0.05, max_iter=2, verbose=False)
    >>> x, y = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32), np.arange(16) % 3
    >>> IBAdversarialTrainerTRADESPyTorch(clf, pgd, beta=1.0).fit(x, y, batch_size=8, nb_epochs=1)
    >>> clf.loss.num_ib_terms  # one IB term per training batch, none in the 4 attack steps
    2
    >>> clf.loss.num_calls
    6
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._optional import require
from ib_plugins.training.losses import mart_regularizer
from ib_plugins.wrap import IBModel

art = require("art", purpose="ib_plugins.adapters.art_training", extra="art")

import numpy as np  # noqa: E402  (ART depends on numpy and tqdm)
from art.config import ART_NUMPY_DTYPE  # noqa: E402
from art.defences.trainer import (  # noqa: E402
    AdversarialTrainer,
    AdversarialTrainerAWPPyTorch,
    AdversarialTrainerFBFPyTorch,
    AdversarialTrainerMadryPGD,
    AdversarialTrainerOAATPyTorch,
    AdversarialTrainerTRADESPyTorch,
    Trainer,
)
from art.estimators.classification import PyTorchClassifier  # noqa: E402
from art.utils import check_and_transform_label_format, random_sphere  # noqa: E402
from tqdm.auto import tqdm, trange  # noqa: E402

__all__ = [
    "TESTED_ART_VERSION",
    "UntestedARTVersionWarning",
    "check_art_version",
    "source_fingerprint",
    "CleanBatch",
    "IBCrossEntropyLoss",
    "IBPyTorchClassifier",
    "make_art_classifier",
    "make_art_proxy_classifier",
    "IBTrainerMixin",
    "IBAdversarialTrainer",
    "IBAdversarialTrainerMadryPGD",
    "IBAdversarialTrainerTRADESPyTorch",
    "IBAdversarialTrainerAWPPyTorch",
    "IBAdversarialTrainerFBFPyTorch",
    "IBAdversarialTrainerOAATPyTorch",
    "AdversarialTrainerMARTPyTorch",
    "IBAdversarialTrainerMARTPyTorch",
]

logger = logging.getLogger(__name__)

#: The ART release this adapter was written and tested against.
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


def _ib_model_of(classifier: Any) -> IBModel:
    if not isinstance(classifier, PyTorchClassifier):
        raise TypeError(
            f"classifier: expected an ART PyTorchClassifier (build it with make_art_classifier), got "
            f"{type(classifier).__name__}"
        )
    if isinstance(classifier, IBPyTorchClassifier):
        return classifier.ib_model
    return _require_ib_model(classifier.model, "classifier.model")


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


# ---------------------------------------------------------------------------------------------
# The classifier
# ---------------------------------------------------------------------------------------------
class _IBModelWrapper(nn.Module):
    """ART's model wrapper for an :class:`~ib_plugins.IBModel`, shaped as ART's own for the network.

    ``_model`` is the network (what ART's ``PyTorchClassifier.model`` returns, and what ART reads
    ``named_modules()``, ``state_dict()`` and the layer names from); ``ib_model`` the IBModel, whose
    forward this one runs (so training forwards are recorded and masked). Like ART's wrapper for a
    non-``Sequential`` model, the forward returns ``[logits]``.
    """

    def __init__(self, ib_model: IBModel) -> None:
        super().__init__()
        self._model = ib_model.model
        self.ib_model = ib_model

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.ib_model(x)]

    @property
    def get_layers(self) -> list[str]:
        """The network's top-level children, as ART's wrapper lists them."""
        return list(self._model._modules)


class IBPyTorchClassifier(PyTorchClassifier):
    """ART's ``PyTorchClassifier`` for an :class:`~ib_plugins.IBModel`; gives the mask its labels in ``fit``.

    It answers ART's classifier API as the ``PyTorchClassifier`` built on the *unwrapped* network
    would, so attacks, defences, detectors and tools that take a ``PyTorchClassifier`` work on it:

    * ``model`` is the network inside the IBModel (:attr:`ib_model` is the IBModel), so code that
      reads ``classifier.model`` — its children, ``named_modules()``, ``state_dict()``, or calls it
      (ART's AWP/OAAT trainers) — sees the same network as with a plain classifier; a training
      forward through ``classifier.model(x)`` is still recorded for the IB term (see
      :class:`~ib_plugins.IBModel`);
    * ``layer_names`` are the network's own top-level layers (not the wrapper's ``model`` and
      ``bottleneck``), and :meth:`get_activations` takes those names, their indices, or any dotted
      ``named_modules()`` path of the network (``"layer1.0.conv1"``, also with a ``"model."``
      prefix); its hook lives only for the call (ART's own leaves one behind per call);
    * :meth:`clone_for_refitting` returns a fresh ``IBPyTorchClassifier`` whose
      :class:`IBCrossEntropyLoss` is bound to the *cloned* model, so the clone trains with the IB term;
    * :meth:`save` writes the network's ``state_dict`` (the keys a plain classifier writes), and the
      ``repr`` names ``art.estimators.classification.pytorch.PyTorchClassifier``, its loss and
      optimizer as ART's does, then the IB term;
    * predictions, ``class_gradient``, ``loss_gradient``, ``compute_loss``, preprocessing, clip
      values, ``get_params``/``set_params`` are ART's (eval-mode forwards carry no IB term).

    :meth:`fit` differs when the model has a channel mask, or :class:`IBAdversarialTrainer` provided
    the clean batch: it runs its own loop (an adapted copy of ART 1.20.1's) that enters
    :meth:`IBModel.labels(y_batch) <ib_plugins.IBModel.labels>` around every batch, so the mask sees
    the labels of exactly the rows it masks. Otherwise it is ART's ``fit``. Build it with
    :func:`make_art_classifier`.

    Args:
        model: the :class:`~ib_plugins.IBModel`.
        loss: the loss (usually :class:`IBCrossEntropyLoss`).
        *args: the rest of ``PyTorchClassifier``'s positional arguments (``input_shape``, ``nb_classes``...).
        **kwargs: everything else ``PyTorchClassifier`` takes.

    Raises:
        TypeError: ``model`` is not an :class:`~ib_plugins.IBModel`.

    Example:
        >>> import torch.nn as nn
        >>> from ib_plugins import wrap_model
        >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
        >>> clf = IBPyTorchClassifier(ib, IBCrossEntropyLoss(ib), input_shape=(4,), nb_classes=3,
        ...                           optimizer=torch.optim.SGD(ib.parameters(), lr=0.1), device_type="cpu")
        >>> clf.ib_model is ib
        True
    """

    def __init__(self, model: IBModel, loss: nn.Module, *args: Any, **kwargs: Any) -> None:
        _require_ib_model(model, "model")
        super().__init__(model, loss, *args, **kwargs)
        self._ib_clean_inputs: np.ndarray | None = None

    def _make_model_wrapper(self, model: nn.Module) -> nn.Module:
        # ART's wrapper keeps the model it was given as ``_model``: ``classifier.model``, ART's
        # ``layer_names``, ``_model._model.named_modules()``/``state_dict()`` (OAAT, AWP, save) then
        # all see the IBModel's names. Ours keeps the *network* there, so every one of them answers
        # as for a classifier of the plain network, and runs the forward through the IBModel.
        return _IBModelWrapper(_require_ib_model(model, "model"))

    @property
    def ib_model(self) -> IBModel:
        """The wrapped :class:`~ib_plugins.IBModel` (``self.model`` is the network inside it, as for a plain classifier)."""
        return self._model.ib_model  # type: ignore[return-value]

    # -- ART's classifier API, answered for the unwrapped network ----------------------------------
    def _activation_module(self, layer: Any) -> tuple[str, nn.Module]:
        network = self.ib_model.model
        names = self._layer_names
        if isinstance(layer, str):
            key = layer
            if key not in names and key.startswith("model."):
                key = key[len("model."):]
            modules = dict(network.named_modules())
            if key in modules and key != "":
                return key, modules[key]
            import difflib

            close = difflib.get_close_matches(layer, [n for n in modules if n], n=3)
            hint = f"; close matches: {', '.join(map(repr, close))}" if close else ""
            raise ValueError(
                f"Layer name {layer} not supported: expected one of layer_names {names} or a dotted "
                f"named_modules() path of {type(network).__name__}{hint}"
            )
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if not -len(names) <= int(layer) < len(names):
                raise ValueError(f"layer: expected an index in [{-len(names)}, {len(names) - 1}] of layer_names "
                                 f"{names}, got {layer}")
            name = names[int(layer)]
            return name, network.get_submodule(name)
        raise TypeError("Layer must be of type str or int")

    def get_activations(  # type: ignore[override]
        self, x: np.ndarray | Tensor, layer: int | str | None = None, batch_size: int = 128, framework: bool = False
    ) -> np.ndarray | Tensor:
        """The output of a layer of the network for ``x``, as ART's ``get_activations``.

        Args:
            x: inputs (numpy array or tensor).
            layer: an index into :attr:`layer_names`, one of its names, or any dotted
                ``named_modules()`` path of the network (a ``"model."`` prefix is accepted).
            batch_size: samples per forward.
            framework: return the tensor (with its graph) of one forward of all of ``x``.

        Returns:
            The activations, first dimension the batch.

        Raises:
            ValueError: an unknown layer name (close matches are listed) or an index out of range.
            TypeError: ``layer`` is neither a str nor an int.

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU())
            >>> ib = wrap_model(net, ["2"], num_classes=3)
            >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
            ...                           input_shape=(4,), nb_classes=3)
            >>> clf.layer_names, clf.get_activations(np.ones((2, 4), dtype=np.float32), "1").shape
            (['0', '1', '2'], (2, 3))
        """
        from ib_plugins._context import _inference_modes

        name, module = self._activation_module(layer)
        x_pre, _ = self._apply_preprocessing(x=x, y=None, fit=False, no_grad=not framework)
        captured: dict[str, Tensor] = {}

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured[name] = output

        handle = module.register_forward_hook(hook)
        try:
            with _inference_modes(self._model):
                if framework:
                    x_t = x_pre if isinstance(x_pre, Tensor) else torch.from_numpy(x_pre)
                    self._model(x_t.to(self._device))
                    return captured[name]
                results = []
                with torch.no_grad():
                    for begin in range(0, len(x_pre), batch_size):
                        self._model(torch.from_numpy(x_pre[begin : begin + batch_size]).to(self._device))
                        results.append(captured[name].detach().cpu().numpy())
        finally:
            handle.remove()
        return np.concatenate(results)

    def clone_for_refitting(self) -> IBPyTorchClassifier:
        """A copy to refit from scratch: same network and IB configuration, fresh weights and optimizer.

        Unlike ART's (which reuses the original loss object), the clone's
        :class:`IBCrossEntropyLoss` is bound to the *cloned* :class:`~ib_plugins.IBModel`, so fitting
        the clone adds the IB term of its own forwards (ART's ``DeepPartitionEnsemble``, shadow
        models and several defences clone this way).

        Returns:
            The new classifier, its weights re-initialised.

        Raises:
            ValueError: the classifier has no optimizer.

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
            >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
            ...                           input_shape=(4,), nb_classes=3)
            >>> clone = clf.clone_for_refitting()
            >>> clone.loss.ib_model is clone.ib_model, clone.model is not clf.model
            (True, True)
        """
        import copy

        if self._optimizer is None:
            raise ValueError("optimizer: clone_for_refitting needs the classifier's optimizer, got None")
        model = copy.deepcopy(self.ib_model)
        optimizer = type(self._optimizer)(model.parameters(), **self._optimizer.defaults)  # type: ignore[call-arg]
        loss = self._loss
        if isinstance(loss, IBCrossEntropyLoss):
            loss = IBCrossEntropyLoss(
                model, ib_pass=loss.ib_pass, x_for_ib=loss.x_for_ib, weight=loss.weight,
                ignore_index=loss.ignore_index, reduction=loss.reduction, label_smoothing=loss.label_smoothing,
            )
        clone = type(self)(model, loss, self.input_shape, self.nb_classes, optimizer=optimizer)
        clone.reset()
        params = self.get_params()
        for key in ("model", "optimizer", "loss"):  # the clone keeps its own
            params.pop(key, None)
        clone.set_params(**params)
        return clone

    def save(self, filename: str, path: str | None = None) -> None:
        """Save the network's ``state_dict`` (and the optimizer's), as a plain classifier would.

        The files are ``<filename>.model`` (the unwrapped network's keys, so a plain
        ``PyTorchClassifier`` of the same network loads them) and ``<filename>.optimizer``.

        Args:
            filename: file name (without extension).
            path: folder; None = ART's ``ART_DATA_PATH``.

        Example:
            >>> import os, tempfile, torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
            >>> ib = wrap_model(net, ["1"], num_classes=3)
            >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
            ...                           input_shape=(4,), nb_classes=3)
            >>> folder = tempfile.mkdtemp()
            >>> clf.save("m", path=folder)
            >>> sorted(torch.load(os.path.join(folder, "m.model"), weights_only=True))
            ['1.bias', '1.weight']
        """
        import os

        from art import config as art_config

        full_path = os.path.join(art_config.ART_DATA_PATH if path is None else path, filename)
        os.makedirs(os.path.dirname(full_path) or ".", exist_ok=True)
        torch.save(self.ib_model.model.state_dict(), full_path + ".model")
        if self._optimizer is not None:
            torch.save(self._optimizer.state_dict(), full_path + ".optimizer")
        logger.info("Model state dict saved in path: %s.model", full_path)

    def __getstate__(self) -> dict[str, Any]:
        # ART pickles by writing the weights to a file in ART_DATA_PATH and reading it back; the
        # IBModel's state travels inside the pickle instead (no file is written).
        state = self.__dict__.copy()
        state["_ib_inner_model"] = state["_model"].ib_model
        for key in ("_model_wrapper", "_device", "_model"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        model = state.pop("_ib_inner_model")
        self.__dict__.update(state)
        model.eval()
        self._model = self._make_model_wrapper(model)
        self._device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        self._model.to(self._device)

    def __repr__(self) -> str:
        loss = self._loss
        loss_text = "CrossEntropyLoss()" if isinstance(loss, IBCrossEntropyLoss) else repr(loss)
        ib_text = (f" + the IB term of {loss!r}" if isinstance(loss, IBCrossEntropyLoss)
                   else " (this loss adds no IB term)")
        return (
            f"{self.__module__}.{type(self).__name__}, an art.estimators.classification.pytorch.PyTorchClassifier("
            f"model={self._model}, loss={loss_text}, optimizer={self._optimizer}, input_shape={self._input_shape}, "
            f"nb_classes={self.nb_classes}, channels_first={self.channels_first}, clip_values={self.clip_values!r}, "
            f"preprocessing_defences={self.preprocessing_defences}, "
            f"postprocessing_defences={self.postprocessing_defences}, preprocessing={self.preprocessing}){ib_text}"
        )

    @contextmanager
    def clean_inputs(self, x_clean: np.ndarray) -> Iterator[None]:
        """Declare the clean counterpart (row-aligned) of the ``x`` passed to ``fit`` inside the block.

        Args:
            x_clean: clean inputs, same shape as that ``x``.

        Yields:
            Nothing.

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
            >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
            ...                           input_shape=(4,), nb_classes=3)
            >>> with clf.clean_inputs(np.zeros((2, 4), dtype=np.float32)):
            ...     pass
        """
        previous = self._ib_clean_inputs
        self._ib_clean_inputs = x_clean
        try:
            yield
        finally:
            self._ib_clean_inputs = previous

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 128,
        nb_epochs: int = 10,
        training_mode: bool = True,
        drop_last: bool = False,
        scheduler: Any = None,
        verbose: bool = False,
        **kwargs: Any,
    ) -> None:
        """Fit the classifier, giving each batch's labels to the channel mask.

        Same arguments as ``PyTorchClassifier.fit``. A call that trains on more than one batch
        restarts the mask schedule at every epoch; a single-batch call (what ``AdversarialTrainer``
        makes) counts as one batch of the caller's epoch and is not shuffled.

        Args:
            x: training data.
            y: labels (indices or one-hot).
            batch_size: batch size.
            nb_epochs: epochs.
            training_mode: model mode during training.
            drop_last: drop the last incomplete batch.
            scheduler: stepped once per epoch of this call.
            verbose: progress bar.
            **kwargs: ignored, as in ART.

        Raises:
            RuntimeError: the IBModel was unwrapped.
            ValueError: no optimizer, or clean inputs of another length than ``x``.

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
            >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
            ...                           input_shape=(4,), nb_classes=3)
            >>> clf.fit(np.random.rand(8, 4).astype(np.float32), np.arange(8) % 3, batch_size=4, nb_epochs=1)
            >>> clf.loss.num_ib_terms
            2
        """
        ib_model = self.ib_model
        _check_hooks(ib_model)
        clean = self._ib_clean_inputs
        if ib_model.mask is None and clean is None:
            try:
                super().fit(
                    x, y, batch_size=batch_size, nb_epochs=nb_epochs, training_mode=training_mode,
                    drop_last=drop_last, scheduler=scheduler, verbose=verbose, **kwargs,
                )
            finally:
                ib_model.clear_records()
            return
        # Adapted from ART 1.20.1 PyTorchClassifier.fit (pytorch.py 366-454): the labels context per
        # batch, the clean batch for the loss, no shuffling of a single batch (keeps rows aligned).
        if self._optimizer is None:
            raise ValueError(
                "optimizer: training needs an optimizer, got None (pass optimizer= to make_art_classifier)"
            )
        if self._use_amp:  # pragma: no cover - apex is not supported by this loop
            raise NotImplementedError("IBPyTorchClassifier.fit with a channel mask does not support use_amp=True")
        if clean is not None and len(clean) != len(x):
            raise ValueError(f"clean inputs: expected {len(x)} rows (as x), got {len(clean)}")
        self._model.train(mode=training_mode)
        y = check_and_transform_label_format(y, nb_classes=self.nb_classes)
        x_pre, y_pre = self._apply_preprocessing(x, y, fit=True)
        y_pre = self.reduce_labels(y_pre)
        x_t, y_t = torch.from_numpy(x_pre), torch.from_numpy(y_pre)
        c_t = None
        loss_fn = self._loss
        if clean is not None and isinstance(loss_fn, IBCrossEntropyLoss) and loss_fn.wants_clean_batch:
            c_t = torch.from_numpy(self._apply_preprocessing(clean, y, fit=True)[0])
        n = len(x_t)
        nb_batches = n // batch_size if drop_last else math.ceil(n / batch_size)
        for _ in tqdm(range(nb_epochs), disable=not verbose, desc="Epochs"):
            if nb_batches > 1:
                ib_model.start_epoch()
            order = torch.randperm(n) if nb_batches > 1 else torch.arange(n)
            for b in range(nb_batches):
                idx = order[b * batch_size : (b + 1) * batch_size]
                x_b, y_b = x_t[idx].to(self._device), y_t[idx].to(self._device)
                y_idx = _class_indices(y_b)
                stash = nullcontext() if c_t is None else loss_fn.clean_batch(c_t[idx].to(self._device), y_idx)
                self._optimizer.zero_grad()
                try:
                    with ib_model.labels(y_idx), stash:
                        loss = self._loss(self._model(x_b)[-1], y_b)
                    loss.backward()
                    self._optimizer.step()
                finally:
                    ib_model.clear_records()
            if scheduler is not None:
                scheduler.step()

    def fit_generator(self, generator: Any, nb_epochs: int = 20, verbose: bool = False, **kwargs: Any) -> None:
        """ART's ``fit_generator``; refuses a channel mask (use :meth:`fit`, which gives it labels).

        Args:
            generator: an ART data generator.
            nb_epochs: epochs.
            verbose: progress bar.
            **kwargs: passed to ART.

        Raises:
            NotImplementedError: the model has a channel mask.
            RuntimeError: the IBModel was unwrapped.
        """
        ib_model = self.ib_model
        _check_hooks(ib_model)
        if ib_model.mask is not None:
            raise NotImplementedError(
                "IBPyTorchClassifier.fit_generator cannot give the channel mask its labels; use fit(x, y)"
            )
        try:
            super().fit_generator(generator, nb_epochs=nb_epochs, verbose=verbose, **kwargs)
        finally:
            ib_model.clear_records()


def make_art_classifier(
    ib_model: IBModel,
    *,
    loss: nn.Module | None = None,
    optimizer: torch.optim.Optimizer,
    input_shape: tuple[int, ...],
    nb_classes: int,
    clip_values: tuple[float, float] | None = (0.0, 1.0),
    **kwargs: Any,
) -> IBPyTorchClassifier:
    """Build the ART classifier for an :class:`~ib_plugins.IBModel` with the IB loss.

    Args:
        ib_model: the wrapped network (build the optimizer from ``ib_model.parameters()``).
        loss: the training loss; None = ``IBCrossEntropyLoss(ib_model)``. Another loss trains
            without the IB term (the channel mask still works).
        optimizer: the optimizer.
        input_shape: shape of one input, e.g. ``(1, 28, 28)``.
        nb_classes: number of classes.
        clip_values: input range; inputs are expected in ``[0, 1]`` (normalise inside the model).
        **kwargs: passed to ``PyTorchClassifier`` (``device_type`` defaults to the model's device).

    Returns:
        The :class:`IBPyTorchClassifier`.

    Raises:
        TypeError: ``ib_model`` is not an :class:`~ib_plugins.IBModel` or ``loss`` not an ``nn.Module``.
        ValueError: an :class:`IBCrossEntropyLoss` bound to another model.

    Example:
        >>> import torch.nn as nn
        >>> from ib_plugins import wrap_model
        >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
        >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
        ...                           input_shape=(4,), nb_classes=3)
        >>> type(clf.loss).__name__, clf.ib_model is ib, clf.model is ib.model
        ('IBCrossEntropyLoss', True, True)
    """
    _require_ib_model(ib_model, "ib_model")
    if loss is None:
        loss = IBCrossEntropyLoss(ib_model)
    elif not isinstance(loss, nn.Module):
        raise TypeError(f"loss: expected a torch.nn.Module loss (e.g. IBCrossEntropyLoss), got {type(loss).__name__}")
    elif isinstance(loss, IBCrossEntropyLoss) and loss.ib_model is not ib_model:
        raise ValueError("loss: this IBCrossEntropyLoss reads the records of another IBModel than ib_model")
    if "device_type" not in kwargs:
        param = next(ib_model.parameters(), None)
        kwargs["device_type"] = "gpu" if param is not None and param.device.type == "cuda" else "cpu"
    return IBPyTorchClassifier(
        ib_model, loss, input_shape=tuple(input_shape), nb_classes=nb_classes, optimizer=optimizer,
        clip_values=clip_values, **kwargs,
    )


# nn.Module's hook registries (torch 2.x); the proxy's copies are emptied.
_HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks",
)


def make_art_proxy_classifier(
    classifier: PyTorchClassifier,
    *,
    optimizer_factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
    loss: nn.Module | None = None,
) -> PyTorchClassifier:
    """A proxy classifier for AWP/OAAT: an independent hook-free copy of the main classifier's model.

    AWP and OAAT load the main classifier's ``model.state_dict()`` into the proxy (strict), so the
    proxy holds a copy of exactly that: of the network for an :class:`IBPyTorchClassifier` (whose
    ``model`` is the network), of the whole ``IBModel`` for a plain ``PyTorchClassifier`` built
    around one. The copy has no hooks at all (neither the IBModel's nor any
    other forward/backward hook left on the network, e.g. by ART's own ``get_activations``): its
    forwards are plain, and it trains with plain cross-entropy by default (the weight perturbation
    then maximises CE only).

    Args:
        classifier: the main classifier (its model must be an :class:`~ib_plugins.IBModel`).
        optimizer_factory: builds the proxy optimizer from its parameters; default SGD(lr=0.01).
        loss: the proxy's loss; default ``nn.CrossEntropyLoss()``.

    Returns:
        A ``PyTorchClassifier`` around the copy.

    Raises:
        TypeError: ``classifier`` is not an ART ``PyTorchClassifier`` around an IBModel.

    Example:
        >>> import torch.nn as nn
        >>> from ib_plugins import wrap_model
        >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
        >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
        ...                           input_shape=(4,), nb_classes=3)
        >>> proxy = make_art_proxy_classifier(clf)
        >>> proxy.model is not ib.model, type(proxy.model).__name__, ib.has_hooks
        (True, 'Sequential', True)
    """
    import copy

    ib_model = _ib_model_of(classifier)
    ib_copy = copy.deepcopy(ib_model)  # hooks are copied consistently with the copy ...
    ib_copy.remove_hooks()  # ... and removed from the copy only, the IBModel's ...
    proxy_model = ib_copy.model if isinstance(classifier, IBPyTorchClassifier) else ib_copy
    for module in proxy_model.modules():  # ... and anyone else's (on the copy's modules only)
        for attr in _HOOK_DICTS:
            hooks = getattr(module, attr, None)
            if hooks:
                hooks.clear()
    factory = optimizer_factory or (lambda params: torch.optim.SGD(params, lr=0.01))
    return PyTorchClassifier(
        proxy_model,
        loss=loss if loss is not None else nn.CrossEntropyLoss(),
        input_shape=classifier.input_shape,
        nb_classes=classifier.nb_classes,
        optimizer=factory(proxy_model.parameters()),
        clip_values=classifier.clip_values,
        device_type="cpu" if classifier.device.type == "cpu" else "gpu",
    )


# ---------------------------------------------------------------------------------------------
# Trainers with a per-batch method: the mixin
# ---------------------------------------------------------------------------------------------
class IBTrainerMixin:
    """Per-batch IB support for ART trainers that have a ``_batch_process`` method.

    Put it first in the bases: ``class T(IBTrainerMixin, AdversarialTrainerXPyTorch)``. Around every
    ``_batch_process`` call it (1) checks that the IBModel still has its hooks, (2) restarts the
    channel-mask schedule at the first batch of each epoch of ``fit``/``fit_generator``, (3) enters
    :meth:`IBModel.labels(y_batch) <ib_plugins.IBModel.labels>` (class indices) so the mask masks this
    batch's training forwards on schedule, (4) provides the preprocessed clean batch to an
    :class:`IBCrossEntropyLoss` (``x_for_ib="clean"``/``ib_pass="clean"``; "stash clean batch") and
    (5) drops the batch's unconsumed records.

    Raises:
        TypeError: at construction, when the classifier's model is not an :class:`~ib_plugins.IBModel`.

    Example:
        >>> issubclass(IBAdversarialTrainerTRADESPyTorch, IBTrainerMixin)
        True
    """

    _classifier: PyTorchClassifier

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _ib_model_of(self._classifier)
        self._ib_epoch_batches: int | None = None
        self._ib_batch_count = 0

    @contextmanager
    def _ib_epochs(self, batches_per_epoch: int | None) -> Iterator[None]:
        previous = (self._ib_epoch_batches, self._ib_batch_count)
        self._ib_epoch_batches, self._ib_batch_count = batches_per_epoch, 0
        try:
            yield
        finally:
            self._ib_epoch_batches, self._ib_batch_count = previous

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        """The trainer's ``fit``, with the mask schedule restarted at every epoch.

        Args:
            *args: as the trainer's ``fit``.
            **kwargs: as the trainer's ``fit``.

        Returns:
            What the trainer's ``fit`` returns.
        """
        bound = inspect.signature(super().fit).bind(*args, **kwargs)  # type: ignore[misc]
        bound.apply_defaults()
        x, batch_size = bound.arguments["x"], bound.arguments["batch_size"]
        with self._ib_epochs(math.ceil(len(x) / batch_size)):
            return super().fit(*args, **kwargs)  # type: ignore[misc]

    def fit_generator(self, generator: Any, *args: Any, **kwargs: Any) -> Any:
        """The trainer's ``fit_generator``, with the mask schedule restarted at every epoch.

        Args:
            generator: an ART data generator.
            *args: as the trainer's ``fit_generator``.
            **kwargs: as the trainer's ``fit_generator``.

        Returns:
            What the trainer's ``fit_generator`` returns.
        """
        per_epoch = math.ceil(generator.size / generator.batch_size) if generator.size else None
        with self._ib_epochs(per_epoch):
            return super().fit_generator(generator, *args, **kwargs)  # type: ignore[misc]

    @contextmanager
    def _ib_batch(self, x_batch: np.ndarray, y_batch: np.ndarray) -> Iterator[None]:
        clf = self._classifier
        model = _ib_model_of(clf)
        _check_hooks(model)
        if self._ib_epoch_batches:
            if self._ib_batch_count % self._ib_epoch_batches == 0:
                model.start_epoch()
            self._ib_batch_count += 1
        y_idx = _class_indices(y_batch, device=clf.device)
        loss = clf._loss
        stash: Any = nullcontext()
        if isinstance(loss, IBCrossEntropyLoss) and loss.wants_clean_batch:
            y_cat = check_and_transform_label_format(np.asarray(y_batch), nb_classes=clf.nb_classes)
            x_pre, _ = clf._apply_preprocessing(x_batch, y_cat, fit=True)
            stash = loss.clean_batch(torch.from_numpy(x_pre).to(clf.device), y_idx)
        try:
            with model.labels(y_idx), stash:
                yield
        finally:
            model.clear_records()

    def _batch_process(self, *args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(super()._batch_process).bind(*args, **kwargs)  # type: ignore[misc]
        with self._ib_batch(bound.arguments["x_batch"], bound.arguments["y_batch"]):
            return super()._batch_process(*args, **kwargs)  # type: ignore[misc]


def _check_tensor_state(classifier: PyTorchClassifier, trainer: str) -> None:
    bad = [k for k, v in classifier.model.state_dict().items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(
            f"{trainer} calls .size() on every state_dict entry of the model, but {', '.join(bad)} "
            "is not a tensor; remove that state or use another trainer"
        )


class IBAdversarialTrainerTRADESPyTorch(IBTrainerMixin, AdversarialTrainerTRADESPyTorch):
    """ART's TRADES trainer with :class:`IBTrainerMixin` (mask labels, clean batch, epoch schedule).

    The IB term regularises the clean forward (TRADES passes the clean logits to the loss). Note
    ART's ``scheduler`` check rejects torch >= 2 schedulers (pass None).

    Args:
        classifier: from :func:`make_art_classifier`.
        attack: the training attack.
        beta: TRADES' KL weight.

    Example:
        >>> IBAdversarialTrainerTRADESPyTorch.__mro__[1].__name__
        'IBTrainerMixin'
    """


class IBAdversarialTrainerAWPPyTorch(IBTrainerMixin, AdversarialTrainerAWPPyTorch):
    """ART's AWP trainer with :class:`IBTrainerMixin`.

    Mode ``"PGD"`` regularises the adversarial forward, ``"TRADES"`` the clean one. Build the proxy
    with :func:`make_art_proxy_classifier`. AWP calls ``.size()`` on every ``state_dict`` entry; the
    channel mask keeps its schedule state as a tensor, so it works here (a model with other
    non-tensor state is refused).

    Args:
        classifier: from :func:`make_art_classifier`.
        proxy_classifier: from :func:`make_art_proxy_classifier`.
        attack: the training attack.
        mode: ``"PGD"`` or ``"TRADES"``.
        gamma: weight-perturbation scale.
        beta: TRADES' KL weight.
        warmup: epochs before weight perturbation starts.

    Raises:
        ValueError: the model has non-tensor ``state_dict`` entries.

    Example:
        >>> IBAdversarialTrainerAWPPyTorch.__mro__[2].__name__
        'AdversarialTrainerAWPPyTorch'
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _check_tensor_state(self._classifier, "AdversarialTrainerAWPPyTorch")


class IBAdversarialTrainerOAATPyTorch(IBTrainerMixin, AdversarialTrainerOAATPyTorch):
    """ART's OAAT trainer with :class:`IBTrainerMixin`; the IB term regularises the clean forward.

    OAAT replaces the classifier's optimizer by a fresh SGD at epoch ``int(3·nb_epochs/4)`` and
    needs LPIPS/SWA settings in ``train_params`` (see the tests for a minimal CPU configuration).
    Like AWP it needs every ``state_dict`` entry to be a tensor (the channel mask's state is).

    Args:
        classifier: from :func:`make_art_classifier`.
        proxy_classifier: from :func:`make_art_proxy_classifier`.
        lpips_classifier: the weight-averaged model for LPIPS (e.g. another proxy).
        list_avg_models: SWA models.
        attack: the training attack.
        train_params: OAAT's parameter dict.

    Raises:
        ValueError: the model has non-tensor ``state_dict`` entries.

    Example:
        >>> IBAdversarialTrainerOAATPyTorch.__mro__[2].__name__
        'AdversarialTrainerOAATPyTorch'
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _check_tensor_state(self._classifier, "AdversarialTrainerOAATPyTorch")


class IBAdversarialTrainerFBFPyTorch(IBTrainerMixin, AdversarialTrainerFBFPyTorch):
    """ART's "fast is better than free" trainer, fixed to update in training mode, with :class:`IBTrainerMixin`.

    Upstream (ART 1.20.1) ``_batch_process`` runs its update forward in eval mode (left there by
    ``loss_gradient``): BatchNorm never updates its running statistics and no IB record is made.
    This class's ``_batch_process`` is upstream's with three changes: ``train(True)`` before the
    update forward (and ``train(False)`` after), labels converted to one-hot first (upstream crashes
    on index labels), and the reported accuracy read from the logits (``[-1]``). The IB term
    regularises the FGSM-RS adversarial forward. FBF also sets its own cyclic learning rate and clips
    the gradient norm to 0.5.

    Args:
        classifier: from :func:`make_art_classifier`.
        eps: perturbation budget.
        use_amp: must be False.

    Raises:
        NotImplementedError: ``use_amp=True``.

    Example:
        >>> IBAdversarialTrainerFBFPyTorch.__mro__[2].__name__
        'AdversarialTrainerFBFPyTorch'
    """

    def __init__(self, classifier: PyTorchClassifier, eps: float = 8, use_amp: bool = False) -> None:
        if use_amp:
            raise NotImplementedError("IBAdversarialTrainerFBFPyTorch does not support use_amp=True")
        super().__init__(classifier, eps=eps, use_amp=False)

    def _batch_process(self, x_batch: np.ndarray, y_batch: np.ndarray, l_r: float) -> tuple[float, float, float]:
        with self._ib_batch(x_batch, y_batch):
            return self._fbf_batch(x_batch, y_batch, l_r)

    def _fbf_batch(self, x_batch: np.ndarray, y_batch: np.ndarray, l_r: float) -> tuple[float, float, float]:
        # Adapted from ART 1.20.1 AdversarialTrainerFBFPyTorch._batch_process
        # (adversarial_trainer_fbf_pytorch.py 197-259); changes are marked "FIX".
        clf = self._classifier
        if clf._optimizer is None:
            raise ValueError("Optimizer of classifier is currently None, but is required for adversarial training.")
        y_batch = check_and_transform_label_format(y_batch, nb_classes=clf.nb_classes)  # FIX: index labels
        n = x_batch.shape[0]
        m = np.prod(x_batch.shape[1:]).item()
        delta = random_sphere(n, m, self._eps, np.inf).reshape(x_batch.shape).astype(ART_NUMPY_DTYPE)
        delta_grad = clf.loss_gradient(x_batch + delta, y_batch)
        delta = np.clip(delta + 1.25 * self._eps * np.sign(delta_grad), -self._eps, +self._eps)
        if clf.clip_values is not None:
            x_batch_pert = np.clip(x_batch + delta, clf.clip_values[0], clf.clip_values[1])
        else:
            x_batch_pert = x_batch + delta
        x_preprocessed, y_preprocessed = clf._apply_preprocessing(x_batch_pert, y_batch, fit=True)
        if clf._reduce_labels:
            y_preprocessed = np.argmax(y_preprocessed, axis=1)
        i_batch = torch.from_numpy(x_preprocessed).to(clf._device)
        o_batch = torch.from_numpy(y_preprocessed).to(clf._device)
        clf._model.train(mode=True)  # FIX: upstream updates in the eval mode left by loss_gradient
        clf._optimizer.zero_grad()
        model_outputs = clf._model(i_batch)
        loss = clf._loss(model_outputs[-1], o_batch)
        clf._optimizer.param_groups[0].update(lr=l_r)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clf._model.parameters(), 0.5)
        clf._optimizer.step()
        clf._model.train(mode=False)  # FIX: leave the model as TRADES/AWP do
        train_acc = (model_outputs[-1].max(1)[1] == o_batch).sum().item()  # FIX: [-1], not [0]
        return loss.item() * o_batch.size(0), train_acc, o_batch.size(0)


# ---------------------------------------------------------------------------------------------
# AdversarialTrainer / Madry: no per-batch method
# ---------------------------------------------------------------------------------------------
class IBAdversarialTrainer(AdversarialTrainer):
    """ART's ``AdversarialTrainer`` that keeps the clean batch and restarts the mask schedule per epoch.

    ``fit`` is an adapted copy of ART 1.20.1's (adversarial_trainer.py 196-266): the same shuffling
    and adversarial replacement, plus (1) ``ib_model.start_epoch()`` at every epoch, (2) the clean
    batch handed to :meth:`IBPyTorchClassifier.clean_inputs` (used as X of the IB term and for
    ``ib_pass="clean"``) and (3) ``scheduler`` stepped once per epoch (upstream forwards it to
    ``classifier.fit``, which steps it every batch). The mask's labels are given by
    :meth:`IBPyTorchClassifier.fit`. ``fit_generator`` is ART's (labels per batch, no clean batch).

    Args:
        classifier: an :class:`IBPyTorchClassifier` (from :func:`make_art_classifier`).
        attacks: attack(s) generating the adversarial share of each batch.
        ratio: share of each batch replaced by adversarial examples.

    Raises:
        TypeError: ``classifier`` is not an :class:`IBPyTorchClassifier`.

    Example:
        >>> import torch.nn as nn
        >>> from ib_plugins import wrap_model
        >>> from art.attacks.evasion import FastGradientMethod
        >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), ["2"],
        ...                 num_classes=3)
        >>> clf = make_art_classifier(ib, loss=IBCrossEntropyLoss(ib, ib_pass="clean"), input_shape=(4,),
        ...                           optimizer=torch.optim.SGD(ib.parameters(), lr=0.1), nb_classes=3)
        >>> trainer = IBAdversarialTrainer(clf, FastGradientMethod(clf, eps=0.1), ratio=0.5)
        >>> trainer.fit(np.random.rand(8, 4).astype(np.float32), np.arange(8) % 3, batch_size=4, nb_epochs=1)
        >>> clf.loss.num_ib_terms, clf.loss.num_extra_forwards  # one extra clean forward per batch
        (2, 2)
    """

    def __init__(self, classifier: IBPyTorchClassifier, attacks: Any, ratio: float = 0.5) -> None:
        if not isinstance(classifier, IBPyTorchClassifier):
            raise TypeError(
                "classifier: expected an IBPyTorchClassifier (build it with make_art_classifier), got "
                f"{type(classifier).__name__}"
            )
        super().__init__(classifier, attacks, ratio=ratio)

    def fit(  # type: ignore[override]
        self, x: np.ndarray, y: np.ndarray, batch_size: int = 128, nb_epochs: int = 20, scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        """Adversarial training with the clean batch kept (see the class docs).

        Args:
            x: training set.
            y: labels.
            batch_size: batch size.
            nb_epochs: epochs.
            scheduler: learning-rate scheduler, stepped once per epoch.
            **kwargs: passed to ``classifier.fit``.

        Raises:
            RuntimeError: the IBModel was unwrapped.
            NotImplementedError: a targeted attack (as upstream).
        """
        clf: IBPyTorchClassifier = self._classifier  # type: ignore[assignment]
        ib_model = clf.ib_model
        _check_hooks(ib_model)
        nb_batches = int(np.ceil(len(x) / batch_size))
        ind = np.arange(len(x))
        attack_id = 0
        self._precomputed_adv_samples = []
        for attack in self.attacks:
            if "verbose" in attack.attack_params:
                attack.set_params(verbose=False)
            if "targeted" in attack.attack_params and attack.targeted:  # type: ignore[attr-defined]
                raise NotImplementedError("Adversarial training with targeted attacks is currently not implemented")
            self._precomputed_adv_samples.append(None if attack.estimator == clf else attack.generate(x, y=y))
        for _ in trange(nb_epochs, desc="IB adversarial training epochs"):
            np.random.shuffle(ind)
            ib_model.start_epoch()
            for batch_id in range(nb_batches):
                idx = ind[batch_id * batch_size : min((batch_id + 1) * batch_size, x.shape[0])]
                x_clean, y_batch = x[idx], y[idx]
                x_batch = x_clean.copy()
                attack = self.attacks[attack_id]
                nb_adv = int(np.ceil(self.ratio * x_batch.shape[0]))
                if self.ratio < 1:
                    adv_ids = np.random.choice(x_batch.shape[0], size=nb_adv, replace=False)
                else:
                    adv_ids = np.array(list(range(x_batch.shape[0])))
                    np.random.shuffle(adv_ids)
                if attack.estimator == clf:
                    x_batch[adv_ids] = attack.generate(x_batch[adv_ids], y=y_batch[adv_ids])
                else:
                    x_batch[adv_ids] = self._precomputed_adv_samples[attack_id][idx][adv_ids]  # type: ignore[index]
                with clf.clean_inputs(x_clean):
                    clf.fit(x_batch, y_batch, nb_epochs=1, batch_size=x_batch.shape[0], verbose=False, **kwargs)
                attack_id = (attack_id + 1) % len(self.attacks)
            if scheduler is not None:
                scheduler.step()


class IBAdversarialTrainerMadryPGD(AdversarialTrainerMadryPGD):
    """ART's Madry PGD trainer running :class:`IBAdversarialTrainer` (clean batch kept, schedule per epoch).

    Same arguments as ``AdversarialTrainerMadryPGD``; only ``self.trainer`` differs. The IB term
    regularises the adversarial forward (X = the clean batch), or with ``ib_pass="clean"`` one extra
    clean forward per batch.

    Args:
        classifier: an :class:`IBPyTorchClassifier`.
        nb_epochs: default epochs.
        batch_size: default batch size.
        eps: PGD budget.
        eps_step: PGD step.
        max_iter: PGD iterations.
        num_random_init: PGD random restarts.

    Raises:
        TypeError: ``classifier`` is not an :class:`IBPyTorchClassifier`.

    Example:
        >>> import torch.nn as nn
        >>> from ib_plugins import ChannelMask, wrap_model
        >>> mask = ChannelMask(mode="paper", drop_frac=0.25, every=2, skip_first=False)
        >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), ["2"],
        ...                 num_classes=3, mask=mask, mask_layer="2")
        >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
        ...                           input_shape=(4,), nb_classes=3)
        >>> trainer = IBAdversarialTrainerMadryPGD(clf, nb_epochs=2, batch_size=4, eps=0.1, eps_step=0.05, max_iter=2)
        >>> trainer.fit(np.random.rand(12, 4).astype(np.float32), np.arange(12) % 3)
        >>> mask.num_masked  # batches 0 and 2 of each 3-batch epoch; attack forwards never
        4
    """

    def __init__(
        self,
        classifier: IBPyTorchClassifier,
        nb_epochs: int | None = 205,
        batch_size: int | None = 128,
        eps: float = 8,
        eps_step: float = 2,
        max_iter: int = 7,
        num_random_init: int = 1,
    ) -> None:
        super().__init__(
            classifier, nb_epochs=nb_epochs, batch_size=batch_size, eps=eps, eps_step=eps_step,
            max_iter=max_iter, num_random_init=num_random_init,
        )
        self.trainer = IBAdversarialTrainer(classifier, self.attack, ratio=1.0)


# ---------------------------------------------------------------------------------------------
# MART in ART's conventions
# ---------------------------------------------------------------------------------------------
class AdversarialTrainerMARTPyTorch(Trainer):
    """MART (Wang et al., ICLR 2020) as an ART trainer, following ART's TRADES-PyTorch conventions.

    ART 1.20.1 ships no MART; IB-RAR combines with it. Per batch: the attack runs in eval mode, then
    in training mode a clean and an adversarial forward, and the loss
    ``classifier._loss(logits_adv, y) + [BCE-boost + β·KL-weighted]`` of
    :func:`ib_plugins.training.mart_loss` (its CE term is routed through the classifier's loss, so an
    :class:`IBCrossEntropyLoss` adds the IB term on the adversarial forward). Works with any
    ``PyTorchClassifier``; :class:`IBAdversarialTrainerMARTPyTorch` adds the mask labels and clean batch.

    Args:
        classifier: an ART ``PyTorchClassifier`` with an optimizer.
        attack: the training attack (e.g. ART PGD).
        beta: weight of MART's robust KL term (6.0 in the MART paper; the IB-RAR scripts use 0.5).

    Raises:
        TypeError: ``classifier`` is not a ``PyTorchClassifier``.
        ValueError: ``beta`` negative or not finite.

    Example:
        >>> import torch.nn as nn
        >>> from art.attacks.evasion import ProjectedGradientDescent
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> clf = PyTorchClassifier(net, nn.CrossEntropyLoss(), input_shape=(4,), nb_classes=3,
        ...                         optimizer=torch.optim.SGD(net.parameters(), lr=0.1), clip_values=(0, 1))
        >>> pgd = ProjectedGradientDescent(clf, eps=0.1, eps_step=0.05, max_iter=2, verbose=False)
        >>> trainer = AdversarialTrainerMARTPyTorch(clf, pgd, beta=6.0)
        >>> trainer.fit(np.random.rand(8, 4).astype(np.float32), np.arange(8) % 3, batch_size=4, nb_epochs=1)
        >>> trainer.predict(np.zeros((2, 4), dtype=np.float32)).shape
        (2, 3)
    """

    def __init__(self, classifier: PyTorchClassifier, attack: Any, beta: float = 6.0) -> None:
        if not isinstance(classifier, PyTorchClassifier):
            raise TypeError(f"classifier: expected an ART PyTorchClassifier, got {type(classifier).__name__}")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"beta: expected a finite number >= 0, got {beta!r}")
        super().__init__(classifier)
        self._classifier: PyTorchClassifier
        self._attack = attack
        self._beta = float(beta)

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        batch_size: int = 128,
        nb_epochs: int = 20,
        scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        """Train with MART.

        Args:
            x: training set.
            y: labels (indices or one-hot).
            validation_data: ``(x_val, y_val)``; clean validation accuracy is logged per epoch.
            batch_size: batch size.
            nb_epochs: epochs.
            scheduler: any torch learning-rate scheduler, stepped once per epoch.
            **kwargs: unused (ART's convention).
        """
        nb_batches = int(np.ceil(len(x) / batch_size))
        ind = np.arange(len(x))
        y = check_and_transform_label_format(y, nb_classes=self._classifier.nb_classes)
        for i_epoch in trange(nb_epochs, desc="Adversarial Training MART - Epochs"):
            np.random.shuffle(ind)
            totals = np.zeros(3)
            for batch_id in range(nb_batches):
                idx = ind[batch_id * batch_size : min((batch_id + 1) * batch_size, x.shape[0])]
                totals += self._batch_process(x[idx].copy(), y[idx])
            if scheduler is not None:
                scheduler.step()
            self._log_epoch(i_epoch, totals, validation_data)

    def fit_generator(self, generator: Any, nb_epochs: int = 20, scheduler: Any = None, **kwargs: Any) -> None:
        """Train with MART from an ART data generator.

        Args:
            generator: an ART ``DataGenerator`` (``size`` must be known).
            nb_epochs: epochs.
            scheduler: any torch learning-rate scheduler, stepped once per epoch.
            **kwargs: unused.

        Raises:
            ValueError: the generator's size is None.

        Example:
            >>> import torch.nn as nn
            >>> from art.attacks.evasion import ProjectedGradientDescent
            >>> from art.data_generators import NumpyDataGenerator
            >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
            >>> clf = PyTorchClassifier(net, nn.CrossEntropyLoss(), input_shape=(4,), nb_classes=3,
            ...                         optimizer=torch.optim.SGD(net.parameters(), lr=0.1), clip_values=(0, 1))
            >>> gen = NumpyDataGenerator(np.random.rand(8, 4).astype(np.float32), np.eye(3)[np.arange(8) % 3],
            ...                          batch_size=4)
            >>> pgd = ProjectedGradientDescent(clf, eps=0.1, eps_step=0.05, max_iter=2, verbose=False)
            >>> AdversarialTrainerMARTPyTorch(clf, pgd).fit_generator(gen, nb_epochs=1)
        """
        if generator.size is None:
            raise ValueError("generator: MART needs a generator with a known size, got size=None")
        nb_batches = int(np.ceil(generator.size / generator.batch_size))
        for i_epoch in trange(nb_epochs, desc="Adversarial Training MART - Epochs"):
            totals = np.zeros(3)
            for _ in range(nb_batches):
                x_batch, y_batch = generator.get_batch()
                totals += self._batch_process(np.array(x_batch, copy=True), y_batch)
            if scheduler is not None:
                scheduler.step()
            self._log_epoch(i_epoch, totals, None)

    def _log_epoch(self, i_epoch: int, totals: np.ndarray, validation_data: Any) -> None:
        loss, acc, n = totals / max(totals[2], 1)
        if validation_data is None:
            logger.info("epoch: %s loss: %.4f acc-adv: %.4f", i_epoch, loss, acc)
            return
        x_val, y_val = validation_data
        pred = np.argmax(self.predict(x_val), axis=1)
        val_acc = float(np.mean(pred == _class_indices(y_val).numpy()))
        logger.info("epoch: %s loss: %.4f acc-adv: %.4f acc(val): %.4f", i_epoch, loss, acc, val_acc)

    def _batch_process(self, x_batch: np.ndarray, y_batch: np.ndarray) -> tuple[float, float, float]:
        """One MART step; returns ``(loss·n, correct adversarial predictions, n)`` as ART's trainers."""
        clf = self._classifier
        if clf._optimizer is None:
            raise ValueError("Optimizer of classifier is currently None, but is required for adversarial training.")
        clf._model.train(mode=False)
        x_batch_pert = self._attack.generate(x_batch, y=y_batch)
        y_batch = check_and_transform_label_format(y_batch, nb_classes=clf.nb_classes)
        x_pre, y_pre = clf._apply_preprocessing(x_batch, y_batch, fit=True)
        x_pre_pert, _ = clf._apply_preprocessing(x_batch_pert, y_batch, fit=True)
        y_idx = _class_indices(y_pre, device=clf._device)
        if clf._reduce_labels:
            y_pre = np.argmax(y_pre, axis=1)
        i_batch = torch.from_numpy(x_pre).to(clf._device)
        i_batch_pert = torch.from_numpy(x_pre_pert).to(clf._device)
        o_batch = torch.from_numpy(y_pre).to(clf._device)
        clf._model.train(mode=True)
        clf._optimizer.zero_grad()
        logits = clf._model(i_batch)[-1]
        logits_adv = clf._model(i_batch_pert)[-1]
        loss_fn = clf._loss
        if isinstance(loss_fn, IBCrossEntropyLoss) and loss_fn.current_clean_batch is not None:
            loss_fn.current_clean_batch.output = logits  # lets ib_pass="clean" reuse this clean forward
        # mart_loss = CE(adv) + mart_regularizer; CE(adv) goes through the classifier's loss (IB hook).
        regulariser = mart_regularizer(logits, logits_adv, y_idx, beta=self._beta)
        loss = loss_fn(logits_adv, o_batch) + regulariser
        loss.backward()
        clf._optimizer.step()
        clf._model.train(mode=False)
        n = int(o_batch.shape[0])
        train_acc = (logits_adv.argmax(1) == y_idx).sum().item()
        return loss.item() * n, train_acc, n

    def predict(self, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        """Predictions of the trained classifier.

        Args:
            x: inputs.
            **kwargs: passed to ``classifier.predict``.

        Returns:
            The classifier's outputs.
        """
        return self._classifier.predict(x, **kwargs)


class IBAdversarialTrainerMARTPyTorch(IBTrainerMixin, AdversarialTrainerMARTPyTorch):
    """:class:`AdversarialTrainerMARTPyTorch` with :class:`IBTrainerMixin` (mask labels, clean batch).

    The IB term regularises the adversarial forward (X = the clean batch); with
    ``ib_pass="clean"`` MART's own clean forward (no extra forward).

    Args:
        classifier: from :func:`make_art_classifier`.
        attack: the training attack.
        beta: MART's robust-term weight.

    Example:
        >>> IBAdversarialTrainerMARTPyTorch.__mro__[2].__name__
        'AdversarialTrainerMARTPyTorch'
    """
