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

Example:
    >>> ds = load_dataset("digits", split="train", limit=100, seed=0)
    >>> x, y = ds.tensors
    >>> tuple(x.shape), x.dtype, y.dtype, bool(x.min() >= 0 and x.max() <= 1)
    ((100, 1, 8, 8), torch.float32, torch.int64, True)
"""

from __future__ import annotations

import gzip
import importlib
import logging
import os
import pickle
import shutil
import struct
import sys
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ib_plugins._optional import require
from ib_plugins._types import PathLike
from ib_plugins._validation import _check_int

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

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
# --------------------------------------------------------------------------------------------------

#: IDX type byte -> (torch dtype, item size in bytes); multi-byte values are big-endian.
_IDX_TYPES = {
    0x08: (torch.uint8, 1),
    0x09: (torch.int8, 1),
    0x0B: (torch.int16, 2),
    0x0C: (torch.int32, 4),
    0x0D: (torch.float32, 4),
    0x0E: (torch.float64, 8),
}


def read_idx(path: PathLike) -> torch.Tensor:
    """Read an IDX file (the MNIST / Fashion-MNIST format), plain or gzip-compressed.

    The header is two zero bytes, a type byte (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
    ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions, then one
    big-endian uint32 per dimension; the big-endian data follow. Gzip is detected from the file's
    first bytes, so a ``.gz`` suffix is neither needed nor trusted.

    Args:
        path: the file to read.

    Returns:
        A tensor with the file's dtype and shape (e.g. uint8 ``[60000, 28, 28]`` for images,
        uint8 ``[60000]`` for labels).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not valid IDX (bad magic number, unknown type, size that does not
            match the dimensions, corrupt gzip); the message names the file.

    Example:
        >>> import struct, tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     f = pathlib.Path(tmp) / "labels-idx1-ubyte"
        ...     _ = f.write_bytes(struct.pack(">BBBBI", 0, 0, 0x08, 1, 3) + bytes([7, 0, 9]))
        ...     read_idx(f)
        tensor([7, 0, 9], dtype=torch.uint8)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt gzip data ({err})") from err
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file: expected at least a 4-byte header, got {len(raw)} bytes")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise ValueError(
            f"{path}: not an IDX file: bad magic number 0x{magic:08X}; expected 0x0000TTDD with type "
            f"TT in {{{', '.join(f'0x{t:02X}' for t in _IDX_TYPES)}}} and DD >= 1 dimensions"
        )
    dtype, itemsize = _IDX_TYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header: expected {header} bytes for {ndim} dimensions, got {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = 1
    for d in dims:
        count *= d
    expected = header + count * itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: IDX size mismatch: dimensions {list(dims)} of {itemsize}-byte items need "
            f"{expected} bytes, got {len(raw)}"
        )
    if count == 0:
        return torch.empty(dims, dtype=dtype)
    data = torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8)
    if itemsize > 1:
        data = data.view(count, itemsize)
        if sys.byteorder == "little":
            data = data.flip(-1)
        data = data.contiguous().view(dtype)
    return data.reshape(dims)


_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx_pair(dirs: list[Path], split: str) -> tuple[Path, Path] | None:
    for folder in dirs:
        found = []
        for stem in _IDX_FILES[split]:
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found.append(candidate)
                    break
        if len(found) == 2:
            return found[0], found[1]
    return None


