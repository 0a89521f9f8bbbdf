"""Wide ResNet (WRN-depth-k) as in the IB-RAR code, which uses a common PyTorch WRN port.

IB-RAR builds ``Wide_ResNet(28, 10, 0.3, n_classes)``: pre-activation wide blocks whose output is
the raw residual sum (no activation after the addition), dropout 0.3 between the two convs, and a
final BN-ReLU-avg-pool before the linear layer.

Hook points of the ``"wrn28-10"`` preset (14): ``conv1`` (16x32x32), ``layer1.0``..``layer1.3``
(160x32x32), ``layer2.0``..``layer2.3`` (320x16x16), ``layer3.0``..``layer3.3`` (640x8x8) and
``pool`` (640). IB-RAR's channel mask acts on ``layer2`` (320 channels).

Example:
    >>> import torch
    >>> from ib_plugins.models.wideresnet import WideResNet
    >>> WideResNet(depth=10, widen_factor=1, num_classes=10)(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ib_plugins.models.small import NormalizeArg, _check_positive_int, _ImageModel

__all__ = ["WideBasic", "WideResNet"]


def _check_probability(value: object, *, name: str, upper_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected {name} to be a float, got {value!r}")
    value = float(value)
    ok = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"expected {name} in {interval}, got {value!r}")
    return value


class WideBasic(nn.Module):
    """Pre-activation wide residual block of the common WRN port.

    ``out = conv2(relu(bn2(dropout(conv1(relu(bn1(x))))))) + shortcut(x)``, returned *without*
    a final activation (the raw residual sum, as IB-RAR records it). ``conv2`` carries the
    stride; the shortcut is the identity or a 1x1 conv with the same stride. Convolutions have a
    bias, as in the port.

    Args:
        in_planes: input channels.
        planes: output channels.
        dropout: dropout probability between the two convs (active in training mode only).
        stride: stride of ``conv2`` and of the shortcut.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: a size is < 1 or ``dropout`` is outside ``[0, 1)``.

    Shape:
        - Input: ``[B, in_planes, H, W]``.
        - Output: ``[B, planes, ceil(H / stride), ceil(W / stride)]``.

    Example:
        >>> import torch
        >>> WideBasic(4, 8, dropout=0.0, stride=2)(torch.rand(2, 4, 8, 8)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, in_planes: int, planes: int, dropout: float, stride: int = 1) -> None:
        super().__init__()
        _check_positive_int(in_planes, name="in_planes")
        _check_positive_int(planes, name="planes")
        _check_positive_int(stride, name="stride")
        dropout = _check_probability(dropout, name="dropout", upper_open=True)
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=True)
        self.dropout = nn.Dropout(p=dropout)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=True)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: feature map ``[B, in_planes, H, W]``.

        Returns:
            The raw residual sum (may be negative).

        Example:
            >>> import torch
            >>> WideBasic(2, 2, dropout=0.0).eval()(torch.zeros(1, 2, 4, 4)).shape
            torch.Size([1, 2, 4, 4])
        """
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class WideResNet(_ImageModel):
    """Wide ResNet WRN-depth-k (IB-RAR's WRN-28-10 by default); returns raw logits.

    Layout: ``normalize`` (only when requested), ``conv1`` = Conv3x3(in, 16), ``layer1``,
    ``layer2``, ``layer3`` = ``n = (depth - 4) / 6`` :class:`WideBasic` blocks each, with widths
    16k, 32k, 64k and first-block strides 1, 2, 2; ``pool`` = BN(64k)-ReLU-AdaptiveAvgPool2d(1)-
    Flatten; ``fc`` = Linear(64k, num_classes). For a 32x32 input the adaptive pool equals the
    port's ``avg_pool2d(out, 8)``.

    The hook names of the ``"wrn28-10"`` preset (``conv1``, ``layer{1,2,3}.{0..3}``, ``pool``)
    exist only for ``depth=28`` (n = 4 blocks per stage); the widen factor does not change the
    names. Instances of any other depth set ``ib_preset = None``, so preset lookup finds nothing
    instead of a preset whose layers are missing; name their layers explicitly.

    BN momentum quirk: the authors' code (a common WRN port) builds the final BN with
    ``momentum=0.9``. In PyTorch's convention that weights the *new* batch statistics by 0.9, so
    the running statistics track the last batches closely. The default here is the usual 0.1;
    ``bn_momentum=0.9`` reproduces the authors' model. It affects only ``pool.0``.

    Args:
        depth: total depth; ``(depth - 4)`` must be a positive multiple of 6 (10, 16, 22, 28, ...).
        widen_factor: width multiplier ``k``.
        dropout: dropout probability inside each block (IB-RAR: 0.3), in ``[0, 1)``.
        num_classes: number of output logits (IB-RAR uses WRN-28-10 on CIFAR-100).
        in_channels: input channels.
        bn_momentum: momentum of the final BN (``pool.0``), in ``[0, 1]``.
        normalize: optional ``(mean, std)``; adds a
            :class:`~ib_plugins.models.small.Normalize` layer named ``normalize`` as the first
            step. None (default) feeds the ``[0, 1]`` input unchanged, as the authors' code does.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: a bad ``depth``, a size < 1, ``dropout``/``bn_momentum`` out of range, or a
            bad ``normalize``; at forward time, an input that is not ``[B, in_channels, H, W]``.

    Shape:
        - Input: ``[B, in_channels, H, W]`` in ``[0, 1]`` (32x32 for CIFAR; any size works).
        - Output: ``[B, num_classes]`` raw logits.

    Example:
        >>> import torch
        >>> net = WideResNet(depth=10, widen_factor=1, num_classes=10)
        >>> net(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    ib_preset: str | None = "wrn28-10"

    def __init__(
        self,
        *,
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.3,
        num_classes: int = 100,
        in_channels: int = 3,
        bn_momentum: float = 0.1,
        normalize: NormalizeArg = None,
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise TypeError(f"expected depth to be an int, got {depth!r}")
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                "expected depth with (depth - 4) a positive multiple of 6 (10, 16, 22, 28, 34, "
                f"40, ...), got {depth}"
            )
        _check_positive_int(widen_factor, name="widen_factor")
        self._setup(num_classes=num_classes, in_channels=in_channels, normalize=normalize)
        dropout = _check_probability(dropout, name="dropout", upper_open=True)
        bn_momentum = _check_probability(bn_momentum, name="bn_momentum", upper_open=False)
        self.depth = depth
        self.widen_factor = widen_factor
        if depth != 28:
            self.ib_preset = None
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=True)
        in_planes = widths[0]
        for i, (planes, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            blocks = []
            for j in range(n):
                blocks.append(WideBasic(in_planes, planes, dropout, stride if j == 0 else 1))
                in_planes = planes
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.pool = nn.Sequential(
            nn.BatchNorm2d(widths[3], momentum=bn_momentum),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return raw logits.

        Args:
            x: input batch ``[B, in_channels, H, W]`` in ``[0, 1]``.

        Returns:
            Logits ``[B, num_classes]``.

        Raises:
            ValueError: the input is not 4-D or has the wrong channel count.

        Example:
            >>> import torch
            >>> net = WideResNet(depth=10, widen_factor=1, num_classes=3).eval()
            >>> net(torch.zeros(1, 3, 8, 8)).shape
            torch.Size([1, 3])
        """
        return self._chain(self._prepare(x), ("conv1", "layer1", "layer2", "layer3", "pool", "fc"))

    def extra_repr(self) -> str:
        return f"depth={self.depth}, widen_factor={self.widen_factor}"
