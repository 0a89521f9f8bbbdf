"""Model zoo: the IB-RAR and entropic-retraining architectures, with preset-ready layer names.

Every model takes inputs in ``[0, 1]``, returns raw logits, imports only torch and carries a class
attribute ``ib_preset`` naming its layer preset in :mod:`ib_plugins.presets`. An optional
``normalize=(mean, std)`` keyword puts a :class:`Normalize` layer named ``normalize`` inside the
model; by default there is none, as in the authors' code.

==============================  ========================  ==========================================
name (``create_model``)         class                     input
==============================  ========================  ==========================================
``"vgg16"``, ``"vgg16-bn"``     :class:`VGG16`            ``[B, 3, 32, 32]`` (any size >= 32)
``"resnet18"``                  :class:`ResNet18`         ``[B, 3, 32, 32]`` (any size)
``"wrn28-10"``                  :class:`WideResNet`       ``[B, 3, 32, 32]`` (any size)
``"lenet5"``                    :class:`LeNet5`           ``[B, 1, 28, 28]``
``"keras-mnist-cnn"``           :class:`KerasMNISTCNN`    ``[B, 1, 28, 28]``
``"keras-cifar-cnn"``           :class:`KerasCIFARCNN`    ``[B, 3, 32, 32]``
``"digits-cnn"``                :class:`DigitsCNN`        ``[B, 1, 8, 8]``
``"vgg-mini"``                  :class:`VGGMini`          ``[B, 1, 28, 28]`` (any size >= 16)
==============================  ========================  ==========================================

Example:
    >>> import torch
    >>> from ib_plugins.models import create_model
    >>> from ib_plugins.presets import get_preset
    >>> net = create_model("lenet5", num_classes=10, in_channels=1)
    >>> [type(net.get_submodule(n)).__name__ for n in get_preset(net.ib_preset).layers]
    ['Sequential', 'Sequential', 'Sequential', 'Sequential']
"""

from __future__ import annotations

from ib_plugins.models.registry import MODELS, create_model, list_models
from ib_plugins.models.resnet import BasicBlock, ResNet18
from ib_plugins.models.small import DigitsCNN, KerasCIFARCNN, KerasMNISTCNN, LeNet5, Normalize
from ib_plugins.models.vgg import VGG16, VGGMini
from ib_plugins.models.wideresnet import WideBasic, WideResNet

__all__ = [
    "VGG16",
    "VGGMini",
    "ResNet18",
    "BasicBlock",
    "WideResNet",
    "WideBasic",
    "LeNet5",
    "KerasMNISTCNN",
    "KerasCIFARCNN",
    "DigitsCNN",
    "Normalize",
    "MODELS",
    "create_model",
    "list_models",
]