def _load_idx_dataset(info: DatasetInfo, split: str, data_dir: Path | None, download: bool) -> TensorDataset:
    tv_class, tv_folder = {"fashion-mnist": ("FashionMNIST", "FashionMNIST"), "mnist": ("MNIST", "MNIST")}[info.name]
    if data_dir is not None:
        dirs = [data_dir, data_dir / tv_folder / "raw"]
    else:
        system = [_FASHION_MNIST_SYSTEM_DIR] if info.name == "fashion-mnist" else []
        dirs = [*system, default_data_dir() / tv_folder / "raw"]
    pair = _find_idx_pair(dirs, split)
    root = data_dir if data_dir is not None else default_data_dir()
    if pair is None and download:
        tv = require("torchvision", purpose=f"ib_plugins.data.load_dataset({info.name!r}, download=True)")
        logger.info("downloading %s into %s with torchvision", info.name, root)
        getattr(tv.datasets, tv_class)(root=str(root), train=split == "train", download=True)
        pair = _find_idx_pair([root / tv_folder / "raw"], split)
    if pair is None:
        images, labels = _IDX_FILES[split]
        where = ", ".join(str(d) for d in dirs)
        hint = (
            f" On Debian/Ubuntu, `apt-get install dataset-fashion-mnist` puts them in {_FASHION_MNIST_SYSTEM_DIR}."
            if info.name == "fashion-mnist"
            else ""
        )
        raise FileNotFoundError(
            f"{info.name} ({split} split): expected the IDX files {images} and {labels} (each plain or .gz) "
            f"in one of: {where}; none of these folders holds both.{hint} Otherwise point --data-dir "
            f"(data_dir=...) at a folder holding them, or pass download=True to fetch them with "
            f"torchvision into {root / tv_folder / 'raw'}."
        )
    images_path, labels_path = pair
    logger.debug("loading %s %s split from %s", info.name, split, images_path.parent)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise ValueError(f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {list(images.shape)}")
    if labels.dim() != 1:
        raise ValueError(f"{labels_path}: expected labels [N], got shape {list(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{images_path} / {labels_path}: expected as many labels as images, got {labels.shape[0]} labels "
            f"for {images.shape[0]} images"
        )
    x = _to_unit_float(images.unsqueeze(1))
    _check_images(x, info, str(images_path))
    y = _check_labels(labels, info, str(labels_path))
    return TensorDataset(x, y)


# --------------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------------


def _load_digits(info: DatasetInfo, split: str, data_dir: Path | None, download: bool) -> TensorDataset:
    purpose = "ib_plugins.data.load_dataset('digits')"
    require("sklearn", purpose=purpose)
    sk_datasets = require("sklearn.datasets", purpose=purpose, extra="data")
    images, labels = sk_datasets.load_digits(return_X_y=True)
    x = torch.as_tensor(images, dtype=torch.float32).div_(16.0).reshape(-1, 1, 8, 8)
    y = torch.as_tensor(labels, dtype=torch.int64)
    num, den = _DIGITS_TEST_FRACTION
    n_test = -(-y.numel() * num // den)  # ceil, as scikit-learn's test_size=0.25
    test_idx, train_idx = _stratified_indices(y, n_test, torch.Generator().manual_seed(_DIGITS_SPLIT_SEED))
    idx = train_idx if split == "train" else test_idx
    return TensorDataset(x[idx], y[idx])


# --------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python-pickle batches)
# --------------------------------------------------------------------------------------------------

_CIFAR = {
    # name: (folder, files per split, label key, torchvision class)
    "cifar10": (
        "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "labels",
        "CIFAR10",
    ),
    "cifar100": ("cifar-100-python", {"train": ("train",), "test": ("test",)}, "fine_labels", "CIFAR100"),
}

#: Globals a CIFAR batch may reference: what numpy needs to rebuild an array (numpy 1 and 2 module
#: paths), plus the byte-string helpers that Python 3 pickles of bytes use at low protocols.
_PICKLE_ALLOWED = {
    *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("__builtin__", "bytearray"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals needed to rebuild plain arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            module = "builtins" if module == "__builtin__" else module
            for candidate in dict.fromkeys((module.replace("numpy.core.", "numpy._core.", 1), module)):
                try:
                    return getattr(importlib.import_module(candidate), name)
                except (ImportError, AttributeError):
                    continue
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: CIFAR batches hold only numpy arrays, lists and strings"
        )


def _read_cifar_batch(path: Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    require("numpy", purpose="ib_plugins.data (reading CIFAR batches)", extra="data")
    try:
        with path.open("rb") as fh:
            entry = _ArrayOnlyUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"{path}: not a CIFAR python-pickle batch ({err})") from err
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(entry).__name__}")
    entry = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}
    for key in ("data", label_key):
        if key not in entry:
            raise ValueError(f"{path}: expected the keys 'data' and {label_key!r}, got {sorted(map(str, entry))}")
    data = torch.as_tensor(entry["data"])
    if data.dtype != torch.uint8 or data.dim() != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected 'data' as uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
    labels = torch.as_tensor(list(entry[label_key]), dtype=torch.int64)
    if labels.numel() != data.shape[0]:
        raise ValueError(f"{path}: expected {data.shape[0]} labels in {label_key!r}, got {labels.numel()}")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(info: DatasetInfo, split: str, data_dir: Path | None, download: bool) -> TensorDataset:
    folder_name, files, label_key, tv_class = _CIFAR[info.name]
    root = data_dir if data_dir is not None else default_data_dir()
    candidates = [root / folder_name]
    if root.name == folder_name:
        candidates.append(root)

    def find() -> Path | None:
        for folder in candidates:
            if all((folder / f).is_file() for f in files[split]):
                return folder
        return None

    folder = find()
    if folder is None and download:
        tv = require("torchvision", purpose=f"ib_plugins.data.load_dataset({info.name!r}, download=True)")
        logger.info("downloading %s into %s with torchvision", info.name, root)
        getattr(tv.datasets, tv_class)(root=str(root), train=split == "train", download=True)
        folder = find()
    if folder is None:
        raise FileNotFoundError(
            f"{info.name} ({split} split): expected the python-pickle files {', '.join(files[split])} in the "
            f"folder {candidates[0]}, which {'lacks some of them' if candidates[0].is_dir() else 'does not exist'}. "
            f"Extract the official python-version archive so that {folder_name}/ sits under --data-dir "
            f"(data_dir=..., currently {root}), or pass download=True to fetch it with torchvision."
        )
    parts = [_read_cifar_batch(folder / f, label_key) for f in files[split]]
    x = _to_unit_float(torch.cat([p[0] for p in parts]))
    y = _check_labels(torch.cat([p[1] for p in parts]), info, str(folder))
    return TensorDataset(x, y)


# --------------------------------------------------------------------------------------------------
# SVHN (.mat)
# --------------------------------------------------------------------------------------------------


def _load_svhn(info: DatasetInfo, split: str, data_dir: Path | None, download: bool) -> TensorDataset:
    filename = f"{split}_32x32.mat"
    root = data_dir if data_dir is not None else default_data_dir() / "svhn"
    path = root / filename
    if not path.is_file() and download:
        tv = require("torchvision", purpose="ib_plugins.data.load_dataset('svhn', download=True)")
        logger.info("downloading svhn into %s with torchvision", root)
        tv.datasets.SVHN(root=str(root), split=split, download=True)
    if not path.is_file():
        raise FileNotFoundError(
            f"svhn ({split} split): expected the MATLAB file {filename} in the folder {root}, "
            f"{'which lacks it' if root.is_dir() else 'which does not exist'}. Put the official "
            f"train_32x32.mat / test_32x32.mat there (or point --data-dir / data_dir=... at their folder), "
            f"or pass download=True to fetch them with torchvision."
        )
    sio = require("scipy.io", purpose="ib_plugins.data.load_dataset('svhn')", extra="data")
    try:
        mat = sio.loadmat(str(path))
    except Exception as err:  # scipy raises several unrelated types on malformed files
        raise ValueError(f"{path}: could not read the MATLAB file ({type(err).__name__}: {err})") from err
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: expected the variables 'X' and 'y', got {found}")
    images = torch.as_tensor(mat["X"])
    labels = torch.as_tensor(mat["y"]).reshape(-1).to(torch.int64)
    if images.dim() != 4 or images.shape[2] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"{path}: expected 'X' as uint8 [32, 32, 3, N], got {images.dtype} {list(images.shape)}")
    if labels.numel() != images.shape[3]:
        raise ValueError(f"{path}: expected {images.shape[3]} labels in 'y', got {labels.numel()}")
    x = _to_unit_float(images.permute(3, 2, 0, 1).contiguous())  # [H, W, C, N] -> [N, C, H, W]
    _check_images(x, info, str(path))
    labels = torch.where(labels == 10, torch.zeros_like(labels), labels)  # SVHN stores digit 0 as 10
    return TensorDataset(x, _check_labels(labels, info, str(path)))


