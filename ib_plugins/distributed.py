"""Helpers for multi-process training with PyTorch's own distributed engine (``torchrun``).

The trainer reads the ``torchrun`` environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), wraps the
network in :class:`~torch.nn.parallel.DistributedDataParallel`, shards the data with a
:class:`~torch.utils.data.distributed.DistributedSampler`, writes checkpoints and logs on rank 0 only,
and reduces its metrics across ranks.

By default each rank estimates HSIC on its local batch. With ``ib_global_batch`` the activations
(with gradients), inputs and labels are gathered from every rank first, so the estimate equals the
single-process one on the global batch. The gradient is then exact as well: every rank computes the
same global IB term, autograd's all-gather sums the incoming gradients of each rank's slice, and
DDP's averaging divides by the world size again.

Example:
    >>> world_info()
    (0, 1)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["env_world_size", "is_distributed", "world_info", "gather_batch", "all_reduce_sum"]


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when unset).

    Returns:
        The number of processes the launcher started.

    Example:
        >>> env_world_size() >= 1
        True
    """
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ValueError(f"WORLD_SIZE: expected an integer, got {os.environ.get('WORLD_SIZE')!r}") from None


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised.

    Returns:
        True inside a multi-process run.

    Example:
        >>> is_distributed()
        False
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the current process group, ``(0, 1)`` without one.

    Returns:
        The rank and the world size.

    Example:
        >>> world_info()
        (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_batch(tensors: Sequence[Tensor], *, with_grad: Sequence[bool]) -> list[Tensor]:
    """Concatenate each tensor over all ranks along the batch dimension (rank order).

    Args:
        tensors: per-rank batches; each must have the same shape on every rank.
        with_grad: per tensor, whether gradients flow back through the gather (activations) or not
            (inputs, labels).

    Returns:
        The global batches.

    Raises:
        RuntimeError: no process group is initialised.

    Example:
        >>> try:
        ...     gather_batch([torch.zeros(2)], with_grad=[False])
        ... except RuntimeError as err:
        ...     print(str(err).split(";")[0])
        ib_global_batch needs an initialised torch.distributed process group
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "ib_global_batch needs an initialised torch.distributed process group; launch with "
            "`torchrun --nproc_per_node=N ib-plugins train ...` or call torch.distributed.init_process_group first"
        )
    world = dist.get_world_size()
    out = []
    for t, grad in zip(tensors, with_grad):
        if world == 1:
            out.append(t)
            continue
        if grad:
            from torch.distributed.nn.functional import all_gather

            with warnings.catch_warnings():  # deprecated in favour of a private API; still the autograd-aware gather
                warnings.simplefilter("ignore", FutureWarning)
                parts = all_gather(t.contiguous())
        else:
            parts = [torch.empty_like(t) for _ in range(world)]
            dist.all_gather(parts, t.detach().contiguous())
        out.append(torch.cat(list(parts), dim=0))
    return out


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum a tensor over ranks (a no-op without a process group).

    Args:
        values: the local values.

    Returns:
        The summed tensor (a new tensor; the input is not modified).

    Example:
        >>> all_reduce_sum(torch.tensor([1.0, 2.0]))
        tensor([1., 2.])
    """
    out = values.clone()
    if is_distributed():
        if dist.get_backend() == "nccl" and out.device.type != "cuda":  # NCCL reduces CUDA tensors only
            on_gpu = out.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            return on_gpu.to(values.device)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
