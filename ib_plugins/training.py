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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import re
import time
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins._markdown import md_cell, md_code, md_text
from ib_plugins.errors import IBPluginsError
from ib_plugins.wrap import IBModel, wrap_model

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

logger = logging.getLogger(__name__)

METHODS = ("ce", "pgd-at", "trades", "mart", "hbar", "vib", "entropic")
PRESETS = ("ibrar-code", "paper", "standard")
_AT_METHODS = ("pgd-at", "trades", "mart")
_SMALL_IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist")
CHECKPOINT_FORMAT = 1


class CheckpointError(IBPluginsError, ValueError):
    """A checkpoint file is missing, corrupt, truncated, or belongs to a different model.

    Example:
        >>> issubclass(CheckpointError, ValueError)
        True
    """


class RunExistsError(IBPluginsError, FileExistsError):
    """The results folder already holds a different run (pass ``overwrite=True`` to replace it).

    Example:
        >>> issubclass(RunExistsError, FileExistsError)
        True
    """


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` fields are filled by :func:`resolve_config`.

    Attributes:
        dataset: dataset name (see :func:`ib_plugins.data.list_datasets`).
        model: model name (see :func:`ib_plugins.models.list_models`).
        method: one of :data:`METHODS`.
        preset: one of :data:`PRESETS`.
        ib: add the IB-RAR term (methods ce, pgd-at, trades, mart).
        ib_layers: layer spec for :func:`ib_plugins.wrap_model` (``"robust"``, ``"all"``, names).
            None = as the authors' scripts (spec A5): every hook point (``"all"``) for adversarial
            training (pgd-at, trades, mart); the robust layers for ce where the model's preset
            defines them (VGG-16: block 5, FC1, FC2, Table III), else every hook point.
        alpha: α of the IB term.
        beta: β of the IB term.
        y_kernel: kernel on Y; None = the authors' per-script choice (spec §2.1).
        mask: channel mask mode (``"code"``, ``"paper"``) or None.
        mask_every: mask one batch in ``mask_every`` (10 authors' code, 1 Algorithm 1).
        record_masked: when the mask layer is also an IB layer, whether the IB term sees its output
            after the mask (True) or before it (False). None = ``ibrar-code``: the authors' order
            for the architecture (VGG-16 masks block 5 before recording it; ResNet-18 records the
            pooled vector, then masks it; see :attr:`ib_plugins.presets.LayerPreset.record_masked`);
            ``paper``/``standard``: after the mask (Algorithm 1 masks T before the IB term).
        ib_on: which forward the IB term regularises under AT: ``"adv"``, ``"clean"``, ``"both"``.
        x_for_ib: X of ``I(X, T)``: ``"clean"`` (authors) or ``"adv"`` (``--advinput``).
        epochs: number of epochs.
        batch_size: minibatch size. As the authors' loaders, the trainer drops each epoch's last
            incomplete batch (when ``batch_size > 1``), so every batch has ``batch_size`` samples for
            the HSIC terms and the mask schedule; a training set (after ``train_limit``, per process)
            smaller than one batch would give epochs without a batch and is refused before anything
            is written.
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: weight decay.
        schedule: learning-rate schedule, stepped once per epoch, through torch's own schedulers:
            ``"step"`` (:class:`~torch.optim.lr_scheduler.StepLR`: × ``gamma`` every ``step_size``
            epochs), ``"multistep"`` (:class:`~torch.optim.lr_scheduler.MultiStepLR`: × ``gamma`` at
            each of ``milestones``), ``"cosine"`` (:class:`~torch.optim.lr_scheduler.CosineAnnealingLR`
            from ``lr`` to 0 over the epochs after the warm-up; its curve depends on ``epochs``, so a
            cosine run cannot be resumed with another ``epochs``) or ``"none"`` (constant). None = the
            preset's: ``"none"`` for MART under ``ibrar-code``/``paper`` and for entropic retraining,
            else ``"step"``.
        step_size: StepLR step (epochs; counted from the end of the warm-up).
        gamma: StepLR / MultiStepLR factor.
        milestones: the epochs at whose end MultiStepLR multiplies the rate by ``gamma``, counted from
            the start of training (warm-up included): a list of increasing ints, or the text
            ``"75,90"`` (as ``--milestones 75,90``; stored as a list). Only with ``"multistep"``,
            which needs them.
        warmup_epochs: linear warm-up (:class:`~torch.optim.lr_scheduler.LinearLR` chained to the
            schedule by :class:`~torch.optim.lr_scheduler.SequentialLR`): epoch ``e < N`` (from 0)
            trains at ``lr·(e + 1)/(N + 1)``, then the schedule starts. None = no warm-up; must be
            below ``epochs``.
        eps: L∞ budget of the training attack.
        pgd_steps: PGD iterations.
        pgd_alpha: PGD step size.
        variant: TRADES/MART loss variant, ``"ibrar"`` or ``"standard"``.
        trades_beta: weight of TRADES' KL term.
        mart_beta: weight of MART's robust term.
        hbar_lambda_x: HBaR's λx.
        hbar_lambda_y: HBaR's λy.
        hbar_adv: HBaR with PGD adversarial training.
        mixup_alpha: HBaR mixup α (0 = off).
        vib_k: VIB bottleneck size K.
        vib_beta: VIB β.
        init_checkpoint: checkpoint to start from (required by ``entropic``).
        entropic_lambda: λ of entropic retraining.
        entropic_sigma: σ of entropic retraining (None: 1.65, or 1.01 on CIFAR-like data, as the paper).
        augment: random crop + flip (None = the dataset's default).
        seed: seed of the run (data order, augmentation, attack random starts, dropout).
        device: ``"auto"`` (CUDA when available, else the CPU; :func:`resolve_config` writes the
            device it picked), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        data_dir: folder with dataset files.
        train_limit: use a stratified subset of this many training images.
        test_limit: use a stratified subset of this many test images.
        eval_every: evaluate clean test accuracy every n epochs (and at the end).
        ib_global_batch: under ``torchrun``, estimate HSIC on the batch gathered from all ranks
            (default: each rank on its local batch).
        amp: mixed precision: None (float32, the default), ``"bf16"`` or ``"fp16"``. The forward
            passes, the training attack and the loss run under :func:`torch.autocast` with that
            dtype; ``"fp16"`` also scales the loss with a :class:`torch.amp.GradScaler` (saved in
            checkpoints). The HSIC kernels, solves and mask scores always run in float32.
        ema_decay: keep an exponential moving average of the weights with this decay in (0, 1)
            (:class:`torch.optim.swa_utils.AveragedModel`, updated after every optimiser step,
            BatchNorm buffers averaged too). The decay warms up as ``min(D, (1 + n) / (10 + n))``
            after n updates (TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` rule), so a
            short run is not an average dominated by its first, untrained weights (with a fixed
            0.99 a 150-step digits run gave a chance-level average); long runs see ``D`` after
            about ``9 D / (1 - D)`` steps. It is evaluated beside the
            raw weights (``test_acc_ema``) and saved in checkpoints under ``model_ema`` (load it with
            ``load_model_from_checkpoint(path, weights="ema")``). None = off.
        robust_val_every: every this many epochs (and at the last one), measure clean and PGD
            accuracy on a validation split held out of the *training* set (never the test set) and
            keep ``checkpoint_best.pt``, the epoch of the highest robust validation accuracy (of the
            EMA weights when ``ema_decay`` is set). The attack is the IB-RAR suite's L∞ PGD at the
            run's ``eps`` and ``pgd_steps`` (step size by the suite's rule for the preset), run by
            :func:`ib_plugins.evaluation.evaluate_suite` with its own seed, so the training's random
            streams are untouched. None = off (no split: every training image trains).
        val_size: images in that validation split: a seeded, class-stratified draw from the training
            images (after ``train_limit``), removed from training. None = 10% of them, at most 1000.
            Only with ``robust_val_every``. The size drawn is recorded in the history (``val_n``).
        tensorboard: also log every epoch's metrics to this folder with
            :class:`torch.utils.tensorboard.SummaryWriter` (needs the ``tensorboard`` package).
            Not part of the run's identity.

    Every field is checked by :meth:`validate` (types from the annotations, ranges, names,
    combinations) when the config is built with :meth:`from_dict` or resolved by
    :func:`resolve_config` (which :class:`Trainer` does), so a typo never trains silently.

    Example:
        >>> TrainConfig(method="ce", ib=True).method
        'ce'
    """

    dataset: str = "digits"
    model: str = "digits-cnn"
    method: str = "ce"
    preset: str = "ibrar-code"
    ib: bool = False
    ib_layers: str | list[str] | None = None
    alpha: float = 0.008
    beta: float = 0.08
    y_kernel: str | None = None
    mask: str | None = None
    mask_every: int = 10
    record_masked: bool | None = None
    ib_on: str | None = None
    x_for_ib: str = "clean"
    epochs: int = 60
    batch_size: int = 100
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    step_size: int = 20
    gamma: float = 0.2
    milestones: list[int] | str | None = None
    warmup_epochs: int | None = None
    eps: float | None = None
    pgd_steps: int = 10
    pgd_alpha: float | None = None
    variant: str | None = None
    trades_beta: float | None = None
    mart_beta: float | None = None
    hbar_lambda_x: float | None = None
    hbar_lambda_y: float | None = None
    hbar_adv: bool = False
    mixup_alpha: float = 0.0
    vib_k: int = 256
    vib_beta: float = 1e-3
    init_checkpoint: str | None = None
    entropic_lambda: float = 1.0
    entropic_sigma: float | None = None
    augment: bool | None = None
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    eval_every: int = 1
    ib_global_batch: bool = False
    amp: str | None = None
    ema_decay: float | None = None
    robust_val_every: int | None = None
    val_size: int | None = None
    tensorboard: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict.

        Returns:
            Field name → value.

        Example:
            >>> TrainConfig().to_dict()["dataset"]
            'digits'
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build a config from :meth:`to_dict` output (or a JSON object), validating every field.

        Unknown keys are refused (listed), and every value is checked as :meth:`validate` does:
        ``{"ib": "no"}`` is an error, not a truthy string that switches the IB term on.

        Args:
            data: field name → value.

        Returns:
            The config.

        Raises:
            ValueError: unknown keys (listed), or a value of the wrong type or out of range (the
                message names the field and says what was expected).

        Example:
            >>> TrainConfig.from_dict({"method": "trades"}).method
            'trades'
            >>> try:
            ...     TrainConfig.from_dict({"ib": "no"})
            ... except ValueError as err:
            ...     print(err)
            ib: expected true or false, got 'no'
        """
        if not isinstance(data, Mapping):
            raise ValueError(
                f"config: expected a mapping (a JSON object) of TrainConfig fields, got {type(data).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names, key=str)
        if unknown:
            raise ValueError(
                f"unknown training config keys: {', '.join(map(str, unknown))}; valid keys: {', '.join(sorted(names))}"
            )
        _check_fields(data)
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        """Check every field's type and range, and the combinations of fields that cannot work.

        Types come from the field annotations (``bool`` fields take only ``True``/``False``, ``int``
        fields only ints, ``float`` fields ints or floats, all finite); ``None`` is accepted where
        the annotation allows it (:func:`resolve_config` fills those fields). The Python API,
        ``ib-plugins train --config FILE`` and the command-line flags all pass through here
        (:meth:`from_dict` and :func:`resolve_config` call it), so they accept and refuse the same
        configurations.

        Raises:
            ValueError: the first offending field, named, with what was expected and what was given.

        Example:
            >>> TrainConfig(method="pgd-at", eps=0.03).validate()
            >>> try:
            ...     TrainConfig(train_limit=-5).validate()
            ... except ValueError as err:
            ...     print(err)
            train_limit: expected an int >= 1, got -5
            >>> try:
            ...     TrainConfig(method="pgd-at", eps=0.0).validate()
            ... except ValueError as err:
            ...     print(str(err).split(";")[0])
            eps: expected a number in (0, 1] for adversarial training (method 'pgd-at'), got 0.0
        """
        _check_fields(self.to_dict())
        _check_combinations(self)

    def run_identity(self) -> dict[str, Any]:
        """The fields that make two configs "the same run".

        Everything but ``epochs``, ``device``, ``eval_every``, ``data_dir`` and ``tensorboard``.

        Returns:
            The identifying subset of :meth:`to_dict`.

        Example:
            >>> TrainConfig(epochs=1).run_identity() == TrainConfig(epochs=5).run_identity()
            True
        """
        ident = self.to_dict()
        for key in ("epochs", "device", "eval_every", "data_dir", "tensorboard"):
            ident.pop(key)
        return ident


def _short_repr(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {_short_repr(value)}")


def _annotation_kinds(tp: Any) -> tuple[tuple[str, ...], bool]:
    """``("bool"|"int"|"float"|"str"|"list[str]", ...), optional`` of a field annotation."""
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    kinds: list[str] = []
    optional = False
    for member in members:
        if member is type(None):
            optional = True
        elif member in (bool, int, float, str):
            kinds.append(member.__name__)
        elif typing.get_origin(member) is list and typing.get_args(member) == (str,):
            kinds.append("list[str]")
        elif typing.get_origin(member) is list and typing.get_args(member) == (int,):
            kinds.append("list[int]")
        else:  # pragma: no cover - a new field type needs a rule here
            raise TypeError(f"TrainConfig: no validation rule for the annotation {member!r}")
    return tuple(kinds), optional


# Field name -> (kinds, optional), derived from the dataclass annotations.
_FIELD_KINDS: dict[str, tuple[tuple[str, ...], bool]] = {
    name: _annotation_kinds(tp) for name, tp in typing.get_type_hints(TrainConfig).items()
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "method": METHODS,
    "preset": PRESETS,
    "mask": ("paper", "code"),
    "x_for_ib": ("clean", "adv"),
    "amp": ("bf16", "fp16"),
    "optimizer": ("sgd", "adam"),
    "schedule": ("step", "none", "multistep", "cosine"),
    "variant": ("ibrar", "standard"),
    "y_kernel": ("linear", "gaussian"),
    "ib_on": ("adv", "clean", "both"),
}
# Numeric ranges: (low, low_inclusive, high, high_inclusive, description). Ints default to >= 1,
# floats to finite >= 0.
_SEED_LIMIT = 2**63
_RANGES: dict[str, tuple[float, bool, float, bool, str]] = {
    "seed": (0, True, _SEED_LIMIT, False, "an int >= 0 and < 2**63"),
    "eps": (0.0, True, 1.0, True, "a number in [0, 1] (inputs are in [0, 1])"),
    "entropic_sigma": (0.0, False, math.inf, False, "a finite number > 0"),
}
_DEVICE_TYPES = ("cpu", "cuda", "mps")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_field(name: str, value: Any) -> None:
    """Check one field's type and range (``None`` where the annotation allows it)."""
    kinds, optional = _FIELD_KINDS[name]
    if value is None:
        if optional:
            return
        raise ValueError(f"{name}: expected {_describe(name, kinds)}, got None")
    if name in _CHOICES:
        _choice(name, value, _CHOICES[name])
        return
    if name in ("dataset", "model"):
        if name == "dataset":
            from ib_plugins.data import list_datasets as names
        else:
            from ib_plugins.models import list_models as names
        _choice(name, value, tuple(names()))
        return
    if name == "device":
        if value != "auto":
            _parse_device(value)
        return
    if name == "milestones":
        _parse_milestones(value)
        return
    ok = False
    if "bool" in kinds and isinstance(value, bool):
        ok = True
    elif "int" in kinds and _is_int(value):
        low, low_in, high, high_in, _ = _RANGES.get(name, (1, True, math.inf, False, ""))
        ok = _in_range(value, low, low_in, high, high_in)
    elif "float" in kinds and _is_number(value):
        low, low_in, high, high_in, _ = _RANGES.get(name, (0.0, True, math.inf, False, ""))
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            number = math.inf
        ok = math.isfinite(number) and _in_range(number, low, low_in, high, high_in)
    elif "str" in kinds and isinstance(value, str):
        ok = bool(value.strip())
    elif "list[str]" in kinds and isinstance(value, list):
        ok = bool(value) and all(isinstance(v, str) and v.strip() for v in value)
    if not ok:
        raise ValueError(f"{name}: expected {_describe(name, kinds, optional)}, got {_short_repr(value)}")


_MILESTONES_EXPECTED = (
    "milestones: expected increasing epochs (ints >= 1) as a list or comma-separated text such as '75,90'"
)


def _parse_milestones(value: object) -> list[int]:
    """``[75, 90]`` from ``"75,90"`` or ``[75, 90]``; anything else is a ValueError naming ``milestones``."""
    if isinstance(value, str):
        parts = [t.strip() for t in value.split(",")]
        if not all(re.fullmatch(r"[0-9]{1,9}", t) for t in parts):
            raise ValueError(f"{_MILESTONES_EXPECTED}, got {_short_repr(value)}")
        epochs = [int(t) for t in parts]
    elif isinstance(value, list) and value and all(_is_int(v) for v in value):
        epochs = list(value)
    else:
        raise ValueError(f"{_MILESTONES_EXPECTED}, got {_short_repr(value)}")
    if epochs[0] < 1 or any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise ValueError(f"{_MILESTONES_EXPECTED}, got {_short_repr(value)}")
    return epochs


def _in_range(value: float, low: float, low_in: bool, high: float, high_in: bool) -> bool:
    above = value >= low if low_in else value > low
    below = value <= high if high_in else value < high
    return above and below


def _describe(name: str, kinds: tuple[str, ...], optional: bool = False) -> str:
    if name in _RANGES:
        return _RANGES[name][4]
    if kinds == ("bool",):
        return "None, true or false" if optional else "true or false"
    if kinds == ("int",):
        return "an int >= 1"
    if kinds == ("float",):
        return "a finite number >= 0"
    if name == "ib_layers":
        return "a layer spec ('robust', 'all', a preset name or a dotted layer name) or a non-empty list of layer names"
    return "a non-empty string"


def _check_fields(data: Mapping[str, Any]) -> None:
    """Check the type and range of every field present in ``data`` (no cross-field checks)."""
    for name, value in data.items():
        _check_field(name, value)


def _parse_device(name: object, arg: str = "device") -> torch.device:
    """Parse a device name (``cpu``, ``cuda``, ``cuda:N``, ``mps``) without checking that it exists here."""
    expected = f"{arg}: expected a device name such as 'cpu', 'cuda' or 'cuda:0'"
    if isinstance(name, torch.device):
        dev = name
    elif not isinstance(name, str) or not name.strip():
        raise ValueError(f"{expected}, got {_short_repr(name)}")
    else:
        try:
            dev = torch.device(name)
        except (RuntimeError, ValueError, TypeError):
            raise ValueError(f"{expected}, got {_short_repr(name)}") from None
    if dev.type not in _DEVICE_TYPES:
        note = " (the meta device holds no data to train or evaluate on)" if dev.type == "meta" else ""
        raise ValueError(f"{expected}, got {str(name)!r}{note}")
    if dev.type == "cpu" and dev.index not in (None, 0):
        raise ValueError(f"{arg}: expected 'cpu' (there is one CPU device), got {str(name)!r}")
    return dev


def _device(name: str | torch.device, *, arg: str = "device") -> torch.device:
    """Parse ``name`` and check that the device exists on this machine (see :func:`_parse_device`)."""
    dev = _parse_device(name, arg)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{arg}: {str(name)!r} was requested but CUDA is not available on this machine; use device='cpu'"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"{arg}: expected a CUDA device index below {count} (this machine has {count} CUDA "
                f"device{'s' if count != 1 else ''}), got {str(name)!r}"
            )
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(
            f"{arg}: {str(name)!r} was requested but MPS is not available on this machine; use device='cpu'"
        )
    return dev


def _no_batch_error(*, batch_size: int, train_limit: int | None, n_images: int, world: int = 1) -> ValueError:
    """The error for an epoch without a batch: the trainer drops each epoch's last incomplete batch."""
    why = (
        "the trainer drops each epoch's last incomplete batch (every batch has batch_size samples, for the HSIC "
        "terms and the mask schedule), so an epoch would have no batch"
    )
    if train_limit is not None and train_limit < batch_size * world:
        per = f" x {world} processes" if world > 1 else ""
        return ValueError(
            f"train_limit, batch_size: expected train_limit >= batch_size{per}, got train_limit={train_limit} and "
            f"batch_size={batch_size}: {why}; lower batch_size or raise train_limit"
        )
    per = f" per process ({world} processes)" if world > 1 else ""
    return ValueError(
        f"batch_size: expected at most the number of training images{per}, got batch_size={batch_size} for "
        f"{n_images} images: {why}; lower batch_size"
    )


def _check_has_a_batch(*, batch_size: int, train_limit: int | None) -> None:
    """Refuse ``train_limit < batch_size`` before a dataset is loaded (the trainer checks the real count)."""
    if train_limit is not None and batch_size > 1 and train_limit < batch_size:
        raise _no_batch_error(batch_size=batch_size, train_limit=train_limit, n_images=train_limit)


def _check_combinations(c: TrainConfig) -> None:
    """The checks that involve several fields (each field's own check has passed)."""
    if c.batch_size < 2 and (c.ib or c.method in ("hbar",)):
        raise ValueError(f"batch_size: the HSIC terms need batches of at least 2, got {c.batch_size}")
    if (c.mask is not None or c.ib) and c.method not in ("ce", *_AT_METHODS):
        raise ValueError(f"ib/mask: the IB-RAR term combines with methods ce, pgd-at, trades, mart, not {c.method!r}")
    if c.method == "entropic" and not c.init_checkpoint:
        raise ValueError("init_checkpoint: entropic retraining starts from a pretrained checkpoint; pass its path")
    _check_schedule(c)
    if c.ema_decay is not None and not 0.0 < c.ema_decay < 1.0:
        raise ValueError(
            f"ema_decay: expected a number in (0, 1) (the weight of the running average at each step, e.g. "
            f"0.999), got {c.ema_decay!r}"
        )
    if c.val_size is not None and c.robust_val_every is None:
        raise ValueError(
            f"val_size: the validation split is held out only for robust validation; set robust_val_every "
            f"(--robust-val-every K) or drop val_size, got val_size={c.val_size} without it"
        )
    at = c.method in _AT_METHODS or (c.method == "hbar" and c.hbar_adv)
    if at:
        for name in ("eps", "pgd_alpha"):
            value = getattr(c, name)
            if value is not None and value <= 0:
                what = "a number in (0, 1]" if name == "eps" else "a number > 0"
                raise ValueError(
                    f"{name}: expected {what} for adversarial training (method {c.method!r}), got {value!r}; "
                    f"{name} = 0 would train on unperturbed inputs (use method='ce' for that)"
                )


def _check_schedule(c: TrainConfig) -> None:
    """The learning-rate schedule's fields fit together (``schedule=None`` is never ``"multistep"``)."""
    if c.schedule == "multistep" and c.milestones is None:
        raise ValueError(
            "milestones: expected the epochs at which the multistep schedule decays the rate (e.g. "
            "--milestones 75,90), got None"
        )
    if c.milestones is not None and c.schedule != "multistep":
        raise ValueError(
            f"milestones: only the multistep schedule uses them; pass schedule='multistep' (--schedule "
            f"multistep), got schedule={c.schedule!r}"
        )
    if c.warmup_epochs is not None:
        if c.warmup_epochs >= c.epochs:
            raise ValueError(
                f"warmup_epochs: expected fewer than epochs ({c.epochs}) so that the schedule runs after the "
                f"warm-up, got {c.warmup_epochs}"
            )
        if c.milestones is not None and _parse_milestones(c.milestones)[0] <= c.warmup_epochs:
            raise ValueError(
                f"milestones: expected epochs after the warm-up (warmup_epochs={c.warmup_epochs}; milestones "
                f"count from the start of training), got {_short_repr(c.milestones)}"
            )


def _model_preset(model: str) -> Any:
    """The layer preset of a library model name (model names equal preset names), or None."""
    from ib_plugins.presets import get_preset, list_presets

    return get_preset(model) if model in list_presets() else None


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Validate ``config`` and fill every ``None`` field from the preset, method and dataset.

    The requested config is checked first (:meth:`TrainConfig.validate`), so an error names the
    value the user gave; the resolved one is checked again before it is returned.

    Args:
        config: the requested configuration.

    Returns:
        A new, fully resolved config.

    Raises:
        ValueError: an unknown name (the valid ones are listed), a value of the wrong type or out of
            range, or a combination of values that cannot train (see :meth:`TrainConfig.validate`).

    Example:
        >>> c = resolve_config(TrainConfig(method="mart"))
        >>> c.mart_beta, c.schedule, c.eps
        (0.5, 'none', 0.1)
    """
    c = dataclasses.replace(config)
    if isinstance(c.ib_layers, tuple):
        c.ib_layers = list(c.ib_layers)  # as config.json stores it, so that resumed runs compare equal
    c.validate()

    code = c.preset == "ibrar-code"
    at = c.method in _AT_METHODS or (c.method == "hbar" and c.hbar_adv)
    # Optimiser, per the authors' scripts (A11) or the paper's text.
    if c.optimizer is None:
        c.optimizer = "adam" if c.method == "entropic" else "sgd"
    if c.lr is None:
        c.lr = 1e-3 if c.method == "entropic" else 0.01
    if c.momentum is None:
        c.momentum = 0.0 if at else 0.9
    if c.weight_decay is None:
        c.weight_decay = 1e-2 if (at or c.preset == "paper") and c.method != "entropic" else 0.0
    if c.schedule is None:
        c.schedule = "none" if (c.method == "mart" and c.preset != "standard") or c.method == "entropic" else "step"
    if c.milestones is not None:
        c.milestones = _parse_milestones(c.milestones)  # "75,90" (the command line) is stored as [75, 90]
    if c.device == "auto":
        c.device = "cuda" if torch.cuda.is_available() else "cpu"
    # Attack budget.
    if c.eps is None:
        if c.dataset in _SMALL_IMAGE_DATASETS:
            c.eps = 0.1  # 0.03 is a fraction of one grey level on these images; see evaluation budgets
        elif c.preset == "standard":
            c.eps = 0.031
        else:
            c.eps = 0.03 if code else 8 / 255
    if c.pgd_alpha is None:
        if c.preset == "standard":
            c.pgd_alpha = c.eps * 0.007 / 0.031
        elif code:
            c.pgd_alpha = 2.3 * c.eps / c.pgd_steps
        else:
            c.pgd_alpha = c.eps / 4
    if c.variant is None:
        c.variant = "standard" if c.preset == "standard" else "ibrar"
    if c.trades_beta is None:
        c.trades_beta = 6.0 if c.variant == "standard" else 0.5
    if c.mart_beta is None:
        c.mart_beta = 6.0 if c.variant == "standard" else 0.5
    # The IB term: kernel on Y and the forwards it regularises (spec §2.1, A6, A7).
    if c.y_kernel is None:
        if c.method in ("trades", "mart"):
            c.y_kernel = "gaussian"
        elif c.method == "ce":
            c.y_kernel = "linear" if c.mask is not None else "gaussian"
        else:
            c.y_kernel = "linear"
    if c.ib_on is None:
        c.ib_on = {"pgd-at": "adv", "trades": "both", "mart": "both"}.get(c.method, "clean")
    # Which layers, and what the IB term sees at the mask layer (spec §2.2, A5).
    model_preset = _model_preset(c.model)
    if c.ib_layers is None:
        has_robust = model_preset is not None and bool(model_preset.robust_layers)
        c.ib_layers = "robust" if c.method == "ce" and has_robust else "all"
    if c.record_masked is None:
        c.record_masked = model_preset.record_masked if code and model_preset is not None else True
    if c.hbar_lambda_x is None:
        c.hbar_lambda_x = 0.0005 if c.hbar_adv else 0.006
    if c.hbar_lambda_y is None:
        c.hbar_lambda_y = 0.005 if c.hbar_adv else 0.05
    if c.augment is None:
        c.augment = c.dataset not in _SMALL_IMAGE_DATASETS
    if c.entropic_sigma is None:
        c.entropic_sigma = 1.01 if c.dataset in ("cifar10", "cifar100", "svhn", "tiny-imagenet") else 1.65  # Table II
    c.validate()  # the filled-in values too
    return c


# ---------------------------------------------------------------------------------------------
# Attacks used during training
# ---------------------------------------------------------------------------------------------
@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode, restoring every submodule's own flag afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _no_record(model: nn.Module) -> Any:
    return model.capturing(False) if isinstance(model, IBModel) else _null_context()


@contextmanager
def _null_context() -> Iterator[None]:
    yield


class TrainingAttack:
    """The training-time L∞ PGD: torchattacks' ``PGD`` semantics, run in eval mode, as the authors did.

    The attack is :func:`ib_plugins.attack_engine.pgd` (plain torch, the same steps and random
    start as torchattacks' ``PGD``; torchattacks is not needed). The model's train/eval flags are
    restored afterwards even if the attack raises, and an :class:`~ib_plugins.IBModel` records
    nothing during the attack. Random starts draw from the global RNG, which the :class:`Trainer`
    owns inside a forked RNG.

    Args:
        model: the model being trained.
        eps: L∞ budget.
        alpha: step size.
        steps: iterations.
        random_start: start from a uniform random point in the ε-ball.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).train()
        >>> atk = TrainingAttack(net, eps=0.1, alpha=0.05, steps=2)
        >>> x_adv = atk(torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
        >>> net.training, x_adv.shape
        (True, torch.Size([5, 1, 2, 2]))
    """

    def __init__(self, model: nn.Module, *, eps: float, alpha: float, steps: int, random_start: bool = True) -> None:
        self.model = model
        self.eps, self.alpha, self.steps, self.random_start = eps, alpha, steps, random_start

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Return adversarial examples for ``(x, y)``."""
        from ib_plugins.attack_engine import pgd

        with _eval_mode(self.model), _no_record(self.model):
            return pgd(self.model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps,
                       random_start=self.random_start).detach()


def kl_pgd(
    model: nn.Module, x: Tensor, *, eps: float, alpha: float, steps: int, init_std: float = 0.001
) -> Tensor:
    """TRADES' attack: maximise KL(f(x) || f(x')) by L∞ PGD from ``x + init_std·N(0, 1)``.

    Runs in eval mode (restored afterwards); the noise draws from the global RNG.

    Args:
        model: the model.
        x: clean inputs in [0, 1].
        eps: L∞ budget.
        alpha: step size.
        steps: iterations.
        init_std: standard deviation of the random start.

    Returns:
        Adversarial examples, detached.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x = torch.rand(3, 1, 2, 2)
        >>> bool((kl_pgd(net, x, eps=0.1, alpha=0.05, steps=3) - x).abs().max() <= 0.1 + 1e-6)
        True
    """
    with _eval_mode(model), _no_record(model):
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
        x_adv = (x.detach() + init_std * torch.randn_like(x)).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                loss = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------
def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, *, beta: float, variant: str) -> Tensor:
    """TRADES: ``CE(adv) + β·KL(p_clean || p_adv)`` (``"ibrar"``) or ``CE(clean) + β·KL`` (``"standard"``).

    The KL is ``KLDivLoss(reduction="batchmean")(log_softmax(adv), softmax(clean))``.

    Args:
        logits_clean: logits of the clean forward.
        logits_adv: logits of the adversarial forward.
        y: labels.
        beta: weight of the KL term (0.5 authors, 6 standard).
        variant: ``"ibrar"`` or ``"standard"``.

    Returns:
        The scalar loss.

    Example:
        >>> z = torch.zeros(2, 3)
        >>> float(trades_loss(z, z, torch.tensor([0, 1]), beta=6.0, variant="standard")) == float(torch.log(torch.tensor(3.0)))
        True
    """
    _choice("variant", variant, ("ibrar", "standard"))
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
    ce = F.cross_entropy(logits_adv if variant == "ibrar" else logits_clean, y)
    return ce + beta * kl


def mart_regularizer(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, *, beta: float) -> Tensor:
    """MART's terms beyond ``CE(adv)``: the boosted margin term and ``β·`` the weighted KL.

    ``NLL(log(1.0001 − p_adv), y₂) + β·mean_i[KL(p_clean,i || p_adv,i)·(1.0000001 − p_clean,i[y_i])]``,
    where ``y₂`` is the most likely wrong class under the adversarial output. Toolkit adapters that route
    ``CE(adv)`` through their own loss object add this to it.

    Args:
        logits_clean: logits of the clean forward.
        logits_adv: logits of the adversarial forward.
        y: labels.
        beta: weight of the robust term.

    Returns:
        The scalar.

    Example:
        >>> float(mart_regularizer(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), beta=6.0)) > 0
        True
    """
    batch = logits_clean.shape[0]
    p_adv = F.softmax(logits_adv, dim=1)
    top2 = torch.argsort(p_adv, dim=1)[:, -2:]
    y_wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    boost = F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), y_wrong)
    p_clean = F.softmax(logits_clean, dim=1)
    p_true = p_clean.gather(1, y.unsqueeze(1)).squeeze(1)
    kl = F.kl_div(torch.log(p_adv + 1e-12), p_clean, reduction="none").sum(dim=1)
    return boost + beta * (kl * (1.0000001 - p_true)).sum() / batch


