"""Machinery the adaptive attacks share: the margin loss, EOT (:class:`EOTModel`) and :func:`is_deterministic`."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins._context import _inference_modes

# --------------------------------------------------------------------------------------------------
# Losses, EOT, determinism
# --------------------------------------------------------------------------------------------------


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """The corrected CW margin ``max_{j≠y} z_j − z_y`` per sample (> 0 means misclassified).

    The true class is masked with ``−inf`` before the max. torchattacks' CW takes
    ``max((1 − onehot)·z)`` instead, which sees a 0 in the true-class slot: with all-negative
    outputs (log-probabilities) its "other" logit is 0 and the margin is stuck.

    Args:
        logits: ``[N, C]`` scores.
        y: class indices ``[N]``.

    Returns:
        ``[N]`` margins.

    Example:
        >>> import torch
        >>> logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0]]), dim=1)
        >>> y = torch.tensor([0])
        >>> round(float(margin_loss(logp, y)), 4)  # -(2 - 1)
        -1.0
        >>> buggy_other = ((1 - torch.eye(3)[y]) * logp).max(1).values  # torchattacks' CW
        >>> float(buggy_other) == 0.0  # the masked true-class slot wins
        True
    """
    onehot = F.one_hot(y, logits.shape[1]).bool()
    real = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    other = logits.masked_fill(onehot, float("-inf")).amax(dim=1)
    return other - real


class EOTModel(nn.Module):
    """Expectation over transformation: average a stochastic model's outputs over several forwards.

    The gradient of the averaged output is the average of the per-draw gradients, so any attack
    (torchattacks included) run against this wrapper is an EOT attack. Use it for stochastic
    inference (the VIB head's ``eval_mode="sample_average"``, a channel mask kept at inference,
    dropout left on) and for predictions on such models.

    Args:
        model: the stochastic classifier.
        eot_samples: forwards averaged per call (≥ 1).
        average: ``"logits"`` (mean of the outputs) or ``"probs"`` (log of the mean softmax).

    Raises:
        ValueError: bad ``eot_samples`` or ``average``.
        TypeError: ``model`` is not a module.

    Example:
        >>> import torch, torch.nn as nn
        >>> noisy = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()  # stochastic
        >>> eot = EOTModel(noisy, eot_samples=64)
        >>> eot(torch.rand(2, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, model: nn.Module, *, eot_samples: int = 8, average: str = "logits") -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if isinstance(eot_samples, bool) or not isinstance(eot_samples, int) or eot_samples < 1:
            raise ValueError(f"eot_samples: expected an int >= 1, got {eot_samples!r}")
        if average not in ("logits", "probs"):
            raise ValueError(f"average: expected 'logits' or 'probs', got {average!r}")
        self.model = model
        self.eot_samples = eot_samples
        self.average = average

    def forward(self, x: Tensor) -> Tensor:
        """Average ``eot_samples`` forwards of the wrapped model.

        Args:
            x: the inputs.

        Returns:
            ``[N, C]`` averaged logits (or log mean probabilities).

        Example:
            >>> import torch, torch.nn as nn
            >>> lin = nn.Linear(2, 2)
            >>> x = torch.rand(3, 2)
            >>> torch.allclose(EOTModel(lin, eot_samples=3)(x), lin(x))
            True
        """
        outs = torch.stack([self.model(x) for _ in range(self.eot_samples)])
        if self.average == "logits":
            return outs.mean(dim=0)
        return torch.logsumexp(F.log_softmax(outs, dim=-1), dim=0) - math.log(self.eot_samples)

    def extra_repr(self) -> str:
        return f"eot_samples={self.eot_samples}, average={self.average!r}"


def is_deterministic(model: nn.Module, x: Tensor, *, trials: int = 3, atol: float = 0.0) -> bool:
    """Whether the model's eval-mode forward gives the same output on repeated calls.

    Runs ``trials`` no-grad eval forwards of ``x`` inside a forked RNG (the caller's RNG state is
    unchanged) and compares them. Modes are restored and IBModel recording is paused.

    Args:
        model: the classifier.
        x: a batch of inputs on the model's device.
        trials: number of forwards (≥ 2).
        atol: tolerated absolute difference.

    Returns:
        True when every forward matches the first within ``atol``.

    Raises:
        ValueError: ``trials < 2``.

    Example:
        >>> import torch, torch.nn as nn
        >>> is_deterministic(nn.Linear(3, 2), torch.rand(4, 3))
        True
        >>> class Noisy(nn.Module):
        ...     def forward(self, x):
        ...         return x + torch.randn_like(x)
        >>> is_deterministic(Noisy(), torch.rand(4, 3))
        False
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 2:
        raise ValueError(f"trials: expected an int >= 2, got {trials!r}")
    from ib_plugins._context import _module_device

    dev = _module_device(model) or x.device
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with _inference_modes(model), torch.random.fork_rng(devices=cuda), torch.no_grad():
        first = model(x.to(dev))
        for _ in range(trials - 1):
            if not torch.allclose(model(x.to(dev)), first, rtol=0.0, atol=atol, equal_nan=True):
                return False
    return True
