"""Name-based access to the model zoo.

Each name matches the layer preset of the model it builds (see :mod:`ib_plugins.presets`), so
``create_model(name)`` and ``get_preset(name)`` go together.

Example:
    >>> from ib_plugins.models.registry import create_model, list_models
    >>> "vgg16" in list_models()
    True
    >>> type(create_model("lenet5", num_classes=10, in_channels=1)).__name__
    'LeNet5'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from ib_plugins.models.resnet import ResNet18
from ib_plugins.models.small import DigitsCNN, KerasCIFARCNN, KerasMNISTCNN, LeNet5
from ib_plugins.models.vgg import VGG16, VGGMini
from ib_plugins.models.wideresnet import WideResNet

__all__ = ["MODELS", "create_model", "list_models"]

#: model name -> constructor taking keyword-only arguments (``num_classes``, ``in_channels``, ...).
#: The names equal the models' ``ib_preset`` names. ``"wrn28-10"`` builds :class:`WideResNet`,
#: whose defaults are depth 28 and widen factor 10. ``"vgg16-bn"`` (torchvision's name for a VGG-16
#: with BatchNorm) is another name of ``"vgg16"``: the same :class:`VGG16`, whose preset ``"vgg16"``
#: equals ``"vgg16-bn"``.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "vgg16": VGG16,
    "vgg16-bn": VGG16,
    "resnet18": ResNet18,
    "wrn28-10": WideResNet,
    "lenet5": LeNet5,
    "keras-mnist-cnn": KerasMNISTCNN,
    "keras-cifar-cnn": KerasCIFARCNN,
    "digits-cnn": DigitsCNN,
    "vgg-mini": VGGMini,
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted.

    Returns:
        The model names.

    Example:
        >>> list_models()[:3]
        ['digits-cnn', 'keras-cifar-cnn', 'keras-mnist-cnn']
    """
    return sorted(MODELS)


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a zoo model by name.

    Args:
        name: one of :func:`list_models`.
        num_classes: number of output logits; None keeps the model's default (10, or 100 for
            ``"wrn28-10"``).
        in_channels: input channels; None keeps the model's default (3 for the CIFAR models,
            1 for ``"lenet5"``, ``"keras-mnist-cnn"`` and ``"digits-cnn"``).
        **kwargs: further keyword arguments of the model's constructor, e.g. ``normalize=(mean,
            std)``, ``log_softmax_output=True`` (ResNet-18) or ``dropout=0.0`` (WRN).

    Returns:
        The freshly initialised model (training mode).

    Raises:
        TypeError: ``name`` is not a string, or a keyword argument is not accepted by the model.
        ValueError: ``name`` is unknown (the message lists the valid names) or a model argument
            is invalid.

    Example:
        >>> import torch
        >>> net = create_model("digits-cnn", num_classes=10, in_channels=1).eval()
        >>> net(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    if not isinstance(name, str):
        raise TypeError(f"expected the model name to be a str, got {name!r}")
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; expected one of {', '.join(list_models())}"
        ) from None
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    return factory(**kwargs)