def mart_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, *, beta: float) -> Tensor:
    """MART (Wang et al. 2020), as the official code and the authors' ``train_MART.py``.

    ``CE(adv) + NLL(log(1.0001 − p_adv), y₂) + β·mean_i[KL(p_clean,i || p_adv,i)·(1.0000001 − p_clean,i[y_i])]``,
    where ``y₂`` is the most likely wrong class under the adversarial output (see :func:`mart_regularizer`).

    Args:
        logits_clean: logits of the clean forward.
        logits_adv: logits of the adversarial forward.
        y: labels.
        beta: weight of the robust term (0.5 authors, 6 standard).

    Returns:
        The scalar loss.

    Example:
        >>> float(mart_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), beta=6.0)) > 0
        True
    """
    return F.cross_entropy(logits_adv, y) + mart_regularizer(logits_clean, logits_adv, y, beta=beta)


@dataclass
class BatchLoss:
    """A batch's total loss and its parts (tensors, not yet synchronised to the host).

    Attributes:
        loss: the total, to backpropagate.
        logits: logits used for the accuracy (the adversarial ones under AT).
        parts: named parts (``task``, ``ib``, ``hx``, ``hy``, ``kl``...).
        layer_hsic: the information-plane coordinates of the batch, ``[2, L]``: row 0 is
            ``nHSIC(T_l, X)``, row 1 ``nHSIC(T_l, Y)`` for each IB layer ``l`` (in
            :attr:`~ib_plugins.IBModel.layers` order), averaged over the forwards the IB term
            regularised (two for TRADES/MART with ``ib_on="both"``); None without an IB term.

    Example:
        >>> out = BatchLoss(loss=torch.tensor(1.0), logits=torch.zeros(2, 3))
        >>> out.parts, out.layer_hsic
        ({}, None)
    """

    loss: Tensor
    logits: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)
    layer_hsic: Tensor | None = None


