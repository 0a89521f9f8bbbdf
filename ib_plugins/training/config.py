"""Training configuration: :class:`TrainConfig`, its validation and :func:`resolve_config` (presets)."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

METHODS = ("ce", "pgd-at", "trades", "mart", "hbar", "vib", "entropic")
PRESETS = ("ibrar-code", "paper", "standard")
_AT_METHODS = ("pgd-at", "trades", "mart")
_SMALL_IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist")
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