# --------------------------------------------------------------------------------------------------
# Tiny ImageNet
# --------------------------------------------------------------------------------------------------


def _tiny_root(root: Path) -> Path:
    """``root`` itself when it looks like ``tiny-imagenet-200/``, else ``root/tiny-imagenet-200``."""
    if root.name != "tiny-imagenet-200" and not (root / "train").is_dir() and not (root / "val").is_dir():
        return root / "tiny-imagenet-200"
    return root


def _read_val_annotations(path: Path) -> list[tuple[str, str]]:
    entries = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise ValueError(f"{path}:{lineno}: expected tab-separated 'filename<TAB>wnid[<TAB>bbox...]', got {line!r}")
        filename, wnid = fields[0].strip(), fields[1].strip()
        for value, what in ((filename, "filename"), (wnid, "wnid")):
            if Path(value).name != value or value in (".", ".."):
                raise ValueError(f"{path}:{lineno}: expected a plain {what} without folders, got {value!r}")
        entries.append((filename, wnid))
    return entries


def _tiny_wnids(base: Path, annotated: set[str] | None = None) -> list[str]:
    wnids_file = base / "wnids.txt"
    if wnids_file.is_file():
        return sorted({w.strip() for w in wnids_file.read_text().splitlines() if w.strip()})
    if (base / "train").is_dir():
        return sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    return sorted(annotated or ())