def _add_ib(
    parts: dict[str, Tensor], model: IBModel, x_ib: Tensor, y: Tensor, output: Tensor, layers: list[Tensor]
) -> Tensor:
    terms = model.ib_terms(x_ib, y, output=output)
    parts["ib"] = parts.get("ib", terms.loss.new_zeros(())) + terms.loss.detach()
    parts["hx"] = parts.get("hx", terms.hx.new_zeros(())) + terms.hx.detach().sum()
    parts["hy"] = parts.get("hy", terms.hy.new_zeros(())) + terms.hy.detach().sum()
    layers.append(torch.stack([terms.hx.detach(), terms.hy.detach()]).float())
    return terms.loss


def _mean_layers(layers: list[Tensor]) -> Tensor | None:
    """The mean ``[2, L]`` of the IB terms' per-layer values (None when no IB term ran)."""
    if not layers or any(t.shape != layers[0].shape for t in layers):
        return None
    return layers[0] if len(layers) == 1 else torch.stack(layers).mean(0)


def batch_loss(
    config: TrainConfig,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attack: Callable[[Tensor, Tensor], Tensor] | None = None,
    extra: Any = None,
    forward: Callable[..., Any] | None = None,
) -> BatchLoss:
    """The loss of one batch for the configured method (spec §2.5 pseudo-code).

    Must be called with ``model`` in training mode. For IB variants ``model`` is an
    :class:`~ib_plugins.IBModel`; the labels are given to its channel mask via
    :meth:`~ib_plugins.IBModel.labels`, so masked batches follow the mask's schedule.

    Args:
        config: a resolved config (see :func:`resolve_config`).
        model: the model being trained.
        x: clean inputs.
        y: labels.
        attack: ``(x, y) -> x_adv`` for AT methods (CE-PGD); ``kl_pgd`` is used for standard TRADES.
        extra: method state: the :class:`~ib_plugins.entropic.EntropicLoss` and probe for
            ``entropic``, the HBaR bottleneck for ``hbar``.
        forward: what runs the training forwards (default ``model``; the trainer passes the
            ``DistributedDataParallel`` wrapper of ``model`` in multi-process runs).

    Returns:
        :class:`BatchLoss`.

    Example:
        >>> import torch, torch.nn as nn
        >>> from ib_plugins import wrap_model
        >>> cfg = resolve_config(TrainConfig(method="ce", ib=True))
        >>> net = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)),
        ...                  ib_layers=["2"], num_classes=10).train()
        >>> out = batch_loss(cfg, net, torch.rand(8, 1, 8, 8), torch.arange(8))
        >>> sorted(out.parts)
        ['hx', 'hy', 'ib', 'task']
    """
    method = config.method
    fwd = model if forward is None else forward
    ib = isinstance(model, IBModel) and config.ib
    parts: dict[str, Tensor] = {}
    layers: list[Tensor] = []  # per-layer [hx, hy] of each IB term
    labels_ctx = model.labels(y) if isinstance(model, IBModel) else _null_context()

    if method in ("ce", "vib", "entropic") or (method == "hbar" and not config.hbar_adv):
        x_in = x
        if method == "hbar" and config.mixup_alpha > 0:
            from ib_plugins.baselines import mixup

            x_in, y_a, y_b, lam = mixup(x, y, alpha=config.mixup_alpha, generator=extra["mixup_generator"])
        with labels_ctx:
            if method == "entropic":
                logits, hs = extra["probe"].run(x_in)
            else:
                logits = fwd(x_in)
        if method == "hbar" and config.mixup_alpha > 0:
            task = lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)
        elif method == "entropic":
            terms = extra["loss"].terms(logits, y, hs)
            parts["task"] = terms.ce.detach()
            parts["et"] = terms.et_mean.detach()
            parts["penalty"] = terms.penalty.detach()
            return BatchLoss(loss=terms.loss, logits=logits, parts=parts)
        else:
            task = F.cross_entropy(logits, y)
        parts["task"] = task.detach()
        loss = task
        if method == "vib":
            kl = extra["vib_head"].last_kl
            parts["kl"] = kl.detach()
            loss = loss + config.vib_beta * kl
        elif method == "hbar":
            loss = loss + _add_ib(parts, model, x_in, y, logits, layers)
        elif ib:
            loss = loss + _add_ib(parts, model, x, y, logits, layers)
        return BatchLoss(loss=loss, logits=logits, parts=parts, layer_hsic=_mean_layers(layers))

    if attack is None and not (method == "trades" and config.variant == "standard"):
        raise ValueError(f"attack: method {method!r} needs a training attack, got None")

    if method == "hbar":  # HBaR + PGD: CE on the adversarial output, HSIC on an extra clean pass
        x_adv = attack(x, y)
        logits_adv = fwd(x_adv)
        model.clear_records()  # HBaR's hidden activations come from the clean pass only
        logits_clean = fwd(x)
        task = F.cross_entropy(logits_adv, y)
        parts["task"] = task.detach()
        loss = task + _add_ib(parts, model, x, y, logits_clean, layers)
        return BatchLoss(loss=loss, logits=logits_adv, parts=parts, layer_hsic=_mean_layers(layers))

    if method == "pgd-at":
        x_adv = attack(x, y)
        x_ib = x if config.x_for_ib == "clean" else x_adv
        with labels_ctx:
            logits_adv = fwd(x_adv)
            logits_clean = fwd(x) if ib and config.ib_on in ("clean", "both") else None
        task = F.cross_entropy(logits_adv, y)
        parts["task"] = task.detach()
        loss = task
        if ib:
            if config.ib_on in ("adv", "both"):
                loss = loss + _add_ib(parts, model, x_ib, y, logits_adv, layers)
            if logits_clean is not None:
                loss = loss + _add_ib(parts, model, x_ib, y, logits_clean, layers)
        return BatchLoss(loss=loss, logits=logits_adv, parts=parts, layer_hsic=_mean_layers(layers))

    # TRADES and MART: a clean and an adversarial forward.
    if method == "trades" and config.variant == "standard":
        x_adv = kl_pgd(model, x, eps=config.eps, alpha=config.pgd_alpha, steps=config.pgd_steps)
    else:
        x_adv = attack(x, y)
    x_ib = x if config.x_for_ib == "clean" else x_adv
    with labels_ctx:
        logits_clean = fwd(x)
        logits_adv = fwd(x_adv)
    if method == "trades":
        task = trades_loss(logits_clean, logits_adv, y, beta=config.trades_beta, variant=config.variant)
    else:
        task = mart_loss(logits_clean, logits_adv, y, beta=config.mart_beta)
    parts["task"] = task.detach()
    loss = task
    if ib:
        if config.ib_on in ("clean", "both"):
            loss = loss + _add_ib(parts, model, x_ib, y, logits_clean, layers)
        if config.ib_on in ("adv", "both"):
            loss = loss + _add_ib(parts, model, x_ib, y, logits_adv, layers)
        model.clear_records()
    return BatchLoss(loss=loss, logits=logits_adv, parts=parts, layer_hsic=_mean_layers(layers))


