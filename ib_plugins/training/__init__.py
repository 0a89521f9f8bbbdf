"""Training engine: every training variant of the two papers, with checkpoints and exact resume.

Methods (spec §2.5, §3, §4, §5):

* ``ce``: cross-entropy, optionally + IB term and channel mask (IB-RAR without adversarial training);
* ``pgd-at``: Madry PGD adversarial training; the IB term regularises the adversarial forward's
  activations with the *clean* inputs as X (the authors' ``train_AT.py``);
* ``trades``: ``variant="ibrar"`` (CE(adv) + 0.5·KL with CE-PGD, the authors' ``train_TRADES.py``) or
  ``"standard"`` (CE(clean) + 6·KL with KL-PGD); IB on both passes;
* ``mart``: MART with β = 0.5 and no LR decay (authors) or β = 6 (standard); IB on both passes;
* ``hbar``: the HBaR baseline (HSIC terms on all hook points, linear Y kernel; optional PGD with the
  hidden activations from an extra clean pass);
* ``vib``: the VIB baseline (penultimate features → VIB head, CE + β·KL);
* ``entropic``: entropic retraining of a pretrained checkpoint (CE + λ(Ê_T − σ·E_T_ref)²).

Presets (``preset=``): ``ibrar-code`` (faithful to the authors' scripts), ``paper`` (the paper's
text: ε = 8/255, step 2/255, weight decay 1e-2) and ``standard`` (TRADES β = 6 with KL-PGD, MART
β = 6). :func:`resolve_config` fills every unset field from the preset and the dataset, so the
written ``config.json`` says exactly what ran.

Runs are reproducible and resumable: the trainer works inside :func:`torch.random.fork_rng`
(the caller's global RNG is untouched), seeds it from ``seed``, and checkpoints every epoch the
model, optimiser, scheduler, every RNG state, the channel-mask schedule and the resolved config.
An interrupted and resumed run ends with the same weights as an uninterrupted one.

As researchers run training (issue 14): step, multistep and cosine learning-rate schedules with a
linear warm-up (``schedule``, ``milestones``, ``warmup_epochs``); an exponential moving average of
the weights saved beside them (``ema_decay``; ``load_model_from_checkpoint(..., weights="ema")``);
PGD validation on a split held out of the training set with ``checkpoint_best.pt``
(``robust_val_every``, ``val_size``); the information plane, per-layer ``nHSIC(T, X)`` and
``nHSIC(T, Y)`` per epoch in ``history.json`` and ``information_plane.png``; optional TensorBoard
logging (``tensorboard``); and ``device="auto"``. All of it is checkpointed and resumes exactly.

Example:
    >>> from ib_plugins.training import TrainConfig, resolve_config
    >>> cfg = resolve_config(TrainConfig(method="pgd-at", dataset="cifar10", model="vgg16", ib=True))
    >>> cfg.eps, round(cfg.pgd_alpha, 4), cfg.weight_decay, cfg.momentum, cfg.y_kernel, cfg.ib_on
    (0.03, 0.0069, 0.01, 0.0, 'linear', 'adv')

The package, one concept per module:

* :mod:`~ib_plugins.training.config`: :class:`TrainConfig`, its validation, the presets and
  :func:`resolve_config`;
* :mod:`~ib_plugins.training.attacks`: the training-time attacks (:class:`TrainingAttack`, :func:`kl_pgd`);
* :mod:`~ib_plugins.training.losses`: TRADES, MART and :func:`batch_loss` (shared with the ART adapter);
* :mod:`~ib_plugins.training.model`: :func:`build_model`;
* :mod:`~ib_plugins.training.checkpoint`: atomic writes, :func:`save_checkpoint`, :func:`load_checkpoint`,
  :func:`load_model_from_checkpoint`;
* :mod:`~ib_plugins.training.schedule`: learning-rate schedules and EMA weights;
* :mod:`~ib_plugins.training.holdout`: the held-out validation split;
* :mod:`~ib_plugins.training.trainer`: the :class:`Trainer`.
"""

from __future__ import annotations

# Besides the public names, the private helpers that other ib_plugins modules import from here (noqa: F401).
from ib_plugins.training.attacks import TrainingAttack, kl_pgd
from ib_plugins.training.checkpoint import (  # noqa: F401
    _REFUSED_BY_SAFE_LOADING,
    CHECKPOINT_FORMAT,
    CheckpointError,
    _atomic_write_text,
    _load_error_reason,
    load_checkpoint,
    load_model_from_checkpoint,
    save_checkpoint,
)
from ib_plugins.training.config import (  # noqa: F401
    METHODS,
    PRESETS,
    TrainConfig,
    _check_fields,
    _check_has_a_batch,
    _device,
    resolve_config,
)
from ib_plugins.training.holdout import _validation_split  # noqa: F401
from ib_plugins.training.losses import BatchLoss, batch_loss, mart_loss, mart_regularizer, trades_loss
from ib_plugins.training.model import (
    _plain_network,  # noqa: F401
    build_model,
)
from ib_plugins.training.schedule import _build_scheduler, _ema_step, _WarmupEMA  # noqa: F401
from ib_plugins.training.trainer import (
    RunExistsError,
    Trainer,
    _summary_writer_class,  # noqa: F401
)

__all__ = [
    "METHODS",
    "PRESETS",
    "TrainConfig",
    "resolve_config",
    "Trainer",
    "TrainingAttack",
    "kl_pgd",
    "trades_loss",
    "mart_loss",
    "mart_regularizer",
    "batch_loss",
    "BatchLoss",
    "build_model",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_from_checkpoint",
    "CheckpointError",
    "RunExistsError",
]

