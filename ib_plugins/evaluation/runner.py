"""Running attacks safely: :func:`run_attack` (forked RNG, restored modes, paused recording), :func:`evaluate_suite`."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._context import (
    _attack_context,
    _cuda_devices,
    _inference_modes,
    _module_device,
    _resolve_device,
    _seed_forked,
)
from ib_plugins._optional import require
from ib_plugins._validation import _check_int, _check_labels_fit, _check_model, _check_model_dtype, _check_xy
from ib_plugins.evaluation.results import AttackResult, SuiteResult, _pct, _perturbation_norms, _result_from_rows
from ib_plugins.evaluation.suites import _PURPOSE, AttackSpec, _canonical

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Safe execution
# --------------------------------------------------------------------------------------------------


#: The attack engines: ``"builtin"`` (:mod:`ib_plugins.attack_engine`) and ``"torchattacks"``.
ENGINES = ("builtin", "torchattacks")


def _check_engine(engine: object) -> str:
    return _canonical(engine, arg="engine", valid=ENGINES)


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index`` of an attack run with ``seed``.

    Every batch of an attack starts from its own seed, so an example's adversarial example does not
    depend on which batches ran before it: a run sharded over several processes (each attacking
    every k-th batch) gives exactly the per-example results of a single-process run.

    Args:
        seed: the attack's seed (>= 0).
        index: the batch's index (>= 0).

    Returns:
        A seed in ``[0, 2**63)``.

    Example:
        >>> batch_seed(0, 0), batch_seed(0, 1) != batch_seed(1, 0)
        (0, True)
    """
    return (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9) % (1 << 63)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` of each batch of ``n`` examples; a last batch of 1 joins the one before.

    HSIC-based attacks need at least 2 samples per batch; every evaluator uses this one plan, so
    batches (and their seeds, :func:`batch_seed`) are the same whatever the attack.

    Args:
        n: number of examples (>= 1).
        batch_size: examples per batch (>= 1).

    Returns:
        The batch bounds, covering ``range(n)`` in order.

    Example:
        >>> batch_bounds(5, 2)
        [(0, 2), (2, 5)]
    """
    bounds = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 2:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def _forward(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise TypeError(
            f"model: expected the forward to return logits [N, num_classes], got "
            f"{type(out).__name__ if not isinstance(out, Tensor) else list(out.shape)}"
        )
    return out


def _looks_like_log_probs(out: Tensor) -> bool:
    out = out.detach().float()
    if not bool((out <= 1e-6).all()):
        return False
    return bool((torch.logsumexp(out, dim=1).abs() < 1e-3).all())


_CW_WARNING = (
    "the model's outputs look like log-probabilities (all <= 0, logsumexp = 0): torchattacks' CW "
    "margin max((1 - onehot) * outputs) then picks the 0 at the true-class slot, so its loss "
    "clamp(real - other, min=-kappa) is identically 0 and CW only takes noise steps (spec §2.7 item "
    "11; IB-RAR Table II's ResNet-18 CW column). Return logits from the model to get a real CW attack"
)


def _progress_over(items: Sequence[int], *, desc: str, progress: bool) -> Any:
    """``items`` with a progress display named ``desc`` (tqdm on a terminal, plain lines elsewhere)."""
    if progress:
        from ib_plugins._progress import progress_iter

        return progress_iter(items, desc=desc, unit="batch")
    return items


def _predict(model: nn.Module, x: Tensor, dev: torch.device, batch_size: int) -> Tensor:
    """No-grad argmax predictions; call inside ``_inference_modes(model)`` (eval mode, modes restored)."""
    return _predict_with_first(model, x, dev, batch_size)[0]


def _predict_with_first(model: nn.Module, x: Tensor, dev: torch.device, batch_size: int) -> tuple[Tensor, Tensor]:
    """Like :func:`_predict`, also returning the first batch's outputs (for the shape/CW checks).

    Reusing the clean pass for those checks saves a probe forward per attack.
    """
    preds = []
    first: Tensor | None = None
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out = _forward(model, x[i : i + batch_size].to(dev))
            if first is None:
                first = out
            preds.append(out.argmax(1).to(x.device))
    assert first is not None  # _check_xy guarantees a non-empty x
    return torch.cat(preds), first


def _build_attack(ta: Any, model: nn.Module, spec: AttackSpec, dev: torch.device, seed: int) -> Any:
    cls = getattr(ta, spec.attack_class, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"attack: expected a torchattacks attack class name, got {spec.attack_class!r}")
    kwargs = spec.constructor_kwargs()
    if spec.attack_class == "FAB":
        kwargs.setdefault("seed", seed)
    if _module_device(model) is None:  # torchattacks prints when it cannot find a parameter
        with contextlib.redirect_stdout(io.StringIO()):
            atk = cls(model, **kwargs)
    else:
        atk = cls(model, **kwargs)
    atk.set_device(dev)
    return atk


def _run_attack(
    model: nn.Module,
    spec: AttackSpec,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    seed: int,
    dev: torch.device,
    progress: bool,
    checked: bool = False,
    engine: str = "builtin",
    owned: Sequence[int] | None = None,
) -> Tensor:
    """Attack ``x`` batch by batch (each batch seeded by :func:`batch_seed`).

    ``checked=True``: the caller already checked labels and CW outputs. ``owned``: attack only these
    batch indices of :func:`batch_bounds` (a shard); the other rows are returned unchanged.
    """
    from ib_plugins.attack_engine import is_builtin, run_builtin

    use_builtin = engine == "builtin" and is_builtin(spec.attack_class)
    if engine == "builtin" and not use_builtin:
        logger.info("the built-in engine has no %s: running torchattacks' class", spec.attack_class)
    ta = None if use_builtin else require("torchattacks", purpose=f"{_PURPOSE} (torchattacks' {spec.attack_class})",
                                          extra="torchattacks")
    with _attack_context(model, dev, seed):
        if not checked:
            # One sample is enough to read the class count and the log-prob signature.
            with torch.no_grad():
                sample = _forward(model, x[:1].to(dev))
            _check_labels_fit(y, sample.shape[1])
            if spec.attack_class == "CW" and _looks_like_log_probs(sample):
                warnings.warn(_CW_WARNING, UserWarning, stacklevel=3)
        if use_builtin:
            kwargs = spec.constructor_kwargs()
            if spec.attack_class in ("FAB", "Square"):
                kwargs.setdefault("seed", seed)

            def atk(xb: Tensor, yb: Tensor) -> Tensor:
                return run_builtin(spec.attack_class, model, xb, yb, kwargs)
        else:
            atk = _build_attack(ta, model, spec, dev, seed)
        bounds = batch_bounds(x.shape[0], batch_size)
        indices = range(len(bounds)) if owned is None else owned
        cuda = _cuda_devices(dev)
        adv_all = x.clone()
        for b in _progress_over(indices, desc=spec.name, progress=progress):
            lo, hi = bounds[b]
            _seed_forked(batch_seed(seed, b), cuda)
            adv = atk(x[lo:hi].to(dev), y[lo:hi].to(dev))
            adv_all[lo:hi] = adv.detach().to(x.device, x.dtype)
    return adv_all


def run_attack(
    model: nn.Module,
    spec: AttackSpec,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    engine: str = "builtin",
) -> Tensor:
    """Run one attack of a suite on ``(x, y)`` without side effects.

    The attack runs in eval mode, batch by batch, inside ``torch.random.fork_rng`` with the CPU
    generator (and every CUDA generator, when CUDA is in use) seeded with ``seed``; FAB gets
    ``seed=seed`` too. Afterwards the global RNG state, the train/eval flag of every submodule and
    the recording state of every :class:`~ib_plugins.wrap.IBModel` inside ``model`` are as before,
    also when the attack raises. (torchattacks' FAB calls ``torch.cuda.manual_seed``; on a machine
    whose CUDA is not yet initialised that call is queued by torch and applies at CUDA start-up.)

    Args:
        model: a classifier taking ``[0, 1]`` inputs and returning ``[N, C]`` scores.
        spec: the attack (see :func:`build_suite`).
        x: inputs in ``[0, 1]``, ``[N, ...]``.
        y: class indices ``[N]``.
        batch_size: samples per attack call.
        seed: seed of the attack's randomness (random starts, FAB restarts).
        device: where the attack runs; ``None`` = the model's device (or ``x``'s when the model
            has no parameters). The model is never moved.
        progress: show a tqdm bar over batches (when tqdm is installed and stderr is a terminal).
        engine: ``"builtin"`` (default): :mod:`ib_plugins.attack_engine`, plain torch with
            torchattacks' semantics (a class it does not have runs through torchattacks);
            ``"torchattacks"``: the upstream implementation (``pip install torchattacks``), e.g. to
            reproduce the paper's numbers with the code it used.

    Returns:
        Adversarial examples, same shape, dtype and device as ``x``.

    Raises:
        ValueError: ``x`` outside ``[0, 1]`` or NaN, labels out of range or of the wrong shape,
            ``x`` on the meta device or ``y`` on another device than ``x``, a device that differs
            from the model's, or an unknown torchattacks class.
        TypeError: arguments of the wrong type (boolean labels, ``x`` of another dtype than the
            model's parameters), or a model that does not return ``[N, C]``.
        MissingOptionalDependencyError: torchattacks is not installed.

    Warns:
        UserWarning: a CW spec on a model whose outputs look like log-probabilities.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
        >>> state = torch.get_rng_state()
        >>> adv = run_attack(model, AttackSpec("fgsm", "linf", 0.1, {}), x, y, progress=False)
        >>> bool((adv - x).abs().max() <= 0.1 + 1e-6), torch.equal(state, torch.get_rng_state())
        (True, True)
    """
    model = _check_model(model)
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"spec: expected an AttackSpec, got {type(spec).__name__}")
    x, y = _check_xy(x, y)
    _check_model_dtype(model, x)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    seed = _check_int(seed, "seed")
    engine = _check_engine(engine)
    dev = _resolve_device(model, x, device)
    return _run_attack(model, spec, x, y, batch_size=batch_size, seed=seed, dev=dev, progress=progress, engine=engine)


def evaluate_suite(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    specs: Sequence[AttackSpec],
    *,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    keep_adversarial: bool = False,
    engine: str = "builtin",
    shard: bool | None = None,
) -> SuiteResult:
    """Clean accuracy and, per attack, accuracy and success rate on ``(x, y)``.

    Each attack runs through :func:`run_attack` (same ``seed`` for every attack; each batch of
    :func:`batch_bounds` seeded by :func:`batch_seed`). Predictions are eval-mode argmaxes. The CW
    log-probability warning is issued at most once per call.

    **Across processes.** Inside an initialised ``torch.distributed`` process group with several
    ranks (``torchrun --nproc_per_node=N ...``), every rank passes the same ``(x, y)``; rank ``r``
    attacks batches ``r, r + N, r + 2N, ...`` and the per-example results are summed over ranks, so
    every rank returns exactly the result of a single-process run (same adversarial examples, same
    counts), in about 1/N of the time.

    Args:
        model: a classifier taking ``[0, 1]`` inputs and returning ``[N, C]`` scores.
        x: inputs in ``[0, 1]``, ``[N, ...]``.
        y: class indices ``[N]``.
        specs: the attacks (see :func:`build_suite`); names must be unique.
        batch_size: samples per forward / attack call.
        seed: seed of every attack's randomness.
        device: where to run; ``None`` = the model's device.
        progress: show tqdm bars over batches.
        keep_adversarial: keep each attack's adversarial examples in
            :attr:`SuiteResult.adversarial` (on ``x``'s device).
        engine: ``"builtin"`` (default) or ``"torchattacks"`` (see :func:`run_attack`); recorded in
            the result.
        shard: split the batches over the ranks of the process group; None = when one with
            several ranks is initialised.

    Returns:
        A :class:`SuiteResult`.

    Raises:
        ValueError: bad inputs (see :func:`run_attack`) or duplicate attack names.
        TypeError: arguments of the wrong type (boolean labels, ``x`` of another dtype than the
            model's parameters).

    Warns:
        UserWarning: CW on a model whose outputs look like log-probabilities.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
        >>> res = evaluate_suite(model, x, y, [AttackSpec("fgsm", "linf", 0.0, {})], progress=False)
        >>> res["fgsm"].accuracy == res.clean_accuracy, res["fgsm"].n_flipped
        (True, 0)
    """
    model = _check_model(model)
    x, y = _check_xy(x, y)
    _check_model_dtype(model, x)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    seed = _check_int(seed, "seed")
    specs = list(specs)
    for s in specs:
        if not isinstance(s, AttackSpec):
            raise TypeError(f"specs: expected AttackSpec items, got {type(s).__name__}")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"specs: expected unique attack names, got duplicates {dupes}")
    engine = _check_engine(engine)
    dev = _resolve_device(model, x, device)
    from ib_plugins.distributed import all_reduce_sum, world_info

    rank, world = world_info()
    sharded = world > 1 if shard is None else bool(shard) and world > 1
    bounds = batch_bounds(int(x.shape[0]), batch_size)
    owned = [b for b in range(len(bounds)) if b % world == rank] if sharded else list(range(len(bounds)))
    mine = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for b in owned:
        mine[bounds[b][0] : bounds[b][1]] = True

    def combine(rows: Tensor) -> Tensor:
        """Rows computed on this rank's batches (zeros elsewhere), summed over the ranks."""
        if not sharded:
            return rows
        local = torch.where(mine.view(-1, *([1] * (rows.dim() - 1))), rows, torch.zeros_like(rows))
        dtype = rows.dtype
        summed = all_reduce_sum(local.to(torch.float64 if dtype.is_floating_point else torch.int64))
        return summed.to(dtype) if dtype != torch.bool else summed > 0

    with _inference_modes(model):
        clean_pred, first_out = _predict_rows(model, x, dev, bounds, owned)
    _check_labels_fit(y, first_out.shape[1])
    if any(s.attack_class == "CW" for s in specs) and _looks_like_log_probs(first_out):
        warnings.warn(_CW_WARNING, UserWarning, stacklevel=2)
    clean_ok = combine(clean_pred == y)
    results: list[AttackResult] = []
    kept: dict[str, Tensor] = {}
    correct: dict[str, Tensor] = {"clean": clean_ok}
    for spec in specs:
        start = time.perf_counter()
        if spec.attack_class.startswith("adaptive:"):  # e.g. "cw-l2" from build_suite(attacks=[...])
            from ib_plugins.adaptive import run_adaptive_attack

            adv = x.clone()
            for b in _progress_over(owned, desc=spec.name, progress=progress):
                lo, hi = bounds[b]
                adv[lo:hi] = run_adaptive_attack(
                    model, spec.attack_class, x[lo:hi], y[lo:hi], eps=spec.eps, seed=batch_seed(seed, b),
                    batch_size=hi - lo, device=dev, progress=False, **dict(spec.kwargs),
                )
        else:
            adv = _run_attack(
                model, spec, x, y, batch_size=batch_size, seed=seed, dev=dev, progress=progress, checked=True,
                engine=engine, owned=owned,
            )
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
        with _inference_modes(model):
            adv_pred, _ = _predict_rows(model, adv, dev, bounds, owned)
        linf, l2 = _perturbation_norms(adv, x)
        adv_ok = combine(adv_pred == y)
        results.append(_result_from_rows(spec, clean_ok, adv_ok, combine(linf), combine(l2), seconds))
        correct[spec.name] = adv_ok
        if keep_adversarial:
            kept[spec.name] = combine(adv) if sharded else adv
        logger.info("%s: accuracy %.2f%%, success rate %s%%", spec.name, 100 * results[-1].accuracy,
                    _pct(results[-1].success_rate))
    return SuiteResult(
        n=int(y.shape[0]), n_clean_correct=int(clean_ok.sum()), attacks=results, seed=seed,
        adversarial=MappingProxyType(kept), correct=MappingProxyType(correct), engine=engine,
    )


def _predict_rows(
    model: nn.Module, x: Tensor, dev: torch.device, bounds: Sequence[tuple[int, int]], owned: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Argmax predictions of the ``owned`` batches (-1 elsewhere) and the first owned batch's outputs."""
    preds = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    first: Tensor | None = None
    with torch.no_grad():
        for b in owned:
            lo, hi = bounds[b]
            out = _forward(model, x[lo:hi].to(dev))
            if first is None:
                first = out
            preds[lo:hi] = out.argmax(1).to(x.device)
    if first is None:  # a rank without a batch (more ranks than batches): probe one example for the checks
        with torch.no_grad():
            first = _forward(model, x[:1].to(dev))
    return preds, first