# ---------------------------------------------------------------------------------------------
# Models and checkpoints
# ---------------------------------------------------------------------------------------------
def _classifier_name(model: nn.Module) -> str:
    for name in ("classifier", "fc"):
        if isinstance(getattr(model, name, None), nn.Linear):
            return name
    raise ValueError(f"{type(model).__name__} has no final 'classifier' or 'fc' Linear layer to replace by a VIB head")


def build_model(config: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """Build the network of a resolved config and, for IB methods, its wrapper.

    Args:
        config: a resolved config.

    Returns:
        ``(trainable, base)``: the module to train (an :class:`~ib_plugins.IBModel` for IB variants
        and HBaR, a :class:`~ib_plugins.baselines.VIBClassifier` for VIB) and the plain network
        inside it (whose ``state_dict`` is what checkpoints store under ``model``).

    Raises:
        ValueError: the layer preset does not fit the model.

    Example:
        >>> trainable, base = build_model(resolve_config(TrainConfig(ib=True, mask="code")))
        >>> type(trainable).__name__, type(base).__name__, trainable.layers
        ('IBModel', 'DigitsCNN', ('conv3', 'fc1'))
    """
    from ib_plugins.data import get_dataset_info
    from ib_plugins.models import create_model

    info = get_dataset_info(config.dataset)
    base = create_model(config.model, num_classes=info.num_classes, in_channels=info.in_channels)
    if config.method == "vib":
        from ib_plugins.baselines import VIBClassifier

        head_name = _classifier_name(base)
        feature_dim = getattr(base, head_name).in_features
        setattr(base, head_name, nn.Identity())
        vib = VIBClassifier(base, feature_dim, info.num_classes, k=config.vib_k, beta=config.vib_beta)
        return vib, vib
    if config.method == "hbar":
        layers: Any = "all"
        model = wrap_model(
            base, layers, alpha=config.hbar_lambda_x, beta=config.hbar_lambda_y, num_classes=info.num_classes, y_kernel="linear"
        )
        return model, base
    if config.ib or config.mask is not None:
        model = wrap_model(
            base,
            config.ib_layers,
            alpha=config.alpha if config.ib else 0.0,
            beta=config.beta if config.ib else 0.0,
            num_classes=info.num_classes,
            y_kernel=config.y_kernel,  # type: ignore[arg-type]
            mask=config.mask,
            record_masked=config.record_masked,
        )
        if model.mask is not None:
            model.mask.every = config.mask_every
        return model, base
    return base, base


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` through a temporary file: ``write(binary_file)``, fsync, rename, fsync the folder.

    A crash, a SIGKILL or a power loss leaves either the old file or the new one at ``path``, never
    a half-written one; the temporary file is removed when ``write`` fails.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _atomic_save(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically and durably: a crash, a SIGKILL or a power loss never leaves a half-written file.

    The checkpoint goes to ``path.tmp``, which is fsynced and renamed over ``path``; the folder is then
    fsynced too (where the OS allows it), so the rename itself survives a power loss.

    Args:
        path: destination.
        payload: the checkpoint dict (tensors, numbers, strings, lists and dicts only).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> save_checkpoint(os.path.join(d, "c.pt"), {"format": 1, "model": {}})
        >>> sorted(os.listdir(d))
        ['c.pt']
    """
    _atomic_save(payload, Path(path))


_REFUSED_BY_SAFE_LOADING = re.compile(
    r"GLOBAL |Unsupported global|Can only (create new object|build)|Trying to call reduce|must be imported to load"
)


def _load_error_reason(err: BaseException) -> str:
    """A one-line reason from torch's (often multi-paragraph) load error."""
    text = str(err)
    match = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if match:
        text = match.group(1)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("Weights only load failed"):
            text = line
            break
    text = text.split(". ")[0].strip().rstrip(".")
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``, with clear errors.

    Only tensors, numbers, strings and containers are read: a file that holds other pickled
    objects (a class, a function, a lambda) is refused, and the message says so; ib-plugins never
    unpickles arbitrary objects (that would run code from the file).

    Args:
        path: checkpoint file.
        map_location: where tensors go (a device that exists on this machine).

    Returns:
        The checkpoint dict (``model``, ``config``, ``epoch``...).

    Raises:
        CheckpointError: missing, a folder, unreadable, truncated or corrupt, holding objects that safe
            loading refuses, or not an ib-plugins checkpoint.
        ValueError: ``map_location`` is not a device of this machine.

    Example:
        >>> try:
        ...     load_checkpoint("/nonexistent/ckpt.pt")
        ... except CheckpointError as err:
        ...     print(str(err).split(":")[0])
        checkpoint not found
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"checkpoint: expected a checkpoint file, got the folder {p}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    if isinstance(map_location, (str, torch.device)):
        _device(map_location, arg="map_location")
    try:
        with open(p, "rb") as f:
            head = f.read(1)
    except OSError as err:
        raise CheckpointError(f"checkpoint {p} cannot be read ({err.strerror or err})") from err
    if not head:
        raise CheckpointError(f"checkpoint {p} is empty (0 bytes): corrupt or truncated")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of non-torch files before refusing them; the error says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if _REFUSED_BY_SAFE_LOADING.search(str(err)):
            raise CheckpointError(
                f"checkpoint {p} holds objects that safe loading (torch.load with weights_only=True) refuses "
                f"({_load_error_reason(err)}); ib-plugins never unpickles arbitrary objects (that would run code "
                "from the file), so it does not load this file: its own checkpoints hold only tensors, numbers, "
                "strings, lists and dicts"
            ) from err
        raise CheckpointError(
            f"checkpoint {p} is corrupt or truncated, or not a torch checkpoint, and cannot be read "
            f"({_load_error_reason(err)})"
        ) from err
    except Exception as err:  # torch raises RuntimeError/EOFError/KeyError... on corrupt files
        raise CheckpointError(
            f"checkpoint {p} is corrupt or truncated and cannot be read ({_load_error_reason(err)})"
        ) from err
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("model"), Mapping)
        or not isinstance(ckpt.get("config"), Mapping)
    ):
        raise CheckpointError(
            f"{p} is not an ib-plugins checkpoint (expected a dict with 'model' (a state dict) and 'config' (a dict))"
        )
    return ckpt


_WEIGHTS = ("raw", "ema")


def _plain_network(config: TrainConfig) -> nn.Module:
    """A fresh network of ``config`` without IB hooks (VIB keeps its head), drawn from a forked RNG.

    Its initial weights are meant to be overwritten: they come from a forked generator, so building
    it leaves the caller's random streams (CPU, and the CUDA devices in use) where they were.
    """
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    plain = config if config.method == "vib" else dataclasses.replace(config, ib=False, mask=None)
    with torch.random.fork_rng(devices=cuda):
        trainable, base = build_model(plain)
    if config.method == "vib":
        return trainable
    if isinstance(trainable, IBModel):  # HBaR always hooks its layers
        trainable.remove_hooks()
    return base


def load_model_from_checkpoint(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    expect_model: str | None = None,
    weights: str = "raw",
) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """Rebuild the trained network of a checkpoint (plain network; VIB models keep their head).

    The global torch RNGs are left as they were: building the network draws initial weights (which
    the stored ones replace) from a forked generator, so a seeded script behaves the same whether
    or not it loads a model.

    Args:
        path: checkpoint file (``checkpoint.pt``, or ``checkpoint_best.pt`` of a run with
            ``robust_val_every``).
        map_location: device for the tensors.
        expect_model: if given, the model name the checkpoint must hold.
        weights: ``"raw"`` (default): the trained weights (checkpoint key ``model``); ``"ema"``: their
            exponential moving average (key ``model_ema``, written by runs with ``ema_decay``).

    Returns:
        ``(model, config, checkpoint)`` with the model in eval mode.

    Raises:
        CheckpointError: unreadable file, a different model than expected, weights that do not fit,
            or ``weights="ema"`` for a checkpoint without EMA weights.
        ValueError: ``weights`` is neither ``"raw"`` nor ``"ema"``.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "checkpoint.pt")
        >>> config = resolve_config(TrainConfig())
        >>> save_checkpoint(path, {"model": build_model(config)[1].state_dict(), "config": config.to_dict()})
        >>> state = torch.get_rng_state()
        >>> model, cfg, ckpt = load_model_from_checkpoint(path)
        >>> type(model).__name__, model.training, torch.equal(state, torch.get_rng_state())
        ('DigitsCNN', False, True)
        >>> try:
        ...     load_model_from_checkpoint(path, weights="ema")
        ... except CheckpointError as err:
        ...     print(str(err).split(" (")[0].split(": ", 1)[1])
        weights='ema' was asked for, but the checkpoint holds no EMA weights
        >>> try:
        ...     load_model_from_checkpoint("/nonexistent.pt")
        ... except CheckpointError:
        ...     print("error")
        error
    """
    if not isinstance(weights, str) or weights not in _WEIGHTS:
        raise ValueError(f"weights: expected one of {', '.join(map(repr, _WEIGHTS))}, got {_short_repr(weights)}")
    ckpt = load_checkpoint(path, map_location=map_location)
    try:
        config = TrainConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the stored config is invalid ({err})") from err
    if expect_model is not None and config.model != expect_model:
        raise CheckpointError(f"{path} holds a {config.model!r} model, not {expect_model!r}")
    state = ckpt["model"]
    if weights == "ema":
        state = ckpt.get("model_ema")
        if not isinstance(state, Mapping):
            raise CheckpointError(
                f"{path}: weights='ema' was asked for, but the checkpoint holds no EMA weights (train with "
                "ema_decay=D, --ema-decay D, to keep them; weights='raw' loads the trained weights)"
            )
    model = _plain_network(config)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, AttributeError) as err:
        reason = " ".join(str(err).split())
        raise CheckpointError(f"{path}: the weights do not fit a {config.model!r} model ({reason[:300]})") from err
    return model.to(map_location).eval(), config, ckpt


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    _atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _build_scheduler(optimizer: torch.optim.Optimizer, c: TrainConfig) -> Any:
    """The per-epoch learning-rate scheduler of a resolved config (None for a constant rate)."""
    from torch.optim import lr_scheduler

    warmup = c.warmup_epochs or 0
    main: Any = None
    if c.schedule == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=c.step_size, gamma=c.gamma)
    elif c.schedule == "multistep":
        # SequentialLR restarts the main scheduler's epoch count after the warm-up; milestones count
        # from the start of training.
        milestones = [m - warmup for m in _parse_milestones(c.milestones)]
        main = lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=c.gamma)
    elif c.schedule == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=c.epochs - warmup)
    if not warmup:
        return main
    warm = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    if main is None:
        return warm  # stays at the full rate after the warm-up
    return lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup])


def _dataset_labels(dataset: Any) -> Tensor:
    """The int64 labels of a map-style training set (TensorDataset, Subset, or one with ``targets``)."""
    from torch.utils.data import Subset, TensorDataset

    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].to(torch.int64)
    if isinstance(dataset, Subset):
        return _dataset_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.int64)]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ValueError(
            f"robust_val_every: cannot read the labels of a {type(dataset).__name__} training set to hold out a "
            "stratified validation split"
        )
    return torch.as_tensor(targets, dtype=torch.int64)


#: Offset of the validation split's seed from the run's (the augmentation uses +1, mixup +2).
_VAL_SEED_OFFSET = 3


def _validation_split(dataset: Any, *, size: int | None, seed: int) -> tuple[Any, tuple[Tensor, Tensor], Tensor]:
    """Hold a seeded, class-stratified validation split out of a training set.

    Returns ``(train_set, (x_val, y_val), val_indices)``: the training set without the split (in
    its order, a TensorDataset stays one), the split's tensors, and its indices into ``dataset``.
    """
    from torch.utils.data import Subset, TensorDataset

    from ib_plugins.data import _stratified_indices

    labels = _dataset_labels(dataset)
    n = int(labels.numel())
    if size is None:
        size = min(1000, max(1, n // 10))
    if size >= n:
        raise ValueError(
            f"val_size: expected fewer than the {n} training images (the validation split is held out of "
            f"them and the rest trains), got {size}"
        )
    val_idx, train_idx = _stratified_indices(labels, size, torch.Generator().manual_seed(seed + _VAL_SEED_OFFSET))
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors[0], dataset.tensors[1]
        return TensorDataset(*(t[train_idx] for t in dataset.tensors)), (x[val_idx], y[val_idx]), val_idx
    x_val = torch.stack([torch.as_tensor(dataset[i][0]) for i in val_idx.tolist()])
    return Subset(dataset, train_idx.tolist()), (x_val, labels[val_idx]), val_idx


def _summary_writer_class() -> Any:
    """:class:`torch.utils.tensorboard.SummaryWriter`, or a clear error when tensorboard is missing."""
    from ib_plugins._optional import is_available
    from ib_plugins.errors import MissingOptionalDependencyError

    if not is_available("tensorboard"):
        raise MissingOptionalDependencyError(
            "tensorboard: logging to a TensorBoard folder needs the 'tensorboard' package, which is not "
            "installed; install it (pip install tensorboard) or train without tensorboard (--tensorboard)"
        )
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


class _WarmupEMA:
    """``multi_avg_fn`` of the EMA: torch's ``get_ema_multi_avg_fn`` with a warmed-up decay.

    After ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))`` (TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so the first, untrained weights fade out of
    a short run's average; float tensors are updated by ``lerp`` as torch's function does, others
    (BatchNorm's ``num_batches_tracked``) by the same weighted sum.

    Example:
        >>> import torch
        >>> avg, cur = [torch.zeros(2)], [torch.ones(2)]
        >>> _WarmupEMA(0.999)(avg, cur, torch.tensor(1))  # decay (1 + 1) / (10 + 1)
        >>> round(float(avg[0][0]), 4)
        0.8182
    """

    def __init__(self, decay: float) -> None:
        self.decay = float(decay)

    def decay_at(self, n_averaged: int) -> float:
        """The decay applied at the update after ``n_averaged`` earlier ones."""
        return min(self.decay, (1.0 + n_averaged) / (10.0 + n_averaged))

    @torch.no_grad()
    def __call__(self, averaged: list[Tensor], current: list[Tensor], n_averaged: Any) -> None:
        decay = self.decay_at(int(n_averaged))
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        else:
            for a, c in zip(averaged, current):
                a.copy_(a * decay + c * (1.0 - decay))


@torch.no_grad()
def _ema_step(ema: Any, model: nn.Module) -> None:
    """``ema.update_parameters(model)`` for an EMA ``AveragedModel`` with ``use_buffers=True``, without host syncs.

    The same update as torch's method (the first call copies, later ones apply ``ema.multi_avg_fn``,
    a :class:`_WarmupEMA`, to the parameters and buffers grouped
    by device and dtype; then ``n_averaged += 1``), but torch's method copies ``n_averaged`` to the
    parameters' device on every call, which synchronises an accelerator's stream once per step, and
    the EMA function does not use it: here it stays on the CPU, where reading it is free.
    """
    averaged = [t.detach() for t in (*ema.module.parameters(), *ema.module.buffers())]
    current = [t.detach() for t in (*model.parameters(), *model.buffers())]
    if len(averaged) != len(current):
        raise ValueError(f"ema: the averaged network has {len(averaged)} tensors, the trained one {len(current)}")
    if int(ema.n_averaged) == 0:  # a CPU counter (the AveragedModel was built without a device)
        for a, c in zip(averaged, current):
            a.copy_(c)
    else:
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
        for a, c in zip(averaged, current):
            pair = groups.setdefault((a.device, a.dtype), ([], []))
            pair[0].append(a)
            pair[1].append(c)
        for a_list, c_list in groups.values():
            ema.multi_avg_fn(a_list, c_list, ema.n_averaged)
    ema.n_averaged += 1


def _log_scalars(writer: Any, metrics: Mapping[str, Any], epoch: int) -> None:
    """Every numeric metric of an epoch (but ``epoch``) as a TensorBoard scalar at step ``epoch``."""
    for key in sorted(metrics):
        value = metrics[key]
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(key, value, epoch)
    writer.flush()


def _best_in_history(history: list[dict[str, Any]], key: str) -> tuple[int, float] | None:
    """``(epoch, value)`` of the highest ``key`` in ``history`` (the earliest on ties), or None."""
    best: tuple[int, float] | None = None
    for entry in history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and (best is None or value > best[1]):
            best = (int(entry["epoch"]), float(value))
    return best


class Trainer:
    """Train one configuration, writing a results folder and a checkpoint every epoch.

    The folder holds ``config.json`` (the resolved config), ``checkpoint.pt`` (latest epoch),
    ``history.json`` (per-epoch metrics), ``metrics.json`` (final metrics), ``results.md`` (a
    markdown table of the final metrics) and ``training_curves.png``; with ``robust_val_every``
    also ``checkpoint_best.pt`` (the whole checkpoint of the epoch with the best robust validation
    accuracy), and for runs with an IB term ``information_plane.png`` (see
    :func:`ib_plugins.plots.plot_information_plane`).

    Checkpoints hold ``model`` (the trained weights), ``model_ema`` and ``ema_n_averaged`` (the
    weight average of ``ema_decay``, else None), ``optimizer``, ``scheduler``, ``grad_scaler``,
    ``rng`` (every random stream), ``config``, ``history``, ``validation`` (the held-out split's
    ``indices`` into the training images and its ``attack``, else None) and ``epoch``.

    Each ``history.json`` entry has ``epoch``, ``lr`` (the rate after that epoch's scheduler step),
    ``train_*`` (epoch means of the loss and its parts, ``train_acc``), ``test_acc`` (every
    ``eval_every`` epochs) and, when configured: ``test_acc_ema``; ``val_n``, ``val_clean_acc``,
    ``val_robust_acc`` (and ``*_ema``) on validation epochs; ``hsic/<layer>/x`` and
    ``hsic/<layer>/y``, the epoch means of ``nHSIC(T_l, X)`` and ``nHSIC(T_l, Y)`` that the IB term
    computed on each training batch (the information plane).

    Args:
        config: the run's configuration (resolved on construction).
        out_dir: results folder.
        resume: continue from ``out_dir/checkpoint.pt`` (the config must be the same run; ``epochs``
            may grow); ``"auto"`` resumes when the folder holds a checkpoint of this run and starts
            afresh otherwise (a finished run is then not trained again).
        overwrite: replace a folder that holds a different run.
        progress: show tqdm progress bars.
        callbacks: functions ``(trainer, epoch, metrics)`` called after each epoch.

    Raises:
        RunExistsError: ``out_dir`` holds a different run and ``overwrite`` is False, holds this
            run's checkpoint and neither ``resume`` nor ``overwrite`` is set, or holds files the
            trainer writes (``metrics.json``, ``checkpoint.pt``...) without a ``config.json`` of a
            run (they are not known to be ours; ``overwrite=True`` replaces them).
        CheckpointError: ``resume`` without a readable checkpoint.
        ValueError: an invalid config (see :meth:`TrainConfig.validate`), a device this machine does
            not have, or both ``resume=True`` and ``overwrite=True``.
        MissingOptionalDependencyError: ``tensorboard`` is set but the tensorboard package is not
            installed.

    Example:
        >>> import tempfile
        >>> cfg = TrainConfig(epochs=1, train_limit=100, test_limit=50, batch_size=50)
        >>> metrics = Trainer(cfg, out_dir=tempfile.mkdtemp(), progress=False).fit()
        >>> 0.0 <= metrics["test_acc"] <= 1.0
        True
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        out_dir: str | os.PathLike[str],
        resume: bool | str = False,
        overwrite: bool = False,
        progress: bool = True,
        callbacks: list[Callable[[Trainer, int, dict[str, Any]], None]] | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        self.config = resolve_config(config)
        self.device = _device(self.config.device)
        if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
            raise TypeError(f"out_dir: expected a folder path, got {_short_repr(out_dir)}")
        self.out_dir = Path(out_dir)
        if resume not in (True, False, "auto") or isinstance(resume, int) and not isinstance(resume, bool):
            raise ValueError(f"resume: expected True, False or 'auto', got {resume!r}")
        if not isinstance(overwrite, bool):
            raise ValueError(f"overwrite: expected True or False, got {overwrite!r}")
        if resume is True and overwrite:
            raise ValueError(
                "resume, overwrite: expected at most one of them (resume continues the run in out_dir, overwrite "
                "replaces it), got both"
            )
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress
        self.callbacks = list(callbacks or [])
        self.history: list[dict[str, Any]] = []
        self._writer_class = _summary_writer_class() if self.config.tensorboard is not None else None
        self._check_out_dir()

    # -- results folder ------------------------------------------------------------------------
    # Files the trainer writes into out_dir (config.json aside).
    _OUTPUT_FILES = (
        "checkpoint.pt", "checkpoint_best.pt", "history.json", "metrics.json", "results.md", "training_curves.png",
        "information_plane.png",
    )

    def _check_out_dir(self) -> None:
        cfg_path = self.out_dir / "config.json"
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise FileExistsError(f"out_dir: expected a folder, got the existing file {self.out_dir}")
        if self.resume == "auto":
            self.resume = False
            if not self.overwrite and (self.out_dir / "checkpoint.pt").is_file() and cfg_path.is_file():
                try:
                    existing = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
                    self.resume = existing.run_identity() == self.config.run_identity()
                except (ValueError, TypeError, RecursionError, OSError):
                    self.resume = False
        if self.resume:
            if not (self.out_dir / "checkpoint.pt").is_file():
                started = (
                    " (a run was started there but stopped before its first epoch ended)" if cfg_path.is_file() else ""
                )
                raise CheckpointError(
                    f"resume: no checkpoint to resume from in {self.out_dir}{started}; none is written before the "
                    "first epoch ends, so there is nothing to continue: rerun without --resume (resume=False) to "
                    "start from scratch"
                )
            return
        if self.overwrite:
            return
        if not cfg_path.is_file():
            found = [name for name in self._OUTPUT_FILES if (self.out_dir / name).exists()]
            if found:
                raise RunExistsError(
                    f"{self.out_dir} holds {', '.join(found)} but no config.json of an ib-plugins run, so these "
                    "files are not known to be ours and training would replace them; choose another folder or "
                    "pass overwrite=True (--overwrite) to replace them"
                )
            return
        try:
            existing = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
            same = existing.run_identity() == self.config.run_identity()
        except (ValueError, TypeError, RecursionError, OSError):
            same = False
        if not same:
            raise RunExistsError(
                f"{self.out_dir} already holds a different run (see its config.json); choose another folder or "
                "pass overwrite=True (--overwrite) to replace it"
            )
        if (self.out_dir / "checkpoint.pt").is_file():
            raise RunExistsError(
                f"{self.out_dir} already holds a checkpoint of this run; pass resume=True (--resume) to continue it "
                "or overwrite=True (--overwrite) to start again"
            )

    # -- setup ---------------------------------------------------------------------------------
    rank = 0
    world = 1
    # Set by _setup (at the start of fit); None until then and when not configured.
    ema: Any = None
    val_set: tuple[Tensor, Tensor] | None = None
    val_indices: Tensor | None = None
    _val_spec: Any = None

    def _setup(self) -> None:
        from ib_plugins.data import get_dataset_info, load_dataset, make_loader, train_transform

        c = self.config
        info = get_dataset_info(c.dataset)
        self.info = info
        self.train_set = load_dataset(c.dataset, split="train", data_dir=c.data_dir, limit=c.train_limit, seed=c.seed)
        self.test_set = load_dataset(c.dataset, split="test", data_dir=c.data_dir, limit=c.test_limit, seed=c.seed)
        self.val_set = None
        self.val_indices = None
        if c.robust_val_every is not None:
            # Held out of the training images (never the test set), before the loader is built.
            n_images = len(self.train_set)
            self.train_set, self.val_set, self.val_indices = _validation_split(
                self.train_set, size=c.val_size, seed=c.seed
            )
            if c.batch_size > 1 and len(self.train_set) < c.batch_size * self.world:
                raise ValueError(
                    f"val_size: holding {len(self.val_indices)} of the {n_images} training images out for validation "
                    f"leaves {len(self.train_set)}, fewer than one batch (batch_size={c.batch_size}"
                    f"{f' x {self.world} processes' if self.world > 1 else ''}); lower val_size or batch_size"
                )
        if self.world > 1:
            # Every rank gets the same number of full batches (uneven tails are dropped), so
            # activations can be gathered and DDP's collectives line up.
            from torch.utils.data import DataLoader
            from torch.utils.data.distributed import DistributedSampler

            self.sampler = DistributedSampler(
                self.train_set, num_replicas=self.world, rank=self.rank, shuffle=True, seed=c.seed, drop_last=True
            )
            self.loader = DataLoader(self.train_set, batch_size=c.batch_size, sampler=self.sampler, drop_last=True)
        else:
            self.sampler = None
            self.loader = make_loader(
                self.train_set, batch_size=c.batch_size, shuffle=True, seed=c.seed, drop_last=c.batch_size > 1
            )
        if len(self.loader) == 0:
            # Checked before anything is written: an epoch without a batch has nothing to train or report.
            raise _no_batch_error(
                batch_size=c.batch_size, train_limit=c.train_limit, n_images=len(self.train_set), world=self.world
            )
        self.augment = train_transform(c.dataset, seed=c.seed + 1) if c.augment else None
        self.model, self.base = build_model(c)
        if c.batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
            raise ValueError(
                f"batch_size: expected at least 2 for {c.model!r}, whose BatchNorm layers need more than one sample "
                f"per batch in training, got {c.batch_size}"
            )
        self.model.to(self.device)
        if isinstance(self.model, IBModel):
            self.model.global_batch = c.ib_global_batch
        self.forward: nn.Module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
        self.extra: dict[str, Any] = {}
        if c.method == "entropic":
            self._setup_entropic()
        if c.method == "vib":
            self.extra["vib_head"] = self.model.head  # type: ignore[union-attr]
        if c.method == "hbar" and c.mixup_alpha > 0:
            self.extra["mixup_generator"] = torch.Generator().manual_seed(c.seed + 2)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        self.scheduler = _build_scheduler(self.optimizer, c)
        self.ema = self._build_ema(c.ema_decay) if c.ema_decay is not None else None
        self._val_spec = None
        if self.val_set is not None:
            from ib_plugins.evaluation import build_suite

            budget = "paper" if c.preset == "paper" else "ibrar-code"
            self._val_spec = build_suite(
                "ibrar", budget=budget, dataset=c.dataset, attacks=["pgd"], eps=c.eps, pgd_steps=c.pgd_steps
            )[0]
        self._warned_layers = False
        self._amp_context: Callable[[], Any] = _null_context
        if c.amp is not None:
            if not torch.amp.is_autocast_available(self.device.type):
                raise ValueError(f"amp: torch.autocast is not available on device {str(self.device)!r}; use amp=None")
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[c.amp]
            self._amp_context = lambda: torch.autocast(self.device.type, dtype=dtype)
        self.scaler = torch.amp.GradScaler(self.device.type) if c.amp == "fp16" else None
        at = c.method in _AT_METHODS or (c.method == "hbar" and c.hbar_adv)
        needs_pgd = at and not (c.method == "trades" and c.variant == "standard")
        self.attack = TrainingAttack(self.model, eps=c.eps, alpha=c.pgd_alpha, steps=c.pgd_steps) if needs_pgd else None
        self._probe_layers = self._entropy_layers()

    def _build_ema(self, decay: float) -> Any:
        """An :class:`~torch.optim.swa_utils.AveragedModel` of the evaluated network (no IB hooks)."""
        from torch.optim.swa_utils import AveragedModel

        source = self.eval_model()
        net = _plain_network(self.config)
        names = [n for n, _ in net.named_parameters()] + [n for n, _ in net.named_buffers()]
        if names != [n for n, _ in source.named_parameters()] + [n for n, _ in source.named_buffers()]:
            raise ValueError(
                f"ema_decay: the trained {type(source).__name__} has parameters or buffers that a fresh "
                f"{self.config.model!r} network lacks, so their average cannot be kept; train without ema_decay"
            )
        net.load_state_dict(source.state_dict())
        net.to(self.device)
        # n_averaged stays on the CPU (no device argument): _ema_step reads it there, for free.
        ema = AveragedModel(net, multi_avg_fn=_WarmupEMA(decay), use_buffers=True)
        ema.module.eval()
        return ema

    def _update_ema(self) -> None:
        """One step of the weight average (after every optimiser step)."""
        _ema_step(self.ema, self.eval_model())

    @property
    def ema_model(self) -> nn.Module | None:
        """The weight-averaged network (``ema_decay``), or None.

        Returns:
            A plain network (no IB hooks), in whatever mode it is; its weights are the running average.
        """
        return None if self.ema is None else self.ema.module

    def _entropy_layers(self) -> list[str] | None:
        from ib_plugins.presets import preset_for_model

        preset = preset_for_model(self.base)
        return list(preset.layers) if preset is not None else None

    def _setup_entropic(self) -> None:
        from ib_plugins.data import make_loader
        from ib_plugins.entropic import EntropicLoss, EntropyProbe, compute_reference_entropy_flow

        c = self.config
        try:
            ckpt = load_checkpoint(c.init_checkpoint, map_location=self.device)  # type: ignore[arg-type]
        except CheckpointError as err:
            raise CheckpointError(f"init_checkpoint: {err}") from err
        if ckpt["config"].get("model") != c.model:
            raise CheckpointError(
                f"init_checkpoint holds a {ckpt['config'].get('model')!r} model but this run trains {c.model!r}"
            )
        try:
            self.base.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise CheckpointError(f"init_checkpoint: weights do not fit {c.model!r} ({err})") from err
        layers = self._entropy_layers()
        if not layers:
            raise ValueError(f"entropic retraining needs a layer preset for {c.model!r}")
        ref_loader = make_loader(self.train_set, batch_size=256, shuffle=False, seed=c.seed)
        reference = compute_reference_entropy_flow(self.base, ref_loader, layers=layers, device=self.device, progress=self.progress)
        self.extra["reference"] = reference
        self.extra["loss"] = EntropicLoss(reference=reference, lam=c.entropic_lambda, sigma=c.entropic_sigma)
        probe = EntropyProbe(self.base, layers)
        probe.__enter__()
        self.extra["probe"] = probe

    # -- state ---------------------------------------------------------------------------------
    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.loader.generator is not None:
            state["loader"] = self.loader.generator.get_state()
        if self.augment is not None:
            state["augment"] = self.augment.generator.get_state()
        if "mixup_generator" in self.extra:
            state["mixup"] = self.extra["mixup_generator"].get_state()
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if self.loader.generator is not None and "loader" in state:
            self.loader.generator.set_state(state["loader"])
        if self.augment is not None and "augment" in state:
            self.augment.generator.set_state(state["augment"])
        if "mixup" in state:
            self.extra["mixup_generator"].set_state(state["mixup"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _gather_rng_states(self) -> Any:
        state = self._rng_state()
        if self.world == 1:
            return state
        import torch.distributed as dist

        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, state)
        return states

    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": self.model.state_dict() if self.config.method == "vib" else self.base.state_dict(),
            "ib_state": self.model.state_dict() if isinstance(self.model, IBModel) else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_n_averaged": self.ema.n_averaged.clone() if self.ema is not None else None,
            "validation": (
                {"indices": self.val_indices, "attack": self._val_spec.to_dict()} if self.val_set is not None else None
            ),
            "rng": self._gather_rng_states(),
            "config": self.config.to_dict(),
            "history": self.history,
            "extra": {"reference": self.extra.get("reference")},
        }

    def _restore(self, ckpt: dict[str, Any]) -> int:
        stored = TrainConfig.from_dict(ckpt["config"])
        if int(ckpt["epoch"]) > self.config.epochs:
            raise RunExistsError(
                f"resume: the checkpoint in {self.out_dir} is at epoch {ckpt['epoch']}, beyond epochs={self.config.epochs}; "
                "pass at least that many epochs"
            )
        if stored.run_identity() != self.config.run_identity():
            diff = sorted(k for k, v in stored.run_identity().items() if self.config.run_identity().get(k) != v)
            raise RunExistsError(f"resume: the checkpoint in {self.out_dir} is a different run (differs in: {', '.join(diff)})")
        if stored.schedule == "cosine" and stored.epochs != self.config.epochs:
            raise RunExistsError(
                f"resume: the run in {self.out_dir} anneals its learning rate with a cosine over "
                f"epochs={stored.epochs}; resuming with epochs={self.config.epochs} would change that curve midway, "
                f"so pass epochs={stored.epochs} (or start a new run)"
            )
        if self.val_set is not None:
            stored_split = ckpt.get("validation") or {}
            indices = stored_split.get("indices")
            if not isinstance(indices, Tensor) or not torch.equal(indices.cpu(), self.val_indices):
                raise CheckpointError(
                    f"resume: the validation split held out of the training images differs from the one in "
                    f"{self.out_dir}'s checkpoint (different training files?); start a new run"
                )
        if ckpt["ib_state"] is not None:
            self.model.load_state_dict(ckpt["ib_state"])
        elif self.config.method == "vib":
            self.model.load_state_dict(ckpt["model"])
        else:
            self.base.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("grad_scaler") is not None:
            self.scaler.load_state_dict(ckpt["grad_scaler"])
        if self.ema is not None:
            if not isinstance(ckpt.get("model_ema"), Mapping) or not isinstance(ckpt.get("ema_n_averaged"), Tensor):
                raise CheckpointError(f"resume: the checkpoint in {self.out_dir} holds no EMA weights")
            self.ema.module.load_state_dict(ckpt["model_ema"])
            self.ema.n_averaged.copy_(ckpt["ema_n_averaged"])
        rng = ckpt["rng"]
        if isinstance(rng, list):
            if len(rng) != self.world:
                raise CheckpointError(f"resume: the checkpoint was written by {len(rng)} processes, this run has {self.world}")
            rng = rng[self.rank]
        elif self.world > 1:
            raise CheckpointError(f"resume: the checkpoint was written by 1 process, this run has {self.world}")
        self._set_rng_state(rng)
        self.history = list(ckpt.get("history") or [])
        return int(ckpt["epoch"])

    # -- loop ----------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``config.epochs`` (resuming if asked), write the results folder, return final metrics.

        Returns:
            Final metrics: ``test_acc``, ``train_acc``, ``train_loss``, ``epochs``, ``wall_time_s``...

        Raises:
            RunExistsError: see the class.
            CheckpointError: an unreadable or mismatching checkpoint on resume.
            ValueError: an epoch would have no batch (fewer training images than ``batch_size``), or
                batches of one for a model with BatchNorm layers; raised before anything is written.
            FloatingPointError: the training loss became non-finite (the last good checkpoint is kept).
        """
        from ib_plugins.distributed import env_world_size, world_info

        owns_group = False
        if env_world_size() > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            owns_group = True
        self.rank, self.world = world_info()
        if self.config.ib_global_batch and not torch.distributed.is_initialized():
            raise ValueError(
                "ib_global_batch: needs an initialised torch.distributed process group; launch with "
                "`torchrun --nproc_per_node=N ib-plugins train ... --ib-global-batch`"
            )
        if self.world > 1 and self.config.method == "entropic":
            raise ValueError("method: entropic retraining runs in a single process; launch it without torchrun")
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.config.seed + self.rank)
                try:
                    return self._fit()
                finally:
                    probe = self.extra.get("probe") if hasattr(self, "extra") else None
                    if probe is not None:
                        probe.__exit__(None, None, None)
        finally:
            if owns_group:
                torch.distributed.destroy_process_group()

    def _fit(self) -> dict[str, Any]:
        c = self.config
        self._setup()
        start_epoch = 0
        if self.resume:
            start_epoch = self._restore(load_checkpoint(self.out_dir / "checkpoint.pt", map_location=self.device))
            logger.info("resuming %s from epoch %d", self.out_dir, start_epoch)
        lead = self.rank == 0  # only rank 0 writes files and logs
        if lead:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _write_json(self.out_dir / "config.json", c.to_dict())
            if start_epoch == 0:
                # A fresh start (into an empty folder, over an unfinished start of this run, or with
                # overwrite): a best checkpoint or plot left there belongs to no epoch of this run.
                for name in ("checkpoint_best.pt", "information_plane.png"):
                    (self.out_dir / name).unlink(missing_ok=True)
        best_key = self._best_key()
        best = _best_in_history(self.history, best_key) if best_key is not None else None
        writer = self._writer_class(log_dir=c.tensorboard) if self._writer_class is not None and lead else None
        t0 = time.perf_counter()
        try:
            for epoch in range(start_epoch, c.epochs):
                if self.sampler is not None:
                    self.sampler.set_epoch(epoch)
                metrics = self._train_epoch(epoch)
                last = epoch + 1 == c.epochs
                if (epoch + 1) % c.eval_every == 0 or last:
                    metrics["test_acc"] = self.evaluate_clean()
                    if self.ema is not None:
                        metrics["test_acc_ema"] = self.evaluate_clean(weights="ema")
                    metrics.update(self._entropy_metrics())
                if self.val_set is not None and lead and ((epoch + 1) % c.robust_val_every == 0 or last):
                    metrics.update(self.validate())
                self.history.append(metrics)
                new_best = best_key in metrics and (best is None or metrics[best_key] > best[1])
                if new_best:
                    best = (epoch + 1, float(metrics[best_key]))
                payload = self._checkpoint(epoch + 1)  # collective in multi-process runs: every rank calls it
                if lead:
                    if new_best:  # before checkpoint.pt: a resume after a crash in between redoes this epoch
                        save_checkpoint(self.out_dir / "checkpoint_best.pt", payload)
                    save_checkpoint(self.out_dir / "checkpoint.pt", payload)
                    _write_json(self.out_dir / "history.json", self.history)
                    logger.info("epoch %d/%d: %s", epoch + 1, c.epochs, metrics)
                    if writer is not None:
                        _log_scalars(writer, metrics, epoch + 1)
                if self.world > 1:
                    torch.distributed.barrier()
                for callback in self.callbacks:
                    callback(self, epoch + 1, metrics)
        finally:
            if writer is not None:
                writer.close()
        final = dict(self.history[-1]) if self.history else {}
        final.update({"epochs": c.epochs, "wall_time_s": round(time.perf_counter() - t0, 2)})
        if "test_acc" not in final:
            final["test_acc"] = self.evaluate_clean()
        if best is not None:
            final.update({"best_epoch": best[0], f"best_{best_key}": best[1]})
        if self._val_spec is not None:
            kw = self._val_spec.kwargs
            final["val_attack"] = (
                f"{self._val_spec.name} ({self._val_spec.describe()}, {kw['steps']} steps of {kw['alpha']:.4g}, "
                f"random start, seed {c.seed})"
            )
        if "reference" in self.extra:
            final["entropic_reference_et"] = self.extra["reference"]
        if self.world > 1:
            final["world_size"] = self.world
        if lead:
            _write_json(self.out_dir / "metrics.json", final)
            _atomic_write_text(self.out_dir / "results.md", self.summary_markdown(final))
            self._plot()
        return final

    def _best_key(self) -> str | None:
        """The history key that picks ``checkpoint_best.pt`` (robust validation accuracy, of the EMA if kept)."""
        if self.config.robust_val_every is None:
            return None
        return "val_robust_acc_ema" if self.config.ema_decay is not None else "val_robust_acc"

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        c = self.config
        self.model.train()
        if isinstance(self.model, IBModel):
            self.model.start_epoch()
        sums: dict[str, Tensor] = {}
        layer_sum: Tensor | None = None  # [2, L]: per-layer nHSIC(T, X) and nHSIC(T, Y), times batch sizes
        correct = torch.zeros((), device=self.device)
        seen = 0
        batches = 0
        bar = None
        if self.progress and self.rank == 0:
            from ib_plugins._progress import progress_bar

            # A bar with a total, updated by hand, rather than tqdm(self.loader): tqdm.auto's class
            # (tqdm_asyncio) calls iter() on its iterable in its constructor, which draws from the
            # loader's generator and so changed the shuffling whenever progress bars were shown.
            # On a terminal a tqdm bar; piped or in a log file, plain lines without carriage returns.
            bar = progress_bar(total=len(self.loader), desc=f"{c.method} epoch {epoch + 1}/{c.epochs}", unit="batch")
        try:
            for x, y in self.loader:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                if self.augment is not None:
                    x = self.augment(x)
                with self._amp_context():
                    out = batch_loss(c, self.model, x, y, attack=self.attack, extra=self.extra, forward=self.forward)
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is None:
                    out.loss.backward()
                    self.optimizer.step()
                else:
                    self.scaler.scale(out.loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                if self.ema is not None:
                    self._update_ema()
                if isinstance(self.model, IBModel):
                    self.model.clear_records()  # unconsumed records (e.g. mask-only runs) would keep graphs alive
                n = y.shape[0]
                seen += n
                batches += 1
                correct += (out.logits.detach().argmax(1) == y).sum()
                sums["loss"] = sums.get("loss", torch.zeros((), device=self.device)) + out.loss.detach() * n
                for key, value in out.parts.items():
                    sums[key] = sums.get(key, torch.zeros((), device=self.device)) + value.float() * n
                if out.layer_hsic is not None:  # summed on the device, read once at the end of the epoch
                    layer_sum = out.layer_hsic * n if layer_sum is None else layer_sum + out.layer_hsic * n
                if bar is not None:
                    bar.update(1)
                    if batches % 10 == 1 or batches == len(self.loader):  # a host read every 10 batches
                        bar.set_postfix(
                            {k: f"{float(v) / seen:.4g}" for k, v in sums.items()} | {"acc": f"{float(correct) / seen:.3f}"}
                        )
        finally:
            if bar is not None:
                bar.close()
        if self.scheduler is not None:
            self.scheduler.step()
        keys = sorted(sums)
        from ib_plugins.distributed import all_reduce_sum

        scalars = torch.stack(
            [*(sums[k].float() for k in keys), correct.float(), torch.tensor(float(seen), device=self.device)]
        )
        layer_names = self._info_plane_layers(layer_sum)
        pieces = [scalars] if layer_names is None else [scalars, layer_sum.flatten()]  # type: ignore[union-attr]
        totals = all_reduce_sum(torch.cat(pieces)).tolist()  # the epoch's one host read
        n_scalars = len(keys) + 2
        seen_all = max(totals[n_scalars - 1], 1.0)
        metrics: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        for key, value in zip(keys, totals):
            metrics[f"train_{key}"] = value / seen_all
        metrics["train_acc"] = totals[n_scalars - 2] / seen_all
        if layer_names is not None:
            per_layer = totals[n_scalars:]
            for i, name in enumerate(layer_names):
                metrics[f"hsic/{name}/x"] = per_layer[i] / seen_all
                metrics[f"hsic/{name}/y"] = per_layer[len(layer_names) + i] / seen_all
        if not math.isfinite(metrics["train_loss"]):
            # Checked once per epoch, not per step (a per-step check would stall an accelerator);
            # the checkpoint of the previous epoch is kept.
            kept = (
                "the previous epoch's is kept" if (self.out_dir / "checkpoint.pt").is_file() else "and none exists yet"
            )
            raise FloatingPointError(
                f"the training loss became non-finite (NaN or inf) in epoch {epoch + 1}; its checkpoint was not "
                f"written, {kept}. Lower the learning rate (lr={c.lr}) and rerun with overwrite=True (--overwrite) "
                "or into another folder, or set check_finite=True on the IBModel to find the layer on the step it "
                "happens"
            )
        if isinstance(self.model, IBModel) and self.model.mask is not None:
            metrics["masked_forwards"] = self.model.mask.num_masked
        return metrics

    def _info_plane_layers(self, layer_sum: Tensor | None) -> list[str] | None:
        """The IB layers' names for the ``[2, L]`` per-layer sums, or None (no IB term, or reused layers)."""
        if layer_sum is None or not isinstance(self.model, IBModel):
            return None
        names = list(self.model.layers)
        if layer_sum.shape != (2, len(names)):
            if not self._warned_layers:
                logger.warning(
                    "the IB term returned %d per-layer values for %d layers (a layer runs more than once per "
                    "forward); the information plane is not logged", layer_sum.shape[-1], len(names)
                )
                self._warned_layers = True
            return None
        return names

    def eval_model(self) -> nn.Module:
        """The network to evaluate (the plain network; VIB keeps its deterministic head).

        Returns:
            The module, in whatever mode it currently is.
        """
        return self.model if self.config.method == "vib" else self.base

    @torch.no_grad()
    def evaluate_clean(self, *, weights: str = "raw") -> float:
        """Clean accuracy on the test set (eval mode, restored afterwards).

        Args:
            weights: ``"raw"`` (the trained network) or ``"ema"`` (its weight average; needs
                ``ema_decay``).

        Returns:
            Accuracy in [0, 1].

        Raises:
            ValueError: an unknown ``weights``, or ``"ema"`` without ``ema_decay``.
        """
        if weights not in _WEIGHTS:
            raise ValueError(f"weights: expected one of {', '.join(map(repr, _WEIGHTS))}, got {_short_repr(weights)}")
        if weights == "ema" and self.ema is None:
            raise ValueError("weights: 'ema' needs a run with ema_decay set, got ema_decay=None")
        model = self.eval_model() if weights == "raw" else self.ema.module
        with _eval_mode(model):
            correct = torch.zeros((), device=self.device)
            total = 0
            for start in range(0, len(self.test_set), 500):
                x, y = self.test_set[start : start + 500]
                x, y = x.to(self.device), y.to(self.device)
                correct += (model(x).argmax(1) == y).sum()
                total += y.shape[0]
        return float(correct) / max(total, 1)

    def validate(self) -> dict[str, Any]:
        """Clean and PGD accuracy on the held-out validation split (``robust_val_every``).

        The attack runs through :func:`ib_plugins.evaluation.evaluate_suite`: eval mode, IB recording
        paused, inside a forked RNG seeded with the run's ``seed`` (the same random starts at every
        validation, and the training's random streams untouched).

        Returns:
            ``val_n``, ``val_clean_acc``, ``val_robust_acc``, and with ``ema_decay`` the same two for
            the averaged weights (``val_clean_acc_ema``, ``val_robust_acc_ema``).

        Raises:
            ValueError: the run has no validation split (``robust_val_every`` is None).
        """
        if self.val_set is None:
            raise ValueError("robust_val_every: this run holds out no validation split, got robust_val_every=None")
        from ib_plugins.evaluation import evaluate_suite

        c = self.config
        x, y = self.val_set
        out: dict[str, Any] = {"val_n": int(y.shape[0])}
        for suffix, model in (("", self.eval_model()), ("_ema", self.ema_model)):
            if model is None:
                continue
            result = evaluate_suite(
                model, x, y, [self._val_spec], batch_size=c.batch_size, seed=c.seed, device=self.device,
                progress=False,
            )
            out[f"val_clean_acc{suffix}"] = result.clean_accuracy
            out[f"val_robust_acc{suffix}"] = result[self._val_spec.name].accuracy
        return out

    @torch.no_grad()
    def _entropy_metrics(self) -> dict[str, float]:
        if not self._probe_layers:
            return {}
        from ib_plugins.entropic import EntropyProbe, entropy_flow, normalized_entropy

        x, _ = self.test_set[: min(256, len(self.test_set))]
        model = self.base
        with _eval_mode(model), _no_record(self.model):
            if "probe" in self.extra:
                _, hs = self.extra["probe"].run(x.to(self.device))
            else:
                with EntropyProbe(model, self._probe_layers) as probe:
                    _, hs = probe.run(x.to(self.device))
        return {"E_N": float(normalized_entropy(hs).mean()), "E_T": float(entropy_flow(hs).mean())}

    def summary_markdown(self, final: dict[str, Any]) -> str:
        """A short markdown summary of the run.

        Args:
            final: final metrics.

        Returns:
            Markdown text.
        """
        c = self.config
        lines = [
            f"# {md_text(c.method)}{' + IB' if c.ib else ''}{' + mask (' + md_text(c.mask) + ')' if c.mask else ''} "
            f"on {md_text(c.dataset)} / {md_text(c.model)}",
            "",
            f"Preset {md_code(c.preset)}, {c.epochs} epochs, batch {c.batch_size}, seed {c.seed}.",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        for key in sorted(final):
            value = final[key]
            cell = f"{value:.4f}" if isinstance(value, float) else md_cell(value)
            lines.append(f"| {md_cell(key)} | {cell} |")
        return "\n".join(lines) + "\n"

    def _plot(self) -> None:
        from ib_plugins._optional import is_available

        if not is_available("matplotlib") or not self.history:
            return
        from ib_plugins.plots import plot_training_curves

        title = f"{self.config.method}{' + IB' if self.config.ib else ''} on {self.config.dataset}"
        plot_training_curves(self.history, self.out_dir / "training_curves.png", title=title)
        if any(key.startswith("hsic/") for key in self.history[-1]):
            from ib_plugins.plots import plot_information_plane

            plot_information_plane(self.history, self.out_dir / "information_plane.png", title=title)
