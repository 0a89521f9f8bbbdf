"""AutoAttack evaluation of any classifier, with progress, resumable batches and no side effects.

:func:`run_autoattack` runs AutoAttack (Croce & Hein, 2020) on ``(x, y)`` one chunk of
``batch_size`` examples at a time:

* engine: ``pyautoattack`` (PyPI); when it is not installed, the original ``autoattack`` package
  (github.com/fra31/auto-attack, module ``autoattack``) is used through its keyword API. Nothing is
  written to ``sys.modules``;
* the global torch RNG is forked (``torch.random.fork_rng``): AutoAttack's sub-attacks call
  ``torch.random.manual_seed(seed)``, which would otherwise reseed the caller's training loop;
  Python's ``random`` and numpy's global generator (when numpy is imported) are given back too;
* every module's train/eval flag is restored in a ``finally`` block (the attack runs in eval mode)
  and every :class:`~ib_plugins.wrap.IBModel` inside the model stops recording;
* every parameter's ``.grad`` (None included) and ``requires_grad`` are given back: FAB and FAB-T
  call ``loss.backward()``, which would otherwise write into the weights' gradients (an evaluation
  between ``loss.backward()`` and ``optimizer.step()`` would corrupt the update);
* a tqdm bar counts the finished chunks (``progress=True``);
* with ``state_dir``, every finished chunk leaves one small JSON file (its robust flags, its index
  and a fingerprint of model, eps, norm, version, seed, attacks and the chunk's data). A second call
  with the same arguments reuses the chunks whose fingerprint matches, so an interrupted evaluation
  resumes where it stopped. AutoAttack's own ``state_path`` is never used: its resume is broken in
  pyautoattack 0.2.0 and upstream (the set of attacks is stored as a string).

Each chunk is one independent AutoAttack run (fresh adversary, same seed), so the result equals a
direct ``AutoAttack(...).run_standard_evaluation(x, y, batch_size=batch_size)`` whenever AutoAttack
would form the same batches, in particular when ``batch_size >= len(x)``.

:class:`AutoAttackCompat` gives the upstream API (``attacks_to_run=``, ``bs=``, ``log_path=``,
``verbose=``, returns ``x_adv``) on top of pyautoattack; :mod:`ib_plugins.adapters.robustbench_eval`
uses it to run ``robustbench.eval.benchmark``.

Example:
    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> res = run_autoattack(net, x, y, eps=0.05, version="custom", attacks=["apgd-ce"],
    ...                      attack_options={"apgd": {"n_iter": 5, "n_restarts": 1}}, progress=False)
    >>> res.n, res.robust_accuracy <= res.clean_accuracy
    (4, True)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._context import _inference_modes, _module_device, _resolve_device, _untouched_grads_and_rngs
from ib_plugins._optional import is_available, require
from ib_plugins._types import PathLike
from ib_plugins._validation import _check_int
from ib_plugins.errors import MissingOptionalDependencyError

__all__ = [
    "NORMS",
    "VERSIONS",
    "ATTACKS",
    "AutoAttackResult",
    "AutoAttackCompat",
    "run_autoattack",
    "model_fingerprint",
]

logger = logging.getLogger(__name__)

_PURPOSE = "ib_plugins.adapters.autoattack_eval"

#: Norms AutoAttack supports.
NORMS: tuple[str, ...] = ("Linf", "L2", "L1")
#: AutoAttack versions (``"custom"`` needs ``attacks=``).
VERSIONS: tuple[str, ...] = ("standard", "plus", "rand", "custom")
#: Attack names usable with ``version="custom"``.
ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
#: Sub-attack attributes of an AutoAttack object that ``attack_options`` may tune.
_SUB_ATTACKS: tuple[str, ...] = ("apgd", "apgd_targeted", "fab", "square")

_STATE_FORMAT = 1

#: Sub-attack attributes that count iterations, restarts, queries or target classes: int >= 1.
#: AutoAttack loops ``range(n)`` over them, so 0 silently skips an attack and a negative or float
#: value fails (or allocates ``[n, batch]`` buffers) only in the middle of the evaluation.
_COUNT_ATTRS: tuple[str, ...] = ("n_iter", "n_restarts", "n_queries", "n_target_classes", "eot_iter")


# --------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoAttackResult:
    """The outcome of :func:`run_autoattack`.

    Attributes:
        clean_accuracy: share of examples classified correctly without attack.
        robust_accuracy: share classified correctly after AutoAttack (RobustBench's metric).
        robust_flags: bool ``[n]`` (CPU), True where the example survived every attack.
        clean_flags: bool ``[n]`` (CPU), True where the clean example is classified correctly.
        n: number of examples.
        eps: the perturbation radius.
        norm: ``"Linf"``, ``"L2"`` or ``"L1"``.
        version: the AutoAttack version.
        seed: the attacks' seed.
        attacks: the attacks that were run, in order.
        batch_size: examples per chunk.
        backend: ``"pyautoattack"`` or ``"autoattack"`` (the original package).
        wall_time_s: seconds the call took (reused chunks included, at their reading cost).
        chunks_run: chunks attacked in this call.
        chunks_reused: chunks read back from ``state_dir``.
        checks: AutoAttack's warnings (randomised/dynamic defence, probabilities as outputs...),
            de-duplicated.
        attack_options: the sub-attack settings that were applied (``attack_options`` argument).

    Example:
        >>> r = AutoAttackResult(0.5, 0.25, torch.tensor([True, False, False, False]),
        ...                      torch.tensor([True, True, False, False]), 4, 0.03, "Linf", "standard", 0)
        >>> r.to_dict()["robust_accuracy"], r.to_dict()["robust_flags"]
        (0.25, [True, False, False, False])
    """

    clean_accuracy: float
    robust_accuracy: float
    robust_flags: Tensor = field(repr=False)
    clean_flags: Tensor = field(repr=False)
    n: int
    eps: float
    norm: str
    version: str
    seed: int
    attacks: tuple[str, ...] = ()
    batch_size: int = 0
    backend: str = "pyautoattack"
    wall_time_s: float = 0.0
    chunks_run: int = 0
    chunks_reused: int = 0
    checks: tuple[str, ...] = ()
    attack_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (flags as lists of bools).

        Returns:
            A dict of plain Python values.

        Example:
            >>> import json
            >>> r = AutoAttackResult(1.0, 1.0, torch.ones(1, dtype=torch.bool), torch.ones(1, dtype=torch.bool),
            ...                      1, 0.1, "L2", "custom", 3, ("apgd-ce",))
            >>> sorted(json.loads(json.dumps(r.to_dict())))[:4]
            ['attack_options', 'attacks', 'backend', 'batch_size']
        """
        return {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "n": self.n,
            "eps": self.eps,
            "norm": self.norm,
            "version": self.version,
            "seed": self.seed,
            "attacks": list(self.attacks),
            "batch_size": self.batch_size,
            "backend": self.backend,
            "wall_time_s": self.wall_time_s,
            "chunks_run": self.chunks_run,
            "chunks_reused": self.chunks_reused,
            "checks": list(self.checks),
            "attack_options": {k: dict(v) for k, v in self.attack_options.items()},
            "robust_flags": [bool(v) for v in self.robust_flags.tolist()],
            "clean_flags": [bool(v) for v in self.clean_flags.tolist()],
        }


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


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------


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


def _check_choice(value: object, arg: str, valid: Sequence[str]) -> str:
    if isinstance(value, str):
        for v in valid:
            if value == v or value.lower() == v.lower():
                return v
    raise ValueError(f"{arg}: expected one of {', '.join(map(repr, valid))}, got {value!r}")


def _check_eps(eps: object, norm: str) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps: expected a positive float, got {type(eps).__name__}")
    eps = float(eps)
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps: expected a finite radius > 0, got {eps!r}")
    if norm == "Linf" and eps > 1:
        raise ValueError(f"eps: expected an L-inf radius <= 1 for inputs in [0, 1], got {eps!r}")
    return eps


def _check_xy(x: object, y: object) -> tuple[Tensor, Tensor]:
    from ib_plugins._validation import _check_xy as check

    return check(x, y, reason="AutoAttack's eps ball and clipping assume it")


def _check_attack_options(options: object) -> dict[str, dict[str, Any]]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"attack_options: expected a mapping like {{'apgd': {{'n_iter': 10}}}}, got {type(options).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for key, values in options.items():
        if key not in _SUB_ATTACKS:
            raise ValueError(f"attack_options: expected keys among {', '.join(map(repr, _SUB_ATTACKS))}, got {key!r}")
        if not isinstance(values, Mapping):
            raise TypeError(f"attack_options[{key!r}]: expected a mapping of attribute -> value, got {type(values).__name__}")
        for attr, v in values.items():
            if not isinstance(attr, str) or attr.startswith("_"):
                raise ValueError(f"attack_options[{key!r}]: expected public attribute names, got {attr!r}")
            try:
                json.dumps(v)
            except TypeError as err:
                raise TypeError(f"attack_options[{key!r}][{attr!r}]: expected a JSON value, got {type(v).__name__}") from err
            if attr in _COUNT_ATTRS:
                _check_count(v, f"attack_options[{key!r}][{attr!r}]")
        out[str(key)] = dict(values)
    return out


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------


def _is_upstream_api(module: ModuleType) -> bool:
    """Whether ``module.AutoAttack`` has the fra31 keyword API (``attacks_to_run``/``log_path``)."""
    cls = getattr(module, "AutoAttack", None)
    if cls is None:
        return False
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False
    return "attacks_to_run" in params or "log_path" in params


def _select_backend(backend: str) -> tuple[str, ModuleType]:
    backend = _check_choice(backend, "backend", ("auto", "pyautoattack", "autoattack"))
    if backend == "auto":
        if is_available("pyautoattack"):
            backend = "pyautoattack"
        elif is_available("autoattack"):
            backend = "autoattack"
        else:
            raise MissingOptionalDependencyError(
                f"{_PURPOSE} needs AutoAttack: neither the module 'pyautoattack' (PyPI) nor 'autoattack' "
                "(github.com/fra31/auto-attack) can be imported. Install it with: pip install 'ib-plugins[autoattack]'"
            )
    module = require(backend, purpose=_PURPOSE)
    return backend, module


def _make_adversary(
    module: ModuleType,
    model: nn.Module,
    *,
    norm: str,
    eps: float,
    version: str,
    seed: int,
    attacks: list[str] | None,
    dev: torch.device,
    options: Mapping[str, Mapping[str, Any]],
) -> tuple[Any, bool]:
    """Build one adversary; returns it and whether it has the upstream API."""
    upstream = _is_upstream_api(module)
    if upstream:
        aa = module.AutoAttack(
            model, norm=norm, eps=eps, seed=seed, verbose=False, attacks_to_run=list(attacks or []),
            version=version, device=dev, log_path=None,
        )
    else:
        aa = module.AutoAttack(model, attacks=attacks, device=dev, eps=eps, norm=norm, seed=seed, version=version)
        aa.verbose = True  # messages go to the "auto-attack" logger at DEBUG level
    for name, values in options.items():
        sub = getattr(aa, name, None)
        if sub is None:
            raise ValueError(f"attack_options: this AutoAttack has no sub-attack {name!r}")
        for attr, v in values.items():
            if not hasattr(sub, attr):
                raise ValueError(
                    f"attack_options[{name!r}]: {type(sub).__name__} has no attribute {attr!r}"
                )
            setattr(sub, attr, v)
    return aa, upstream


class _CheckCollector(logging.Handler):
    """Collects AutoAttack's warnings (checks.py) for the result."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg not in self.messages:
            self.messages.append(msg)


@contextlib.contextmanager
def _collect_checks() -> Iterator[_CheckCollector]:
    handler = _CheckCollector()
    aa_logger = logging.getLogger("auto-attack")
    aa_logger.addHandler(handler)
    try:
        yield handler
    finally:
        aa_logger.removeHandler(handler)


@contextlib.contextmanager
def _fresh_dynamic_check(backend_module: ModuleType) -> Iterator[None]:
    """Zero AutoAttack's ``check_dynamic`` call counters for one run, then put the old values back.

    The counters (``checks.funcs``) are module-global and never reset, so one flagged model would
    make every later model of the process look "dynamic" (pitfall 18).
    """
    try:
        checks = importlib.import_module(f"{backend_module.__name__}.checks")
    except ImportError:
        checks = None
    counters = getattr(checks, "funcs", None)
    if not isinstance(counters, dict):
        yield
        return
    saved = dict(counters)
    for key in counters:
        counters[key] = 0
    try:
        yield
    finally:
        counters.clear()
        counters.update(saved)


# --------------------------------------------------------------------------------------------------
# Fingerprints and the per-chunk state files
# --------------------------------------------------------------------------------------------------


def _tensor_bytes(t: Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    if t.numel() == 0:
        return b""
    return t.view(torch.uint8).numpy().tobytes()


def _hash_tensors(h: Any, *tensors: Tensor) -> None:
    for t in tensors:
        h.update(f"{t.dtype}|{list(t.shape)}|".encode())
        h.update(_tensor_bytes(t))


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's ``state_dict`` (names, dtypes, shapes and values).

    Args:
        model: any module.

    Returns:
        A hex digest; equal for models with equal weights and buffers.

    Example:
        >>> import torch.nn as nn
        >>> a = nn.Linear(2, 2); b = nn.Linear(2, 2); b.load_state_dict(a.state_dict())
        <All keys matched successfully>
        >>> model_fingerprint(a) == model_fingerprint(b), len(model_fingerprint(a))
        (True, 64)
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        if isinstance(t, Tensor):
            _hash_tensors(h, t)
        else:
            h.update(repr(t).encode())
    return h.hexdigest()


def _chunk_fingerprint(base: Mapping[str, Any], index: int, start: int, stop: int, xb: Tensor, yb: Tensor) -> str:
    h = hashlib.sha256()
    _hash_tensors(h, xb, yb)
    payload = {**base, "chunk": index, "start": start, "stop": stop, "data": h.hexdigest()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _chunk_path(state_dir: Path, index: int) -> Path:
    return state_dir / f"chunk_{index:06d}.json"


def _read_chunk(path: Path, fingerprint: str, size: int) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("ignoring unreadable AutoAttack chunk file %s", path)
        return None
    if not isinstance(data, dict):
        logger.warning(
            "ignoring AutoAttack chunk file %s: expected a JSON object, got %s; attacking the chunk again",
            path, "null" if data is None else type(data).__name__,
        )
        return None
    flags = data.get("robust")
    if data.get("fingerprint") != fingerprint:
        logger.info("chunk file %s belongs to another evaluation; attacking the chunk again", path)
        return None
    if not isinstance(flags, list) or len(flags) != size or not all(
        isinstance(v, (bool, int)) and v in (0, 1) for v in flags
    ):
        logger.warning(
            "ignoring AutoAttack chunk file %s: expected 'robust' to be a list of %d flags (0/1), got %s; "
            "attacking the chunk again", path, size, _describe(flags),
        )
        return None
    return torch.tensor([bool(v) for v in flags], dtype=torch.bool)


def _describe(value: object) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return "null" if value is None else type(value).__name__


def _write_chunk(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# The evaluation
# --------------------------------------------------------------------------------------------------


def _predict(model: nn.Module, xb: Tensor) -> Tensor:
    with torch.no_grad():
        out = model(xb)
    if not isinstance(out, Tensor) or out.dim() != 2:
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(f"model: expected the forward to return logits [N, num_classes], got {shape}")
    return out


def _progress(total: int, enabled: bool) -> Any:
    """A bar named AutoAttack over the chunks: tqdm on a terminal, plain lines elsewhere (None: off)."""
    if enabled:
        from ib_plugins._progress import progress_bar

        return progress_bar(total=total, desc="AutoAttack", unit="batch")
    return None


def run_autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: Literal["Linf", "L2", "L1"] = "Linf",
    eps: float = 8 / 255,
    version: Literal["standard", "plus", "rand", "custom"] = "standard",
    batch_size: int = 250,
    seed: int = 0,
    attacks: Sequence[str] | None = None,
    device: torch.device | str | None = None,
    state_dir: PathLike | None = None,
    progress: bool = True,
    model_name: str | None = None,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    backend: Literal["auto", "pyautoattack", "autoattack"] = "auto",
    shard: bool | None = None,
) -> AutoAttackResult:
    """Clean and AutoAttack robust accuracy of ``model`` on ``(x, y)``, chunk by chunk.

    Inside an initialised ``torch.distributed`` process group with several ranks (``torchrun
    --nproc_per_node=N``), every rank passes the same ``(x, y)``; rank ``r`` attacks chunks
    ``r, r + N, ...`` and the flags are summed over ranks, so every rank returns exactly the
    single-process result (each chunk is an independent AutoAttack run seeded with ``seed``).

    The model runs in eval mode (restored afterwards); it must already be on ``device``. Each chunk
    of ``batch_size`` examples is one AutoAttack run with a fresh adversary and ``seed``. The robust
    flags are the eval-mode predictions on the adversarial examples compared with ``y`` (what
    RobustBench's ``benchmark`` computes).

    AutoAttack itself computes in float32 (it casts inputs with ``.float()``). A model with float64
    (or half-precision) parameters is supported: the attacks see it through a cast (inputs to the
    model's dtype, logits back to float32), and the clean and robust predictions run the model in its
    own dtype on ``x`` cast to that dtype. ``x`` may be of any floating dtype.

    A chunk file in ``state_dir`` that is not a chunk record (``[]``, ``null``, other JSON, wrong
    flags) is ignored with a logged warning and its chunk is attacked again.

    Args:
        model: a classifier taking inputs in ``[0, 1]`` and returning logits ``[N, C]``.
        x: inputs ``[N, ...]`` with values in ``[0, 1]``.
        y: class indices ``[N]``.
        norm: ``"Linf"``, ``"L2"`` or ``"L1"``.
        eps: the radius, > 0.
        version: ``"standard"`` (apgd-ce, apgd-t, fab-t, square), ``"plus"``, ``"rand"`` or
            ``"custom"`` (then ``attacks`` is required).
        batch_size: examples per chunk (the unit of progress and of resumption).
        seed: the attacks' seed; the caller's RNG state is unchanged.
        attacks: attack names for ``version="custom"``, from :data:`ATTACKS`.
        device: where to run; None = the model's device.
        state_dir: folder for the per-chunk files that make an interrupted run resumable; None =
            keep nothing.
        progress: show a tqdm bar over the chunks.
        model_name: identifies the model in the chunk fingerprints instead of a hash of its
            ``state_dict`` (use it when the weights are large or change only by name).
        attack_options: sub-attack attributes to set after construction, e.g.
            ``{"apgd": {"n_iter": 20}, "square": {"n_queries": 1000}}`` (keys ``apgd``,
            ``apgd_targeted``, ``fab``, ``square``). Part of the fingerprint.
        backend: ``"auto"`` (pyautoattack, else the original ``autoattack``), ``"pyautoattack"`` or
            ``"autoattack"``.


        shard: split the chunks over the ranks of the process group; None = when one with several
            ranks is initialised.    Returns:
        An :class:`AutoAttackResult`.

    Raises:
        ValueError: inputs outside ``[0, 1]``, ``eps <= 0``, an unknown norm/version/attack (the
            message lists the valid ones), ``version="custom"`` without ``attacks``, labels outside
            the model's classes, a device that differs from the model's, or an iteration count in
            ``attack_options`` (``n_iter``, ``n_restarts``, ``n_queries``, ``n_target_classes``,
            ``eot_iter``) below 1.
        TypeError: arguments of the wrong type (boolean labels, a non-integer iteration count).
        MissingOptionalDependencyError: no AutoAttack package is installed.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.rand(2, 1, 2, 2)
        >>> try:
        ...     run_autoattack(net, x + 1, torch.tensor([0, 1]))
        ... except ValueError as err:
        ...     print(str(err)[:33])
        x: expected values in [0, 1] (Aut
        >>> try:
        ...     run_autoattack(net, x, torch.tensor([0, 1]), version="custom")
        ... except ValueError as err:
        ...     print(str(err)[:40])
        attacks: version='custom' needs attacks=
    """
    start_time = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    norm = _check_choice(norm, "norm", NORMS)
    eps = _check_eps(eps, norm)
    version = _check_choice(version, "version", VERSIONS)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    seed = _check_int(seed, "seed")
    if version == "custom":
        if attacks is None or (not isinstance(attacks, str) and len(attacks) == 0):
            raise ValueError(
                f"attacks: version='custom' needs attacks=[...], a non-empty list drawn from "
                f"{', '.join(map(repr, ATTACKS))}, got {attacks!r}"
            )
        if isinstance(attacks, str):
            attacks = [attacks]
        attack_list = [_check_choice(a, "attacks", ATTACKS) for a in attacks]
        if len(set(attack_list)) != len(attack_list):
            raise ValueError(f"attacks: expected distinct attack names, got {list(attacks)!r}")
    else:
        if attacks is not None:
            raise ValueError(
                f"attacks: only used with version='custom' (version={version!r} fixes its own attacks), got {attacks!r}"
            )
        attack_list = None
    options = _check_attack_options(attack_options)
    if model_name is not None and not isinstance(model_name, str):
        raise TypeError(f"model_name: expected a str or None, got {type(model_name).__name__}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress: expected a bool, got {type(progress).__name__}")
    x, y = _check_xy(x, y)
    dev = _resolve_device(model, x, device, why="AutoAttack runs the attacks on one device")  # type: ignore[arg-type]
    backend_name, module = _select_backend(backend)
    state_path = None
    if state_dir is not None:
        state_path = Path(state_dir)
        state_path.mkdir(parents=True, exist_ok=True)

    model_dtype = _floating_dtype(model)
    # Our own predictions run the model in its dtype; AutoAttack always works in float32 (see
    # _Float32Logits), so a float64 model and float64 inputs are cast at its boundary.
    pred_dtype = model_dtype if model_dtype is not None else x.dtype
    attack_model: nn.Module = model
    if model_dtype is not None and model_dtype != torch.float32:
        attack_model = _Float32Logits(model, model_dtype)
    n = int(x.shape[0])
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    robust = torch.zeros(n, dtype=torch.bool)
    clean = torch.zeros(n, dtype=torch.bool)
    from ib_plugins.distributed import all_reduce_sum, world_info

    rank, world = world_info()
    sharded = world > 1 if shard is None else bool(shard) and world > 1
    chunks_run = chunks_reused = 0
    final_attacks: tuple[str, ...] = tuple(attack_list or ())
    fp_base: dict[str, Any] | None = None
    if state_path is not None:
        fp_base = {
            "format": _STATE_FORMAT,
            "backend": backend_name,
            "model": f"name:{model_name}" if model_name is not None else f"sha256:{model_fingerprint(model)}",
            "eps": repr(eps),
            "norm": norm,
            "version": version,
            "seed": seed,
            "attacks": attack_list,
            "attack_options": options,
            "batch_size": batch_size,
        }

    bar = _progress(len(bounds), progress)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_inference_modes(model))
            stack.enter_context(torch.random.fork_rng(devices=_cuda_devices(dev)))
            checks = stack.enter_context(_collect_checks())
            for index, (lo, hi) in enumerate(bounds):
                if sharded and index % world != rank:
                    continue  # another rank's chunk (chunks are independent: each is seeded with `seed`)
                xb, yb = x[lo:hi], y[lo:hi]
                xd, yd = xb.to(dev, pred_dtype), yb.to(dev)
                logits = _predict(model, xd)
                num_classes = int(logits.shape[1])
                if int(yb.max()) >= num_classes:
                    raise ValueError(
                        f"y: expected class indices < {num_classes} (the model's number of outputs), got {int(yb.max())}"
                    )
                clean[lo:hi] = (logits.argmax(1) == yd).cpu()
                fingerprint = None
                if state_path is not None and fp_base is not None:
                    fingerprint = _chunk_fingerprint(fp_base, index, lo, hi, xb, yb)
                    flags = _read_chunk(_chunk_path(state_path, index), fingerprint, hi - lo)
                    if flags is not None:
                        robust[lo:hi] = flags
                        chunks_reused += 1
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(robust=f"{robust[:hi].float().mean().item():.1%}", reused=chunks_reused)
                        continue
                t0 = time.perf_counter()
                aa, upstream = _make_adversary(
                    module, attack_model, norm=norm, eps=eps, version=version, seed=seed, attacks=attack_list,
                    dev=dev, options=options,
                )
                final_attacks = tuple(aa.attacks_to_run)
                xa = xd.float()  # AutoAttack computes in float32 whatever the inputs' dtype
                with _fresh_dynamic_check(module):
                    if upstream:
                        out = aa.run_standard_evaluation(xa, yd, bs=hi - lo)
                    else:
                        out = aa.run_standard_evaluation(xa, yd, batch_size=hi - lo)
                x_adv = out[0] if isinstance(out, tuple) else out
                model.eval()  # an attack may have switched modes
                flags = (_predict(model, x_adv.to(dev, pred_dtype)).argmax(1) == yd).cpu()
                robust[lo:hi] = flags
                chunks_run += 1
                if state_path is not None:
                    _write_chunk(
                        _chunk_path(state_path, index),
                        {
                            "format": _STATE_FORMAT,
                            "chunk": index,
                            "start": lo,
                            "stop": hi,
                            "fingerprint": fingerprint,
                            "robust": [int(v) for v in flags.tolist()],
                            "seconds": round(time.perf_counter() - t0, 3),
                        },
                    )
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(robust=f"{robust[:hi].float().mean().item():.1%}")
                logger.debug("AutoAttack chunk %d/%d: %d of %d robust", index + 1, len(bounds), int(flags.sum()), hi - lo)
            check_messages = tuple(checks.messages)
    finally:
        if bar is not None:
            bar.close()
    if sharded:  # every rank holds its own chunks' flags, zeros elsewhere: sum them
        clean = all_reduce_sum(clean.to(torch.int64)) > 0
        robust = all_reduce_sum(robust.to(torch.int64)) > 0
    if not final_attacks and version != "custom":
        final_attacks = {
            "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
            "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
            "rand": ("apgd-ce", "apgd-dlr"),
        }[version]
    for msg in check_messages:
        logger.warning("AutoAttack check: %s", msg)
    result = AutoAttackResult(
        clean_accuracy=float(clean.float().mean()),
        robust_accuracy=float(robust.float().mean()),
        robust_flags=robust,
        clean_flags=clean,
        n=n,
        eps=eps,
        norm=norm,
        version=version,
        seed=seed,
        attacks=final_attacks,
        batch_size=batch_size,
        backend=backend_name,
        wall_time_s=time.perf_counter() - start_time,
        chunks_run=chunks_run,
        chunks_reused=chunks_reused,
        checks=check_messages,
        attack_options=options,
    )
    logger.info(
        "AutoAttack (%s, %s, eps=%.4g): clean %.2f%%, robust %.2f%% on %d examples",
        version, norm, eps, 100 * result.clean_accuracy, 100 * result.robust_accuracy, n,
    )
    return result

