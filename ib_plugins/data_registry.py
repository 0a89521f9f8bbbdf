"""The datasets' registry: :class:`DatasetInfo`, :data:`DATASETS`, the default folder and the shared argument checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

_SPLITS = ("train", "test")
_FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
_DIGITS_SPLIT_SEED = 0
_DIGITS_TEST_FRACTION = (1, 4)  # test_size = ceil(n * 1 / 4): 450 of 1,797
_TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    Attributes:
        name: registry name, e.g. ``"cifar10"``.
        num_classes: number of classes (labels are ``0 .. num_classes - 1``).
        in_channels: image channels ``C``.
        image_size: image height = width.
        mean: per-channel mean of the ``[0, 1]`` training pixels (for optional in-model
            normalisation; the loaders never normalise).
        std: per-channel standard deviation, same convention as ``mean``.

    Example:
        >>> info = DATASETS["cifar10"]
        >>> info.num_classes, info.in_channels, info.image_size, len(info.mean)
        (10, 3, 32, 3)
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


#: Read-only mapping ``name -> DatasetInfo`` of every dataset :func:`load_dataset` knows.
#: The digits statistics are over all 1,797 images; the others are the commonly quoted
#: training-set statistics (Fashion-MNIST checked against the Debian files).
DATASETS: Mapping[str, DatasetInfo] = MappingProxyType(
    {
        info.name: info
        for info in (
            DatasetInfo("digits", 10, 1, 8, (0.3053,), (0.3760,)),
            DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,)),
            DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,)),
            DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
            DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
            DatasetInfo("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
            DatasetInfo("tiny-imagenet", 200, 3, 64, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
        )
    }
)

_ALIASES = {
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "tinyimagenet": "tiny-imagenet",
    "tiny-imagenet-200": "tiny-imagenet",
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, in registry order.

    Returns:
        The dataset names.

    Example:
        >>> list_datasets()
        ['digits', 'fashion-mnist', 'mnist', 'cifar10', 'cifar100', 'svhn', 'tiny-imagenet']
    """
    return list(DATASETS)


def _canonical_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name: expected a dataset name (str), got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(
            f"name: unknown dataset {name!r}; expected one of {', '.join(repr(n) for n in DATASETS)}"
        )
    return key


def get_dataset_info(name: str) -> DatasetInfo:
    """Look up a dataset's :class:`DatasetInfo`.

    Names are case-insensitive and ``_`` counts as ``-`` (``"FASHION_MNIST"`` works).

    Args:
        name: a name from :func:`list_datasets`.

    Returns:
        The dataset's description.

    Raises:
        ValueError: ``name`` is not a known dataset; the message lists the valid names.
        TypeError: ``name`` is not a string.

    Example:
        >>> get_dataset_info("Tiny_ImageNet").image_size
        64
    """
    return DATASETS[_canonical_name(name)]


def default_data_dir() -> Path:
    """The folder used for downloads when no ``data_dir`` is given: ``~/.cache/ib_plugins``.

    Returns:
        The (possibly not yet existing) folder.

    Example:
        >>> default_data_dir().name
        'ib_plugins'
    """
    return Path("~/.cache/ib_plugins").expanduser()


# --------------------------------------------------------------------------------------------------
# Argument checks and shared helpers
# --------------------------------------------------------------------------------------------------


def _check_split(split: object) -> str:
    if split not in _SPLITS:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    return str(split)


def _check_bool(value: object, arg: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{arg}: expected a bool, got {type(value).__name__}")
    return value


def _check_dir(data_dir: object) -> Path | None:
    if data_dir is None:
        return None
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir: expected a path (str or os.PathLike) or None, got {type(data_dir).__name__}")
    return Path(data_dir).expanduser()


def _allocate(total: int, counts: torch.Tensor) -> torch.Tensor:
    """Split ``total`` over classes proportionally to ``counts`` (largest remainder, exact ints)."""
    counts = counts.to(torch.int64)
    n = int(counts.sum())
    scaled = counts * total
    quota = scaled // n
    remainder = scaled % n
    left = total - int(quota.sum())
    if left > 0:
        order = torch.sort(-remainder, stable=True).indices  # largest remainder first, ties by class
        quota[order[:left]] += 1
    return quota


def _stratified_indices(
    labels: torch.Tensor, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``size`` indices, class-proportionally, at random; returns (picked, rest), both sorted."""
    labels = labels.reshape(-1).to(torch.int64)
    classes, counts = torch.unique(labels, return_counts=True)
    quota = _allocate(size, counts)
    picked, rest = [], []
    for cls, q in zip(classes.tolist(), quota.tolist(), strict=True):
        members = torch.nonzero(labels == cls).flatten()
        perm = members[torch.randperm(members.numel(), generator=generator)]
        picked.append(perm[:q])
        rest.append(perm[q:])
    return torch.cat(picked).sort().values, torch.cat(rest).sort().values


def _subset(dataset: Dataset, limit: int, seed: int) -> Dataset:
    if isinstance(dataset, TensorDataset):
        labels = dataset.tensors[1]
    else:
        labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    if limit >= labels.numel():
        return dataset
    idx, _ = _stratified_indices(labels, limit, torch.Generator().manual_seed(seed))
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[idx] for t in dataset.tensors))
    return Subset(dataset, idx.tolist())


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32).div_(255.0)


def _check_labels(labels: torch.Tensor, info: DatasetInfo, source: str) -> torch.Tensor:
    labels = labels.to(torch.int64)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
        raise ValueError(
            f"{source}: expected {info.name} labels in [0, {info.num_classes - 1}], "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


def _check_images(x: torch.Tensor, info: DatasetInfo, source: str) -> None:
    expected = (info.in_channels, info.image_size, info.image_size)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"{source}: expected {info.name} images of shape [N, {', '.join(map(str, expected))}], "
            f"got {list(x.shape)}"
        )
