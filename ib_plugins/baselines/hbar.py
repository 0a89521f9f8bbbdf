"""HBaR, the HSIC bottleneck as a regulariser: :class:`HBaR`, its published settings and :func:`wrap_hbar`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins.baselines._checks import _check_number
from ib_plugins.baselines.mixing import MixupBatch, mixup, mixup_cross_entropy
from ib_plugins.bottleneck import HSICBottleneck
from ib_plugins.hsic import Bandwidth, Center, Kernel
from ib_plugins.layer_selection import LayerSpec, expand_layer_spec
from ib_plugins.wrap import IBModel


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
            >>> import math
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
