"""Adaptive attacks on information-bottleneck defences: PGD through the defence's own objective, EOT, a fixed CW.

The attacks of :mod:`ib_plugins.evaluation` are generic torchattacks calls. A defence that adds a
term to its training objective should also be attacked *through* that term (Carlini et al. 2019,
"On Evaluating Adversarial Robustness", §4; Tramèr et al. 2020, "On Adaptive Attacks to
Adversarial Example Defenses"). This module adds, as :class:`~ib_plugins.evaluation.AttackSpec`-
compatible attacks (see :func:`adaptive_spec`):

* ``pgd-ib``: L∞ PGD that **maximises** ``CE + α·Σ_l nHSIC(T_l, X) − β·Σ_l nHSIC(T_l, Y)``, i.e.
  the IB-RAR training loss, through the defended model's own hooks (the authors' ``pgd_mi``,
  spec §2.6). ``X`` is the clean batch and ``Y`` the true labels, as in ``pgd_mi``. The layers,
  weights and kernels come from the model's IB configuration (an :class:`~ib_plugins.IBModel`'s
  :meth:`~ib_plugins.IBModel.ib_config`, a :class:`~ib_plugins.training.TrainConfig` with
  ``ib=True``, or a checkpoint, see :func:`load_attack_target`), never hard-coded. The authors'
  ``pgd_mi`` used *all* hooked layers and a Gaussian Y kernel; pass such an ``ib_config`` to
  reproduce it exactly. The activations are captured in **eval mode with gradients** by
  :func:`ib_plugins.capture_activations` (``when="always"``) on the plain network; the objective
  is :func:`ib_plugins.ib_objective`. The HSIC terms couple the samples of a batch, so the attack is
  batch-dependent (batches of at least 2 samples; a last batch of 1 is merged into the previous).
  **CE reduction.** With the batch-*mean* CE (the training loss; ``nn.CrossEntropyLoss``'s default,
  so presumably ``pgd_mi``'s), the per-sample CE gradient is scaled by ``1/m`` while the HSIC
  terms are batch statistics: near clean points, where the softmax saturates, the HSIC gradient is
  ~60x larger on the digits IB-RAR model, the signed step follows it, and the attack ends up *weaker*
  than plain PGD (73.8 % vs 70.0 % robust accuracy on 450 test images, ε = 0.1, 10 steps). The
  default therefore *sums* the CE over the batch (``ce_reduction="sum"``: every sample keeps its own
  CE gradient, the IB term is added on top; 69.6 % on the same model); ``ce_reduction="mean"`` gives
  the ``pgd_mi`` weighting. :func:`ib_plugins.audit.run_audit` runs both.
* ``pgd-entropic``: L∞ PGD through the entropic-retraining objective. **Direction** (a choice, the
  paper has no adaptive attack): by default the attacker maximises
  ``CE − λ·mean_b (E_T,b − σ·E_T_ref)²``: it raises the loss while keeping each adversarial point's
  entropy flow at the value the retrained model shows on clean data, so adversarial points stay
  "in distribution" for the statistic the defence trained on. ``entropic_penalty="add"`` maximises
  the training loss ``CE + λ·penalty`` instead. The per-sample penalty is used (the training loss
  uses the batch mean), so samples do not interact. ``pgd-ce`` is the plain-CE counterpart.
* ``pgd-ce`` / ``pgd-margin``: the same PGD loop on cross-entropy or on the corrected margin
  ``max_{j≠y} z_j − z_y`` (:func:`margin_loss`); the margin loss does not saturate when the
  softmax does, a standard remedy against masked gradients.
* ``cw-l2``: Carlini–Wagner L2 with the **corrected margin**: the largest *other* logit is taken
  with the true class masked by ``−inf``. torchattacks' ``CW`` multiplies by ``1 − onehot``, so the
  true-class slot contributes a 0 to the max and the attack stalls as soon as all other logits are
  negative (spec §2.7 item 11; always for log-probability outputs). It also stops early on a
  non-decreasing cost; this one runs all steps and can binary-search ``c`` (``search_steps``).

Every PGD attack here is the Madry et al. L∞ PGD (random start, signed steps, projection) with
three additions: a sample counts as broken if **any** iterate is misclassified (that iterate is
returned), ``restarts`` random restarts keep the first restart that breaks a sample, and
``eot_samples > 1`` averages the gradient over that many forwards (expectation over
transformation, Athalye et al. 2018) for stochastic models. :class:`EOTModel` instead averages
logits, which makes any stochastic model usable by torchattacks and by the prediction code.

:func:`run_adaptive_attack` obeys the rules of :func:`ib_plugins.evaluation.run_attack`: the global
RNG is forked and seeded with ``seed`` (random starts use a local generator seeded with ``seed``),
every submodule's train/eval flag is restored, :class:`~ib_plugins.IBModel` recording is paused,
inputs outside ``[0, 1]`` raise ``ValueError``, and no gradient is left on the model's parameters.

Example:
    >>> import torch, torch.nn as nn
    >>> from ib_plugins import wrap_model
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    >>> model = wrap_model(net, ib_layers=["2"], num_classes=3)
    >>> x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
    >>> adv = run_adaptive_attack(model, "pgd-ib", x, y, eps=0.1, steps=3)
    >>> bool((adv - x).abs().max() <= 0.1 + 1e-6), model.training
    (True, True)
    >>> adaptive_spec("pgd-ib", eps=0.1, steps=3).attack
    'adaptive:pgd-ib'
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins._context import _inference_modes
from ib_plugins._types import PathLike
from ib_plugins.errors import IBPluginsError, LayerNotFiredError
from ib_plugins.wrap import IBModel

__all__ = [
    "ADAPTIVE_ATTACKS",
    "MissingAttackConfigError",
    "list_adaptive_attacks",
    "adaptive_spec",
    "is_adaptive_spec",
    "IBAttackConfig",
    "EntropicAttackConfig",
    "resolve_ib_config",
    "resolve_entropic_config",
    "AttackTarget",
    "load_attack_target",
    "margin_loss",
    "EOTModel",
    "is_deterministic",
    "run_adaptive_attack",
    "run_spec",
    "evaluate_specs",
]

logger = logging.getLogger(__name__)

_PREFIX = "adaptive:"

#: Read-only mapping ``name -> one-line description`` of the adaptive attacks.
ADAPTIVE_ATTACKS: Mapping[str, str] = MappingProxyType(
    {
        "pgd-ce": "L-inf PGD on cross-entropy (any-iterate success, restarts, gradient EOT)",
        "pgd-margin": "L-inf PGD on the corrected margin max_{j!=y} z_j - z_y",
        "pgd-ib": "L-inf PGD on CE + alpha*sum nHSIC(T,X) - beta*sum nHSIC(T,Y) through the model's IB layers",
        "pgd-entropic": "L-inf PGD on CE -/+ lambda*(E_T - sigma*E_T_ref)^2 through the entropic layers",
        "cw-l2": "Carlini-Wagner L2 with the corrected margin (true class masked by -inf)",
    }
)
_PGD = ("pgd-ce", "pgd-margin", "pgd-ib", "pgd-entropic")


class MissingAttackConfigError(IBPluginsError, ValueError):
    """An adaptive attack needs a configuration the model or checkpoint does not carry.

    Raised, for example, when ``pgd-ib`` is asked of a plain network without ``ib_config`` or of a
    checkpoint trained without the IB term; the message names what is missing.

    Example:
        >>> issubclass(MissingAttackConfigError, ValueError)
        True
    """


# --------------------------------------------------------------------------------------------------
# Names and specs
# --------------------------------------------------------------------------------------------------


def list_adaptive_attacks() -> list[str]:
    """Names of the adaptive attacks.

    Returns:
        The names, usable with :func:`adaptive_spec` and :func:`run_adaptive_attack`.

    Example:
        >>> list_adaptive_attacks()
        ['pgd-ce', 'pgd-margin', 'pgd-ib', 'pgd-entropic', 'cw-l2']
    """
    return list(ADAPTIVE_ATTACKS)


def _canonical_name(name: object) -> str:
    if not isinstance(name, str):
        names = ", ".join(map(repr, ADAPTIVE_ATTACKS))
        raise TypeError(f"name: expected a str (one of {names}), got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key.startswith(_PREFIX):
        key = key[len(_PREFIX):]
    if key not in ADAPTIVE_ATTACKS:
        raise ValueError(f"name: expected one of {', '.join(map(repr, ADAPTIVE_ATTACKS))}, got {name!r}")
    return key


def adaptive_spec(name: str, *, eps: float | None = None, label: str | None = None, **kwargs: Any) -> Any:
    """An :class:`~ib_plugins.evaluation.AttackSpec` for an adaptive attack.

    The spec's ``attack`` field is ``"adaptive:<name>"``; :func:`run_spec` and
    :func:`evaluate_specs` dispatch such specs to :func:`run_adaptive_attack` and every other spec
    to :func:`ib_plugins.evaluation.run_attack`.

    Args:
        name: a name from :func:`list_adaptive_attacks`.
        eps: the L∞ radius of the PGD attacks (required); must be None for ``cw-l2``.
        label: the name shown in reports (default ``name``).
        **kwargs: keyword arguments of :func:`run_adaptive_attack` (``steps``, ``alpha``,
            ``restarts``, ``eot_samples``, ``c``...), stored in the spec.

    Returns:
        The spec.

    Raises:
        ValueError: unknown name, missing/unexpected ``eps``, or an unknown keyword.

    Example:
        >>> s = adaptive_spec("cw-l2", steps=100, c=1.0)
        >>> s.norm, s.eps, s.attack, dict(s.kwargs)
        ('l2', None, 'adaptive:cw-l2', {'steps': 100, 'c': 1.0})
    """
    from ib_plugins.evaluation import AttackSpec

    key = _canonical_name(name)
    unknown = sorted(set(kwargs) - _RUN_KWARGS)
    if unknown:
        known = ", ".join(sorted(_RUN_KWARGS))
        raise ValueError(f"kwargs: expected keywords of run_adaptive_attack ({known}), got {unknown}")
    if key == "cw-l2":
        if eps is not None:
            raise ValueError(f"eps: cw-l2 is an unbounded attack, expected eps=None, got {eps!r}")
        return AttackSpec(label or key, "l2", None, kwargs, attack=_PREFIX + key)
    if eps is None:
        raise ValueError(f"eps: {key} needs an L-inf radius, got None")
    return AttackSpec(label or key, "linf", eps, kwargs, attack=_PREFIX + key)


def is_adaptive_spec(spec: Any) -> bool:
    """Whether an :class:`~ib_plugins.evaluation.AttackSpec` names an adaptive attack.

    Args:
        spec: an attack spec.

    Returns:
        True for specs made by :func:`adaptive_spec`.

    Example:
        >>> from ib_plugins.evaluation import AttackSpec
        >>> is_adaptive_spec(adaptive_spec("pgd-ce", eps=0.1)), is_adaptive_spec(AttackSpec("fgsm", "linf", 0.1))
        (True, False)
    """
    return isinstance(getattr(spec, "attack", None), str) and spec.attack.startswith(_PREFIX)


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


# --------------------------------------------------------------------------------------------------
# Losses, EOT, determinism
# --------------------------------------------------------------------------------------------------


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """The corrected CW margin ``max_{j≠y} z_j − z_y`` per sample (> 0 means misclassified).

    The true class is masked with ``−inf`` before the max. torchattacks' CW takes
    ``max((1 − onehot)·z)`` instead, which sees a 0 in the true-class slot: with all-negative
    outputs (log-probabilities) its "other" logit is 0 and the margin is stuck.

    Args:
        logits: ``[N, C]`` scores.
        y: class indices ``[N]``.

    Returns:
        ``[N]`` margins.

    Example:
        >>> import torch
        >>> logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0]]), dim=1)
        >>> y = torch.tensor([0])
        >>> round(float(margin_loss(logp, y)), 4)  # -(2 - 1)
        -1.0
        >>> buggy_other = ((1 - torch.eye(3)[y]) * logp).max(1).values  # torchattacks' CW
        >>> float(buggy_other) == 0.0  # the masked true-class slot wins
        True
    """
    onehot = F.one_hot(y, logits.shape[1]).bool()
    real = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    other = logits.masked_fill(onehot, float("-inf")).amax(dim=1)
    return other - real


class EOTModel(nn.Module):
    """Expectation over transformation: average a stochastic model's outputs over several forwards.

    The gradient of the averaged output is the average of the per-draw gradients, so any attack
    (torchattacks included) run against this wrapper is an EOT attack. Use it for stochastic
    inference (the VIB head's ``eval_mode="sample_average"``, a channel mask kept at inference,
    dropout left on) and for predictions on such models.

    Args:
        model: the stochastic classifier.
        eot_samples: forwards averaged per call (≥ 1).
        average: ``"logits"`` (mean of the outputs) or ``"probs"`` (log of the mean softmax).

    Raises:
        ValueError: bad ``eot_samples`` or ``average``.
        TypeError: ``model`` is not a module.

    Example:
        >>> import torch, torch.nn as nn
        >>> noisy = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()  # stochastic
        >>> eot = EOTModel(noisy, eot_samples=64)
        >>> eot(torch.rand(2, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, model: nn.Module, *, eot_samples: int = 8, average: str = "logits") -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if isinstance(eot_samples, bool) or not isinstance(eot_samples, int) or eot_samples < 1:
            raise ValueError(f"eot_samples: expected an int >= 1, got {eot_samples!r}")
        if average not in ("logits", "probs"):
            raise ValueError(f"average: expected 'logits' or 'probs', got {average!r}")
        self.model = model
        self.eot_samples = eot_samples
        self.average = average

    def forward(self, x: Tensor) -> Tensor:
        """Average ``eot_samples`` forwards of the wrapped model.

        Args:
            x: the inputs.

        Returns:
            ``[N, C]`` averaged logits (or log mean probabilities).

        Example:
            >>> import torch, torch.nn as nn
            >>> lin = nn.Linear(2, 2)
            >>> x = torch.rand(3, 2)
            >>> torch.allclose(EOTModel(lin, eot_samples=3)(x), lin(x))
            True
        """
        outs = torch.stack([self.model(x) for _ in range(self.eot_samples)])
        if self.average == "logits":
            return outs.mean(dim=0)
        return torch.logsumexp(F.log_softmax(outs, dim=-1), dim=0) - math.log(self.eot_samples)

    def extra_repr(self) -> str:
        return f"eot_samples={self.eot_samples}, average={self.average!r}"


def is_deterministic(model: nn.Module, x: Tensor, *, trials: int = 3, atol: float = 0.0) -> bool:
    """Whether the model's eval-mode forward gives the same output on repeated calls.

    Runs ``trials`` no-grad eval forwards of ``x`` inside a forked RNG (the caller's RNG state is
    unchanged) and compares them. Modes are restored and IBModel recording is paused.

    Args:
        model: the classifier.
        x: a batch of inputs on the model's device.
        trials: number of forwards (≥ 2).
        atol: tolerated absolute difference.

    Returns:
        True when every forward matches the first within ``atol``.

    Raises:
        ValueError: ``trials < 2``.

    Example:
        >>> import torch, torch.nn as nn
        >>> is_deterministic(nn.Linear(3, 2), torch.rand(4, 3))
        True
        >>> class Noisy(nn.Module):
        ...     def forward(self, x):
        ...         return x + torch.randn_like(x)
        >>> is_deterministic(Noisy(), torch.rand(4, 3))
        False
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 2:
        raise ValueError(f"trials: expected an int >= 2, got {trials!r}")
    from ib_plugins._context import _module_device

    dev = _module_device(model) or x.device
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with _inference_modes(model), torch.random.fork_rng(devices=cuda), torch.no_grad():
        first = model(x.to(dev))
        for _ in range(trials - 1):
            if not torch.allclose(model(x.to(dev)), first, rtol=0.0, atol=atol, equal_nan=True):
                return False
    return True


# --------------------------------------------------------------------------------------------------
# The attacks
# --------------------------------------------------------------------------------------------------

Objective = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def _ce_objective(model: nn.Module) -> Objective:
    def objective(x_adv: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = _logits(model, x_adv)
        return F.cross_entropy(logits, y, reduction="sum"), logits

    return objective


def _margin_objective(model: nn.Module) -> Objective:
    def objective(x_adv: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = _logits(model, x_adv)
        return margin_loss(logits, y).sum(), logits

    return objective


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise TypeError(
            "model: expected the forward to return logits [N, num_classes], got "
            f"{type(out).__name__ if not isinstance(out, Tensor) else list(out.shape)}"
        )
    return out


@contextlib.contextmanager
def _ib_objective(model: nn.Module, cfg: IBAttackConfig, *, penalty: str = "add",
                  ce_reduction: str = "sum") -> Iterator[Objective]:
    from ib_plugins.activation_capture import capture_activations
    from ib_plugins.bottleneck import ib_objective, labels_to_targets

    net = _plain_network(model)
    with capture_activations(net, cfg.layers, when="always") as cap:

        def objective(x_adv: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            cap.reset()
            logits = _logits(model, x_adv)
            missing = [name for name in cfg.layers if name not in cap.fired()]
            if missing:
                raise LayerNotFiredError(
                    f"pgd-ib: layer(s) {missing} of {type(net).__name__} did not run in the forward; the IB "
                    "configuration does not match this model"
                )
            acts = list(cap.activations.values())
            classes = cfg.num_classes or int(logits.shape[1])
            targets = labels_to_targets(y, classes, dtype=x.dtype)
            terms = ib_objective(
                acts, x, targets, alpha=cfg.alpha, beta=cfg.beta, sigma=cfg.sigma, eps=cfg.eps,
                t_kernel=cfg.t_kernel, x_kernel=cfg.x_kernel, y_kernel=cfg.y_kernel,  # type: ignore[arg-type]
                center=cfg.center, bandwidth=cfg.bandwidth,  # type: ignore[arg-type]
            )
            sign = 1.0 if penalty == "add" else -1.0
            return F.cross_entropy(logits, y, reduction=ce_reduction) + sign * terms.loss, logits

        yield objective


@contextlib.contextmanager
def _entropic_objective(model: nn.Module, cfg: EntropicAttackConfig, *, penalty: str) -> Iterator[Objective]:
    from ib_plugins.entropic import EntropyProbe, entropy_flow

    sign = -1.0 if penalty == "subtract" else 1.0
    with EntropyProbe(_plain_network(model), cfg.layers) as probe:

        def objective(x_adv: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            logits = _logits(model, x_adv)
            hs = probe.collect(logits)
            et = entropy_flow(hs, mode=cfg.mode)  # type: ignore[arg-type]
            pen = (et - cfg.target_value()) ** 2
            # per-sample terms: summing both keeps the training loss's CE : penalty ratio of every sample
            return F.cross_entropy(logits, y, reduction="sum") + sign * cfg.lam * pen.sum(), logits

        yield objective


def _pgd(
    model: nn.Module,
    objective: Objective,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool,
    restarts: int,
    eot_samples: int,
    generator: torch.Generator,
    any_iterate: bool = True,
) -> Tensor:
    """L∞ PGD with any-iterate success, restarts and gradient EOT (the model is in eval mode)."""
    x = x.detach()
    best = x.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)

    def probe(x_adv: Tensor, *, grad: bool) -> tuple[Tensor | None, Tensor]:
        total: Tensor | None = None
        logits_sum: Tensor | None = None
        for _ in range(eot_samples):
            if grad:
                x_in = x_adv.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss, logits = objective(x_in, x, y)
                    (g,) = torch.autograd.grad(loss, x_in)
                total = g if total is None else total + g
            else:
                with torch.no_grad():
                    logits = _logits(model, x_adv)
            logits = logits.detach()
            logits_sum = logits if logits_sum is None else logits_sum + logits
        assert logits_sum is not None
        return total, logits_sum

    for r in range(restarts):
        if random_start and eps > 0:
            noise = torch.rand(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
            x_adv = (x + (noise.to(device=x.device, dtype=x.dtype) * 2 - 1) * eps).clamp(0, 1)
        else:
            x_adv = x.clone()
        for _ in range(steps):
            grad, logits = probe(x_adv, grad=True)
            if any_iterate:
                newly = (logits.argmax(1) != y) & ~fooled
                best[newly] = x_adv[newly]
                fooled |= newly
            assert grad is not None
            grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            x_adv = torch.min(torch.max(x_adv + alpha * grad.sign(), lo), hi).detach()
        _, logits = probe(x_adv, grad=False)
        newly = (logits.argmax(1) != y) & ~fooled
        best[newly] = x_adv[newly]
        fooled |= newly
        if r == 0:
            best[~fooled] = x_adv[~fooled]
        if bool(fooled.all()):
            break
    return best


def _cw_l2(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    c: float,
    kappa: float,
    steps: int,
    lr: float,
    search_steps: int,
    eot_samples: int,
) -> Tensor:
    """Carlini-Wagner L2 with the corrected margin; optional binary search over c per sample."""
    x = x.detach()
    n = x.shape[0]
    const = torch.full((n,), float(c), device=x.device, dtype=x.dtype)
    lower = torch.zeros_like(const)
    upper = torch.full_like(const, 1e10)
    best_l2 = torch.full_like(const, float("inf"))
    best = x.clone()
    w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))

    def logits_of(adv: Tensor) -> Tensor:
        out = _logits(model, adv)
        for _ in range(eot_samples - 1):
            out = out + _logits(model, adv)
        return out / eot_samples

    def record(adv: Tensor, logits: Tensor, success: Tensor) -> None:
        l2 = (adv - x).flatten(1).pow(2).sum(1)
        ok = (logits.argmax(1) != y) & (margin_loss(logits, y) >= kappa)
        better = ok & (l2 < best_l2)
        best_l2.copy_(torch.where(better, l2, best_l2))
        best[better] = adv[better]
        success |= ok

    for _ in range(search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(steps):
            with torch.enable_grad():
                adv = (torch.tanh(w) + 1) / 2
                logits = logits_of(adv)
                f = torch.clamp(-margin_loss(logits, y), min=-kappa)
                l2 = (adv - x).flatten(1).pow(2).sum(1)
                loss = (l2 + const * f).sum()
                (g,) = torch.autograd.grad(loss, w)
            record(adv.detach(), logits.detach(), success)
            w.grad = torch.nan_to_num(g, nan=0.0)
            opt.step()
        with torch.no_grad():
            adv = (torch.tanh(w) + 1) / 2
            record(adv, logits_of(adv), success)
        upper = torch.where(success, torch.minimum(upper, const), upper)
        lower = torch.where(success, lower, torch.maximum(lower, const))
        const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
    return best


_RUN_KWARGS = frozenset(
    {"steps", "alpha", "random_start", "restarts", "eot_samples", "entropic_penalty", "c", "kappa", "lr",
     "search_steps", "any_iterate", "ib_penalty", "ce_reduction"}
)


def _check_float(value: object, arg: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{arg}: expected a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{arg}: expected a finite value {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


def _slices(n: int, batch_size: int, *, min_size: int) -> list[slice]:
    out = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(out) > 1 and out[-1].stop - out[-1].start < min_size:
        last = out.pop()
        out[-1] = slice(out[-1].start, last.stop)
    return out


def run_adaptive_attack(
    model: nn.Module,
    name: str,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | None = None,
    steps: int = 10,
    alpha: float | None = None,
    seed: int = 0,
    ib_config: Any = None,
    entropic_config: Any = None,
    random_start: bool = True,
    restarts: int = 1,
    eot_samples: int = 1,
    entropic_penalty: str = "subtract",
    ib_penalty: str = "add",
    ce_reduction: str = "sum",
    c: float = 1.0,
    kappa: float = 0.0,
    lr: float = 0.01,
    search_steps: int = 1,
    any_iterate: bool = True,
    batch_size: int = 100,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """Run one adaptive attack on ``(x, y)`` without side effects (the rules of ``evaluation.run_attack``).

    Args:
        model: a classifier taking ``[0, 1]`` inputs and returning ``[N, C]`` logits (a plain network,
            an :class:`~ib_plugins.IBModel`, or an :class:`EOTModel`).
        name: a name from :func:`list_adaptive_attacks`.
        x: inputs in ``[0, 1]``, ``[N, ...]``.
        y: class indices ``[N]``.
        eps: L∞ radius of the PGD attacks (required); None for ``cw-l2`` (unbounded).
        steps: iterations (PGD steps or CW optimiser steps per search step).
        alpha: PGD step size; None = ``2.5·eps/steps`` (Madry et al.).
        seed: seed of the random starts (local generator) and of the model's own randomness (the
            global RNG is forked and seeded).
        ib_config: IB configuration for ``pgd-ib`` (see :func:`resolve_ib_config`).
        entropic_config: configuration for ``pgd-entropic`` (see :func:`resolve_entropic_config`).
        random_start: PGD starts from a uniform point of the ε-ball.
        restarts: PGD runs; a sample is broken if any run breaks it.
        eot_samples: forwards whose gradients (PGD) or logits (CW) are averaged per step (EOT).
        entropic_penalty: ``"subtract"`` (default: maximise ``CE − λ·penalty``) or ``"add"``
            (maximise ``CE + λ·penalty``).
        ib_penalty: ``"add"`` (default: maximise ``CE + IB term``, as ``pgd_mi``) or ``"subtract"``.
        ce_reduction: CE of ``pgd-ib`` summed over the batch (``"sum"``, default) or averaged
            (``"mean"``, as in the training loss and ``nn.CrossEntropyLoss``). See the module notes.
        c: CW constant (initial constant with ``search_steps > 1``).
        kappa: CW confidence.
        lr: CW Adam learning rate.
        search_steps: CW binary-search steps over ``c`` (1 = fixed ``c``, like torchattacks).
        any_iterate: PGD returns the first misclassified iterate of a sample (True) or the final
            iterate of a run (False: maximal loss, better for transfer attacks).
        batch_size: samples per attack batch (``pgd-ib`` needs ≥ 2; a last batch of 1 is merged).
        device: where to run; None = the model's device. The model is never moved.
        progress: show a tqdm bar over batches.

    Returns:
        Adversarial examples, same shape, dtype and device as ``x``; for samples the attack did not
        break, the last PGD iterate of the first run (CW: the clean input).

    Raises:
        ValueError: inputs outside ``[0, 1]``, labels out of range, a bad radius/step count, an
            unknown attack name.
        MissingAttackConfigError: ``pgd-ib`` without an IB configuration (or ``pgd-entropic``
            without an entropic one); the message names what is missing.
        UnknownLayerError: a configured layer is not in the model.
        TypeError: arguments of the wrong type.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(6, 1, 4, 4), torch.arange(6) % 3
        >>> state = torch.get_rng_state()
        >>> adv = run_adaptive_attack(model, "cw-l2", x, y, steps=20, c=10.0, lr=0.1)
        >>> adv.shape == x.shape, torch.equal(state, torch.get_rng_state())
        (True, True)
        >>> a1 = run_adaptive_attack(model, "pgd-ce", x, y, eps=0.1, seed=3)
        >>> torch.equal(a1, run_adaptive_attack(model, "pgd-ce", x, y, eps=0.1, seed=3))
        True
    """
    from ib_plugins._context import _attack_context, _resolve_device
    from ib_plugins._validation import _check_int, _check_model, _check_xy
    from ib_plugins.evaluation import _progress_over

    model = _check_model(model)
    key = _canonical_name(name)
    x, y = _check_xy(x, y, reason="the attacks keep adversarial examples in [0, 1]")
    steps = _check_int(steps, "steps", minimum=1)
    seed = _check_int(seed, "seed")
    restarts = _check_int(restarts, "restarts", minimum=1)
    eot_samples = _check_int(eot_samples, "eot_samples", minimum=1)
    search_steps = _check_int(search_steps, "search_steps", minimum=1)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    if key == "cw-l2":
        if eps is not None:
            raise ValueError(f"eps: cw-l2 is an unbounded L2 attack, expected eps=None, got {eps!r}")
        c = _check_float(c, "c", positive=True)
        kappa = _check_float(kappa, "kappa")
        lr = _check_float(lr, "lr", positive=True)
    else:
        if eps is None:
            raise ValueError(f"eps: {key} needs an L-inf radius in [0, 1], got None")
        eps = _check_float(eps, "eps")
        if eps > 1:
            raise ValueError(f"eps: expected an L-inf radius in [0, 1] for inputs in [0, 1], got {eps!r}")
        alpha = 2.5 * eps / steps if alpha is None else _check_float(alpha, "alpha")
    for arg, value in (("entropic_penalty", entropic_penalty), ("ib_penalty", ib_penalty)):
        if value not in ("subtract", "add"):
            raise ValueError(f"{arg}: expected 'subtract' or 'add', got {value!r}")
    if ce_reduction not in ("mean", "sum"):
        raise ValueError(f"ce_reduction: expected 'mean' or 'sum', got {ce_reduction!r}")
    ib_cfg = resolve_ib_config(model, ib_config) if key == "pgd-ib" else None
    ent_cfg = resolve_entropic_config(model, entropic_config) if key == "pgd-entropic" else None
    if key == "pgd-ib" and x.shape[0] < 2:
        raise ValueError(f"x: pgd-ib's HSIC terms need at least 2 samples, got {x.shape[0]}")
    dev = _resolve_device(model, x, device)
    out: list[Tensor] = []
    with _attack_context(model, dev, seed), contextlib.ExitStack() as stack:
        with torch.no_grad():
            n_out = _logits(model, x[:1].to(dev)).shape[1]
        if int(y.max()) >= n_out:
            raise ValueError(f"y: expected class indices < {n_out} (the model's outputs), got {int(y.max())}")
        generator = torch.Generator().manual_seed(seed)
        if key == "pgd-ib":
            assert ib_cfg is not None
            objective = stack.enter_context(_ib_objective(model, ib_cfg, penalty=ib_penalty, ce_reduction=ce_reduction))
        elif key == "pgd-entropic":
            assert ent_cfg is not None
            objective = stack.enter_context(_entropic_objective(model, ent_cfg, penalty=entropic_penalty))
        elif key == "pgd-margin":
            objective = _margin_objective(model)
        else:
            objective = _ce_objective(model)
        slices = _slices(x.shape[0], batch_size, min_size=2 if key == "pgd-ib" else 1)
        bar = _progress_over(range(len(slices)), desc=key, progress=progress)
        for i in bar:
            sl = slices[i]
            xb, yb = x[sl].to(dev), y[sl].to(dev)
            if key == "cw-l2":
                adv = _cw_l2(model, xb, yb, c=c, kappa=kappa, steps=steps, lr=lr, search_steps=search_steps,
                             eot_samples=eot_samples)
            else:
                assert eps is not None and alpha is not None
                adv = _pgd(model, objective, xb, yb, eps=eps, alpha=alpha, steps=steps, random_start=random_start,
                           restarts=restarts, eot_samples=eot_samples, generator=generator, any_iterate=any_iterate)
            out.append(adv.detach().to(x.device, x.dtype))
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------
# Running specs (torchattacks and adaptive alike)
# --------------------------------------------------------------------------------------------------


def run_spec(
    model: nn.Module,
    spec: Any,
    x: Tensor,
    y: Tensor,
    *,
    ib_config: Any = None,
    entropic_config: Any = None,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    engine: str = "builtin",
) -> Tensor:
    """Run any :class:`~ib_plugins.evaluation.AttackSpec`: adaptive ones here, the rest via ``run_attack``.

    Args:
        model: the classifier.
        spec: an attack spec (from :func:`adaptive_spec` or :func:`ib_plugins.evaluation.build_suite`).
        x: inputs in ``[0, 1]``.
        y: class indices.
        ib_config: for ``pgd-ib`` specs.
        entropic_config: for ``pgd-entropic`` specs.
        batch_size: samples per attack call.
        seed: seed of the attack.
        device: where to run.
        progress: show tqdm bars.
        engine: the engine of non-adaptive specs (see :func:`ib_plugins.evaluation.run_attack`).

    Returns:
        Adversarial examples.

    Raises:
        TypeError: ``spec`` is not an AttackSpec.

    Example:
        >>> import torch, torch.nn as nn
        >>> from ib_plugins.evaluation import AttackSpec
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.arange(4) % 3
        >>> specs = (AttackSpec("fgsm", "linf", 0.1), adaptive_spec("pgd-ce", eps=0.1))
        >>> [run_spec(model, s, x, y).shape[0] for s in specs]
        [4, 4]
    """
    from ib_plugins.evaluation import AttackSpec, run_attack

    if not isinstance(spec, AttackSpec):
        raise TypeError(f"spec: expected an AttackSpec, got {type(spec).__name__}")
    if is_adaptive_spec(spec):
        return run_adaptive_attack(
            model, spec.attack_class, x, y, eps=spec.eps, seed=seed, ib_config=ib_config,
            entropic_config=entropic_config, batch_size=batch_size, device=device, progress=progress,
            **dict(spec.kwargs),
        )
    return run_attack(model, spec, x, y, batch_size=batch_size, seed=seed, device=device, progress=progress,
                      engine=engine)


def _predict(model: nn.Module, x: Tensor, *, batch_size: int, dev: torch.device, seed: int = 0) -> Tensor:
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    preds = []
    with _inference_modes(model), torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.default_generator.manual_seed(seed)
        for i in range(0, x.shape[0], batch_size):
            preds.append(_logits(model, x[i : i + batch_size].to(dev)).argmax(1).to(x.device))
    return torch.cat(preds)


def evaluate_specs(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    specs: Sequence[Any],
    *,
    ib_config: Any = None,
    entropic_config: Any = None,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    keep_adversarial: bool = False,
    engine: str = "builtin",
) -> Any:
    """Like :func:`ib_plugins.evaluation.evaluate_suite`, for a mix of torchattacks and adaptive specs.

    Predictions are eval-mode argmaxes inside a forked RNG seeded with ``seed`` (so a stochastic
    model is scored reproducibly; wrap it in :class:`EOTModel` to score the averaged classifier).

    Args:
        model: the classifier.
        x: inputs in ``[0, 1]``.
        y: class indices.
        specs: attack specs with unique names.
        ib_config: for ``pgd-ib`` specs.
        entropic_config: for ``pgd-entropic`` specs.
        batch_size: samples per forward / attack call.
        seed: seed of every attack.
        device: where to run.
        progress: show tqdm bars.
        keep_adversarial: keep the adversarial examples in the result.
        engine: the engine of non-adaptive specs (see :func:`ib_plugins.evaluation.run_attack`).

    Returns:
        A :class:`~ib_plugins.evaluation.SuiteResult`.

    Raises:
        ValueError: duplicate names or bad inputs.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
        >>> res = evaluate_specs(model, x, y, [adaptive_spec("pgd-ce", eps=0.0, steps=1)])
        >>> res["pgd-ce"].accuracy == res.clean_accuracy
        True
    """
    from ib_plugins._context import _resolve_device
    from ib_plugins._validation import _check_model, _check_xy
    from ib_plugins.evaluation import SuiteResult, _attack_result

    model = _check_model(model)
    x, y = _check_xy(x, y)
    specs = list(specs)
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"specs: expected unique attack names, got duplicates {dupes}")
    dev = _resolve_device(model, x, device)
    clean_ok = _predict(model, x, batch_size=batch_size, dev=dev, seed=seed) == y
    results = []
    kept: dict[str, Tensor] = {}
    correct: dict[str, Tensor] = {"clean": clean_ok}
    for spec in specs:
        start = time.perf_counter()
        adv = run_spec(model, spec, x, y, ib_config=ib_config, entropic_config=entropic_config,
                       batch_size=batch_size, seed=seed, device=device, progress=progress, engine=engine)
        seconds = time.perf_counter() - start
        adv_ok = _predict(model, adv, batch_size=batch_size, dev=dev, seed=seed) == y
        results.append(_attack_result(spec, x, y, adv, clean_ok, adv_ok, seconds))
        correct[spec.name] = adv_ok
        if keep_adversarial:
            kept[spec.name] = adv
    return SuiteResult(n=int(y.shape[0]), n_clean_correct=int(clean_ok.sum()), attacks=results, seed=seed,
                       adversarial=MappingProxyType(kept), correct=MappingProxyType(correct), engine=engine)

