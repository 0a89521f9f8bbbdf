"""AutoAttack's upstream API on top of pyautoattack: :class:`AutoAttackCompat`, side-effect free."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._context import _module_device, _untouched_grads_and_rngs
from ib_plugins._optional import require

_PURPOSE = "ib_plugins.adapters.autoattack_eval"
#: Sub-attack attributes of an AutoAttack object that ``attack_options`` may tune.
_SUB_ATTACKS: tuple[str, ...] = ("apgd", "apgd_targeted", "fab", "square")
#: Sub-attack attributes that count iterations, restarts, queries or target classes: int >= 1.
#: AutoAttack loops ``range(n)`` over them, so 0 silently skips an attack and a negative or float
#: value fails (or allocates ``[n, batch]`` buffers) only in the middle of the evaluation.
_COUNT_ATTRS: tuple[str, ...] = ("n_iter", "n_restarts", "n_queries", "n_target_classes", "eot_iter")

# --------------------------------------------------------------------------------------------------
# The upstream API on top of pyautoattack
# --------------------------------------------------------------------------------------------------


def _cuda_devices(dev: torch.device | None) -> list[int]:
    if dev is not None and dev.type == "cuda":
        return [dev.index if dev.index is not None else torch.cuda.current_device()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


def _floating_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter (or buffer); None when it has none."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


class _Float32Logits(nn.Module):
    """AutoAttack's view of a model whose parameters are not float32.

    AutoAttack casts its inputs to float32 (``x.float()`` in APGD, FAB and Square) and writes float32
    adversarial examples into its buffers, so a float64 (or half-precision) model fails inside it
    with a dtype mismatch. This module runs the model in its own dtype on those inputs and hands
    float32 logits back; gradients flow through both casts.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.training = False  # the wrapped model's modes are managed by _inference_modes

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.to(self.dtype)).float()