def prepare_tiny_imagenet_val(root: PathLike) -> Path:
    """Re-folder Tiny ImageNet's validation images by class, as ``ImageFolder`` needs.

    Reads ``val/val_annotations.txt`` (tab separated: filename, wnid, bounding box) and creates
    ``val_classified/<wnid>/<filename>`` beside ``val/``, one folder per wnid of the dataset
    (``wnids.txt`` if present, else the ``train/`` class folders), so that class indices (sorted
    wnids) agree with the training set. Files are hard-linked, or copied where links are not
    possible; ``val/`` is left untouched. Running it again only fills in what is missing.

    Args:
        root: the ``tiny-imagenet-200`` folder, or the folder that contains it.

    Returns:
        The ``val_classified`` folder.

    Raises:
        FileNotFoundError: ``val/val_annotations.txt`` or an image it lists is missing.
        ValueError: a malformed annotation line, or a wnid that is not one of the dataset's.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     try:
        ...         prepare_tiny_imagenet_val(tmp)
        ...     except FileNotFoundError as err:
        ...         print("val_annotations.txt" in str(err))
        True
    """
    base = _tiny_root(Path(root).expanduser())
    annotations = base / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise FileNotFoundError(
            f"tiny-imagenet: expected the validation annotations {annotations} (from the official "
            f"tiny-imagenet-200 archive, with the images in {base / 'val' / 'images'})"
        )
    entries = _read_val_annotations(annotations)
    wnids = _tiny_wnids(base, {w for _, w in entries})
    unknown = sorted({w for _, w in entries} - set(wnids))
    if unknown:
        raise ValueError(
            f"{annotations}: expected wnids listed in {base / 'wnids.txt'} or {base / 'train'}, got unknown "
            f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}"
        )
    out = base / "val_classified"
    for wnid in wnids:
        (out / wnid).mkdir(parents=True, exist_ok=True)
    images = base / "val" / "images"
    created = 0
    for filename, wnid in entries:
        src = images / filename
        if not src.is_file():
            raise FileNotFoundError(f"tiny-imagenet: {annotations} lists {filename}, but {src} does not exist")
        dst = out / wnid / filename
        if dst.is_file() and dst.stat().st_size == src.stat().st_size:
            continue
        tmp = dst.with_name(dst.name + ".partial")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        created += 1
    if created:
        logger.info("tiny-imagenet: placed %d validation images under %s", created, out)
    return out


