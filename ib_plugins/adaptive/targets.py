"""What an adaptive attack needs to know about the defence: IB and entropic configurations, attack targets."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ib_plugins._types import PathLike
from ib_plugins.adaptive.eot import EOTModel
from ib_plugins.adaptive.specs import MissingAttackConfigError
from ib_plugins.wrap import IBModel

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Configurations of the defences
# --------------------------------------------------------------------------------------------------

_IB_REQUIRED = ("layers", "alpha", "beta")
_ENTROPIC_REQUIRED = ("layers", "reference")


@dataclass(frozen=True)
class IBAttackConfig:
    """The IB regulariser ``pgd-ib`` ascends (the fields of :meth:`ib_plugins.IBModel.ib_config`).

    Attributes:
        layers: dotted names of the regularised layers of the *plain* network.
        alpha: weight of ``Σ nHSIC(T_l, X)``.
        beta: weight of ``Σ nHSIC(T_l, Y)``.
        sigma: Gaussian bandwidth.
        eps: the regulariser ε.
        y_kernel: kernel on Y.
        x_kernel: kernel on X.
        t_kernel: kernel on the activations.
        center: centring.
        bandwidth: bandwidth rule.
        num_classes: classes of the one-hot targets (None: the model's number of outputs).

    Example:
        >>> IBAttackConfig.from_mapping({"layers": ["fc1"], "alpha": 0.008, "beta": 0.08}).y_kernel
        'linear'
    """

    layers: tuple[str, ...]
    alpha: float
    beta: float
    sigma: float = 5.0
    eps: float = 1e-5
    y_kernel: str = "linear"
    x_kernel: str = "gaussian"
    t_kernel: str = "gaussian"
    center: str = "right"
    bandwidth: str = "scaled"
    num_classes: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> IBAttackConfig:
        """Build from an ``ib_config()``-style mapping (unknown keys such as ``mask`` are ignored).

        Args:
            data: at least ``layers``, ``alpha`` and ``beta``.

        Returns:
            The config.

        Raises:
            MissingAttackConfigError: a required key is missing (named in the message).

        Example:
            >>> IBAttackConfig.from_mapping({"layers": "fc1", "alpha": 0, "beta": 1}).layers
            ('fc1',)
        """
        missing = [k for k in _IB_REQUIRED if data.get(k) is None]
        if missing:
            raise MissingAttackConfigError(
                f"ib_config: pgd-ib needs the IB configuration keys {list(_IB_REQUIRED)}; missing {missing} "
                f"(got keys {sorted(data)})"
            )
        layers = data["layers"]
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        if not layers:
            raise MissingAttackConfigError("ib_config: pgd-ib needs at least one IB layer, got layers=[]")
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data and f != "layers" and data[f] is not None}
        return cls(layers=layers, **{**known, "alpha": float(data["alpha"]), "beta": float(data["beta"])})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict.

        Returns:
            Field name → value (``layers`` as a list).

        Example:
            >>> IBAttackConfig(("a",), 0.1, 0.2).to_dict()["layers"]
            ['a']
        """
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["layers"] = list(self.layers)
        return out


@dataclass(frozen=True)
class EntropicAttackConfig:
    """The entropic-retraining objective ``pgd-entropic`` goes through.

    Attributes:
        layers: the hooked hidden layers (M = len(layers) + 1 with the softmax output).
        reference: ``E_T_ref`` of the pretrained model.
        lam: λ, the penalty weight.
        sigma: σ, the target factor (target = σ·E_T_ref, see :class:`~ib_plugins.entropic.EntropicLoss`).
        target: ``"faithful"`` or ``"abs"``.
        mode: treatment of negative activations (see :func:`~ib_plugins.entropic.entropy_terms`).

    Example:
        >>> EntropicAttackConfig(("conv1",), reference=2.0, sigma=1.5).target_value()
        3.0
    """

    layers: tuple[str, ...]
    reference: float
    lam: float = 1.0
    sigma: float = 1.65
    target: str = "faithful"
    mode: str = "relu"

    def target_value(self) -> float:
        """The target of ``E_T``: ``σ·E_T_ref`` (or its ``"abs"`` variant).

        Returns:
            The target as a float.

        Example:
            >>> EntropicAttackConfig(("a",), reference=-1.0, sigma=2.0, target="abs").target_value()
            0.0
        """
        if self.target == "abs":
            return self.reference + abs(self.reference) * (self.sigma - 1.0)
        return self.reference * self.sigma

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EntropicAttackConfig:
        """Build from a mapping with at least ``layers`` and ``reference``.

        Args:
            data: ``layers``, ``reference`` and optionally ``lam``, ``sigma``, ``target``, ``mode``.

        Returns:
            The config.

        Raises:
            MissingAttackConfigError: a required key is missing (named in the message).

        Example:
            >>> EntropicAttackConfig.from_mapping({"layers": ["a"], "reference": 1.0}).lam
            1.0
        """
        missing = [k for k in _ENTROPIC_REQUIRED if data.get(k) is None]
        if missing:
            raise MissingAttackConfigError(
                f"entropic_config: pgd-entropic needs the keys {list(_ENTROPIC_REQUIRED)}; missing {missing} "
                f"(got keys {sorted(data)})"
            )
        layers = data["layers"]
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data and f != "layers" and data[f] is not None}
        return cls(layers=layers, **{**known, "reference": float(data["reference"])})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict.

        Returns:
            Field name → value.

        Example:
            >>> EntropicAttackConfig(("a",), 1.0).to_dict()["layers"]
            ['a']
        """
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["layers"] = list(self.layers)
        return out


def _plain_network(model: nn.Module) -> nn.Module:
    """The network whose submodules the configured layer names refer to (unwraps EOT and IBModel)."""
    while True:
        if isinstance(model, EOTModel):
            model = model.model
        elif isinstance(model, IBModel):
            model = model.model
        else:
            return model


def _find_ibmodel(model: nn.Module) -> IBModel | None:
    for m in model.modules():
        if isinstance(m, IBModel):
            return m
    return None


def resolve_ib_config(model: nn.Module, ib_config: Any = None) -> IBAttackConfig:
    """The IB configuration of a defended model, from whatever form it is given in.

    Accepted ``ib_config`` forms: None (the model is, or contains, an :class:`~ib_plugins.IBModel`;
    its :meth:`~ib_plugins.IBModel.ib_config` is used); an :class:`IBAttackConfig`; an
    ``ib_config()``-style mapping; an :class:`~ib_plugins.IBModel`; a
    :class:`~ib_plugins.training.TrainConfig` with ``ib=True`` (its ``ib_layers`` are expanded on
    the model, ``alpha``/``beta``/``y_kernel`` taken as trained) or of method ``hbar`` (all hook
    points, ``hbar_lambda_x``/``hbar_lambda_y``, linear Y kernel).

    Args:
        model: the defended model (plain network, :class:`~ib_plugins.IBModel` or :class:`EOTModel`).
        ib_config: see above.

    Returns:
        An :class:`IBAttackConfig` whose layers exist in the plain network.

    Raises:
        MissingAttackConfigError: no IB configuration can be found (the message names what is
            missing).
        UnknownLayerError: a configured layer is not a submodule of the plain network.
        TypeError: an unsupported ``ib_config`` type.

    Example:
        >>> import torch.nn as nn
        >>> from ib_plugins import wrap_model
        >>> m = wrap_model(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2)), ib_layers=["1"])
        >>> resolve_ib_config(m).layers
        ('1',)
        >>> try:
        ...     resolve_ib_config(nn.Linear(2, 2))
        ... except MissingAttackConfigError as err:
        ...     print(str(err)[:58])
        pgd-ib needs the defended model's IB configuration (layers
    """
    from ib_plugins.layer_selection import expand_layer_spec, resolve_layers
    from ib_plugins.training import TrainConfig, resolve_config

    net = _plain_network(model)
    if ib_config is None:
        wrapped = model if isinstance(model, IBModel) else _find_ibmodel(model)
        if wrapped is None:
            raise MissingAttackConfigError(
                f"pgd-ib needs the defended model's IB configuration (layers, alpha, beta): the model is a plain "
                f"{type(net).__name__} without an IBModel inside and no ib_config was given; pass "
                "ib_config=<IBModel>.ib_config(), the checkpoint's TrainConfig (ib=True), or use load_attack_target()"
            )
        cfg = IBAttackConfig.from_mapping(wrapped.ib_config())
    elif isinstance(ib_config, IBAttackConfig):
        cfg = ib_config
    elif isinstance(ib_config, IBModel):
        cfg = IBAttackConfig.from_mapping(ib_config.ib_config())
    elif isinstance(ib_config, TrainConfig):
        tc = ib_config
        if tc.method == "hbar":
            layers = expand_layer_spec(net, "all")
            lx, ly = tc.hbar_lambda_x, tc.hbar_lambda_y
            if lx is None or ly is None:
                r = resolve_config(tc)
                lx, ly = r.hbar_lambda_x, r.hbar_lambda_y
            cfg = IBAttackConfig(tuple(layers), float(lx), float(ly), y_kernel="linear")  # type: ignore[arg-type]
        elif not tc.ib:
            raise MissingAttackConfigError(
                f"pgd-ib needs an IB configuration, but the TrainConfig (method {tc.method!r}) was trained without "
                "the IB term: ib=False (missing: ib=True with ib_layers, alpha, beta)"
            )
        else:
            y_kernel = tc.y_kernel if tc.y_kernel is not None else resolve_config(tc).y_kernel
            cfg = IBAttackConfig(tuple(expand_layer_spec(net, tc.ib_layers)), float(tc.alpha), float(tc.beta),
                                 y_kernel=str(y_kernel))
    elif isinstance(ib_config, Mapping):
        cfg = IBAttackConfig.from_mapping(ib_config)
    else:
        raise TypeError(
            f"ib_config: expected None, an IBAttackConfig, a mapping, an IBModel or a TrainConfig, got "
            f"{type(ib_config).__name__}"
        )
    resolve_layers(net, cfg.layers)
    return cfg


def resolve_entropic_config(model: nn.Module, entropic_config: Any) -> EntropicAttackConfig:
    """The entropic-retraining configuration for ``pgd-entropic``.

    Args:
        model: the retrained model.
        entropic_config: an :class:`EntropicAttackConfig` or a mapping with ``layers`` and
            ``reference`` (and optionally ``lam``, ``sigma``, ``target``, ``mode``). None raises
            (see :func:`load_attack_target` for entropic checkpoints).

    Returns:
        An :class:`EntropicAttackConfig` whose layers exist in the plain network.

    Raises:
        MissingAttackConfigError: None or a mapping without ``layers``/``reference``.
        UnknownLayerError: a layer is not a submodule.
        TypeError: an unsupported type.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> resolve_entropic_config(net, {"layers": ["1"], "reference": 0.5}).target_value()
        0.825
    """
    from ib_plugins.layer_selection import resolve_layers

    if entropic_config is None:
        raise MissingAttackConfigError(
            "pgd-entropic needs the entropic-retraining configuration (layers, reference E_T_ref, lam, sigma) and "
            "none was given; pass entropic_config={...} or use load_attack_target() on an entropic checkpoint"
        )
    if isinstance(entropic_config, EntropicAttackConfig):
        cfg = entropic_config
    elif isinstance(entropic_config, Mapping):
        cfg = EntropicAttackConfig.from_mapping(entropic_config)
    else:
        raise TypeError(
            f"entropic_config: expected an EntropicAttackConfig or a mapping, got {type(entropic_config).__name__}"
        )
    resolve_layers(_plain_network(model), cfg.layers)
    return cfg


@dataclass
class AttackTarget:
    """A model loaded from a checkpoint with what adaptive attacks need to know about its defence.

    Attributes:
        model: the network to attack (eval mode; the plain network, or the VIB classifier).
        config: the run's :class:`~ib_plugins.training.TrainConfig`.
        ib_config: the IB configuration (``ib=True`` and HBaR runs), else None.
        entropic_config: the entropic configuration (``entropic`` runs), else None.
        checkpoint: the checkpoint path.
        epoch: the checkpoint's epoch.

    Example:
        >>> import torch.nn as nn
        >>> AttackTarget(nn.Linear(2, 2), None).ib_config is None
        True
    """

    model: nn.Module
    config: Any
    ib_config: IBAttackConfig | None = None
    entropic_config: EntropicAttackConfig | None = None
    checkpoint: str | None = None
    epoch: int = 0


def load_attack_target(
    checkpoint: PathLike, *, map_location: str | torch.device = "cpu", weights: str = "raw"
) -> AttackTarget:
    """Load a checkpoint's network and its defence configuration (IB layers/weights, entropic values).

    The checkpoint stores the plain network under ``"model"`` and the resolved
    :class:`~ib_plugins.training.TrainConfig` under ``"config"``; the IB configuration is rebuilt from
    that config (``ib_layers``, ``alpha``, ``beta``, ``y_kernel``), the entropic one from the preset
    layers of the model, ``entropic_lambda``/``entropic_sigma`` and the stored reference ``E_T_ref``.

    Args:
        checkpoint: a ``checkpoint.pt`` written by :class:`~ib_plugins.training.Trainer`.
        map_location: device of the tensors.
        weights: ``"raw"`` (the trained weights) or ``"ema"`` (their exponential moving average,
            when the run kept one; see :func:`ib_plugins.training.load_model_from_checkpoint`).

    Returns:
        The :class:`AttackTarget`.

    Raises:
        CheckpointError: unreadable checkpoint or weights that do not fit.

    Example:
        >>> try:
        ...     load_attack_target("/nonexistent/checkpoint.pt")
        ... except ValueError as err:
        ...     print(type(err).__name__)
        CheckpointError
    """
    from ib_plugins.training import load_model_from_checkpoint

    model, config, ckpt = load_model_from_checkpoint(checkpoint, map_location=map_location, weights=weights)
    target = AttackTarget(model=model, config=config, checkpoint=str(checkpoint), epoch=int(ckpt.get("epoch", 0)))
    if config.ib or config.method == "hbar":
        target.ib_config = resolve_ib_config(model, config)
    if config.method == "entropic":
        from ib_plugins.presets import preset_for_model

        reference = (ckpt.get("extra") or {}).get("reference")
        preset = preset_for_model(_plain_network(model))
        if reference is not None and preset is not None:
            target.entropic_config = EntropicAttackConfig(
                tuple(preset.layers), float(reference), lam=float(config.entropic_lambda),
                sigma=float(config.entropic_sigma),
            )
        else:
            logger.warning(
                "%s: entropic checkpoint without a stored reference or layer preset; pgd-entropic unavailable",
                checkpoint,
            )
    return target
