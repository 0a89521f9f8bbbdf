"""ART's adversarial trainers with the IB term: the ``IB*`` trainer classes and MART in ART's conventions."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor

from ib_plugins._optional import require
from ib_plugins.training.losses import mart_regularizer

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
from tqdm.auto import trange  # noqa: E402

from ib_plugins.adapters.art_classifier import IBPyTorchClassifier, _ib_model_of
from ib_plugins.adapters.art_loss import IBCrossEntropyLoss, _check_hooks, _class_indices

logger = logging.getLogger("ib_plugins.adapters.art_training")  # the name its records had before the split


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
        >>> from ib_plugins.adapters.art_classifier import make_art_classifier
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
        >>> from ib_plugins.adapters.art_classifier import make_art_classifier
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
