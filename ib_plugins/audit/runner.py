"""Running an audit: :func:`run_audit` measures a model and applies the checks; the ε grid and the surrogate."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._context import _inference_modes
from ib_plugins._types import PathLike
from ib_plugins.audit import checks as _checks
from ib_plugins.audit.checks import _check_tol
from ib_plugins.audit.report import AuditReport

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Running the audit
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    n: int
    pgd_steps: int
    steps_grid: tuple[int, ...]
    restarts: int
    square_queries: int
    cw_steps: int
    cw_search_steps: int
    surrogate_epochs: int


_QUICK = _Settings(n=100, pgd_steps=10, steps_grid=(1, 5, 10, 20), restarts=3, square_queries=500, cw_steps=100,
                   cw_search_steps=1, surrogate_epochs=5)
_FULL = _Settings(n=450, pgd_steps=20, steps_grid=(1, 10, 20, 50, 100), restarts=5, square_queries=2000, cw_steps=200,
                  cw_search_steps=3, surrogate_epochs=10)
_LARGE_EPS = 0.5
_SURROGATE_MODELS = {"digits": "digits-cnn", "mnist": "lenet5", "fashion-mnist": "lenet5", "cifar10": "keras-cifar-cnn",
                     "cifar100": "keras-cifar-cnn", "svhn": "keras-cifar-cnn"}


def default_eps_grid(eps: float, *, quick: bool = False) -> list[float]:
    """The ε grid of the accuracy-vs-ε curve: multiples of the main ε plus a large ε (0.5).

    Args:
        eps: the main L∞ radius.
        quick: the short grid ``0, ε/2, ε, 2ε, 0.5`` instead of ``0, ε/4, ε/2, ε, 2ε, 3ε, 0.5``.

    Returns:
        Strictly increasing radii in ``[0, 1]``.

    Example:
        >>> default_eps_grid(0.1, quick=True)
        [0.0, 0.05, 0.1, 0.2, 0.5]
    """
    factors = (0, 0.5, 1, 2) if quick else (0, 0.25, 0.5, 1, 2, 3)
    grid = {round(f * eps, 6) for f in factors} | {max(_LARGE_EPS, round(4 * eps, 6)) if eps < 0.25 else 1.0}
    return sorted(v for v in grid if 0 <= v <= 1)


def _check_eps_grid(eps_grid: object) -> list[float]:
    if isinstance(eps_grid, (str, bytes)) or not isinstance(eps_grid, Sequence) or len(eps_grid) < 2:
        raise ValueError(f"eps_grid: expected a sequence of at least 2 radii, got {eps_grid!r}")
    values = []
    for v in eps_grid:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ValueError(f"eps_grid: expected numbers, got {eps_grid!r}")
        values.append(float(v))
    if any(v < 0 or v > 1 for v in values):
        raise ValueError(f"eps_grid: expected L-inf radii in [0, 1], got {values}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"eps_grid: expected strictly increasing radii, got {values}")
    return values


def train_surrogate(
    dataset: str, *, model: str | None = None, epochs: int = 5, seed: int = 1, train_limit: int | None = None,
    data_dir: str | None = None, device: str = "cpu", progress: bool = False,
) -> nn.Module:
    """Train a small undefended (plain CE) surrogate for transfer attacks, in a temporary folder.

    Args:
        dataset: dataset name.
        model: architecture (default: a small model of the dataset: ``digits-cnn``, ``lenet5``,
            ``keras-cifar-cnn``).
        epochs: training epochs.
        seed: seed of the run (use one that differs from the audited model's).
        train_limit: train on a stratified subset.
        data_dir: dataset folder.
        device: device.
        progress: show tqdm bars.

    Returns:
        The trained network in eval mode.

    Raises:
        ValueError: no default architecture for the dataset and none given.

    Example:
        >>> net = train_surrogate("digits", epochs=1, train_limit=100)
        >>> net.training
        False
    """
    from ib_plugins.training import TrainConfig, Trainer

    arch = model or _SURROGATE_MODELS.get(dataset)
    if arch is None:
        raise ValueError(f"model: no default surrogate architecture for dataset {dataset!r}; pass model=<name>")
    cfg = TrainConfig(dataset=dataset, model=arch, method="ce", epochs=epochs, batch_size=50, seed=seed,
                      train_limit=train_limit, data_dir=data_dir, device=device)
    with tempfile.TemporaryDirectory(prefix="ib-audit-surrogate-") as tmp:
        trainer = Trainer(cfg, out_dir=tmp, progress=progress)
        trainer.fit()
        return trainer.eval_model().eval()


def _num_outputs(model: nn.Module, x: Tensor, dev: torch.device) -> int:
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=cuda), _inference_modes(model):
            out = model(x[:2].to(dev))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:  # e.g. a user's model for other input sizes
        reason = " ".join(str(err).split())[:300]
        raise ValueError(f"model: the forward fails on the test inputs of shape {list(x[:2].shape)} "
                         f"({type(err).__name__}: {reason})") from err
    if not isinstance(out, Tensor) or out.dim() != 2:
        got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(f"model: expected the forward to return logits [N, num_classes], got {got}")
    return int(out.shape[1])


def _max_diff(model: nn.Module, x: Tensor, dev: torch.device) -> float:
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=cuda), _inference_modes(model):
        a, b = model(x.to(dev)), model(x.to(dev))
    return float((a - b).abs().max())


class _Progress:
    """The audit's bar over its attacks and checks (tqdm on a terminal, plain lines elsewhere)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from ib_plugins._progress import PhaseProgress

        self._phases = PhaseProgress(total=total, desc="audit", enabled=enabled, unit="step", logger=logger)

    def stage(self, name: str) -> Any:
        return self._phases.phase(name)

    def close(self) -> None:
        self._phases.close()


def _plot_curve(xs: Sequence[float], accs: Sequence[float], path: Path, *, xlabel: str, title: str,
                extra: Mapping[str, tuple[float, float]] | None = None) -> Path:
    from ib_plugins._optional import require

    require("matplotlib", purpose="ib_plugins.audit plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(list(xs), [100 * a for a in accs], marker="o", label="PGD")
    for i, (label, (x, a)) in enumerate((extra or {}).items()):
        ax.scatter([x], [100 * a], marker="x", s=60, label=label, zorder=3, color=f"C{(i + 1) % 10}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Robust accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


def run_audit(
    checkpoint_or_model: PathLike | nn.Module,
    *,
    out_dir: PathLike | None,
    quick: bool = False,
    eps_grid: Sequence[float] | None = None,
    surrogate: PathLike | nn.Module | bool | None = None,
    eps: float | None = None,
    n: int | None = None,
    x: Tensor | None = None,
    y: Tensor | None = None,
    dataset: str | None = None,
    ib_config: Any = None,
    entropic_config: Any = None,
    surrogate_epochs: int | None = None,
    eot_samples: int = 8,
    tol: float = 0.03,
    zero_tol: float = 0.05,
    success_tol: float = 0.02,
    seed: int = 0,
    batch_size: int = 100,
    data_dir: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    engine: str = "builtin",
    name: str | None = None,
    ema: bool = False,
) -> AuditReport:
    """Run every gradient-masking check on a checkpoint or a model and write the report folder.

    Args:
        checkpoint_or_model: a ``checkpoint.pt`` of :class:`~ib_plugins.training.Trainer` (its IB /
            entropic configuration is read from the stored TrainConfig) or a model.
        out_dir: the report folder (None: write nothing, only return the report).
        quick: the CI setting (100 images, 10 PGD steps, short grids, 500 Square queries, a 5-epoch
            surrogate); default: 450 images, 20 steps, longer grids, 2000 queries, 10 epochs.
        eps_grid: radii of the accuracy-vs-ε curve, strictly increasing in ``[0, 1]``; None:
            :func:`default_eps_grid` (its largest value, 0.5, serves the ``large-eps`` check).
        surrogate: None (or True): train a small CE surrogate on the dataset (skipped, with the
            reason, when the dataset is unknown); a checkpoint path or a model: use it; ``False`` or
            ``"none"``: skip the transfer check.
        eps: the main L∞ radius; None: the dataset's IB-RAR budget (0.1 on digits, 0.03 on CIFAR).
        n: test images (a stratified, seeded subset of the test split; the first ``n`` of ``x``/``y``
            when given; default 100 quick / 450 full).
        x: test inputs in ``[0, 1]`` (instead of loading the dataset's test split).
        y: test labels, with ``x``.
        dataset: the dataset of a model (checkpoints know theirs).
        ib_config: IB configuration of a model for ``pgd-ib`` (checkpoints and IBModels carry it).
        entropic_config: entropic configuration of a model for ``pgd-entropic``.
        surrogate_epochs: epochs of the trained surrogate (default 5 quick / 10 full).
        eot_samples: forwards averaged when the eval forward is not deterministic.
        tol: tolerance of the comparisons (absolute accuracy).
        zero_tol: largest accuracy that counts as ≈ 0 at the largest ε.
        success_tol: tolerated shortfall of the unbounded attack from 100 % success.
        seed: seed of the data subset and of every attack.
        batch_size: samples per attack batch.
        data_dir: dataset folder.
        device: ``"cpu"`` or a CUDA device.
        overwrite: replace a report folder of a different audit.
        progress: show a tqdm bar over the audit's attacks.
        engine: the engine of the torchattacks-described attacks the audit runs (torchattacks' CW and
            Square): ``"builtin"`` (default) or ``"torchattacks"``.
        ema: audit a checkpoint's exponential moving average of the weights (runs with
            ``ema_decay``) instead of its raw weights.
        name: how the report names the audited model (default: the checkpoint path, or the model's
            class name).

    Returns:
        The :class:`AuditReport` (also written as ``audit.json``/``audit.md``/``audit.html``).

    Raises:
        ValueError: a non-increasing or out-of-range ``eps_grid``; a surrogate with a different
            number of classes; missing data (a model without ``x``/``y`` or ``dataset``); bad
            tolerances.
        CheckpointError: an unreadable checkpoint.
        RunExistsError: ``out_dir`` holds a different audit and ``overwrite`` is False.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(12, 1, 4, 4), torch.arange(12) % 3
        >>> report = run_audit(net, out_dir=None, quick=True, x=x, y=y, eps=0.1, surrogate=False, progress=False)
        >>> report["transfer"].status, report["adaptive"].status, report.verdict in ("pass", "warn")
        ('skip', 'skip', True)
    """
    from ib_plugins import adaptive as adp
    from ib_plugins._validation import _check_int, _check_xy
    from ib_plugins.evaluation import AttackSpec, _check_engine, default_budget, run_attack

    t_start = time.perf_counter()
    settings = _QUICK if quick else _FULL
    tol, zero_tol = _check_tol(tol), _check_tol(zero_tol, "zero_tol")
    success_tol = _check_tol(success_tol, "success_tol")
    seed = _check_int(seed, "seed")
    batch_size = _check_int(batch_size, "batch_size", minimum=2)
    eot_samples = _check_int(eot_samples, "eot_samples", minimum=2)
    if eps_grid is not None:
        eps_grid = _check_eps_grid(eps_grid)
    from ib_plugins.training import _device

    device = str(_device(device))  # unknown names, meta, a missing CUDA device: a clear error now
    engine = _check_engine(engine)
    if surrogate_epochs is not None:
        surrogate_epochs = _check_int(surrogate_epochs, "surrogate_epochs", minimum=1)
    if surrogate is True:
        surrogate = None
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name: expected a non-empty string or None, got {name!r}")

    # -- the target ----------------------------------------------------------------------------
    train_cfg = None
    ent_cfg = None
    ib_cfg = None
    if isinstance(checkpoint_or_model, nn.Module):
        model = checkpoint_or_model
        target_name = type(model).__name__
        if ib_config is not None or adp._find_ibmodel(model) is not None:
            ib_cfg = adp.resolve_ib_config(model, ib_config)
        if entropic_config is not None:
            ent_cfg = adp.resolve_entropic_config(model, entropic_config)
    elif isinstance(checkpoint_or_model, (str, os.PathLike)):
        target = adp.load_attack_target(checkpoint_or_model, map_location=device, weights="ema" if ema else "raw")
        model, train_cfg = target.model, target.config
        target_name = str(checkpoint_or_model)
        dataset = dataset or train_cfg.dataset
        data_dir = data_dir or train_cfg.data_dir
        ib_cfg = adp.resolve_ib_config(model, ib_config) if ib_config is not None else target.ib_config
        ent_cfg = (adp.resolve_entropic_config(model, entropic_config) if entropic_config is not None
                   else target.entropic_config)
    else:
        raise TypeError(f"checkpoint_or_model: expected a checkpoint path or a torch.nn.Module, got "
                        f"{type(checkpoint_or_model).__name__}")
    if name is not None:
        target_name = name
    dev = torch.device(device)

    # -- the data ------------------------------------------------------------------------------
    n_images = settings.n if n is None else _check_int(n, "n", minimum=2)
    if x is not None or y is not None:
        if x is None or y is None:
            raise ValueError("x, y: expected both test inputs and labels, got only one")
        x, y = _check_xy(x, y)
        x, y = x[:n_images], y[:n_images]
    elif dataset is not None:
        from ib_plugins.data import load_dataset

        ds = load_dataset(dataset, split="test", data_dir=data_dir, limit=n_images, seed=seed)
        if hasattr(ds, "tensors"):
            x, y = ds.tensors
        else:
            xs, ys = zip(*(ds[i] for i in range(len(ds))))
            x, y = torch.stack(xs), torch.as_tensor(ys)
        x, y = _check_xy(x, y)
    else:
        raise ValueError("x, y: expected test data (x=, y=) or dataset= for a model; a checkpoint knows its dataset")
    if eps is None:
        if dataset is None:
            raise ValueError("eps: expected the main L-inf radius (or dataset= to use its budget), got None")
        eps = default_budget(dataset, "ibrar").linf_eps
    eps = float(eps)
    if not 0 < eps <= 1:
        raise ValueError(f"eps: expected an L-inf radius in (0, 1], got {eps!r}")
    grid = eps_grid if eps_grid is not None else default_eps_grid(eps, quick=quick)
    num_classes = _num_outputs(model, x, dev)
    if int(y.max()) >= num_classes:
        raise ValueError(f"y: expected class indices < {num_classes} (the model's outputs), got {int(y.max())}")

    # -- surrogate -----------------------------------------------------------------------------
    surrogate_model: nn.Module | None = None
    surrogate_info: dict[str, Any] = {}
    skip_transfer = "no surrogate"
    if surrogate is False or (isinstance(surrogate, str) and surrogate.lower() == "none"):
        skip_transfer = "transfer check disabled (surrogate=none)"
    elif isinstance(surrogate, nn.Module):
        surrogate_model, surrogate_info = surrogate, {"source": f"given {type(surrogate).__name__}"}
    elif isinstance(surrogate, (str, os.PathLike)):
        from ib_plugins.training import load_model_from_checkpoint

        surrogate_model, s_cfg, _ = load_model_from_checkpoint(surrogate, map_location=device)
        surrogate_info = {"source": f"checkpoint {surrogate} ({s_cfg.method} {s_cfg.model})"}
    elif surrogate is None and dataset is None:
        skip_transfer = "no surrogate given and no dataset to train one on"
    elif surrogate is not None and surrogate is not True:
        raise TypeError(
            f"surrogate: expected None, a checkpoint path, a model or False, got {type(surrogate).__name__}"
        )
    if surrogate_model is not None:
        s_out = _num_outputs(surrogate_model, x, dev)
        if s_out != num_classes:
            raise ValueError(f"surrogate: expected a model with {num_classes} outputs (the audited model's classes), "
                             f"got {s_out}")

    config: dict[str, Any] = {
        "kind": "audit", "target": target_name, "quick": bool(quick), "eps": eps, "eps_grid": list(grid),
        "n": int(x.shape[0]), "seed": seed, "batch_size": batch_size, "tol": tol, "zero_tol": zero_tol,
        "success_tol": success_tol, "eot_samples": eot_samples, "dataset": dataset,
        "surrogate": surrogate_info.get("source") if surrogate_model is not None else (
            "train" if surrogate is None and dataset is not None else "none"),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.__dict__.items()},
        "engine": engine,
        "ema_weights": bool(ema),
        "train_config": train_cfg.to_dict() if train_cfg is not None else None,
    }
    out: Path | None = None
    if out_dir is not None:
        from ib_plugins.experiments import prepare_results_dir

        out = Path(out_dir)
        prepare_results_dir(out, config, overwrite=overwrite)

    # -- determinism ---------------------------------------------------------------------------
    probe_x = x[:batch_size]
    deterministic = adp.is_deterministic(model, probe_x.to(dev), trials=3)
    max_diff = 0.0 if deterministic else _max_diff(model, probe_x, dev)
    k = 1 if deterministic else eot_samples
    scored = model if deterministic else adp.EOTModel(model, eot_samples=eot_samples)
    if not deterministic:
        logger.warning("audit: the eval forward of %s is not deterministic; using EOT over %d forwards", target_name, k)

    will_train = surrogate_model is None and surrogate is None and dataset is not None
    n_stages = (len([e for e in grid if e > 0]) + (0 if eps in grid else 1) + 1
                + len([s for s in settings.steps_grid if s != settings.pgd_steps]) + 1 + 3 + 1
                + (1 if will_train else 0) + (1 if surrogate_model is not None or will_train else 0)
                + (2 if ib_cfg else 0) + (2 if ent_cfg else 0) + 1)
    bar = _Progress(n_stages, progress)
    attacks: dict[str, dict[str, Any]] = {}

    def predict(net: nn.Module, inputs: Tensor) -> Tensor:
        return adp._predict(net, inputs, batch_size=batch_size, dev=dev, seed=seed)

    clean_ok = predict(scored, x) == y
    robust_all = clean_ok.clone()  # per sample: correct before and after every attack at the main eps
    main_attacks: list[str] = []

    def score(key: str, threat: str, adv: Tensor, seconds: float, *, main_eps: bool = False,
              **extra: Any) -> dict[str, Any]:
        adv_ok = predict(scored, adv) == y
        if main_eps:
            robust_all.logical_and_(adv_ok)
            main_attacks.append(key)
        n_correct = int(clean_ok.sum())
        delta = (adv - x).flatten(1).float()
        entry = {"threat": threat, "accuracy": float(adv_ok.float().mean()),
                 "success_rate": float((clean_ok & ~adv_ok).sum()) / n_correct if n_correct else None,
                 "n_robust": int(adv_ok.sum()), "seconds": round(seconds, 3),
                 "max_linf": float(delta.abs().max()), "mean_l2": float(delta.norm(dim=1).mean()), **extra}
        attacks[key] = entry
        return entry

    def pgd(key: str, e: float, *, steps: int | None = None, name: str = "pgd-ce", net: nn.Module | None = None,
            **kw: Any) -> dict[str, Any]:
        s = settings.pgd_steps if steps is None else steps
        kw.setdefault("alpha", 2.5 * e / s)
        t0 = time.perf_counter()
        adv = adp.run_adaptive_attack(net if net is not None else model, name, x, y, eps=e, steps=s, seed=seed,
                                      eot_samples=k if net is None else 1, batch_size=batch_size, device=device,
                                      ib_config=ib_cfg, entropic_config=ent_cfg, **kw)
        label = f"L-inf eps={e:g}, {s} step{'s' if s > 1 else ''}"
        if kw.get("restarts", 1) > 1:
            label += f", {kw['restarts']} restarts"
        return score(key, label, adv, time.perf_counter() - t0, main_eps=(e == eps and net is None), eps=e, steps=s,
                     alpha=kw["alpha"])

    numbers: dict[str, Any] = {"n": int(x.shape[0]), "eps": eps, "clean_accuracy": float(clean_ok.float().mean()),
                               "deterministic": deterministic, "eot_samples": k, "num_classes": num_classes,
                               "ib_config": ib_cfg.to_dict() if ib_cfg else None,
                               "entropic_config": ent_cfg.to_dict() if ent_cfg else None}
    try:
        # accuracy vs eps (PGD)
        eps_accs: list[float] = []
        for e in grid:
            if e == 0:
                eps_accs.append(numbers["clean_accuracy"])
                continue
            with bar.stage(f"PGD eps={e:g}"):
                eps_accs.append(pgd(f"pgd eps={e:g}", e)["accuracy"])
        main = attacks.get(f"pgd eps={eps:g}")
        if main is None:
            with bar.stage(f"PGD eps={eps:g}"):
                main = pgd(f"pgd eps={eps:g}", eps)
        pgd_acc = main["accuracy"]
        numbers["eps_curve"] = {"eps": list(grid), "accuracy": eps_accs}
        numbers["pgd"] = dict(main)
        # single step
        with bar.stage("FGSM"):
            fgsm = pgd("fgsm", eps, steps=1, alpha=eps, random_start=False)
        # steps and restarts
        steps_accs = []
        for s in settings.steps_grid:
            if s == settings.pgd_steps:
                steps_accs.append(pgd_acc)
                continue
            with bar.stage(f"PGD {s} steps"):
                steps_accs.append(pgd(f"pgd {s} steps", eps, steps=s)["accuracy"])
        numbers["steps_curve"] = {"steps": list(settings.steps_grid), "accuracy": steps_accs}
        with bar.stage(f"PGD {settings.restarts} restarts"):
            restart = pgd(f"pgd {settings.restarts} restarts", eps, restarts=settings.restarts)
        # unbounded
        with bar.stage("PGD eps=1"):
            unb = pgd("pgd eps=1 (unbounded)", 1.0)
        with bar.stage("CW-L2 (corrected margin)"):
            t0 = time.perf_counter()
            adv = adp.run_adaptive_attack(model, "cw-l2", x, y, steps=settings.cw_steps, c=10.0, lr=0.05,
                                          search_steps=settings.cw_search_steps, eot_samples=k, seed=seed,
                                          batch_size=batch_size, device=device)
            threat = (f"L2 minimum-norm (corrected margin), c from 10, {settings.cw_steps} steps x "
                      f"{settings.cw_search_steps} searches")
            cw = score("cw-l2 (corrected)", threat, adv, time.perf_counter() - t0)
        with bar.stage("CW (torchattacks)"):
            t0 = time.perf_counter()
            spec = AttackSpec("cw", "l2", None, {"c": 10.0, "kappa": 0, "steps": settings.cw_steps, "lr": 0.05})
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                adv = run_attack(scored, spec, x, y, batch_size=batch_size, seed=seed, device=device, progress=False,
                                 engine=engine)
            cw_note = next((str(w.message) for w in caught if "log-probabilities" in str(w.message)), None)
            cw_ta = score("cw (torchattacks)", f"fixed-c CW-L2 (torchattacks' CW), c=10, {settings.cw_steps} steps, "
                          "lr 0.05", adv, time.perf_counter() - t0)
        numbers["cw_comparison"] = {"torchattacks_success": cw_ta["success_rate"],
                                    "corrected_success": cw["success_rate"], "note": cw_note}
        # black box
        with bar.stage("Square"):
            t0 = time.perf_counter()
            spec = AttackSpec("square", "linf", eps, {"n_queries": settings.square_queries, "n_restarts": 1,
                                                      "seed": seed}, attack="Square")
            adv = run_attack(scored, spec, x, y, batch_size=batch_size, seed=seed, device=device, progress=False,
                             engine=engine)
            square = score("square", f"L-inf eps={eps:g}, {settings.square_queries} queries (black-box)", adv,
                           time.perf_counter() - t0, main_eps=True)
        # transfer
        transfer_acc = None
        if will_train:
            with bar.stage("train surrogate"):
                t0 = time.perf_counter()
                arch = train_cfg.model if train_cfg is not None else None
                epochs = settings.surrogate_epochs if surrogate_epochs is None else surrogate_epochs
                surrogate_model = train_surrogate(dataset, model=arch, epochs=epochs, seed=seed + 1, data_dir=data_dir,
                                                  device=device)
                surrogate_info = {"source": f"trained: CE {arch or _SURROGATE_MODELS.get(dataset)}, {epochs} epochs, "
                                  f"seed {seed + 1}", "train_seconds": round(time.perf_counter() - t0, 2)}
                if _num_outputs(surrogate_model, x, dev) != num_classes:
                    raise ValueError(f"surrogate: expected a model with {num_classes} outputs, got "
                                     f"{_num_outputs(surrogate_model, x, dev)}")
        if surrogate_model is not None:
            with bar.stage("transfer"):
                t0 = time.perf_counter()
                adv = adp.run_adaptive_attack(surrogate_model, "pgd-ce", x, y, eps=eps, steps=settings.pgd_steps,
                                              alpha=2.5 * eps / settings.pgd_steps, seed=seed, batch_size=batch_size,
                                              device=device, any_iterate=False)
                transfer = score("transfer", f"L-inf eps={eps:g}, PGD on the surrogate", adv, time.perf_counter() - t0,
                                 main_eps=True)
                transfer_acc = transfer["accuracy"]
                surrogate_info["clean_accuracy"] = float((predict(surrogate_model, x) == y).float().mean())
                surrogate_info["pgd_accuracy"] = float((predict(surrogate_model, adv) == y).float().mean())
            numbers["surrogate"] = surrogate_info
        # adaptive
        adaptive_accs: dict[str, float] = {}
        adaptive_runs: list[tuple[str, str, str, dict[str, Any]]] = []  # (bar stage, key, attack, options)
        if ib_cfg is not None:
            adaptive_runs += [("pgd-ib", "pgd-ib", "pgd-ib", {}),
                              ("pgd-ib (mean CE, as pgd_mi)", "pgd-ib (mean CE)", "pgd-ib", {"ce_reduction": "mean"})]
        if ent_cfg is not None:
            adaptive_runs += [("pgd-entropic", "pgd-entropic", "pgd-entropic", {}),
                              ("pgd-entropic (+penalty)", "pgd-entropic(+)", "pgd-entropic",
                               {"entropic_penalty": "add"})]
        for stage, key, attack, options in adaptive_runs:
            with bar.stage(stage):
                adaptive_accs[key] = pgd(key, eps, name=attack, **options)["accuracy"]
        with bar.stage("PGD margin loss"):
            margin = pgd("pgd-margin", eps, name="pgd-margin")
    finally:
        bar.close()

    checks = [
        _checks.check_determinism(deterministic, eot_samples=eot_samples, max_abs_diff=max_diff),
        _checks.check_monotone_eps(grid, eps_accs, tol=tol),
        _checks.check_large_eps(grid, eps_accs, zero_tol=zero_tol),
        _checks.check_unbounded({"PGD eps=1": unb["success_rate"], "CW-L2": cw["success_rate"]},
                                success_tol=success_tol),
        _checks.check_iterative(pgd_acc, fgsm["accuracy"], tol=tol),
        _checks.check_steps_restarts(settings.steps_grid, steps_accs, restarts=settings.restarts,
                                     restart_accuracy=restart["accuracy"], single_accuracy=pgd_acc, tol=tol),
        _checks.check_black_box(square["accuracy"], pgd_acc, tol=tol),
        _checks.check_transfer(transfer_acc, pgd_acc, tol=tol, reason=skip_transfer),
        _checks.check_adaptive(adaptive_accs, pgd_acc, tol=tol,
                               reason="the model has no IB configuration (pgd-ib) or entropic configuration "
                                      "(pgd-entropic)"),
        _checks.check_loss_functions(margin["accuracy"], pgd_acc, tol=tol),
    ]
    numbers["attacks"] = attacks
    strongest = min(main_attacks, key=lambda key: attacks[key]["accuracy"])
    numbers["worst_case"] = {
        "accuracy": float(robust_all.float().mean()), "eps": eps, "n": int(x.shape[0]), "attacks": main_attacks,
        "strongest_single": strongest, "strongest_single_accuracy": attacks[strongest]["accuracy"],
    }
    numbers["wall_time_s"] = round(time.perf_counter() - t_start, 2)
    report = AuditReport(checks=checks, numbers=numbers, config=config, out_dir=out)
    if out is not None:
        from ib_plugins._optional import is_available
        from ib_plugins.experiments import write_json

        if is_available("matplotlib"):
            extra = {f"FGSM eps={eps:g}": (eps, fgsm["accuracy"]), f"Square eps={eps:g}": (eps, square["accuracy"])}
            if transfer_acc is not None:
                extra[f"transfer eps={eps:g}"] = (eps, transfer_acc)
            for key_, acc_ in adaptive_accs.items():
                extra[f"{key_} eps={eps:g}"] = (eps, acc_)
            report.files["accuracy_vs_eps"] = str(_plot_curve(
                grid, eps_accs, out / "accuracy_vs_eps.png", xlabel="eps (L-inf)", title="Robust accuracy vs eps",
                extra=extra))
            report.files["accuracy_vs_steps"] = str(_plot_curve(
                settings.steps_grid, steps_accs, out / "accuracy_vs_steps.png", xlabel="PGD steps",
                title=f"Robust accuracy vs steps (eps={eps:g})",
                extra={f"{settings.restarts} restarts": (settings.pgd_steps, restart["accuracy"])}))
        write_json(out / "audit.json", report.to_dict())
        from ib_plugins.training import _atomic_write_text

        _atomic_write_text(out / "audit.md", report.to_markdown())
        _atomic_write_text(out / "audit.html", report.to_html())
        report.files.update({"audit.json": str(out / "audit.json"), "audit.md": str(out / "audit.md"),
                             "audit.html": str(out / "audit.html")})
    logger.info("audit of %s: %s", target_name, report.summary())
    return report
