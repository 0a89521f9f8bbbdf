"""Tiny networks and helpers shared by the core tests (CPU, a few thousand parameters each)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Interrupt",
    "interrupt_after",
    "count_hooks",
    "hook_table",
    "mlp",
    "BasicBlock",
    "TinyResNet",
    "ReusedModuleNet",
    "UnusedModuleNet",
    "RaisingNet",
    "TupleOutputNet",
    "DigitsLikeNet",
    "NoPresetNet",
    "ConvNet",
]


def count_hooks(model: nn.Module) -> int:
    """Forward and forward-pre hooks registered on ``model`` and all its submodules."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for _, m in model.named_modules())


def hook_table(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{name: (n_forward_hooks, n_forward_pre_hooks)}`` for the modules that have any."""
    table = {}
    for name, m in model.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            table[name] = (len(m._forward_hooks), len(m._forward_pre_hooks))
    return table


def mlp(d_in: int = 64, hidden: int = 32, num_classes: int = 10) -> nn.Sequential:
    """``Flatten, Linear, ReLU, Linear, ReLU, Linear``: names '0'..'5'."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d_in, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


class BasicBlock(nn.Module):
    """A ResNet basic block whose residual add and ReLU run in place after ``bn2``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, after the hooked bn2
        return torch.relu_(out)


class TinyResNet(nn.Module):
    """stem -> layer1 (2 blocks) -> layer2 (1 block, stride 2) -> pool -> fc, for [B, 3, 8, 8]."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layer2(self.layer1(self.stem(x)))))


class ReusedModuleNet(nn.Module):
    """Calls the same ``act`` module twice per forward (keys ``act`` and ``act#1``)."""

    def __init__(self, d_in: int = 16, hidden: int = 12, num_classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.fc1(x.flatten(1)))
        x = self.act(self.fc2(x))
        return self.head(x)


class UnusedModuleNet(nn.Module):
    """Registers ``unused``, which never runs in ``forward``."""

    def __init__(self, d_in: int = 16, num_classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, 8)
        self.act = nn.ReLU()
        self.unused = nn.Linear(8, 8)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.fc1(x.flatten(1))))


class _Boom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: Tensor) -> Tensor:
        if self.armed:
            raise RuntimeError("boom: this layer raises on purpose")
        return x


class RaisingNet(nn.Module):
    """``fc1 -> act -> boom -> head``; set ``net.boom.armed = True`` to make ``boom`` raise."""

    def __init__(self, d_in: int = 16, num_classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, 8)
        self.act = nn.ReLU()
        self.boom = _Boom()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.boom(self.act(self.fc1(x.flatten(1)))))


class _Pair(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, x * 2


class TupleOutputNet(nn.Module):
    """``pair`` returns a tuple (not a tensor)."""

    def __init__(self, d_in: int = 16, num_classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, 8)
        self.pair = _Pair()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.pair(self.fc1(x.flatten(1)))
        return self.head(a + b)


class DigitsLikeNet(nn.Module):
    """Declares ``ib_preset = "digits-cnn"``: layers conv1, conv2, conv3, fc1, fc2 for [B, 1, 8, 8]."""

    ib_preset = "digits-cnn"

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv3 = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(8 * 2 * 2, 16), nn.ReLU())
        self.fc2 = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(self.conv3(self.conv2(self.conv1(x)))))


class NoPresetNet(nn.Module):
    """A model without a preset."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class ConvNet(nn.Module):
    """``features`` (conv, C channels, ReLU) -> ``pool`` -> ``fc``, for [B, 3, 4, 4]; no BN, no dropout."""

    def __init__(self, channels: int = 16, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.features = nn.ReLU()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(channels * 4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(self.conv(x))))


class Interrupt(Exception):
    """Raised by :func:`interrupt_after`'s callback: a simulated kill of a training run."""


def interrupt_after(epoch: int):
    """A Trainer callback that raises :class:`Interrupt` once ``epoch`` epochs are done."""

    def callback(trainer, done, metrics):
        if done == epoch:
            raise Interrupt(f"simulated interruption after epoch {done}")

    return callback
