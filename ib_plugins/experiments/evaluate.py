"""Evaluating a checkpoint or a user's model: :func:`evaluate_checkpoint` (attack suite, AutoAttack, tendency)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ib_plugins._markdown import md_text
from ib_plugins.experiments.results_dir import _check_count, _test_tensors, prepare_results_dir, write_json
from ib_plugins.experiments.user_model import _check_model_source, _dataset_info, _probe_model, load_model_from_factory
from ib_plugins.training import (
    _atomic_write_text,
    _device,
    load_model_from_checkpoint,
)


@contextlib.contextmanager
def _rank_context(device: str) -> Iterator[str]:
    """Under torchrun, the process group around an evaluation; yields this rank's device.

    A process started by ``torchrun`` (``WORLD_SIZE`` > 1) with no process group yet sets one up here
    (NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on CPU) and, once the block is done, waits
    for the other ranks before tearing it down.
    """
    import torch.distributed as dist

    from ib_plugins.distributed import env_world_size, world_info

    owns_group = False
    if env_world_size() > 1 and not (dist.is_available() and dist.is_initialized()):
        dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
        owns_group = True
    try:
        if world_info()[1] > 1 and str(device).startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(torch.device(device))
        yield device
        if owns_group and world_info()[1] > 1:
            # Leave together: a rank that tears its gloo pairs down while rank 0 still writes the
            # results folder was seen to abort ("terminate called without an active exception").
            dist.barrier()
    finally:
        if owns_group:
            dist.destroy_process_group()


def _in_process_group(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` (a function with a ``device`` argument) inside :func:`_rank_context`.

    ``fn`` returns (and its frame, with every object of the evaluation, is gone) before the ranks meet
    at the barrier and the group is torn down: objects freed after the teardown were seen to abort a
    rank.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with _rank_context(bound.arguments["device"]) as device:
            bound.arguments["device"] = device
            return fn(*bound.args, **bound.kwargs)

    return wrapper


@_in_process_group
def evaluate_checkpoint(  # noqa: C901 - one straight pipeline: load, check, attack, write
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    model_factory: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    suite: str = "ibrar",
    budget: str | None = None,
    attacks: Sequence[str] | None = None,
    n: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    pgd_steps: int | None = None,
    cw_steps: int | None = None,
    steps_sweep: Sequence[int] | None = None,
    noise: bool = False,
    tendency: str | None = None,
    tsne_layer: str | None = None,
    expect_model: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    engine: str = "builtin",
    autoattack_n: int = 0,
    autoattack_version: str = "standard",
    ema: bool = False,
) -> dict[str, Any]:
    """Evaluate a trained checkpoint, or a user's own model, with an attack suite and write a results folder.

    The model is either a checkpoint of :class:`~ib_plugins.training.Trainer` (which knows its
    dataset) or a model kept as code: ``model_factory`` (``"package.module:function"`` or
    ``"path/to/file.py:function"``) with ``weights`` (a state_dict), evaluated on ``dataset``; see
    :func:`load_model_from_factory`.

    Args:
        checkpoint: a checkpoint written by :class:`~ib_plugins.training.Trainer` (None with
            ``model_factory``).
        model_factory: instead of a checkpoint, the function that builds the model.
        weights: the model's state_dict file (with ``model_factory``; None: the factory's weights).
        factory_kwargs: keyword arguments of the factory, e.g. ``{"num_classes": 10}``.
        dataset: the test set of a ``model_factory`` model (a checkpoint knows its own).
        out_dir: results folder (default: ``<checkpoint folder>/eval-<suite>-<budget>``; for a
            factory ``<weights folder>/eval-<suite>-<budget>``, or that name in the current folder).
        suite: ``"ibrar"`` (PGD, CW, FGSM, FAB, NIFGSM) or ``"entropic"``.
        budget: the suite's budget name (default per suite; see :mod:`ib_plugins.evaluation`).
        attacks: subset of the suite's attacks.
        n: evaluate on a stratified subset of this many test images (None = the whole test set).
        batch_size: attack batch size.
        seed: attack seed.
        pgd_steps: PGD steps (suite default otherwise).
        cw_steps: CW steps (suite default otherwise).
        steps_sweep: also measure PGD accuracy at these step counts (IB-RAR Fig. 3) and plot it.
        noise: also measure accuracy under random L2/L∞ noise of the suite's radii (entropic Tables V–VI).
        tendency: also compute the misclassification-tendency table for this attack (Table IV).
        tsne_layer: also plot a t-SNE of this layer's test representation (Fig. 1).
        expect_model: refuse a checkpoint of another model.
        data_dir: folder with dataset files.
        device: ``"cpu"`` or a CUDA device.
        overwrite: replace a results folder of a different evaluation.
        progress: show progress bars.
        engine: the attack engine, ``"builtin"`` (default) or ``"torchattacks"`` (see
            :func:`ib_plugins.evaluation.run_attack`); recorded in ``config.json`` and the results.
        autoattack_n: also run AutoAttack (L∞, the suite's ε) on the first this many evaluated images
            (0 = no; ``metrics["autoattack"]``, a column in ``results.md``; resumable chunk files in
            ``<out>/autoattack``).
        autoattack_version: ``"standard"`` (APGD-CE, APGD-T, FAB-T, Square) or ``"rand"``.
        ema: evaluate the checkpoint's exponential moving average of the weights (``--ema-decay``
            runs) instead of the raw weights; recorded in ``config.json``.

    Returns:
        The metrics written to ``metrics.json`` (``"out_dir"``: the results folder, as given).

    Raises:
        CheckpointError: the checkpoint is missing, corrupt, or of another model (nothing is written).
        RunExistsError: ``out_dir`` holds a different evaluation.
        ValueError: bad names or budgets; both or neither of ``checkpoint`` and ``model_factory``;
            a factory model without ``dataset``, or one that cannot be built, loaded or run on the
            dataset's inputs (see :func:`load_model_from_factory`).

    Under ``torchrun --nproc_per_node=N ib-plugins evaluate ...`` the process group is set up here
    (NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on CPU), every rank attacks its share of
    the batches (see :func:`ib_plugins.evaluation.evaluate_suite`; AutoAttack chunks likewise), and
    rank 0 alone writes the results folder, which holds exactly the single-process numbers.
    """
    from ib_plugins import evaluation as ev
    from ib_plugins.distributed import world_info

    rank, world = world_info()
    progress = progress and rank == 0
    # Validate the plain options before reading anything (nothing is written before all checks pass).
    _device(device)
    _check_count("batch_size", batch_size)
    _check_count("n", n, optional=True)
    _check_count("seed", seed, minimum=0)
    _check_count("pgd_steps", pgd_steps, optional=True)
    _check_count("cw_steps", cw_steps, optional=True)
    _check_count("autoattack_n", autoattack_n, minimum=0)
    if autoattack_version not in ("standard", "rand"):
        raise ValueError(f"autoattack_version: expected 'standard' or 'rand', got {autoattack_version!r}")
    engine = ev._check_engine(engine)
    if not isinstance(ema, bool):
        raise TypeError(f"ema: expected True or False, got {ema!r}")
    if ema and model_factory is not None:
        raise ValueError("ema: selects the averaged weights of a training checkpoint; with model_factory pass those "
                         "weights as weights=")
    from ib_plugins.data import get_dataset_info

    _check_model_source(checkpoint, model_factory=model_factory, weights=weights, factory_kwargs=factory_kwargs,
                        dataset=dataset)
    train_cfg = None
    if model_factory is None:
        model, train_cfg, ckpt = load_model_from_checkpoint(checkpoint, map_location=device, expect_model=expect_model,
                                                             weights="ema" if ema else "raw")
        dataset_name, model_name, method = train_cfg.dataset, train_cfg.model, train_cfg.method
        data_dir = data_dir or train_cfg.data_dir
    else:
        if expect_model is not None:
            raise ValueError(f"expect_model: checks the model of a checkpoint; with model_factory it does not apply, "
                             f"got {expect_model!r}")
        assert dataset is not None
        _dataset_info(dataset)  # an unknown name is refused before any user code runs
        model = load_model_from_factory(model_factory, weights=weights, factory_kwargs=factory_kwargs,
                                        map_location=device)
        dataset_name, model_name, method = dataset, model_factory, "model"
    info = get_dataset_info(dataset_name)
    x, y = _test_tensors(dataset_name, data_dir=data_dir, n=n, seed=seed)
    if model_factory is not None:
        _probe_model(model, x, device=device, what=f"the model built by {model_factory}")
    specs = ev.build_suite(
        suite, budget=budget, dataset=dataset_name, num_classes=info.num_classes,
        pgd_steps=pgd_steps, cw_steps=cw_steps, attacks=attacks,
    )
    budget_name = budget or ev.default_budget(dataset_name, suite).name
    # Validate every option before anything is written.
    if tendency is not None and tendency not in [s.name for s in specs]:
        raise ValueError(f"tendency: expected one of the evaluated attacks ({', '.join(s.name for s in specs)}), got {tendency!r}")
    if tsne_layer is not None:
        from ib_plugins.errors import UnknownLayerError
        from ib_plugins.layer_selection import resolve_layers

        try:
            resolve_layers(model, [tsne_layer])
        except UnknownLayerError as err:
            raise UnknownLayerError(f"tsne_layer: {err}") from err
    if steps_sweep is not None:
        steps_sweep = list(steps_sweep)
        if not steps_sweep or any(not isinstance(k, int) or k < 1 for k in steps_sweep):
            raise ValueError(f"steps_sweep: expected positive integers, got {steps_sweep!r}")
    if train_cfg is not None:
        source: dict[str, Any] = {
            "checkpoint": str(Path(checkpoint).resolve()),  # type: ignore[arg-type]
            "checkpoint_epoch": int(ckpt.get("epoch", 0)),
            "train_config": train_cfg.to_dict(),
        }
    else:
        source = {
            "model_factory": model_factory,
            "factory_kwargs": dict(factory_kwargs or {}),
            "weights": None if weights is None else str(Path(weights).resolve()),
            "dataset": dataset_name,
        }
    eval_config = {
        "kind": "evaluate",
        **source,
        "suite": suite,
        "budget": budget_name,
        "attacks": [s.to_dict() for s in specs],
        "n": int(x.shape[0]),
        "seed": seed,
        "batch_size": batch_size,
        "steps_sweep": list(steps_sweep) if steps_sweep else None,
        "noise": noise,
        "tendency": tendency,
        "tsne_layer": tsne_layer,
        "engine": engine,
        **({"autoattack_n": autoattack_n, "autoattack_version": autoattack_version} if autoattack_n else {}),
        **({"ema_weights": True} if ema else {}),
    }
    if out_dir is not None:
        out = Path(out_dir)
    else:
        anchor = checkpoint if checkpoint is not None else weights
        out = (Path(anchor).parent if anchor is not None else Path()) / f"eval-{suite}-{budget_name}"
    if rank == 0:
        prepare_results_dir(out, eval_config, overwrite=overwrite)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # the folder exists before any rank writes AutoAttack chunk files into it
    t0 = time.perf_counter()
    result = ev.evaluate_suite(
        model, x, y, specs, batch_size=batch_size, seed=seed, device=device, progress=progress,
        keep_adversarial=tendency is not None, engine=engine,
    )
    metrics: dict[str, Any] = {"suite": result.to_dict(), "model": model_name, "dataset": dataset_name}
    md = [f"# {md_text(suite)} suite ({md_text(budget_name)}) on {md_text(dataset_name)} / "
          f"{md_text(model_name)}", "", result.to_markdown()]
    if steps_sweep:
        steps, accs = ev.accuracy_vs_steps(
            model, x, y, steps=list(steps_sweep), suite=suite, budget=budget, dataset=dataset_name,
            num_classes=info.num_classes, batch_size=batch_size, seed=seed, device=device, progress=progress,
            engine=engine,
        )
        metrics["accuracy_vs_steps"] = {"steps": steps, "accuracy": accs}
        if rank == 0:
            ev.plot_accuracy_vs_steps({method: (steps, accs)}, out / "accuracy_vs_steps.png")
        md += ["", "## PGD accuracy vs steps", "", "| steps | " + " | ".join(map(str, steps)) + " |",
               "|---|" + "---|" * len(steps), "| accuracy (%) | " + " | ".join(f"{100 * a:.2f}" for a in accs) + " |"]
    if noise:
        entropic_budget = ev.default_budget(dataset_name, "entropic")
        noise_res = {}
        for norm, eps in (("l2", entropic_budget.l2_eps), ("linf", entropic_budget.linf_eps)):
            noise_res[norm] = {"eps": eps, "accuracy": ev.noise_accuracy(model, x, y, norm=norm, eps=eps, seed=seed, device=device)}
        metrics["noise"] = noise_res
        md += ["", "## Accuracy under random noise", "", "| norm | eps | accuracy (%) |", "|---|---|---|"]
        md += [f"| {k} | {v['eps']:.4g} | {100 * v['accuracy']:.2f} |" for k, v in noise_res.items()]
    if tendency is not None:
        matrix = ev.misclassification_tendency(model, x, y, result.adversarial[tendency], num_classes=info.num_classes, device=device)
        metrics["tendency"] = {"attack": tendency, "counts": matrix.tolist()}
        md += ["", f"## Misclassification tendency under {md_text(tendency)}", "", ev.tendency_markdown(matrix)]
    if tsne_layer is not None:
        from ib_plugins.activation_capture import capture_activations
        from ib_plugins.plots import plot_tsne

        with torch.no_grad(), capture_activations(model, [tsne_layer], when="always", detach=True) as cap:
            model(x.to(device))
        if rank == 0:
            plot_tsne(cap.activations[tsne_layer].cpu(), y, out / f"tsne_{tsne_layer.replace('.', '_')}.png",
                      title=f"t-SNE of {tsne_layer}")
    if autoattack_n:
        from ib_plugins.adapters.autoattack_eval import run_autoattack

        n_aa = min(autoattack_n, int(x.shape[0]))
        linf = next((s.eps for s in specs if s.norm == "linf" and s.eps is not None),
                    ev.default_budget(dataset_name, suite, budget).linf_eps)
        aa = run_autoattack(model, x[:n_aa], y[:n_aa], norm="Linf", eps=linf, version=autoattack_version,
                            batch_size=batch_size, seed=seed, device=device, state_dir=out / "autoattack",
                            progress=progress)
        low, high = _wilson(int(aa.robust_flags.sum()), n_aa)
        metrics["autoattack"] = {**aa.to_dict(), "robust_accuracy_ci": [low, high]}
        md += ["", f"## AutoAttack ({md_text(autoattack_version)}, L∞ ε = {linf:.4g}) on the first {n_aa} images", "",
               "| clean (%) | robust (%) | robust 95 % interval (Wilson) |", "|---|---|---|",
               f"| {100 * aa.clean_accuracy:.2f} | {100 * aa.robust_accuracy:.2f} | "
               f"[{100 * low:.1f}, {100 * high:.1f}] |"]
    metrics["wall_time_s"] = round(time.perf_counter() - t0, 2)
    metrics["out_dir"] = str(out)
    if rank == 0:
        write_json(out / "metrics.json", metrics)
        _atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    return metrics


def _wilson(successes: int, n: int) -> tuple[float, float]:
    from ib_plugins.stats import wilson_interval

    return wilson_interval(successes, n)
