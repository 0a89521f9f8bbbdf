"""Train-time augmentation and seeded loaders: :class:`RandomCropFlip`, :func:`train_transform`, :func:`make_loader`."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from ib_plugins._validation import _check_int
from ib_plugins.data_registry import _canonical_name, _check_bool

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
        >>> from ib_plugins.data import load_dataset
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
