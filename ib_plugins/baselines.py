"""Baselines: HBaR (HSIC bottleneck as regulariser) and the Variational Information Bottleneck.

**HBaR** (Wang et al., 2021; github.com/neu-spiral/HBaR; spec §3) trains with::

    L = xw·CE(out, y) + Σ_{l ∈ all hooks} [ λx·nHSIC(Z_l, X) − λy·nHSIC(Z_l, Y_onehot; linear) ]

which is IB-RAR's objective (:func:`~ib_plugins.bottleneck.ib_objective`) with other weights:
:class:`HBaR` is an :class:`~ib_plugins.bottleneck.HSICBottleneck` whose defaults are the CIFAR-10
ResNet-18 "HBaR-high" setting (λx = 0.006, λy = 0.05, σ = 5, linear Y kernel), so it plugs into
:class:`~ib_plugins.wrap.IBModel` unchanged (:func:`wrap_hbar`). The other published settings are in
:data:`HBAR_SETTINGS`. HBaR's repository silently trains CIFAR-10 with mixup (α = 0.3, spec A15);
:func:`mixup` reproduces it, and it is **off** by default so that comparisons run under the same
conditions.

**VIB** (Alemi et al., 2017; spec §5): :class:`VIBHead` maps a feature vector to a Gaussian code
``N(μ, σ²)`` (σ = softplus(s − 5)), samples it once per training forward, classifies the sample and
keeps the batch-mean ``KL(N(μ, σ²) ‖ N(0, I))`` for :meth:`VIBHead.regularizer`. Eval forwards
classify μ (deterministic; spec A18). :class:`VIBClassifier` puts the head on a backbone and
:func:`vib_loss` is ``CE + β·KL``.

Example:
    >>> import torch, torch.nn as nn
    >>> g = torch.Generator().manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> model = wrap_hbar(net, ["2"], hbar=HBaR(num_classes=3))
    >>> x, y = torch.rand(6, 1, 4, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    >>> loss = nn.functional.cross_entropy(model.train()(x), y) + model.ib_loss(x, y)
    >>> vib = VIBClassifier(nn.Flatten(), 16, 3, k=4)
    >>> loss = loss + vib_loss(vib.train()(x), y, vib)
    >>> loss.backward()
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins.bottleneck import HSICBottleneck
from ib_plugins.errors import NoTrainingForwardError
from ib_plugins.hsic import Bandwidth, Center, Kernel
from ib_plugins.layer_selection import LayerSpec, expand_layer_spec
from ib_plugins.wrap import IBModel

__all__ = [
    "HBaRSetting",
    "HBAR_SETTINGS",
    "get_hbar_setting",
    "HBaRTerms",
    "HBaR",
    "hbar_vgg16_layers",
    "wrap_hbar",
    "MixupBatch",
    "mixup",
    "mixup_cross_entropy",
    "EvalMode",
    "vib_kl",
    "VIBHead",
    "VIBClassifier",
    "vib_loss",
]

EvalMode = Literal["mean", "sample_average"]
"""How a :class:`VIBHead` classifies in eval mode: ``"mean"`` (z = μ) or ``"sample_average"``."""

_EVAL_MODES = ("mean", "sample_average")


# ----------------------------------------------------------------------------- validation helpers
def _check_number(name: str, value: object, *, positive: bool = False) -> float:
    bound = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    ok = value > 0 if positive else value >= 0
    if not (ok and math.isfinite(value)):
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return float(value)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def _check_generator(value: object) -> torch.Generator | None:
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"generator: expected None or a torch.Generator, got {type(value).__name__}")
    return value


# ============================================================================= HBaR
@dataclass(frozen=True)
class HBaRSetting:
    """One published HBaR training setting (spec §3 table); the trainer is not part of this module.

    Attributes:
        name: key in :data:`HBAR_SETTINGS`.
        lambda_x: weight λx of ``Σ nHSIC(Z_l, X)``.
        lambda_y: weight λy of ``Σ nHSIC(Z_l, Y)``.
        sigma: Gaussian bandwidth (scaled by the feature dimension).
        y_kernel: kernel on the one-hot labels.
        xw: weight of the cross-entropy.
        repo_mixup_alpha: the mixup α the repository really trains with (α of Beta(α, α); 0 = off).
        adversarial: whether the setting is HBaR + PGD adversarial training.
        dataset: the dataset.
        model: the architecture (hooks: every hook point of its layer list).
        optimizer: the optimiser, as a readable string.
        lr: the initial learning rate.
        schedule: the learning-rate schedule, as a readable string.
        epochs: the number of epochs.
        batch_size: the batch size.
        seed: the seed of the published run.
        attack: the training attack, or None.
        source: where the numbers come from in neu-spiral/HBaR.

    Example:
        >>> s = HBAR_SETTINGS["mnist-lenet"]
        >>> (s.lambda_x, s.lambda_y, s.epochs)
        (1.0, 50.0, 100)
    """

    name: str
    lambda_x: float
    lambda_y: float
    sigma: float
    y_kernel: Kernel
    xw: float
    repo_mixup_alpha: float
    adversarial: bool
    dataset: str
    model: str
    optimizer: str
    lr: float
    schedule: str
    epochs: int
    batch_size: int
    seed: int
    attack: str | None
    source: str


_CIFAR_SCHEDULE = "CosineAnnealingLR stepped every iteration, T_max = epochs * iterations, eta_min = 4e-8"
_MNIST_SCHEDULE = "MultiStepLR stepped every iteration, milestones at epochs 65 and 90 (x iterations), gamma 0.5"

#: The published HBaR settings by name (read-only). See :class:`HBaR` for how to use them.
HBAR_SETTINGS: Mapping[str, HBaRSetting] = MappingProxyType(
    {
        s.name: s
        for s in (
            HBaRSetting(
                name="cifar10-resnet18",
                lambda_x=0.006,
                lambda_y=0.05,
                sigma=5.0,
                y_kernel="linear",
                xw=1.0,
                repo_mixup_alpha=0.3,
                adversarial=False,
                dataset="cifar10",
                model="resnet18",
                optimizer="Adam(lr=0.01)",
                lr=0.01,
                schedule=_CIFAR_SCHEDULE,
                epochs=300,
                batch_size=128,
                seed=444,
                attack=None,
                source="scripts/robust-cifar.sh; config/general-hbar-xentropy-cifar10.yaml",
            ),
            HBaRSetting(
                name="cifar10-resnet18-adv",
                lambda_x=0.0005,
                lambda_y=0.005,
                sigma=5.0,
                y_kernel="linear",
                xw=1.0,
                repo_mixup_alpha=0.3,
                adversarial=True,
                dataset="cifar10",
                model="resnet18",
                optimizer="Adam(lr=0.01)",
                lr=0.01,
                schedule=_CIFAR_SCHEDULE,
                epochs=83,
                batch_size=128,
                seed=1234,
                attack="PGD Linf eps=8/255, step=2/255, 10 steps; hidden Z from an extra clean forward",
                source="scripts/robust-cifar-adv.sh; config/general-hbar-xentropy-cifar10.yaml",
            ),
            HBaRSetting(
                name="mnist-lenet",
                lambda_x=1.0,
                lambda_y=50.0,
                sigma=5.0,
                y_kernel="linear",
                xw=1.0,
                repo_mixup_alpha=0.0,
                adversarial=False,
                dataset="mnist",
                model="lenet3",
                optimizer="Adam(lr=1e-4)",
                lr=1e-4,
                schedule=_MNIST_SCHEDULE,
                epochs=100,
                batch_size=256,
                seed=1234,
                attack=None,
                source="scripts/robust-mnist.sh; config/general-hbar-xentropy-mnist.yaml",
            ),
            HBaRSetting(
                name="mnist-lenet-adv",
                lambda_x=0.003,
                lambda_y=0.001,
                sigma=5.0,
                y_kernel="linear",
                xw=1.0,
                repo_mixup_alpha=0.0,
                adversarial=True,
                dataset="mnist",
                model="lenet3",
                optimizer="Adam(lr=1e-4)",
                lr=1e-4,
                schedule=_MNIST_SCHEDULE,
                epochs=100,
                batch_size=256,
                seed=1234,
                attack="PGD Linf eps=0.3, step=0.01, 40 steps; hidden Z from an extra clean forward",
                source="scripts/robust-mnist-adv.sh; config/general-hbar-xentropy-mnist.yaml",
            ),
        )
    }
)


def get_hbar_setting(name: str) -> HBaRSetting:
    """Look up a published HBaR setting.

    Args:
        name: a key of :data:`HBAR_SETTINGS`.

    Returns:
        The :class:`HBaRSetting`.

    Raises:
        ValueError: the name is unknown (the message lists the known names).

    Example:
        >>> get_hbar_setting("cifar10-resnet18-adv").lambda_y
        0.005
    """
    if not isinstance(name, str) or name not in HBAR_SETTINGS:
        known = ", ".join(map(repr, HBAR_SETTINGS))
        raise ValueError(f"name: expected one of {known}, got {name!r}")
    return HBAR_SETTINGS[name]


class HBaRTerms(NamedTuple):
    """The value of HBaR's objective and its parts.

    Attributes:
        loss: ``xw·CE + λx·Σ hx − λy·Σ hy`` (a differentiable scalar).
        ce: the (mixup-weighted) cross-entropy, before the ``xw`` weight.
        hx: ``nHSIC(Z_l, X)`` per layer, shape ``[L]``.
        hy: ``nHSIC(Z_l, Y)`` per layer, shape ``[L]``.
    """

    loss: Tensor
    ce: Tensor
    hx: Tensor
    hy: Tensor


class HBaR(HSICBottleneck):
    """HBaR's regulariser: :class:`~ib_plugins.bottleneck.HSICBottleneck` with HBaR's defaults.

    ``self(activations, x, y)`` returns ``λx·Σ_l nHSIC(Z_l, X) − λy·Σ_l nHSIC(Z_l, Y)`` (as
    :class:`~ib_plugins.bottleneck.IBTerms`), exactly :func:`~ib_plugins.bottleneck.ib_objective`
    with ``alpha=lambda_x, beta=lambda_y``; :meth:`objective` adds ``xw·CE``. HBaR regularises
    **every** hook point of the architecture (ResNet-18: the same 10 as IB-RAR's ``"resnet18"``
    preset; VGG-16: 6 points without block 5, see :func:`hbar_vgg16_layers`; LeNet3: conv1, conv2,
    fc1).

    The defaults are the CIFAR-10 ResNet-18 "HBaR-high" setting. :meth:`from_preset` builds the
    others of :data:`HBAR_SETTINGS`:

    ============================  =======  ======  ======  =====  ===========================
    preset                        λx       λy      epochs  batch  optimiser / schedule
    ============================  =======  ======  ======  =====  ===========================
    ``cifar10-resnet18``          0.006    0.05    300     128    Adam lr 0.01, cosine per
                                                                  iteration (η_min 4e-8)
    ``cifar10-resnet18-adv``      0.0005   0.005   83      128    same; + PGD-AT 8/255, 2/255,
                                                                  10 steps
    ``mnist-lenet``               1        50      100     256    Adam lr 1e-4, MultiStepLR
                                                                  [65, 90] epochs, γ 0.5
    ``mnist-lenet-adv``           0.003    0.001   100     256    same; + PGD 0.3, 0.01, 40 steps
    ============================  =======  ======  ======  =====  ===========================

    All use σ = 5, a linear Y kernel and ``xw = 1``. Schedulers are stepped every iteration. Under
    adversarial training HBaR computes CE on the adversarial output but takes Z_l from an **extra
    clean forward**, and X is the clean batch (unlike IB-RAR). The repository's CIFAR-10 runs also
    use mixup with α = 0.3 (mixed inputs before the attack; the HSIC Y term uses the *unmixed*
    labels ``y_a`` with the *mixed* inputs); here mixup is off unless ``mixup_alpha > 0`` or
    ``from_preset(..., repo_mixup=True)``. The trainer that runs these settings is not part of this
    module.

    Args:
        lambda_x: weight λx of ``Σ nHSIC(Z_l, X)``; ≥ 0.
        lambda_y: weight λy of ``Σ nHSIC(Z_l, Y)``; ≥ 0.
        sigma: Gaussian bandwidth; > 0.
        eps: the regulariser ε; > 0.
        y_kernel: ``"linear"`` (HBaR) or ``"gaussian"``.
        xw: weight of the cross-entropy in :meth:`objective`; ≥ 0.
        mixup_alpha: α of the mixup ``Beta(α, α)`` used by :meth:`mixup`; 0 (default) = off.
        x_kernel: kernel on X.
        t_kernel: kernel on the activations.
        center: ``"right"`` or ``"both"``.
        bandwidth: ``"scaled"`` or ``"median"``.
        num_classes: number of classes for one-hot targets; may instead be given per call. (HBaR
            hard-codes 10.)

    Raises:
        ValueError: an argument is out of range or unknown.

    Example:
        >>> import torch
        >>> hbar = HBaR(num_classes=4)
        >>> hbar.lambda_x, hbar.lambda_y, hbar.y_kernel, hbar.mixup_alpha
        (0.006, 0.05, 'linear', 0.0)
        >>> t, x, y = torch.rand(8, 5), torch.rand(8, 3), torch.arange(8) % 4
        >>> hbar([t], x, y).loss.shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        lambda_x: float = 0.006,
        lambda_y: float = 0.05,
        sigma: float = 5.0,
        eps: float = 1e-5,
        y_kernel: Kernel = "linear",
        xw: float = 1.0,
        mixup_alpha: float = 0.0,
        x_kernel: Kernel = "gaussian",
        t_kernel: Kernel = "gaussian",
        center: Center = "right",
        bandwidth: Bandwidth = "scaled",
        num_classes: int | None = None,
    ) -> None:
        lambda_x = _check_number("lambda_x", lambda_x)
        lambda_y = _check_number("lambda_y", lambda_y)
        xw = _check_number("xw", xw)
        mixup_alpha = _check_number("mixup_alpha", mixup_alpha)
        super().__init__(
            alpha=lambda_x,
            beta=lambda_y,
            sigma=sigma,
            eps=eps,
            y_kernel=y_kernel,
            x_kernel=x_kernel,
            t_kernel=t_kernel,
            center=center,
            bandwidth=bandwidth,
            num_classes=num_classes,
        )
        self.xw = xw
        self.mixup_alpha = mixup_alpha

    @classmethod
    def from_preset(cls, name: str, *, repo_mixup: bool = False, **overrides: Any) -> HBaR:
        """Build the regulariser of a published setting (see :data:`HBAR_SETTINGS`).

        Args:
            name: the setting, e.g. ``"cifar10-resnet18-adv"``.
            repo_mixup: use the repository's mixup α (0.3 on CIFAR-10) instead of 0 (spec A15).
            **overrides: constructor arguments that replace the setting's values
                (e.g. ``num_classes=10``).

        Returns:
            The :class:`HBaR`.

        Raises:
            ValueError: unknown name, or both ``repo_mixup=True`` and ``mixup_alpha=``.
            TypeError: an override is not a constructor argument.

        Example:
            >>> HBaR.from_preset("cifar10-resnet18-adv").lambda_x
            0.0005
            >>> HBaR.from_preset("cifar10-resnet18", repo_mixup=True).mixup_alpha
            0.3
        """
        setting = get_hbar_setting(name)
        if repo_mixup and "mixup_alpha" in overrides:
            raise ValueError("mixup_alpha: give either repo_mixup=True or mixup_alpha=, not both")
        kwargs: dict[str, Any] = {
            "lambda_x": setting.lambda_x,
            "lambda_y": setting.lambda_y,
            "sigma": setting.sigma,
            "y_kernel": setting.y_kernel,
            "xw": setting.xw,
            "mixup_alpha": setting.repo_mixup_alpha if repo_mixup else 0.0,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def lambda_x(self) -> float:
        """λx, the weight of ``Σ nHSIC(Z_l, X)`` (the inherited ``alpha``)."""
        return self.alpha

    @property
    def lambda_y(self) -> float:
        """λy, the weight of ``Σ nHSIC(Z_l, Y)`` (the inherited ``beta``)."""
        return self.beta

    def config(self) -> dict[str, object]:
        """The configuration as a JSON-serialisable dict (the inherited keys plus HBaR's).

        Returns:
            Every constructor argument and its value, and ``"method": "hbar"``.

        Example:
            >>> HBaR().config()["lambda_y"]
            0.05
        """
        return {
            "method": "hbar",
            **super().config(),
            "lambda_x": self.lambda_x,
            "lambda_y": self.lambda_y,
            "xw": self.xw,
            "mixup_alpha": self.mixup_alpha,
        }

    def mixup(self, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None) -> MixupBatch:
        """:func:`mixup` with this regulariser's ``mixup_alpha``.

        Args:
            x: inputs ``[m, ...]``.
            y: labels ``[m, ...]``.
            generator: the random source (None: torch's default generator).

        Returns:
            :class:`MixupBatch`; the batch unchanged when ``mixup_alpha == 0``.

        Example:
            >>> import torch
            >>> x = torch.rand(4, 3)
            >>> HBaR().mixup(x, torch.arange(4)).x is x
            True
        """
        return mixup(x, y, alpha=self.mixup_alpha, generator=generator)

    def objective(
        self,
        logits: Tensor,
        activations: Sequence[Tensor],
        x: Tensor,
        y: Tensor,
        *,
        y_b: Tensor | None = None,
        lam: float = 1.0,
        num_classes: int | None = None,
    ) -> HBaRTerms:
        """HBaR's full loss ``xw·CE + λx·Σ nHSIC(Z_l, X) − λy·Σ nHSIC(Z_l, Y)``.

        With mixup (``y_b`` given) the CE is ``lam·CE(logits, y) + (1 − lam)·CE(logits, y_b)`` and the
        HSIC Y term uses ``y`` (the unmixed ``y_a``), as HBaR does; pass the mixed inputs as ``x``.

        Args:
            logits: the model output ``[m, C]`` (the adversarial one under adversarial training).
            activations: the hooked layers' outputs ``Z_l`` (from the clean forward under AT).
            x: the inputs ``[m, ...]`` of the HSIC X term.
            y: class indices ``[m]`` (``y_a`` with mixup).
            y_b: the permuted labels of :func:`mixup`, or None.
            lam: the mixup weight of ``y``.
            num_classes: overrides the configured number of classes (default: ``logits.shape[1]``).

        Returns:
            :class:`HBaRTerms`.

        Raises:
            ValueError: inconsistent inputs (see :func:`~ib_plugins.bottleneck.ib_objective`).

        Example:
            >>> import torch
            >>> t, x, y = torch.rand(6, 4), torch.rand(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
            >>> terms = HBaR(lambda_x=0.0, lambda_y=0.0).objective(torch.zeros(6, 3), [t], x, y)
            >>> round(float(terms.loss), 4) == round(math.log(3), 4)
            True
        """
        if y_b is None:
            ce = F.cross_entropy(logits, y)
        else:
            ce = mixup_cross_entropy(logits, y, y_b, lam)
        classes = num_classes or self.num_classes or int(logits.shape[-1])
        terms = self(activations, x, y, num_classes=classes)
        return HBaRTerms(loss=self.xw * ce + terms.loss, ce=ce, hx=terms.hx, hy=terms.hy)

    def extra_repr(self) -> str:
        """The configuration shown by ``repr``."""
        return (
            f"lambda_x={self.lambda_x}, lambda_y={self.lambda_y}, sigma={self.sigma}, eps={self.eps}, "
            f"y_kernel={self.y_kernel!r}, xw={self.xw}, mixup_alpha={self.mixup_alpha}, "
            f"num_classes={self.num_classes}"
        )


def hbar_vgg16_layers() -> list[str]:
    """HBaR's six VGG-16 hook points, named for :class:`~ib_plugins.models.vgg.VGG16` (spec A16).

    HBaR records conv blocks 1-4 and both fully connected layers, but not block 5 (IB-RAR added it:
    its ``"vgg16"`` preset has 7 points). Use the 7-point preset for comparisons under the same
    conditions, and this list to reproduce HBaR's own VGG.

    Returns:
        ``["block1", "block2", "block3", "block4", "fc1", "fc2"]`` (a new list on every call).

    Example:
        >>> hbar_vgg16_layers()
        ['block1', 'block2', 'block3', 'block4', 'fc1', 'fc2']
    """
    return ["block1", "block2", "block3", "block4", "fc1", "fc2"]


def wrap_hbar(
    model: nn.Module,
    ib_layers: LayerSpec = "all",
    *,
    hbar: HBaR | None = None,
    check_finite: bool | None = None,
) -> IBModel:
    """Wrap ``model`` so that its hooked layers carry HBaR's regulariser.

    The result is an ordinary :class:`~ib_plugins.wrap.IBModel`: ``model.ib_loss(x, y)`` returns
    ``λx·Σ nHSIC(Z_l, X) − λy·Σ nHSIC(Z_l, Y)``; add ``hbar.xw · CE`` yourself (or use
    :meth:`HBaR.objective` on captured activations).

    Args:
        model: the model (it returns logits).
        ib_layers: the layers, as for :func:`~ib_plugins.wrap.wrap_model`; ``"all"`` (HBaR's choice)
            needs a model with a preset.
        hbar: the configuration (default: ``HBaR()``, the CIFAR-10 ResNet-18 setting).
        check_finite: raise, naming the layer, on NaN/inf activations (None = on CPU tensors,
            where the check is free; see :class:`~ib_plugins.wrap.IBModel`).

    Returns:
        The :class:`~ib_plugins.wrap.IBModel`.

    Raises:
        TypeError: ``hbar`` is not an :class:`HBaR`, or ``model`` is not a module / already wrapped.
        UnknownLayerError: a layer name is not a submodule.
        ValueError: a bad layer specification.

    Example:
        >>> import torch.nn as nn
        >>> m = wrap_hbar(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), ["1"])
        >>> m.ib_config()["method"], m.ib_config()["lambda_x"]
        ('hbar', 0.006)
    """
    if hbar is None:
        hbar = HBaR()
    if not isinstance(hbar, HBaR):
        raise TypeError(f"hbar: expected None or an HBaR, got {type(hbar).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    layers = expand_layer_spec(model, ib_layers)
    return IBModel(model, layers=layers, bottleneck=hbar, check_finite=check_finite)


# ----------------------------------------------------------------------------- mixup
class MixupBatch(NamedTuple):
    """A mixed batch: ``x = lam·x_orig + (1 − lam)·x_orig[perm]``, ``y_b = y_a[perm]``.

    Attributes:
        x: the mixed inputs.
        y_a: the original labels.
        y_b: the labels of the partners.
        lam: the weight of ``y_a`` (a Python float in [0, 1]).
    """

    x: Tensor
    y_a: Tensor
    y_b: Tensor
    lam: float


def _uniform_open(n: int, generator: torch.Generator | None, device: torch.device) -> list[float]:
    """``n`` samples of U(0, 1] (``1 − U[0, 1)``, so that their log is finite)."""
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    return (1.0 - u).tolist()


def _log_standard_gamma(a: float, generator: torch.Generator | None, device: torch.device) -> float:
    """``log G`` with ``G ~ Gamma(a, 1)``: Marsaglia & Tsang (2000), boosted for ``a < 1``."""
    log_boost = 0.0
    if a < 1.0:  # Gamma(a) = Gamma(a + 1) · U^(1/a)
        log_boost = math.log(_uniform_open(1, generator, device)[0]) / a
        a += 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:  # acceptance > 95 % per candidate; 4 candidates per round trip
        normals = torch.randn(4, generator=generator, device=device, dtype=torch.float64).tolist()
        uniforms = _uniform_open(4, generator, device)
        for z, u in zip(normals, uniforms):
            v = 1.0 + c * z
            if v <= 0.0:
                continue
            v = v * v * v
            if math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
                return math.log(d * v) + log_boost


def _sample_symmetric_beta(alpha: float, generator: torch.Generator | None, device: torch.device) -> float:
    """``Beta(α, α)`` as ``G1 / (G1 + G2)`` with ``G_i ~ Gamma(α, 1)``, in log space."""
    diff = _log_standard_gamma(alpha, generator, device) - _log_standard_gamma(alpha, generator, device)
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    e = math.exp(diff)
    return e / (1.0 + e)


def mixup(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 0.0,
    generator: torch.Generator | None = None,
) -> MixupBatch:
    """Mixup (Zhang et al., 2018) as HBaR applies it: one ``lam ~ Beta(α, α)`` per batch.

    ``x_mixed = lam·x + (1 − lam)·x[perm]``, ``y_a = y``, ``y_b = y[perm]`` with ``perm`` a random
    permutation (drawn after ``lam``). Train with :func:`mixup_cross_entropy`. With ``alpha == 0``
    (the default: off, for comparisons under the same conditions; HBaR's CIFAR-10 runs use 0.3,
    spec A15) the batch is returned unchanged (``x`` itself, ``y_b = y``, ``lam = 1.0``) and no random
    numbers are drawn.

    ``torch.distributions.Beta`` cannot take a generator, so ``lam`` is sampled from two Gamma
    variables (Marsaglia-Tsang rejection, with the ``U^(1/α)`` boost for α < 1) built from
    ``torch.rand``/``torch.randn`` calls on ``generator``. The global RNG is untouched when a
    generator is given. Reading ``lam`` back is one small host transfer per batch.

    Args:
        x: inputs ``[m, ...]`` (floating point).
        y: labels ``[m, ...]`` (class indices or soft targets).
        alpha: α of ``Beta(α, α)``; ≥ 0, 0 = no mixing.
        generator: the random source, on any device (None: torch's default generator, which then
            advances like any torch sampling call).

    Returns:
        :class:`MixupBatch` ``(x, y_a, y_b, lam)``.

    Raises:
        ValueError: ``alpha`` out of range, no batch dimension, or batch sizes differ.
        TypeError: ``x`` is not a floating tensor or ``generator`` is not a ``torch.Generator``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(4, 3, generator=g), torch.arange(4)
        >>> xm, y_a, y_b, lam = mixup(x, y, alpha=0.3, generator=g)
        >>> torch.allclose(xm, lam * x + (1 - lam) * x[y_b]), 0.0 <= lam <= 1.0
        (True, True)
    """
    alpha = _check_number("alpha", alpha)
    generator = _check_generator(generator)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if not isinstance(y, Tensor):
        raise TypeError(f"y: expected a torch.Tensor, got {type(y).__name__}")
    if x.dim() == 0 or y.dim() == 0:
        raise ValueError("x, y: expected tensors with a batch dimension, got a scalar")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"y: expected the batch size of x ({x.shape[0]}), got {y.shape[0]}")
    if alpha == 0.0:
        return MixupBatch(x=x, y_a=y, y_b=y, lam=1.0)
    device = generator.device if generator is not None else torch.device("cpu")
    lam = _sample_symmetric_beta(alpha, generator, device)
    perm = torch.randperm(x.shape[0], generator=generator, device=device).to(x.device)
    mixed = lam * x + (1.0 - lam) * x[perm]
    return MixupBatch(x=mixed, y_a=y, y_b=y[perm.to(y.device)], lam=lam)


def mixup_cross_entropy(logits: Tensor, y_a: Tensor, y_b: Tensor, lam: float) -> Tensor:
    """``lam·CE(logits, y_a) + (1 − lam)·CE(logits, y_b)`` (HBaR's ``mixup_criterion``).

    Args:
        logits: ``[m, C]``.
        y_a: the original labels ``[m]``.
        y_b: the partners' labels ``[m]``.
        lam: the weight of ``y_a``.

    Returns:
        A scalar.

    Example:
        >>> import torch
        >>> logits, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
        >>> bool(torch.isclose(mixup_cross_entropy(logits, y, y.flip(0), 1.0),
        ...                    torch.nn.functional.cross_entropy(logits, y)))
        True
    """
    return lam * F.cross_entropy(logits, y_a) + (1.0 - lam) * F.cross_entropy(logits, y_b)


# ============================================================================= VIB
def vib_kl(mu: Tensor, std: Tensor) -> Tensor:
    """Per-sample ``KL(N(μ, diag σ²) ‖ N(0, I)) = −½ Σ_k (1 + 2 log σ_k − μ_k² − σ_k²)`` in nats.

    It is 0 exactly when ``μ = 0`` and ``σ = 1``, and positive otherwise. Alemi et al.'s code divides
    by ln 2 (bits); that only rescales β and is not applied here. ``σ`` is clamped at the dtype's
    smallest normal number inside the log.

    Args:
        mu: means ``[..., K]``.
        std: standard deviations ``[..., K]`` (> 0).

    Returns:
        The KL per sample, ``[...]``.

    Raises:
        ValueError: the shapes differ.
        TypeError: an input is not a floating tensor.

    Example:
        >>> import torch
        >>> vib_kl(torch.zeros(2, 3), torch.ones(2, 3))
        tensor([0., 0.])
        >>> vib_kl(torch.tensor([[1.0]]), torch.tensor([[1.0]]))
        tensor([0.5000])
    """
    for name, t in (("mu", mu), ("std", std)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if mu.shape != std.shape:
        raise ValueError(f"std: expected the shape of mu {tuple(mu.shape)}, got {tuple(std.shape)}")
    log_std = torch.log(std.clamp_min(torch.finfo(std.dtype).tiny))
    return 0.5 * (mu * mu + std * std - 1.0 - 2.0 * log_std).sum(dim=-1)


class VIBHead(nn.Module):
    """The Variational Information Bottleneck head of Alemi et al. (2017), as in 1Konny/VIB-pytorch.

    ``encoder = Linear(in_features, 2K)``; ``μ`` = the first K outputs, ``σ = softplus(s − 5)`` from
    the last K; ``classifier = Linear(K, C)``.

    * **Training** forwards classify one reparameterised sample ``z = μ + σ·ε`` and store the batch
      mean of :func:`vib_kl` as :attr:`last_kl` (a tensor; no host sync). :meth:`regularizer` is
      ``β·last_kl``; the loss is ``CE + β·KL`` (:func:`vib_loss`). ``last_kl`` belongs to the latest
      training forward (an attack run in train mode overwrites it); it is not saved in
      ``state_dict`` and is dropped by ``copy.deepcopy``/pickling.
    * **Eval** forwards with ``eval_mode="mean"`` (default) return the logits of ``z = μ``: a
      deterministic classifier, the one to attack (spec A18). With ``eval_mode="sample_average"``
      they return ``log((1/S) Σ_s softmax(classifier(μ + σ·ε_s)))`` over ``S = num_samples_eval``
      samples (Alemi: S = 12): log-probabilities, valid as logits for CE. **This is stochastic**:
      AutoAttack's randomness check will flag it, and attacks need EOT (average gradients over
      draws) to be meaningful; report clean accuracy with both modes (spec §5).

    Noise comes from :attr:`generator` when one is set (on any device; the noise is moved to the
    activations' device), otherwise from torch's default generator.

    Args:
        in_features: size of the input feature vector.
        num_classes: number of classes C.
        k: size K of the code.
        beta: β, the weight of the KL term; ≥ 0 (Alemi: 1e-3).
        num_samples_eval: samples S averaged by ``eval_mode="sample_average"`` (must be 1 with
            ``"mean"``).
        eval_mode: ``"mean"`` or ``"sample_average"``.
        generator: optional ``torch.Generator`` for the noise (reproducible training).

    Raises:
        ValueError: an argument is out of range or unknown.
        TypeError: ``generator`` is not a ``torch.Generator``.

    Shape:
        - Input: ``[B, in_features]``.
        - Output: ``[B, num_classes]``.

    Example:
        >>> import torch
        >>> head = VIBHead(32, 10, k=8, generator=torch.Generator().manual_seed(0))
        >>> feats = torch.randn(4, 32)
        >>> head.train()(feats).shape, head.last_kl.shape
        (torch.Size([4, 10]), torch.Size([]))
        >>> reg = head.regularizer()
        >>> mu, _ = head.encode(feats)
        >>> torch.equal(head.eval()(feats), head.classifier(mu))
        True
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        k: int = 256,
        beta: float = 1e-3,
        num_samples_eval: int = 1,
        eval_mode: EvalMode = "mean",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_features = _check_int("in_features", in_features, 1)
        self.num_classes = _check_int("num_classes", num_classes, 2)
        self.k = _check_int("k", k, 1)
        self.beta = _check_number("beta", beta)
        self.num_samples_eval = _check_int("num_samples_eval", num_samples_eval, 1)
        if eval_mode not in _EVAL_MODES:
            raise ValueError(f"eval_mode: expected one of {', '.join(map(repr, _EVAL_MODES))}, got {eval_mode!r}")
        if eval_mode == "mean" and num_samples_eval != 1:
            raise ValueError(
                f"num_samples_eval: only used with eval_mode='sample_average'; expected 1 with "
                f"eval_mode='mean', got {num_samples_eval}"
            )
        self.eval_mode: EvalMode = eval_mode
        self.generator = _check_generator(generator)
        self.encoder = nn.Linear(in_features, 2 * k)
        self.classifier = nn.Linear(k, num_classes)
        self.last_kl: Tensor | None = None

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The code's mean and standard deviation.

        Args:
            x: features ``[B, in_features]``.

        Returns:
            ``(μ, σ)``, each ``[B, K]``, with ``σ = softplus(s − 5) > 0``.

        Raises:
            ValueError: ``x`` has the wrong shape.

        Example:
            >>> import torch
            >>> mu, std = VIBHead(6, 3, k=2).encode(torch.rand(5, 6))
            >>> mu.shape, bool((std > 0).all())
            (torch.Size([5, 2]), True)
        """
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.in_features:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected features of shape [batch, in_features={self.in_features}], got {shape}")
        stats = self.encoder(x)
        mu, s = stats[:, : self.k], stats[:, self.k :]
        return mu, F.softplus(s - 5.0)

    def _noise(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        if self.generator is None:
            return torch.randn(shape, device=like.device, dtype=like.dtype)
        g = self.generator
        return torch.randn(shape, generator=g, device=g.device, dtype=like.dtype).to(like.device)

    def forward(self, x: Tensor) -> Tensor:
        """Classify features (see the class docstring for training vs eval behaviour).

        Args:
            x: features ``[B, in_features]``.

        Returns:
            Logits ``[B, C]`` (log-probabilities with ``eval_mode="sample_average"`` in eval).

        Raises:
            ValueError: ``x`` has the wrong shape.

        Example:
            >>> import torch
            >>> head = VIBHead(6, 3, k=2, eval_mode="sample_average", num_samples_eval=12).eval()
            >>> out = head(torch.rand(5, 6))
            >>> torch.allclose(out.exp().sum(-1), torch.ones(5))
            True
        """
        mu, std = self.encode(x)
        if self.training:
            z = mu + std * self._noise(tuple(std.shape), std)
            self.last_kl = vib_kl(mu, std).mean()
            return self.classifier(z)
        if self.eval_mode == "mean":
            return self.classifier(mu)
        s = self.num_samples_eval
        z = mu.unsqueeze(0) + std.unsqueeze(0) * self._noise((s, *std.shape), std)
        log_probs = F.log_softmax(self.classifier(z), dim=-1)  # [S, B, C]
        return torch.logsumexp(log_probs, dim=0) - math.log(s)

    def regularizer(self) -> Tensor:
        """``β·KL`` of the latest training forward (a differentiable scalar).

        Returns:
            ``beta * last_kl``.

        Raises:
            NoTrainingForwardError: (a ``RuntimeError``) no training-mode forward has run.

        Example:
            >>> import torch
            >>> head = VIBHead(4, 2, k=2, beta=0.5)
            >>> _ = head.train()(torch.rand(3, 4))
            >>> bool(head.regularizer() == 0.5 * head.last_kl)
            True
        """
        if self.last_kl is None:
            raise NoTrainingForwardError(
                "VIBHead.regularizer() needs the KL of a training-mode forward, and none has run; call "
                ".train() and run a forward first (eval-mode forwards do not compute the KL)"
            )
        return self.beta * self.last_kl

    def config(self) -> dict[str, object]:
        """The configuration as a JSON-serialisable dict.

        Example:
            >>> VIBHead(8, 2).config()["k"]
            256
        """
        return {
            "method": "vib",
            "in_features": self.in_features,
            "num_classes": self.num_classes,
            "k": self.k,
            "beta": self.beta,
            "num_samples_eval": self.num_samples_eval,
            "eval_mode": self.eval_mode,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["last_kl"] = None  # a non-leaf tensor cannot be deep-copied or pickled
        return state

    def extra_repr(self) -> str:
        """The configuration shown by ``repr``."""
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, k={self.k}, beta={self.beta}, "
            f"eval_mode={self.eval_mode!r}, num_samples_eval={self.num_samples_eval}"
        )


class VIBClassifier(nn.Module):
    """``backbone → flatten → VIBHead``: a VIB classifier on any feature extractor.

    Recommended adaptation for CNNs (spec §5, A18): the backbone runs up to the penultimate
    representation and the head replaces the final linear layer. For IB-RAR's VGG-16 that is the
    4096-d output of ``fc2``, with K = 256 and β = 1e-3::

        vgg = VGG16(num_classes=10)
        vgg.classifier = nn.Identity()          # VGG16 now returns fc2's 4096-d output
        model = VIBClassifier(vgg, 4096, 10)    # k=256, beta=1e-3

    Train with :func:`vib_loss` under the comparison protocol (SGD 0.01, momentum 0.9,
    StepLR(20, 0.2), 60 epochs), attack the deterministic eval forward (z = μ) or use EOT.

    Args:
        backbone: module mapping inputs to features ``[B, ...]`` (flattened to ``[B, feature_dim]``).
        feature_dim: number of features per sample after flattening.
        num_classes: number of classes.
        **vib_kwargs: keyword arguments of :class:`VIBHead` (``k``, ``beta``, ``num_samples_eval``,
            ``eval_mode``, ``generator``).

    Raises:
        TypeError: ``backbone`` is not a module.
        ValueError: a bad head argument; at forward time, a backbone output of the wrong size.

    Example:
        >>> import torch, torch.nn as nn
        >>> backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        >>> model = VIBClassifier(backbone, 16, 10, k=8)
        >>> x, y = torch.rand(5, 1, 8, 8), torch.arange(5)
        >>> vib_loss(model.train()(x), y, model).backward()
        >>> model.eval()(x).shape
        torch.Size([5, 10])
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, **vib_kwargs: Any) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone: expected a torch.nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone
        self.head = VIBHead(feature_dim, num_classes, **vib_kwargs)

    @property
    def last_kl(self) -> Tensor | None:
        """The head's batch-mean KL of the latest training forward (None before any)."""
        return self.head.last_kl

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the inputs (see :class:`VIBHead` for training vs eval behaviour).

        Args:
            x: inputs of the backbone.

        Returns:
            ``[B, num_classes]``.

        Raises:
            ValueError: the backbone's output does not have ``feature_dim`` features per sample.
            TypeError: the backbone does not return a tensor.

        Example:
            >>> import torch, torch.nn as nn
            >>> VIBClassifier(nn.Flatten(), 12, 3, k=4).eval()(torch.rand(2, 3, 4)).shape
            torch.Size([2, 3])
        """
        feats = self.backbone(x)
        if not isinstance(feats, Tensor):
            raise TypeError(f"backbone: expected it to return a tensor, got {type(feats).__name__}")
        if feats.dim() < 2:
            raise ValueError(f"backbone: expected an output of shape [batch, ...], got {tuple(feats.shape)}")
        feats = feats.flatten(1)
        if feats.shape[1] != self.head.in_features:
            raise ValueError(
                f"feature_dim: the backbone returns {feats.shape[1]} features per sample, but "
                f"feature_dim={self.head.in_features}"
            )
        return self.head(feats)

    def regularizer(self) -> Tensor:
        """``β·KL`` of the latest training forward (see :meth:`VIBHead.regularizer`).

        Raises:
            NoTrainingForwardError: no training-mode forward has run.

        Example:
            >>> import torch, torch.nn as nn
            >>> m = VIBClassifier(nn.Identity(), 4, 2, k=2)
            >>> _ = m.train()(torch.rand(3, 4))
            >>> m.regularizer().shape
            torch.Size([])
        """
        return self.head.regularizer()


def vib_loss(logits: Tensor, y: Tensor, model_or_head: nn.Module) -> Tensor:
    """``CE(logits, y) + β·KL``: the VIB training loss (nats; no ln 2 division).

    The KL is that of the latest training forward of every :class:`VIBHead` inside
    ``model_or_head`` (normally one), so ``logits`` should come from that forward.

    Args:
        logits: ``[B, C]`` from a training forward.
        y: class indices ``[B]``.
        model_or_head: a :class:`VIBHead`, a :class:`VIBClassifier`, or any module containing a head
            (e.g. an :class:`~ib_plugins.wrap.IBModel` around one).

    Returns:
        A differentiable scalar.

    Raises:
        TypeError: ``model_or_head`` is not a module or contains no :class:`VIBHead`.
        NoTrainingForwardError: no training-mode forward has run.

    Example:
        >>> import torch
        >>> head = VIBHead(4, 3, k=2, beta=0.0)
        >>> logits, y = head.train()(torch.rand(6, 4)), torch.tensor([0, 1, 2, 0, 1, 2])
        >>> bool(vib_loss(logits, y, head) == torch.nn.functional.cross_entropy(logits, y))
        True
    """
    if not isinstance(model_or_head, nn.Module):
        raise TypeError(
            f"model_or_head: expected a VIBHead or a module containing one, got {type(model_or_head).__name__}"
        )
    heads = [m for m in model_or_head.modules() if isinstance(m, VIBHead)]
    if not heads:
        raise TypeError(
            f"model_or_head: expected a VIBHead or a module containing one, got a {type(model_or_head).__name__} "
            "without a VIBHead"
        )
    loss = F.cross_entropy(logits, y)
    for head in heads:
        loss = loss + head.regularizer()
    return loss
