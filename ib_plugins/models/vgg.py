"""VGG-16 with batch norm, laid out as in the IB-RAR code (``model/vgg16.py``).

The seven hook points of the IB-RAR paper are top-level children, so the ``"vgg16"`` preset of
:mod:`ib_plugins.presets` names them directly: ``block1``..``block5`` (each ends with its 2x2
max-pool) and ``fc1``, ``fc2`` (Linear-BN1d-ReLU). Shapes for a 32x32 input: block1 64x16x16,
block2 128x8x8, block3 256x4x4, block4 512x2x2, block5 512x1x1, fc1 and fc2 4096.

Example:
    >>> import torch
    >>> from ib_plugins.models.vgg import VGG16
    >>> VGG16(num_classes=10)(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ib_plugins.models.small import NormalizeArg, _ImageModel, _spatial_ops, _trace_spatial

__all__ = ["VGG16", "VGGMini"]

#: (output channels, number of Conv-BN-ReLU units) of each block
_VGG16_PLAN: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def _vgg_block(in_channels: int, out_channels: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        ]
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


_NUMBER_WORDS = {4: "four", 5: "five"}


class _VGG(_ImageModel):
    """The VGG layout shared by :class:`VGG16` and :class:`VGGMini` (private).

    ``block1``..``blockK`` from a plan of (channels, convs) pairs, ``avgpool``, ``flatten``,
    ``fc1``/``fc2`` = Linear-BN1d-ReLU of ``hidden`` units, ``classifier``.
    """

    def __init__(
        self,
        *,
        plan: tuple[tuple[int, int], ...],
        hidden: int,
        num_classes: int,
        in_channels: int,
        normalize: NormalizeArg,
    ) -> None:
        super().__init__()
        self._setup(num_classes=num_classes, in_channels=in_channels, normalize=normalize)
        channels = in_channels
        for i, (out_channels, convs) in enumerate(plan, start=1):
            setattr(self, f"block{i}", _vgg_block(channels, out_channels, convs))
            channels = out_channels
        self._blocks = tuple(f"block{i}" for i in range(1, len(plan) + 1))
        self._min_size = 2 ** len(plan)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, num_classes)
        self._ops = _spatial_ops(m for name in self._blocks for m in getattr(self, name))

    def _check(self, x: torch.Tensor) -> None:
        super()._check(x)
        if _trace_spatial(self._ops, int(x.shape[-2]), int(x.shape[-1])) is None:
            size, pools = self._min_size, len(self._blocks)
            raise ValueError(
                f"{type(self).__name__} expected input of at least [B, {self.in_channels}, {size}, {size}] "
                f"({_NUMBER_WORDS.get(pools, pools)} 2x2 max-pools), got shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return raw logits.

        Args:
            x: input batch ``[B, in_channels, H, W]`` in ``[0, 1]``, at least 32x32 for
                :class:`VGG16` (five 2x2 max-pools) and 16x16 for :class:`VGGMini` (four).

        Returns:
            Logits ``[B, num_classes]``.

        Raises:
            ValueError: the input is not 4-D, has the wrong channel count or is too small.

        Example:
            >>> import torch
            >>> VGG16(num_classes=3).eval()(torch.zeros(1, 3, 32, 32)).shape
            torch.Size([1, 3])
        """
        x = self._chain(self._prepare(x), self._blocks)
        x = self.flatten(self.avgpool(x))
        return self.classifier(self.fc2(self.fc1(x)))


class VGG16(_VGG):
    """IB-RAR's VGG-16 with batch norm; returns raw logits.

    Layout: ``normalize`` (only when requested), ``block1``..``block5`` = [Conv3x3-BN-ReLU] x k +
    MaxPool 2 with channels 64x2, 128x2, 256x3, 512x3, 512x3; ``avgpool`` =
    AdaptiveAvgPool2d((1, 1)) (it only matters for inputs larger than 32x32, e.g. 64x64 Tiny
    ImageNet, where block5 is 2x2); flatten; ``fc1`` = Linear(512, 4096)-BN1d-ReLU; ``fc2`` =
    Linear(4096, 4096)-BN1d-ReLU; ``classifier`` = Linear(4096, num_classes).

    The channel mask of IB-RAR acts on ``block5`` (preset ``"vgg16"``, ``mask_layer="block5"``).

    Args:
        num_classes: number of output logits.
        in_channels: input channels.
        normalize: optional ``(mean, std)``; adds a
            :class:`~ib_plugins.models.small.Normalize` layer named ``normalize`` as the first
            step. None (default) feeds the ``[0, 1]`` input unchanged, as the authors' code does.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: ``num_classes``/``in_channels`` < 1, or a bad ``normalize``; at forward time,
            a wrong channel count or an input smaller than 32x32 (five 2x2 max-pools).

    Shape:
        - Input: ``[B, in_channels, H, W]`` in ``[0, 1]``, ``H, W >= 32``.
        - Output: ``[B, num_classes]`` raw logits.

    Example:
        >>> import torch
        >>> VGG16(num_classes=10)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    ib_preset = "vgg16"

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, normalize: NormalizeArg = None) -> None:
        super().__init__(
            plan=_VGG16_PLAN, hidden=4096, num_classes=num_classes, in_channels=in_channels, normalize=normalize
        )


#: (output channels, number of Conv-BN-ReLU units) of each block of the mini VGG
_VGG_MINI_PLAN: tuple[tuple[int, int], ...] = ((32, 1), (64, 1), (128, 2), (128, 2))


class VGGMini(_VGG):
    """A CPU-sized member of IB-RAR's VGG family for 28x28 / 32x32 images; returns raw logits.

    The VGG-16 layout scaled down so that adversarial training fits a 2-core CPU: ``block1`` ..
    ``block4`` = [Conv3x3-BN-ReLU] x k + MaxPool 2 with channels 32x1, 64x1, 128x2, 128x2;
    ``avgpool`` = AdaptiveAvgPool2d((1, 1)); flatten; ``fc1`` = Linear(128, 256)-BN1d-ReLU; ``fc2``
    = Linear(256, 256)-BN1d-ReLU; ``classifier`` = Linear(256, num_classes). About 0.36 M parameters.

    Its preset ``"vgg-mini"`` mirrors the paper's VGG-16 one by analogy (not a finding of the
    paper): the robust layers are the last conv block and the two FC layers (VGG-16: block 5, FC1,
    FC2), the channel mask acts on ``block4`` (128 channels, code-mode ``k = 3`` ≈ the 2 % of VGG-16's
    ``k = 10`` of 512), recorded after the mask as in the authors' VGG.

    Args:
        num_classes: number of output logits.
        in_channels: input channels.
        normalize: optional ``(mean, std)`` (a ``normalize`` layer first); None feeds ``[0, 1]`` inputs.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: ``num_classes``/``in_channels`` < 1, or a bad ``normalize``; at forward time, a
            wrong channel count or an input smaller than 16x16 (four 2x2 max-pools).

    Shape:
        - Input: ``[B, in_channels, H, W]`` in ``[0, 1]``, ``H, W >= 16``.
        - Output: ``[B, num_classes]`` raw logits.

    Example:
        >>> import torch
        >>> VGGMini(num_classes=10, in_channels=1)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    ib_preset = "vgg-mini"

    def __init__(self, *, num_classes: int = 10, in_channels: int = 1, normalize: NormalizeArg = None) -> None:
        super().__init__(
            plan=_VGG_MINI_PLAN, hidden=256, num_classes=num_classes, in_channels=in_channels, normalize=normalize
        )
