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

The package holds the two baselines, one module each: :mod:`~ib_plugins.baselines.hbar` (with
:mod:`~ib_plugins.baselines.mixing`, which HBaR's repository trains with) and :mod:`~ib_plugins.baselines.vib`.
"""

from __future__ import annotations

from ib_plugins.baselines.hbar import (
    HBAR_SETTINGS,
    HBaR,
    HBaRSetting,
    HBaRTerms,
    get_hbar_setting,
    hbar_vgg16_layers,
    wrap_hbar,
)
from ib_plugins.baselines.mixing import MixupBatch, mixup, mixup_cross_entropy
from ib_plugins.baselines.vib import EvalMode, VIBClassifier, VIBHead, vib_kl, vib_loss

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
