"""Small models: LeNet-5 and the Keras CNNs of the entropic-retraining paper, and a digits CNN.

The entropic-retraining paper (Sperl & Boettinger) uses LeNet-5 and the Keras MNIST and CIFAR-10
example CNNs, all without BN or dropout, with ReLU activations (spec section 4.2: the paper's
entropy needs non-negative activations, so ReLU is implied). Each activated conv or dense layer is
an ``nn.Sequential`` (layer + ReLU), so a forward hook on it sees the *post-activation* output
``h_i`` that the entropic loss needs. :class:`DigitsCNN` is a fast CPU model for scikit-learn's
8x8 digits.

These models are fixed-size: their first dense layer expects one flattened size. A wrong input
size raises a ``ValueError`` that names the expected input shape.

This module also holds :class:`Normalize`, the in-model input normalisation layer that every model
of :mod:`ib_plugins.models` accepts through its ``normalize=(mean, std)`` keyword.

Example:
    >>> import torch
    >>> from ib_plugins.models.small import LeNet5
    >>> LeNet5()(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

__all__ = ["Normalize", "LeNet5", "KerasMNISTCNN", "KerasCIFARCNN", "DigitsCNN"]

_SpatialOp = tuple[int, int, int, int, int, int, int, int]

#: The ``normalize=(mean, std)`` keyword every zoo model takes.
NormalizeArg = tuple[float | Sequence[float], float | Sequence[float]] | None


class Normalize(nn.Module):
    """Per-channel input normalisation ``(x - mean) / std`` as a layer inside a model.

    Attack toolkits (ART, torchattacks, AutoAttack) expect a model that takes inputs in
    ``[0, 1]``; putting the normalisation inside the model keeps that contract. ``mean`` and
    ``std`` are non-persistent buffers: they follow ``.to()`` but are not in the ``state_dict``,
    so a checkpoint loads into the model with or without normalisation.

    Args:
        mean: one value for all channels, or one per channel.
        std: one value for all channels, or one per channel; every value must be > 0.
        num_channels: when given, ``mean`` and ``std`` must have 1 or ``num_channels`` values.

    Raises:
        TypeError: ``mean`` or ``std`` is not a number or a sequence of numbers.
        ValueError: a value is not finite, a ``std`` is not > 0, or the lengths do not fit.

    Shape:
        - Input: ``[B, C, ...]``, usually ``[B, C, H, W]``; dim 1 is the channel dim.
        - Output: same as the input.

    Example:
        >>> import torch
        >>> norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        >>> norm(torch.full((1, 3, 2, 2), 0.75))[0, :, 0, 0]
        tensor([1., 1., 1.])
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        *,
        num_channels: int | None = None,
    ) -> None:
        super().__init__()
        mean_t = _as_channel_values(mean, name="mean", num_channels=num_channels)
        std_t = _as_channel_values(std, name="std", num_channels=num_channels)
        if bool((std_t <= 0).any()):
            raise ValueError(f"expected every std value to be > 0, got {std_t.tolist()}")
        if mean_t.numel() != std_t.numel() and 1 not in (mean_t.numel(), std_t.numel()):
            raise ValueError(
                "expected mean and std of the same length (or one of length 1), got "
                f"{mean_t.numel()} and {std_t.numel()} values"
            )
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` channel-wise.

        Args:
            x: input batch ``[B, C, ...]`` (usually ``[B, C, H, W]``).

        Returns:
            ``(x - mean) / std`` in the dtype and on the device of ``x``.

        Raises:
            ValueError: ``x`` has fewer than 2 dims.

        Example:
            >>> import torch
            >>> Normalize(0.5, 0.5)(torch.ones(1, 1, 1, 1)).item()
            1.0
        """
        if x.dim() < 2:
            raise ValueError(f"expected an input [B, C, ...], got shape {tuple(x.shape)}")
        view = (1, -1) + (1,) * (x.dim() - 2)
        mean = self.mean.to(device=x.device, dtype=x.dtype).view(view)
        std = self.std.to(device=x.device, dtype=x.dtype).view(view)
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _as_channel_values(
    value: float | Sequence[float], *, name: str, num_channels: int | None
) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        values = value.detach().to("cpu", torch.float32).flatten().tolist()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        values = [float(value)]
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        values = list(value)
    else:
        raise TypeError(f"expected {name} to be a number or a sequence of numbers, got {value!r}")
    if not values:
        raise ValueError(f"expected {name} to hold at least one value, got an empty sequence")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(
                f"expected {name} to be a number or a sequence of numbers, got {value!r}"
            )
        if not math.isfinite(v):
            raise ValueError(f"expected finite {name} values, got {value!r}")
    if num_channels is not None and len(values) not in (1, num_channels):
        raise ValueError(
            f"expected {name} to have 1 or in_channels={num_channels} values, got {len(values)}"
        )
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def _make_normalize(normalize: NormalizeArg, *, in_channels: int) -> Normalize | None:
    """Build the ``normalize`` layer from a model's ``normalize=(mean, std)`` keyword."""
    if normalize is None:
        return None
    if isinstance(normalize, Normalize):
        return normalize
    if (
        not isinstance(normalize, Sequence)
        or isinstance(normalize, (str, bytes))
        or len(normalize) != 2
    ):
        raise TypeError(f"expected normalize to be None or a pair (mean, std), got {normalize!r}")
    mean, std = normalize
    return Normalize(mean, std, num_channels=in_channels)


def _check_positive_int(value: object, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected {name} to be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"expected {name} to be a positive int, got {value!r}")
    return value


def _check_input(x: torch.Tensor, *, in_channels: int, model: str) -> None:
    """Raise a clear ValueError for inputs that are not ``[B, in_channels, H, W]``."""
    if x.dim() != 4:
        raise ValueError(
            f"{model} expected a 4-D input [B, {in_channels}, H, W], got shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model} expected {in_channels} input channels ([B, {in_channels}, H, W]), "
            f"got shape {tuple(x.shape)}"
        )


def _spatial_ops(modules: Iterable[nn.Module]) -> tuple[_SpatialOp, ...]:
    """Kernel, stride, padding, dilation of every Conv2d/MaxPool2d/AvgPool2d, in module order."""
    ops: list[_SpatialOp] = []
    for m in modules:
        if isinstance(m, nn.Conv2d):
            if isinstance(m.padding, str):  # pragma: no cover - not used by the zoo
                raise TypeError("string padding is not supported by the shape check")
            k, s, p, d = m.kernel_size, m.stride, m.padding, m.dilation
        elif isinstance(m, nn.MaxPool2d):
            k, s, p, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation)
        elif isinstance(m, nn.AvgPool2d):
            k, s, p, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), (1, 1)
        else:
            continue
        ops.append((k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1]))
    return tuple(ops)


def _trace_spatial(ops: tuple[_SpatialOp, ...], h: int, w: int) -> tuple[int, int] | None:
    """Spatial size after ``ops`` (floor mode), or None when some map would be empty."""
    for kh, kw, sh, sw, ph, pw, dh, dw in ops:
        h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if h < 1 or w < 1:
            return None
    return h, w


class _ImageModel(nn.Module):
    """What every zoo model shares (private): its three common keywords and its input handling.

    ``_setup`` checks ``num_classes``/``in_channels`` and builds the optional ``normalize`` layer;
    ``_prepare`` checks a batch (``_check``, which subclasses narrow) and normalises it; ``_chain``
    runs named children one after the other.
    """

    in_channels: int
    normalize: Normalize | None

    def _setup(self, *, num_classes: int, in_channels: int, normalize: NormalizeArg) -> None:
        _check_positive_int(num_classes, name="num_classes")
        self.in_channels = _check_positive_int(in_channels, name="in_channels")
        self.normalize = _make_normalize(normalize, in_channels=in_channels)

    def _check(self, x: torch.Tensor) -> None:
        _check_input(x, in_channels=self.in_channels, model=type(self).__name__)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return x if self.normalize is None else self.normalize(x)

    def _chain(self, x: torch.Tensor, names: Iterable[str]) -> torch.Tensor:
        for name in names:
            x = getattr(self, name)(x)
        return x


class _FixedSizeCNN(_ImageModel):
    """A plain feed-forward CNN of one input size (private): its children run in ``_sequence``.

    Subclasses build their layers, then call ``_fix_size`` with the input size, the channels before
    ``flatten`` and the order of their children; the shared ``forward`` checks the input's size and
    runs that order. Every conv or dense layer that a preset names is an ``nn.Sequential`` ending in
    its activation, so a hook on it sees the post-activation output.
    """

    _input_hw: tuple[int, int]
    _feature_channels: int
    _flat_features: int
    _ops: tuple[_SpatialOp, ...]
    _sequence: tuple[str, ...]

    def _fix_size(self, input_hw: tuple[int, int], feature_channels: int, sequence: Sequence[str]) -> None:
        self._sequence = tuple(sequence)
        self._ops = _spatial_ops(m for name in self._sequence for m in getattr(self, name).modules())
        self._input_hw, self._feature_channels = input_hw, feature_channels
        hw = _trace_spatial(self._ops, *input_hw)
        assert hw is not None, "a model's own input size must give a feature map"
        self._flat_features = feature_channels * hw[0] * hw[1]

    def _check(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        _check_input(x, in_channels=self.in_channels, model=name)
        hw = _trace_spatial(self._ops, int(x.shape[-2]), int(x.shape[-1]))
        flat = None if hw is None else self._feature_channels * hw[0] * hw[1]
        if flat != self._flat_features:
            h, w = self._input_hw
            got = "an empty feature map" if flat is None else f"{flat} features"
            raise ValueError(
                f"{name} expected input of shape [B, {self.in_channels}, {h}, {w}] "
                f"({self._flat_features} features before fc1), got shape {tuple(x.shape)}, "
                f"which gives {got}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return raw logits.

        Args:
            x: input batch ``[B, in_channels, H, W]`` in ``[0, 1]`` of the model's input size.

        Returns:
            Logits ``[B, num_classes]``.

        Raises:
            ValueError: the input shape does not fit the model.

        Example:
            >>> import torch
            >>> KerasCIFARCNN(num_classes=4)(torch.zeros(1, 3, 32, 32)).shape
            torch.Size([1, 4])
        """
        return self._chain(self._prepare(x), self._sequence)


class LeNet5(_FixedSizeCNN):
    """LeNet-5 for 28x28 MNIST, as in the entropic-retraining paper (ReLU, average pooling).

    The paper's "2 conv layers (filter sizes 5 and 16)" is read as classic LeNet-5: 6 then 16
    filters, 5x5 kernels, each conv followed by 2x2 average pooling, dense 120-84-C, no dropout.
    The first conv pads by 2, so 28x28 MNIST gives the classic 16x5x5 map before ``fc1``.
    Activations are ReLU, not tanh (spec section 4.2: the entropy term needs ``h >= 0``).

    Layout (hook names of the ``"lenet5"`` preset in bold): **conv1** = Conv(in, 6, 5, pad 2) +
    ReLU, ``pool1`` AvgPool 2, **conv2** = Conv(6, 16, 5) + ReLU, ``pool2`` AvgPool 2,
    ``flatten``, **fc1** = Linear(400, 120) + ReLU, **fc2** = Linear(120, 84) + ReLU,
    ``classifier`` = Linear(84, C) (raw logits).

    Args:
        num_classes: number of output logits.
        in_channels: input channels.
        normalize: optional ``(mean, std)``; adds a :class:`Normalize` layer named ``normalize``
            as the first step. None (default) feeds the ``[0, 1]`` input unchanged.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: ``num_classes``/``in_channels`` < 1, or a bad ``normalize``; at forward time,
            an input that is not ``[B, in_channels, 28, 28]`` (or another size with the same
            flattened size).

    Shape:
        - Input: ``[B, in_channels, 28, 28]`` in ``[0, 1]``.
        - Output: ``[B, num_classes]`` raw logits.

    Example:
        >>> import torch
        >>> LeNet5(num_classes=10)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    ib_preset = "lenet5"

    def __init__(self, *, num_classes: int = 10, in_channels: int = 1, normalize: NormalizeArg = None) -> None:
        super().__init__()
        self._setup(num_classes=num_classes, in_channels=in_channels, normalize=normalize)
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU())
        self.pool1 = nn.AvgPool2d(2)
        self.conv2 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU())
        self.pool2 = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(nn.Linear(16 * 5 * 5, 120), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(120, 84), nn.ReLU())
        self.classifier = nn.Linear(84, num_classes)
        self._fix_size((28, 28), 16, ("conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2", "classifier"))


class KerasMNISTCNN(_FixedSizeCNN):
    """The Keras MNIST example CNN of the entropic-retraining paper, without dropout.

    Layout: **conv1** = Conv(in, 32, 3) + ReLU, **conv2** = Conv(32, 64, 3) + ReLU, ``pool``
    MaxPool 2, ``flatten``, **fc1** = Linear(64*12*12, 512) + ReLU, **fc2** = Linear(512, 84) +
    ReLU, ``classifier`` = Linear(84, C) (raw logits). Convolutions are 'valid' (no padding), as
    in Keras. PyTorch's default initialisation is used, not Keras' Glorot-uniform. Takes 28x28
    inputs, ``[B, in_channels, 28, 28]`` in ``[0, 1]``, and returns ``[B, num_classes]`` raw logits.

    Args:
        num_classes: number of output logits.
        in_channels: input channels (default 1).
        normalize: optional ``(mean, std)``, as for :class:`LeNet5`.

    Raises:
        TypeError, ValueError: as :class:`LeNet5` (for a 28x28 input).

    Example:
        >>> import torch
        >>> KerasMNISTCNN()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    ib_preset = "keras-mnist-cnn"

    def __init__(self, *, num_classes: int = 10, in_channels: int = 1, normalize: NormalizeArg = None) -> None:
        super().__init__()
        self._setup(num_classes=num_classes, in_channels=in_channels, normalize=normalize)
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 32, 3), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(32, 64, 3), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(nn.Linear(64 * 12 * 12, 512), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(512, 84), nn.ReLU())
        self.classifier = nn.Linear(84, num_classes)
        self._fix_size((28, 28), 64, ("conv1", "conv2", "pool", "flatten", "fc1", "fc2", "classifier"))


class KerasCIFARCNN(_FixedSizeCNN):
    """The Keras CIFAR-10 example CNN of the entropic-retraining paper (deeper head, no dropout).

    Layout: **conv1** = Conv(in, 32, 3, 'same') + ReLU, **conv2** = Conv(32, 32, 3, 'valid') +
    ReLU, ``pool1`` MaxPool 2, **conv3** = Conv(32, 64, 3, 'same') + ReLU, **conv4** =
    Conv(64, 64, 3, 'valid') + ReLU, ``pool2`` MaxPool 2, ``flatten`` (64x6x6 = 2304 for 32x32
    input), **fc1**..**fc5** = Linear + ReLU with 512, 256, 128, 128, 84 units, ``classifier`` =
    Linear(84, C) (raw logits). PyTorch's default initialisation is used, not Keras' Glorot.
    Takes ``[B, in_channels, 32, 32]`` in ``[0, 1]``; returns ``[B, num_classes]`` raw logits.

    Args:
        num_classes: number of output logits.
        in_channels: input channels (default 3).
        normalize: optional ``(mean, std)``, as for :class:`LeNet5`.

    Raises:
        TypeError, ValueError: as :class:`LeNet5` (for a 32x32 input).

    Example:
        >>> import torch
        >>> KerasCIFARCNN()(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    ib_preset = "keras-cifar-cnn"

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, normalize: NormalizeArg = None) -> None:
        super().__init__()
        self._setup(num_classes=num_classes, in_channels=in_channels, normalize=normalize)
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(32, 32, 3), nn.ReLU())
        self.pool1 = nn.MaxPool2d(2)
        self.conv3 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU())
        self.conv4 = nn.Sequential(nn.Conv2d(64, 64, 3), nn.ReLU())
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        widths = (64 * 6 * 6, 512, 256, 128, 128, 84)
        for i in range(1, 6):
            setattr(self, f"fc{i}", nn.Sequential(nn.Linear(widths[i - 1], widths[i]), nn.ReLU()))
        self.classifier = nn.Linear(widths[5], num_classes)
        convs = ("conv1", "conv2", "pool1", "conv3", "conv4", "pool2", "flatten")
        self._fix_size((32, 32), 64, (*convs, "fc1", "fc2", "fc3", "fc4", "fc5", "classifier"))


class DigitsCNN(_FixedSizeCNN):
    """A small BN CNN for scikit-learn's 8x8 digits; trains in seconds on a CPU.

    Layout: **conv1** = Conv(in, 16, 3, pad 1) + BN + ReLU (16x8x8), **conv2** =
    Conv(16, 32, 3, pad 1) + BN + ReLU + MaxPool 2 (32x4x4), **conv3** = Conv(32, 64, 3, pad 1) +
    BN + ReLU + MaxPool 2 (64x2x2), ``flatten``, **fc1** = Linear(256, 128) + BN1d + ReLU,
    ``classifier`` = Linear(128, C) (raw logits). Not a paper model: it exists so that examples
    and tests can train a real model quickly. Takes ``[B, in_channels, 8, 8]`` in ``[0, 1]``
    (divide sklearn's 0..16 pixels by 16); returns ``[B, num_classes]`` raw logits.

    Args:
        num_classes: number of output logits.
        in_channels: input channels (default 1).
        normalize: optional ``(mean, std)``, as for :class:`LeNet5`.

    Raises:
        TypeError, ValueError: as :class:`LeNet5` (for an 8x8 input).

    Example:
        >>> import torch
        >>> DigitsCNN()(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    ib_preset = "digits-cnn"

    def __init__(self, *, num_classes: int = 10, in_channels: int = 1, normalize: NormalizeArg = None) -> None:
        super().__init__()
        self._setup(num_classes=num_classes, in_channels=in_channels, normalize=normalize)
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.conv2 = nn.Sequential(
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.conv3 = nn.Sequential(
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.flatten = nn.Flatten()
        self.fc1 = nn.Sequential(nn.Linear(64 * 2 * 2, 128), nn.BatchNorm1d(128), nn.ReLU())
        self.classifier = nn.Linear(128, num_classes)
        self._fix_size((8, 8), 64, ("conv1", "conv2", "conv3", "flatten", "fc1", "classifier"))
