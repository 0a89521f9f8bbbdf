"""Building the network a :class:`~ib_plugins.training.TrainConfig` names (:func:`build_model`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn as nn

from ib_plugins.training.config import TrainConfig
from ib_plugins.wrap import IBModel, wrap_model


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
        >>> from ib_plugins.training import TrainConfig, resolve_config
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
