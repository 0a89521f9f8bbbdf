"""CIFAR-style ResNet-18 as in the IB-RAR/HBaR code (3x3 stem, no max-pool).

Hook points of the ``"resnet18"`` preset: ``stem`` (ReLU(BN(conv)), 64x32x32 for a 32x32 input),
the post-ReLU output of each BasicBlock ``layer1.0`` .. ``layer4.1`` (64x32x32, 128x16x16,
256x8x8, 512x4x4) and ``pool`` (the pooled 512-vector, where IB-RAR's channel mask acts).

The authors' ResNet-18 returns ``log_softmax`` (spec section 2.7 item 11). The library model
returns raw logits by default; ``log_softmax_output=True`` reproduces the authors' head.

Example:
    >>> import torch
    >>> from ib_plugins.models.resnet import ResNet18
    >>> ResNet18(num_classes=10)(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ib_plugins.models.small import NormalizeArg, _check_positive_int, _ImageModel

__all__ = ["BasicBlock", "ResNet18"]


class BasicBlock(nn.Module):
    """The standard two-conv residual block of ResNet-18 (post-activation).

    ``out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is the identity,
    or a 1x1 conv + BN when the stride or the width changes. Convolutions have no bias. The
    output is post-ReLU, which is what IB-RAR records for every block.

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: stride of the first conv and of the shortcut.

    Raises:
        TypeError: an argument is not an int.
        ValueError: an argument is < 1.

    Shape:
        - Input: ``[B, in_planes, H, W]``.
        - Output: ``[B, planes, ceil(H / stride), ceil(W / stride)]``.

    Example:
        >>> import torch
        >>> BasicBlock(4, 8, stride=2)(torch.rand(2, 4, 8, 8)).shape
        torch.Size([2, 8, 4, 4])
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        _check_positive_int(in_planes, name="in_planes")
        _check_positive_int(planes, name="planes")
        _check_positive_int(stride, name="stride")
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: feature map ``[B, in_planes, H, W]``.

        Returns:
            The post-ReLU block output.

        Example:
            >>> import torch
            >>> bool((BasicBlock(2, 2)(torch.randn(1, 2, 4, 4)) >= 0).all())
            True
        """
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(_ImageModel):
    """CIFAR-style ResNet-18 (IB-RAR's layout); returns raw logits by default.

    Layout: ``normalize`` (only when requested), ``stem`` = Conv3x3(in, 64, no bias)-BN-ReLU (no
    max-pool), ``layer1``..``layer4`` = two :class:`BasicBlock` each with 64, 128, 256, 512
    channels and first-block strides 1, 2, 2, 2, ``pool`` = AdaptiveAvgPool2d(1) + Flatten
    (``[B, 512]``), ``fc`` = Linear(512, num_classes).

    ``log_softmax_output=True`` applies ``log_softmax`` to the output, as the authors' code does.
    Use it only to reproduce their numbers: ``nn.CrossEntropyLoss`` on log-probabilities gives the
    same loss as on logits, but torchattacks' CW computes its margin as ``max`` over the
    non-true outputs *with a 0 at the true-class slot*; all log-probabilities are negative, so that
    max is 0 and the CW loss is identically 0. CW then only adds Adam noise, which is why the
    paper's ResNet-18 "CW" accuracy is close to clean accuracy (spec section 2.7 item 11, A10).

    Args:
        num_classes: number of outputs.
        in_channels: input channels.
        log_softmax_output: return ``log_softmax(logits)`` instead of raw logits.
        normalize: optional ``(mean, std)``; adds a
            :class:`~ib_plugins.models.small.Normalize` layer named ``normalize`` as the first
            step. None (default) feeds the ``[0, 1]`` input unchanged, as the authors' code does.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: ``num_classes``/``in_channels`` < 1, or a bad ``normalize``; at forward time,
            an input that is not ``[B, in_channels, H, W]``.

    Shape:
        - Input: ``[B, in_channels, H, W]`` in ``[0, 1]`` (32x32 for CIFAR; any size works).
        - Output: ``[B, num_classes]``.

    Example:
        >>> import torch
        >>> ResNet18(num_classes=10)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> out = ResNet18(log_softmax_output=True).eval()(torch.rand(2, 3, 16, 16))
        >>> torch.allclose(out.exp().sum(1), torch.ones(2))
        True
    """

    ib_preset = "resnet18"

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        log_softmax_output: bool = False,
        normalize: NormalizeArg = None,
    ) -> None:
        super().__init__()
        if not isinstance(log_softmax_output, bool):
            raise TypeError(f"expected log_softmax_output to be a bool, got {log_softmax_output!r}")
        self.log_softmax_output = log_softmax_output
        self._setup(num_classes=num_classes, in_channels=in_channels, normalize=normalize)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        in_planes = 64
        for i, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            layer = nn.Sequential(
                BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)
            )
            setattr(self, f"layer{i}", layer)
            in_planes = planes
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return raw logits, or log-probabilities when ``log_softmax_output`` is set.

        Args:
            x: input batch ``[B, in_channels, H, W]`` in ``[0, 1]``.

        Returns:
            ``[B, num_classes]`` logits (or log-probabilities).

        Raises:
            ValueError: the input is not 4-D or has the wrong channel count.

        Example:
            >>> import torch
            >>> ResNet18(num_classes=3).eval()(torch.zeros(1, 3, 8, 8)).shape
            torch.Size([1, 3])
        """
        x = self._chain(self._prepare(x), ("stem", "layer1", "layer2", "layer3", "layer4", "pool", "fc"))
        if self.log_softmax_output:
            x = F.log_softmax(x, dim=1)
        return x

    def extra_repr(self) -> str:
        return f"log_softmax_output={self.log_softmax_output}" if self.log_softmax_output else ""