def _load_tiny_imagenet(info: DatasetInfo, split: str, data_dir: Path | None, download: bool) -> Dataset:
    root = data_dir if data_dir is not None else default_data_dir()
    base = _tiny_root(root)
    needed = base / ("train" if split == "train" else "val")
    if not needed.is_dir() and download:
        tv = require("torchvision", purpose="ib_plugins.data.load_dataset('tiny-imagenet', download=True)")
        target = base.parent
        logger.info("downloading tiny-imagenet into %s", target)
        tv.datasets.utils.download_and_extract_archive(
            _TINY_IMAGENET_URL, download_root=str(target), md5=_TINY_IMAGENET_MD5
        )
    if not needed.is_dir():
        raise FileNotFoundError(
            f"tiny-imagenet ({split} split): expected the folder {needed} (the official tiny-imagenet-200 "
            f"archive: train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt, wnids.txt). "
            f"Extract it so that tiny-imagenet-200/ sits under --data-dir (data_dir=..., currently {root}), "
            f"or pass download=True."
        )
    tv = require("torchvision", purpose="ib_plugins.data.load_dataset('tiny-imagenet')")
    folder = base / "train" if split == "train" else prepare_tiny_imagenet_val(base)
    dataset = tv.datasets.ImageFolder(str(folder), transform=tv.transforms.ToTensor(), allow_empty=True)
    wnids = _tiny_wnids(base)
    if wnids and dataset.classes != wnids:
        raise ValueError(
            f"tiny-imagenet: expected the class folders of {folder} to be the dataset's {len(wnids)} wnids "
            f"({base / 'wnids.txt'}), got {len(dataset.classes)} folders; class indices would disagree "
            f"between train and test"
        )
    return dataset


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
      ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (plain or ``.gz``) in ``data_dir`` or
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


# --------------------------------------------------------------------------------------------------
# Augmentation and loaders
# --------------------------------------------------------------------------------------------------


