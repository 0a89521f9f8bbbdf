"""Training-time attacks: :class:`TrainingAttack` (L∞ PGD in eval mode) and TRADES' :func:`kl_pgd`."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins._context import _eval_mode, _no_record

# ---------------------------------------------------------------------------------------------
# Attacks used during training
# ---------------------------------------------------------------------------------------------


class TrainingAttack:
    """The training-time L∞ PGD: torchattacks' ``PGD`` semantics, run in eval mode, as the authors did.

    The attack is :func:`ib_plugins.attack_engine.pgd` (plain torch, the same steps and random
    start as torchattacks' ``PGD``; torchattacks is not needed). The model's train/eval flags are
    restored afterwards even if the attack raises, and an :class:`~ib_plugins.IBModel` records
    nothing during the attack. Random starts draw from the global RNG, which the :class:`Trainer`
    owns inside a forked RNG.

    Args:
        model: the model being trained.
        eps: L∞ budget.
        alpha: step size.
        steps: iterations.
        random_start: start from a uniform random point in the ε-ball.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).train()
        >>> atk = TrainingAttack(net, eps=0.1, alpha=0.05, steps=2)
        >>> x_adv = atk(torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
        >>> net.training, x_adv.shape
        (True, torch.Size([5, 1, 2, 2]))
    """

    def __init__(self, model: nn.Module, *, eps: float, alpha: float, steps: int, random_start: bool = True) -> None:
        self.model = model
        self.eps, self.alpha, self.steps, self.random_start = eps, alpha, steps, random_start

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Return adversarial examples for ``(x, y)``."""
        from ib_plugins.attack_engine import pgd

        with _eval_mode(self.model), _no_record(self.model):
            return pgd(self.model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps,
                       random_start=self.random_start).detach()


def kl_pgd(
    model: nn.Module, x: Tensor, *, eps: float, alpha: float, steps: int, init_std: float = 0.001
) -> Tensor:
    """TRADES' attack: maximise KL(f(x) || f(x')) by L∞ PGD from ``x + init_std·N(0, 1)``.

    Runs in eval mode (restored afterwards); the noise draws from the global RNG.

    Args:
        model: the model.
        x: clean inputs in [0, 1].
        eps: L∞ budget.
        alpha: step size.
        steps: iterations.
        init_std: standard deviation of the random start.

    Returns:
        Adversarial examples, detached.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x = torch.rand(3, 1, 2, 2)
        >>> bool((kl_pgd(net, x, eps=0.1, alpha=0.05, steps=3) - x).abs().max() <= 0.1 + 1e-6)
        True
    """
    with _eval_mode(model), _no_record(model):
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
        x_adv = (x.detach() + init_std * torch.randn_like(x)).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                loss = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()
