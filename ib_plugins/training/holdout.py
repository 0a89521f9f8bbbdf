"""The validation split a run holds out of its training set (robust validation)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _dataset_labels(dataset: Any) -> Tensor:
    """The int64 labels of a map-style training set (TensorDataset, Subset, or one with ``targets``)."""
    from torch.utils.data import Subset, TensorDataset

    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].to(torch.int64)
    if isinstance(dataset, Subset):
        return _dataset_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.int64)]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ValueError(
            f"robust_val_every: cannot read the labels of a {type(dataset).__name__} training set to hold out a "
            "stratified validation split"
        )
    return torch.as_tensor(targets, dtype=torch.int64)


#: Offset of the validation split's seed from the run's (the augmentation uses +1, mixup +2).
_VAL_SEED_OFFSET = 3


def _validation_split(dataset: Any, *, size: int | None, seed: int) -> tuple[Any, tuple[Tensor, Tensor], Tensor]:
    """Hold a seeded, class-stratified validation split out of a training set.

    Returns ``(train_set, (x_val, y_val), val_indices)``: the training set without the split (in
    its order, a TensorDataset stays one), the split's tensors, and its indices into ``dataset``.
    """
    from torch.utils.data import Subset, TensorDataset

    from ib_plugins.data_registry import _stratified_indices

    labels = _dataset_labels(dataset)
    n = int(labels.numel())
    if size is None:
        size = min(1000, max(1, n // 10))
    if size >= n:
        raise ValueError(
            f"val_size: expected fewer than the {n} training images (the validation split is held out of "
            f"them and the rest trains), got {size}"
        )
    val_idx, train_idx = _stratified_indices(labels, size, torch.Generator().manual_seed(seed + _VAL_SEED_OFFSET))
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors[0], dataset.tensors[1]
        return TensorDataset(*(t[train_idx] for t in dataset.tensors)), (x[val_idx], y[val_idx]), val_idx
    x_val = torch.stack([torch.as_tensor(dataset[i][0]) for i in val_idx.tolist()])
    return Subset(dataset, train_idx.tolist()), (x_val, labels[val_idx]), val_idx
