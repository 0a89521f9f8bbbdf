"""Optimisation schedules of a run: the learning-rate scheduler and the EMA weight update (with its warmed-up decay)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins.training.config import TrainConfig, _parse_milestones


def _build_scheduler(optimizer: torch.optim.Optimizer, c: TrainConfig) -> Any:
    """The per-epoch learning-rate scheduler of a resolved config (None for a constant rate)."""
    from torch.optim import lr_scheduler

    warmup = c.warmup_epochs or 0
    main: Any = None
    if c.schedule == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=c.step_size, gamma=c.gamma)
    elif c.schedule == "multistep":
        # SequentialLR restarts the main scheduler's epoch count after the warm-up; milestones count
        # from the start of training.
        milestones = [m - warmup for m in _parse_milestones(c.milestones)]
        main = lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=c.gamma)
    elif c.schedule == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=c.epochs - warmup)
    if not warmup:
        return main
    warm = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    if main is None:
        return warm  # stays at the full rate after the warm-up
    return lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup])


class _WarmupEMA:
    """``multi_avg_fn`` of the EMA: torch's ``get_ema_multi_avg_fn`` with a warmed-up decay.

    After ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))`` (TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so the first, untrained weights fade out of
    a short run's average; float tensors are updated by ``lerp`` as torch's function does, others
    (BatchNorm's ``num_batches_tracked``) by the same weighted sum.

    Example:
        >>> import torch
        >>> avg, cur = [torch.zeros(2)], [torch.ones(2)]
        >>> _WarmupEMA(0.999)(avg, cur, torch.tensor(1))  # decay (1 + 1) / (10 + 1)
        >>> round(float(avg[0][0]), 4)
        0.8182
    """

    def __init__(self, decay: float) -> None:
        self.decay = float(decay)

    def decay_at(self, n_averaged: int) -> float:
        """The decay applied at the update after ``n_averaged`` earlier ones."""
        return min(self.decay, (1.0 + n_averaged) / (10.0 + n_averaged))

    @torch.no_grad()
    def __call__(self, averaged: list[Tensor], current: list[Tensor], n_averaged: Any) -> None:
        decay = self.decay_at(int(n_averaged))
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        else:
            for a, c in zip(averaged, current):
                a.copy_(a * decay + c * (1.0 - decay))


@torch.no_grad()
def _ema_step(ema: Any, model: nn.Module) -> None:
    """``ema.update_parameters(model)`` for an EMA ``AveragedModel`` with ``use_buffers=True``, without host syncs.

    The same update as torch's method (the first call copies, later ones apply ``ema.multi_avg_fn``,
    a :class:`_WarmupEMA`, to the parameters and buffers grouped
    by device and dtype; then ``n_averaged += 1``), but torch's method copies ``n_averaged`` to the
    parameters' device on every call, which synchronises an accelerator's stream once per step, and
    the EMA function does not use it: here it stays on the CPU, where reading it is free.
    """
    averaged = [t.detach() for t in (*ema.module.parameters(), *ema.module.buffers())]
    current = [t.detach() for t in (*model.parameters(), *model.buffers())]
    if len(averaged) != len(current):
        raise ValueError(f"ema: the averaged network has {len(averaged)} tensors, the trained one {len(current)}")
    if int(ema.n_averaged) == 0:  # a CPU counter (the AveragedModel was built without a device)
        for a, c in zip(averaged, current):
            a.copy_(c)
    else:
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
        for a, c in zip(averaged, current):
            pair = groups.setdefault((a.device, a.dtype), ([], []))
            pair[0].append(a)
            pair[1].append(c)
        for a_list, c_list in groups.values():
            ema.multi_avg_fn(a_list, c_list, ema.n_averaged)
    ema.n_averaged += 1