class RandomCropFlip:
    """Batched RandomCrop(size, padding) + RandomHorizontalFlip in pure torch, with explicit RNG.

    Each image is zero-padded by ``padding`` pixels on every side and cropped back to its size at
    an offset drawn uniformly from ``0 .. 2 * padding`` (torchvision's ``RandomCrop(size,
    padding=padding)``); then, if ``flip``, it is mirrored left-right with probability 1/2
    (``RandomHorizontalFlip()``). Each image gets its own draws. Random numbers come only from the
    ``generator`` passed to the call, or else from the transform's own ``self.generator``
    (``torch.Generator().manual_seed(seed)``): never the global RNG. Draw order per call: row
    offsets ``[B]``, column offsets ``[B]`` (both via ``torch.randint``), then ``torch.rand(B)``
    for the flips. With ``padding=0`` and ``flip=False`` it is the identity and draws nothing.

    Args:
        padding: pixels of zero padding per side (``>= 0``).
        flip: apply random horizontal flips.
        seed: seed of the transform's own generator.

    Shape:
        input ``[B, C, H, W]`` or ``[C, H, W]``, any dtype and device; output has the same shape,
        dtype and device.

    Example:
        >>> aug = RandomCropFlip(padding=4, flip=True)
        >>> x = torch.rand(5, 3, 32, 32)
        >>> g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        >>> aug(x, generator=g1).shape, torch.equal(aug(x, generator=g1.manual_seed(0)), aug(x, generator=g2))
        (torch.Size([5, 3, 32, 32]), True)
    """

    def __init__(self, *, padding: int = 4, flip: bool = True, seed: int = 0) -> None:
        self.padding = _check_int(padding, "padding", minimum=0)
        self.flip = _check_bool(flip, "flip")
        self.generator = torch.Generator().manual_seed(_check_int(seed, "seed"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(padding={self.padding}, flip={self.flip})"

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch (see the class docstring).

        Args:
            x: images ``[B, C, H, W]`` or one image ``[C, H, W]``.
            generator: source of randomness; defaults to ``self.generator``.

        Returns:
            The augmented images, same shape, dtype and device as ``x``.

        Raises:
            TypeError: ``x`` is not a tensor or ``generator`` not a ``torch.Generator``.
            ValueError: ``x`` is not 3- or 4-dimensional.

        Example:
            >>> RandomCropFlip(padding=0, flip=False)(torch.ones(2, 1, 4, 4)).sum().item()
            32.0
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (3, 4):
            raise ValueError(f"x: expected a [B, C, H, W] batch or a [C, H, W] image, got shape {list(x.shape)}")
        if generator is None:
            generator = self.generator
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        if self.padding == 0 and not self.flip:
            return x
        single = x.dim() == 3
        batch = x.unsqueeze(0) if single else x
        b, _, h, w = batch.shape
        out = batch
        if self.padding > 0:
            p = self.padding
            top = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=generator.device).to(x.device)
            left = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=generator.device).to(x.device)
            padded = torch.nn.functional.pad(batch, (p, p, p, p)).permute(0, 2, 3, 1)  # [B, H+2p, W+2p, C]
            rows = top[:, None] + torch.arange(h, device=x.device)  # [B, H]
            cols = left[:, None] + torch.arange(w, device=x.device)  # [B, W]
            bi = torch.arange(b, device=x.device)[:, None, None]
            out = padded[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
        if self.flip:
            mirror = (torch.rand(b, generator=generator, device=generator.device) < 0.5).to(x.device)
            out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
        return out[0] if single else out


def train_transform(name: str, *, seed: int = 0) -> RandomCropFlip:
    """The authors' training augmentation for a dataset, as a batched pure-torch callable.

    ``RandomCrop(size, padding=4)`` + ``RandomHorizontalFlip()`` for cifar10, cifar100, svhn and
    tiny-imagenet (the authors' ``loader.py`` uses it for every dataset it supports, SVHN included);
    the identity for digits, mnist and fashion-mnist. Apply it to ``[0, 1]`` batches after loading
    (``x = aug(x, generator=g)``); test data are never augmented.

    Args:
        name: a name from :func:`list_datasets`.
        seed: seed of the returned transform's own generator (used when the call passes none).

    Returns:
        A :class:`RandomCropFlip` (``padding=0, flip=False`` for the identity).

    Raises:
        ValueError: unknown ``name``.

    Example:
        >>> train_transform("cifar10")
        RandomCropFlip(padding=4, flip=True)
        >>> train_transform("digits")
        RandomCropFlip(padding=0, flip=False)
    """
    key = _canonical_name(name)
    if key in ("cifar10", "cifar100", "svhn", "tiny-imagenet"):
        return RandomCropFlip(padding=4, flip=True, seed=seed)
    return RandomCropFlip(padding=0, flip=False, seed=seed)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader whose shuffling (and worker seeding) uses its own seeded ``torch.Generator``.

    The generator is ``loader.generator``; the global RNG is never touched, so two loaders built
    with the same ``seed`` produce the same batches whatever else the program draws. Each
    ``iter(loader)`` (one epoch) advances the generator, so epochs differ but the sequence is
    reproducible. To resume, save ``state = loader.generator.get_state()`` before an epoch starts
    and later call ``loader.generator.set_state(state)`` before iterating: that epoch's order is
    replayed exactly (skip the batches already done to resume mid-epoch).

    Args:
        dataset: any map-style dataset.
        batch_size: samples per batch (``>= 1``).
        shuffle: reshuffle every epoch (train) or keep the order (test).
        seed: seed of the loader's generator.
        drop_last: drop the last incomplete batch.
        num_workers: worker processes (0 loads in the main process).

    Returns:
        The configured :class:`~torch.utils.data.DataLoader`.

    Raises:
        TypeError: a non-int ``batch_size``/``seed``/``num_workers`` or non-bool flag.
        ValueError: ``batch_size < 1`` or ``num_workers < 0``.

    Example:
        >>> ds = load_dataset("digits", split="test")
        >>> a = [y.tolist() for _, y in make_loader(ds, batch_size=4, shuffle=True, seed=3)][:2]
        >>> _ = torch.manual_seed(123)  # the global RNG does not matter
        >>> b = [y.tolist() for _, y in make_loader(ds, batch_size=4, shuffle=True, seed=3)][:2]
        >>> a == b
        True
    """
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    shuffle = _check_bool(shuffle, "shuffle")
    seed = _check_int(seed, "seed")
    drop_last = _check_bool(drop_last, "drop_last")
    num_workers = _check_int(num_workers, "num_workers", minimum=0)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
    )
