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

This module runs the evaluation (:func:`run_autoattack`: backends, chunks, resuming); the upstream
API lives in :mod:`ib_plugins.adapters.autoattack_compat` and the result, fingerprints and chunk
files in :mod:`ib_plugins.adapters.autoattack_state`, both re-exported here.

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
import importlib
import inspect
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._context import _inference_modes, _resolve_device
from ib_plugins._optional import is_available, require
from ib_plugins._types import PathLike
from ib_plugins._validation import _check_int
from ib_plugins.adapters.autoattack_compat import (
    _COUNT_ATTRS,
    _PURPOSE,
    _SUB_ATTACKS,
    AutoAttackCompat,
    _check_count,
    _cuda_devices,
    _Float32Logits,
    _floating_dtype,
)
from ib_plugins.adapters.autoattack_state import (
    _STATE_FORMAT,
    AutoAttackResult,
    _chunk_fingerprint,
    _chunk_path,
    _read_chunk,
    _write_chunk,
    model_fingerprint,
)
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

#: Norms AutoAttack supports.
NORMS: tuple[str, ...] = ("Linf", "L2", "L1")
#: AutoAttack versions (``"custom"`` needs ``attacks=``).
VERSIONS: tuple[str, ...] = ("standard", "plus", "rand", "custom")
#: Attack names usable with ``version="custom"``.
ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------



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