class AutoAttackCompat:
    """The original AutoAttack API (fra31/auto-attack) implemented with pyautoattack.

    RobustBench 1.1.1 and much published code call ``AutoAttack(model, norm=..., eps=...,
    version=..., attacks_to_run=[...], device=..., log_path=..., verbose=...)`` and
    ``run_standard_evaluation(x, y, bs=...)`` returning ``x_adv``; pyautoattack 0.2.0 renamed
    ``attacks_to_run`` to ``attacks`` and ``bs`` to ``batch_size``, dropped ``log_path``/``verbose``
    and returns ``(x_adv, y_adv)``. This class maps one onto the other:

    * ``attacks_to_run`` → ``attacks`` (only with ``version="custom"``, as upstream);
    * ``bs`` → ``batch_size``; ``return_labels=True`` returns ``(x_adv, y_adv)``;
    * ``log_path`` is ignored (pyautoattack logs to the ``"auto-attack"`` logger), ``verbose``
      switches that logging;
    * ``state_path`` raises: AutoAttack's resume is broken in pyautoattack 0.2.0 (use
      :func:`run_autoattack` with ``state_dir``);
    * the global RNGs are left unchanged (upstream reseeds torch's), and so are a module's
      parameters' ``.grad`` (None included) and ``requires_grad`` (FAB's ``backward()`` would write
      into the weights' gradients).

    Attributes other than these (``apgd``, ``fab``, ``square``, ``apgd_targeted``,
    ``attacks_to_run``, ``seed``...) are read from and written to the pyautoattack object.

    Args:
        model: the classifier (inputs in ``[0, 1]``, logits out).
        norm: ``"Linf"``, ``"L2"`` or ``"L1"``.
        eps: the radius.
        seed: the attacks' seed (None: time-based, as upstream).
        verbose: log progress to the ``"auto-attack"`` logger.
        attacks_to_run: attack names for ``version="custom"``.
        version: ``"standard"``, ``"plus"``, ``"rand"`` or ``"custom"``.
        is_tf_model: must be False (pyautoattack's PyTorch path only).
        device: where the attacks run; None = the model's device (upstream's default is ``"cuda"``).
        log_path: ignored.

    Raises:
        MissingOptionalDependencyError: pyautoattack is not installed.
        ValueError: ``attacks_to_run`` with a version other than ``"custom"``, or ``is_tf_model``.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> adv = AutoAttackCompat(net, norm="Linf", eps=0.1, version="custom", attacks_to_run=["apgd-ce"],
        ...                        seed=0, log_path="ignored.log", verbose=False)
        >>> adv.apgd.n_iter = 3
        >>> x_adv = adv.run_standard_evaluation(torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), bs=2)
        >>> x_adv.shape
        torch.Size([2, 1, 2, 2])
    """

    _OWN = frozenset({"_aa", "log_path", "is_tf_model"})

    def __init__(
        self,
        model: nn.Module,
        norm: str = "Linf",
        eps: float = 0.3,
        seed: int | float | None = None,
        verbose: bool = True,
        attacks_to_run: Sequence[str] = (),
        version: str = "standard",
        is_tf_model: bool = False,
        device: torch.device | str | None = None,
        log_path: str | None = None,
    ) -> None:
        if is_tf_model:
            raise ValueError("is_tf_model: pyautoattack evaluates PyTorch models only, got is_tf_model=True")
        pyaa = require("pyautoattack", purpose=_PURPOSE)
        attacks = list(attacks_to_run) if attacks_to_run else None
        if version != "custom" and attacks:
            raise ValueError("attacks_to_run will be overridden unless you use version='custom'")
        if device is None:
            device = _module_device(model) or torch.device("cpu")
        object.__setattr__(self, "log_path", log_path)
        object.__setattr__(self, "is_tf_model", False)
        aa = pyaa.AutoAttack(model, attacks=attacks, device=device, eps=eps, norm=norm, seed=seed, version=version)
        aa.verbose = bool(verbose)
        object.__setattr__(self, "_aa", aa)

    def __getattr__(self, name: str) -> Any:
        if name == "_aa":  # during unpickling / before __init__
            raise AttributeError(name)
        return getattr(self._aa, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._aa, name, value)

    def _device(self) -> torch.device | None:
        try:
            return torch.device(self._aa.device)
        except (TypeError, RuntimeError):
            return None

    @contextlib.contextmanager
    def _untouched(self) -> Iterator[None]:
        """The global RNGs and, for a module, its parameters' gradients and flags, given back on exit."""
        model = getattr(self._aa, "model", None)
        if not isinstance(model, nn.Module):  # a plain callable: no parameters, the RNGs only
            model = nn.Module()
        with _untouched_grads_and_rngs(model), torch.random.fork_rng(devices=_cuda_devices(self._device())):
            yield

    def run_standard_evaluation(
        self, x_orig: Tensor, y_orig: Tensor, bs: int = 250, return_labels: bool = False, state_path: Any = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Run the configured attacks (worst case over them), upstream signature.

        Args:
            x_orig: inputs in ``[0, 1]``.
            y_orig: labels.
            bs: batch size.
            return_labels: also return the predicted labels of the adversarial examples.
            state_path: must be None (see the class docstring).

        Returns:
            ``x_adv``, or ``(x_adv, y_adv)`` with ``return_labels``.

        Raises:
            ValueError: ``state_path`` was given, or an iteration count of a sub-attack
                (``apgd.n_iter``, ``square.n_queries``, ...) is below 1 (checked before any attack
                runs).
            TypeError: such a count is not an int.
        """
        if state_path is not None:
            raise ValueError(
                "state_path: AutoAttack state files cannot be resumed with pyautoattack 0.2.0 (the set of "
                "attacks is saved as a string) and robustbench 1.1.1's aa_state_path branch crashes on a "
                "bool tensor; use ib_plugins.adapters.autoattack_eval.run_autoattack(..., state_dir=...)"
            )
        _check_sub_attack_counts(self._aa)
        with self._untouched():
            x_adv, y_adv = self._aa.run_standard_evaluation(x_orig, y_orig, batch_size=int(bs))
        return (x_adv, y_adv) if return_labels else x_adv

    def run_standard_evaluation_individual(
        self, x_orig: Tensor, y_orig: Tensor, bs: int = 250, return_labels: bool = False
    ) -> dict[str, Any]:
        """Run each attack on its own, upstream signature.

        Args:
            x_orig: inputs in ``[0, 1]``.
            y_orig: labels.
            bs: batch size.
            return_labels: map to ``(x_adv, y_adv)`` instead of ``x_adv``.

        Returns:
            ``{attack: x_adv}`` or ``{attack: (x_adv, y_adv)}``.

        Raises:
            ValueError: an iteration count of a sub-attack is below 1 (checked before any attack runs).
            TypeError: such a count is not an int.
        """
        _check_sub_attack_counts(self._aa)
        with self._untouched():
            adv = self._aa.run_standard_evaluation_individual(x_orig, y_orig, batch_size=int(bs))
        return {k: (v if return_labels else v[0]) for k, v in adv.items()}

    def clean_accuracy(self, x_orig: Tensor, y_orig: Tensor, bs: int = 250) -> float:
        """Accuracy on ``(x_orig, y_orig)``, upstream signature.

        Args:
            x_orig: inputs.
            y_orig: labels.
            bs: batch size.

        Returns:
            The accuracy in ``[0, 1]``.
        """
        return float(self._aa.clean_accuracy(x_orig, y_orig, bs=int(bs)))

    def set_version(self, version: str = "standard") -> None:
        """Switch to one of the predefined versions, upstream name.

        Args:
            version: ``"standard"``, ``"plus"`` or ``"rand"``.
        """
        self._aa.version = version
        self._aa._set_version(version)


def _check_count(value: object, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg}: expected an int >= 1 (a count of iterations), got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{arg}: expected an int >= 1 (a count of iterations), got {value}")
    return value


def _check_sub_attack_counts(aa: Any) -> None:
    """Refuse non-positive iteration counts set on an adversary's sub-attacks, before anything runs."""
    for name in _SUB_ATTACKS:
        sub = getattr(aa, name, None)
        for attr in _COUNT_ATTRS:
            if sub is not None and hasattr(sub, attr):
                _check_count(getattr(sub, attr), f"{name}.{attr}")
