"""Experiment runners behind the command line: evaluate a checkpoint, select robust layers, the demo.

Each runner writes a results folder holding the resolved configuration (``config.json``), the
metrics (``metrics.json``), a markdown table (``results.md``) and PNG plots, and returns the metrics.
A folder that already holds a *different* run is refused unless ``overwrite=True``; nothing is
written before the inputs (checkpoints, datasets) have been read successfully.

Example:
    >>> import tempfile, json, os
    >>> d = tempfile.mkdtemp()
    >>> prepare_results_dir(d, {"kind": "example", "n": 1}, overwrite=False)
    >>> json.load(open(os.path.join(d, "config.json")))["kind"]
    'example'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ib_plugins._markdown import md_cell, md_text
from ib_plugins.training import (
    RunExistsError,
    TrainConfig,
    Trainer,
    _atomic_write_text,
    _check_has_a_batch,
    _device,
    load_model_from_checkpoint,
    resolve_config,
)

__all__ = [
    "prepare_results_dir",
    "write_json",
    "evaluate_checkpoint",
    "select_robust_layers",
    "run_demo",
    "DEMO_EPOCHS",
]

logger = logging.getLogger(__name__)

DEMO_EPOCHS = 20


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON atomically and durably, with sorted keys (diff-friendly).

    The text goes to a temporary file that is fsynced and renamed over ``path``, then the folder is
    fsynced: a crash or a power loss leaves the old file or the new one, never half of one.

    Args:
        path: destination file.
        data: JSON-serialisable data.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.json")
        >>> write_json(p, {"b": 1, "a": 2}); open(p).read().splitlines()[1]
        '  "a": 2,'
    """
    _atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


# What the runners write into a results folder besides config.json: a folder holding any of these
# but no config.json of ours is refused (they would be replaced), unless overwrite=True.
_OUTPUT_NAMES = (
    "metrics.json", "results.md", "history.json", "checkpoint.pt", "audit.json", "audit.md", "audit.html",
    "leaderboard.md", "leaderboard.html",
)
_OUTPUT_SUFFIXES = (".png",)


def _foreign_outputs(folder: Path) -> list[str]:
    """The files in ``folder`` that a runner would write (``folder`` holds no config.json)."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if p.name in _OUTPUT_NAMES or p.suffix.lower() in _OUTPUT_SUFFIXES
    )


def prepare_results_dir(out_dir: str | os.PathLike[str], config: dict[str, Any], *, overwrite: bool) -> None:
    """Create ``out_dir`` for a run described by ``config``, refusing a folder of a different run.

    Nothing the user had is replaced without ``overwrite=True``: a folder whose ``config.json``
    describes another run is refused, and so is a folder without a ``config.json`` that holds files
    a runner writes (``metrics.json``, ``results.md``, ``history.json``, ``checkpoint.pt``, PNGs...),
    since those are not known to be ours.

    Args:
        out_dir: the results folder.
        config: the run's configuration (compared with an existing ``config.json``).
        overwrite: replace a folder that holds a different run, or files of the user's own.

    Raises:
        RunExistsError: ``out_dir/config.json`` describes a different run, or ``out_dir`` holds output
            files but no ``config.json``, and ``overwrite`` is False.
        FileExistsError: ``out_dir`` is an existing file.
        ValueError: ``overwrite`` is not a bool.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> prepare_results_dir(d, {"a": 1}, overwrite=False)
        >>> try:
        ...     prepare_results_dir(d, {"a": 2}, overwrite=False)
        ... except RunExistsError:
        ...     print("refused")
        refused
        >>> mine = tempfile.mkdtemp()
        >>> _ = open(os.path.join(mine, "metrics.json"), "w").write("{}")
        >>> try:
        ...     prepare_results_dir(mine, {"a": 1}, overwrite=False)
        ... except RunExistsError as err:
        ...     print(str(err).split(" but")[0].split(" holds ")[1])
        metrics.json
    """
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite: expected True or False, got {overwrite!r}")
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"out_dir: expected a folder, got the existing file {p}")
    cfg_path = p / "config.json"
    if not overwrite:
        if cfg_path.is_file():
            try:
                same = json.loads(cfg_path.read_text(encoding="utf-8")) == json.loads(json.dumps(config, default=str))
            except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deeply: not ours
                same = False
            if not same:
                raise RunExistsError(
                    f"{p} already holds a different run (see its config.json); choose another folder or pass "
                    "overwrite=True (--overwrite) to replace it"
                )
        else:
            found = _foreign_outputs(p)
            if found:
                raise RunExistsError(
                    f"{p} holds {', '.join(found)} but no config.json of an ib-plugins run, so these files are not "
                    "known to be ours and would be replaced; choose another folder or pass overwrite=True "
                    "(--overwrite) to replace them"
                )
    p.mkdir(parents=True, exist_ok=True)
    write_json(cfg_path, config)


def _test_tensors(dataset: str, *, data_dir: str | None, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from ib_plugins.data import load_dataset

    ds = load_dataset(dataset, split="test", data_dir=data_dir, limit=n, seed=seed)
    if hasattr(ds, "tensors"):
        x, y = ds.tensors
        return x, y
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.as_tensor(ys)


def _check_count(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> None:
    """A CLI-facing count: an int >= ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}{' or None' if optional else ''}, got {value!r}")


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
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
) -> dict[str, Any]:
    """Evaluate a trained checkpoint with an attack suite and write a results folder.

    Args:
        checkpoint: a checkpoint written by :class:`~ib_plugins.training.Trainer`.
        out_dir: results folder (default: ``<checkpoint folder>/eval-<suite>-<budget>``).
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

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        CheckpointError: the checkpoint is missing, corrupt, or of another model (nothing is written).
        RunExistsError: ``out_dir`` holds a different evaluation.
        ValueError: bad names or budgets.
    """
    from ib_plugins import evaluation as ev

    # Validate the plain options before reading anything (nothing is written before all checks pass).
    _device(device)
    _check_count("batch_size", batch_size)
    _check_count("n", n, optional=True)
    _check_count("seed", seed, minimum=0)
    _check_count("pgd_steps", pgd_steps, optional=True)
    _check_count("cw_steps", cw_steps, optional=True)
    engine = ev._check_engine(engine)
    model, train_cfg, ckpt = load_model_from_checkpoint(checkpoint, map_location=device, expect_model=expect_model)
    from ib_plugins.data import get_dataset_info

    info = get_dataset_info(train_cfg.dataset)
    x, y = _test_tensors(train_cfg.dataset, data_dir=data_dir or train_cfg.data_dir, n=n, seed=seed)
    specs = ev.build_suite(
        suite, budget=budget, dataset=train_cfg.dataset, num_classes=info.num_classes,
        pgd_steps=pgd_steps, cw_steps=cw_steps, attacks=attacks,
    )
    budget_name = budget or ev.default_budget(train_cfg.dataset, suite).name
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
    eval_config = {
        "kind": "evaluate",
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_epoch": int(ckpt.get("epoch", 0)),
        "train_config": train_cfg.to_dict(),
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
    }
    out = Path(out_dir) if out_dir is not None else Path(checkpoint).parent / f"eval-{suite}-{budget_name}"
    prepare_results_dir(out, eval_config, overwrite=overwrite)
    t0 = time.perf_counter()
    result = ev.evaluate_suite(
        model, x, y, specs, batch_size=batch_size, seed=seed, device=device, progress=progress,
        keep_adversarial=tendency is not None, engine=engine,
    )
    metrics: dict[str, Any] = {"suite": result.to_dict(), "model": train_cfg.model, "dataset": train_cfg.dataset}
    md = [f"# {md_text(suite)} suite ({md_text(budget_name)}) on {md_text(train_cfg.dataset)} / "
          f"{md_text(train_cfg.model)}", "", result.to_markdown()]
    if steps_sweep:
        steps, accs = ev.accuracy_vs_steps(
            model, x, y, steps=list(steps_sweep), suite=suite, budget=budget, dataset=train_cfg.dataset,
            num_classes=info.num_classes, batch_size=batch_size, seed=seed, device=device, progress=progress,
            engine=engine,
        )
        metrics["accuracy_vs_steps"] = {"steps": steps, "accuracy": accs}
        ev.plot_accuracy_vs_steps({train_cfg.method: (steps, accs)}, out / "accuracy_vs_steps.png")
        md += ["", "## PGD accuracy vs steps", "", "| steps | " + " | ".join(map(str, steps)) + " |",
               "|---|" + "---|" * len(steps), "| accuracy (%) | " + " | ".join(f"{100 * a:.2f}" for a in accs) + " |"]
    if noise:
        entropic_budget = ev.default_budget(train_cfg.dataset, "entropic")
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
        plot_tsne(cap.activations[tsne_layer].cpu(), y, out / f"tsne_{tsne_layer.replace('.', '_')}.png", title=f"t-SNE of {tsne_layer}")
    metrics["wall_time_s"] = round(time.perf_counter() - t0, 2)
    write_json(out / "metrics.json", metrics)
    _atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    return metrics


def select_robust_layers(
    *,
    dataset: str = "digits",
    model: str = "digits-cnn",
    candidates: Sequence[str] | None = None,
    epochs: int = 20,
    batch_size: int = 50,
    alpha: float = 0.008,
    beta: float = 0.08,
    eval_n: int | None = None,
    tolerance: float = 0.01,
    out_dir: str | os.PathLike[str] = "select-layers",
    seed: int = 0,
    data_dir: str | None = None,
    train_limit: int | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """IB-RAR's Table III procedure: which layers, regularised alone, make the network robust?

    Trains a CE-only network, one network per candidate layer with the IB term on that layer only,
    one with all candidates, and finally one with the selected set, all from the same seed and
    without adversarial training; evaluates each with the suite's PGD. A layer is selected when its
    single-layer PGD accuracy beats CE-only by more than ``tolerance`` (absolute).

    The report says how much to trust that: every accuracy carries its Wilson 95 % interval, every
    gain over CE-only the paired 95 % interval of the difference on the same test images
    (:func:`ib_plugins.stats.paired_difference_interval`), and it warns (in ``results.md``, the
    log and ``metrics.json["warnings"]``) when a network sits at chance (its clean accuracy is
    statistically indistinguishable from ``1/C``) or when a gain that decides a selection is inside
    its interval. When every network is at chance, nothing is selected and the report says why.

    Args:
        dataset: dataset name.
        model: model name (must have a layer preset unless ``candidates`` is given).
        candidates: layers to try (default: the model preset's hook points).
        epochs: epochs per network.
        batch_size: minibatch size.
        alpha: α of the IB term.
        beta: β of the IB term.
        eval_n: evaluate PGD on a subset of this many test images (None = all).
        tolerance: required PGD-accuracy gain over CE-only for selection.
        out_dir: results folder (each network in a subfolder).
        seed: seed shared by every network.
        data_dir: dataset folder.
        train_limit: train on a subset.
        device: device.
        overwrite: replace a folder of a different selection run.
        progress: show progress bars.

    Returns:
        ``{"rows": [...], "selected": [...], "ce_pgd": ...}`` as written to ``metrics.json``.
    """
    from ib_plugins import evaluation as ev
    from ib_plugins.data import get_dataset_info
    from ib_plugins.models import create_model
    from ib_plugins.presets import preset_for_model

    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ValueError(f"tolerance: expected a number in [0, 1) (a PGD-accuracy gain), got {tolerance!r}")
    _device(device)
    _check_count("eval_n", eval_n, optional=True)
    base = TrainConfig(
        dataset=dataset, model=model, method="ce", epochs=epochs, batch_size=batch_size, alpha=alpha, beta=beta,
        seed=seed, data_dir=data_dir, train_limit=train_limit, device=device,
    )
    resolve_config(base)  # names, types and ranges, before anything is trained or written
    info = get_dataset_info(dataset)
    if candidates is None:
        preset = preset_for_model(create_model(model, num_classes=info.num_classes, in_channels=info.in_channels))
        if preset is None:
            raise ValueError(f"candidates: {model!r} has no layer preset; pass the layers to try")
        candidates = list(preset.layers)
    if isinstance(candidates, str) or not all(isinstance(c, str) for c in candidates) or not list(candidates):
        raise ValueError(f"candidates: expected a non-empty list of layer names, got {candidates!r}")
    candidates = list(candidates)
    resolve_config(dataclasses.replace(base, ib=True, ib_layers=candidates))
    _check_has_a_batch(batch_size=batch_size, train_limit=train_limit)
    config = {"kind": "select-layers", "base": base.to_dict(), "candidates": candidates, "tolerance": tolerance, "eval_n": eval_n}
    out = Path(out_dir)
    x, y = _test_tensors(dataset, data_dir=data_dir, n=eval_n, seed=seed)
    prepare_results_dir(out, config, overwrite=overwrite)
    pgd = ev.build_suite("ibrar", dataset=dataset, num_classes=info.num_classes, attacks=["pgd"])

    from ib_plugins.stats import paired_difference_interval, wilson_interval

    n_eval = int(x.shape[0])
    chance = 1.0 / info.num_classes
    pgd_correct: dict[str, torch.Tensor] = {}

    def run(name: str, cfg: TrainConfig) -> dict[str, Any]:
        trainer = Trainer(cfg, out_dir=out / name, resume="auto", overwrite=overwrite, progress=progress)
        final = trainer.fit()
        res = ev.evaluate_suite(trainer.eval_model(), x, y, pgd, seed=seed, device=device, progress=progress)
        pgd_correct[name] = res.correct["pgd"]
        clean_low, clean_high = wilson_interval(res.n_clean_correct, n_eval)
        pgd_low, pgd_high = wilson_interval(res["pgd"].n_robust, n_eval)
        return {"name": name, "layers": cfg.ib_layers if cfg.ib else [], "test_acc": res.clean_accuracy,
                "test_acc_ci": [clean_low, clean_high], "pgd_acc": res["pgd"].accuracy, "pgd_acc_ci": [pgd_low, pgd_high],
                "near_chance": clean_low <= chance, "train_epochs": final.get("epochs")}

    def versus_ce(row: dict[str, Any]) -> None:
        ce_ok, ok = pgd_correct["ce"], pgd_correct[row["name"]]
        diff, low, high = paired_difference_interval(
            better=int((ok & ~ce_ok).sum()), worse=int((~ok & ce_ok).sum()), n=n_eval)
        row.update(gain=diff, gain_ci=[low, high], gain_inside_noise=low <= 0.0 <= high)

    rows = [run("ce", base)]
    for layer in candidates:
        rows.append(run(f"layer-{layer}", dataclasses.replace(base, ib=True, ib_layers=[layer])))
    rows.append(run("all-layers", dataclasses.replace(base, ib=True, ib_layers=candidates)))
    ce_pgd = rows[0]["pgd_acc"]
    all_at_chance = all(r["near_chance"] for r in rows)
    selected = [] if all_at_chance else [
        r["layers"][0] for r in rows[1 : 1 + len(candidates)] if r["pgd_acc"] > ce_pgd + tolerance]
    if selected:
        rows.append(run("selected", dataclasses.replace(base, ib=True, ib_layers=selected)))
    for r in rows[1:]:
        versus_ce(r)
    warnings_ = _selection_warnings(rows[: 1 + len(candidates)], selected, chance=chance, n_eval=n_eval)
    for text in warnings_:
        logger.warning("select-layers: %s", text)
    metrics = {"rows": rows, "selected": selected, "ce_pgd": ce_pgd, "pgd": pgd[0].to_dict(), "n_eval": n_eval,
               "chance_accuracy": chance, "warnings": warnings_}
    write_json(out / "metrics.json", metrics)
    spec = pgd[0]
    md = [
        f"# Robust-layer selection on {md_text(dataset)} / {md_text(model)} (Table III procedure)",
        "",
        f"- Networks: {md_text(model)}, CE without adversarial training, {epochs} epochs, batch {batch_size}, seed "
        f"{seed}; IB term α = {alpha:g}, β = {beta:g} on the listed layers.",
        f"- PGD (the IB-RAR suite's `pgd`): {spec.describe()}, {spec.kwargs['steps']} steps of "
        f"{spec.kwargs['alpha']:.4g}, random start; on {n_eval} test images.",
        f"- A layer is selected when its single-layer PGD accuracy beats CE-only by more than {100 * tolerance:.1f} "
        "points. Intervals are 95 %: Wilson for accuracies, paired (Agresti–Min, same test images) for gains.",
        "",
        "| network | IB layers | test acc. (%) | PGD acc. (%) | PGD gain vs CE (points) |",
        "|---|---|---|---|---|",
    ]

    def pct_ci(value: float, ci: Sequence[float]) -> str:
        return f"{100 * value:.2f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"

    for r in rows:
        layers = ", ".join(md_cell(layer) for layer in r["layers"]) or "-"
        gain = "-" if "gain" not in r else (
            f"{100 * r['gain']:+.2f} [{100 * r['gain_ci'][0]:+.1f}, {100 * r['gain_ci'][1]:+.1f}]"
            + (" (inside the noise)" if r["gain_inside_noise"] else ""))
        test = pct_ci(r["test_acc"], r["test_acc_ci"]) + (" (chance)" if r["near_chance"] else "")
        md.append(f"| {md_cell(r['name'])} | {layers} | {test} | {pct_ci(r['pgd_acc'], r['pgd_acc_ci'])} | {gain} |")
    if all_at_chance:
        verdict = "none: every network is at chance accuracy, so no layer can be judged"
    else:
        verdict = ", ".join(md_text(layer) for layer in selected) if selected else "none"
    md += ["", f"Selected robust layers: {verdict}"]
    if warnings_:
        md += ["", "Warnings:", ""] + [f"- {md_text(w)}" for w in warnings_]
    _atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    return metrics


def _selection_warnings(
    rows: Sequence[dict[str, Any]], selected: Sequence[str], *, chance: float, n_eval: int
) -> list[str]:
    """What a reader of a layer selection must know: networks at chance, selections inside the noise.

    ``rows`` are CE-only first, then one row per single-layer network (with ``near_chance``,
    ``gain``, ``gain_ci`` and ``gain_inside_noise`` filled in).
    """
    if all(r["near_chance"] for r in rows):
        return [f"every network sits at chance accuracy ({100 * chance:.1f}%): their PGD accuracies say nothing "
                "about the layers; train longer (--epochs) or on more data"]
    found = [f"network {r['name']!r} sits at chance accuracy (test {100 * r['test_acc']:.1f}%, its 95% interval "
             f"reaches {100 * chance:.1f}%): its PGD accuracy says nothing" for r in rows if r["near_chance"]]
    for r in rows[1:]:
        if r["layers"][0] in selected and r["gain_inside_noise"]:
            found.append(
                f"{r['layers'][0]!r} is selected on a PGD gain of {100 * r['gain']:+.1f} points over CE-only whose 95% "
                f"interval [{100 * r['gain_ci'][0]:+.1f}, {100 * r['gain_ci'][1]:+.1f}] includes 0 "
                f"({n_eval} test images): the selection is inside the noise")
    return found


def _demo_table(suite_results: dict[str, Any], aa_results: dict[str, Any]) -> str:
    from ib_plugins.evaluation import _accuracy_cell, _column_title, _fixed_c_note

    specs = [a.spec for a in next(iter(suite_results.values())).attacks]
    header = ["Model", "Clean", *(_column_title(s.name, s) for s in specs)]
    header += [f"AutoAttack (n={next(iter(aa_results.values()))['n']})"] if aa_results else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, res in suite_results.items():
        cells = [md_cell(model), f"{100 * res.clean_accuracy:.2f}", *(_accuracy_cell(a) for a in res.attacks)]
        if aa_results:
            cells.append(f"{100 * aa_results[model]['robust_accuracy']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = _fixed_c_note(specs)
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def run_demo(
    *,
    out_dir: str | os.PathLike[str] = "ib-plugins-demo",
    epochs: int = DEMO_EPOCHS,
    seed: int = 0,
    eval_n: int | None = None,
    autoattack_n: int = 100,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
    engine: str = "builtin",
) -> dict[str, Any]:
    """The main job: CE versus IB-RAR (robust layers + channel mask) on scikit-learn's digits.

    Trains both networks from the same seed (authors' non-AT recipe: SGD 0.01, momentum 0.9,
    StepLR(20, 0.2); batch 50), evaluates IB-RAR's attack suite (PGD, CW, FGSM, FAB, NIFGSM at the
    digits budget) on the test set, AutoAttack on the first ``autoattack_n`` test images, and writes
    the side-by-side table and leaderboard files. Finished networks are reused when the demo is run
    again with the same settings.

    Args:
        out_dir: results folder.
        epochs: training epochs per network.
        seed: seed of both runs and of the attacks.
        eval_n: evaluate the attack suite on a subset (None: all 450 test images).
        autoattack_n: number of test images for the AutoAttack column (0 = skip).
        overwrite: replace a folder of a different demo run (and its leaderboard model-info files).
        device: device.
        progress: show progress bars.
        engine: the attack engine of the suite, ``"builtin"`` (default) or ``"torchattacks"``.

    Returns:
        The metrics written to ``metrics.json``.
    """
    from ib_plugins import evaluation as ev
    from ib_plugins.presets import get_preset

    _device(device)
    _check_count("eval_n", eval_n, optional=True)
    _check_count("autoattack_n", autoattack_n, minimum=0)
    from ib_plugins.evaluation import _check_engine

    engine = _check_engine(engine)
    runs = {
        "CE": TrainConfig(epochs=epochs, batch_size=50, seed=seed, device=device),
        "IB-RAR": TrainConfig(epochs=epochs, batch_size=50, seed=seed, device=device, ib=True, ib_layers="robust", mask="code"),
    }
    for run_config in runs.values():
        resolve_config(run_config)  # epochs, seed and device, before anything is written
    config = {"kind": "demo", "runs": {k: v.to_dict() for k, v in runs.items()}, "eval_n": eval_n, "autoattack_n": autoattack_n,
              "engine": engine}
    out = Path(out_dir)
    x, y = _test_tensors("digits", data_dir=None, n=eval_n, seed=seed)
    prepare_results_dir(out, config, overwrite=overwrite)
    specs = ev.build_suite("ibrar", dataset="digits", num_classes=10)
    budget_info = ev.default_budget("digits", "ibrar")
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    suite_results = {}
    aa_results: dict[str, Any] = {}
    entries = []
    for name, cfg in runs.items():
        trainer = Trainer(cfg, out_dir=out / name.lower(), resume="auto", overwrite=overwrite, progress=progress)
        final = trainer.fit()
        model = trainer.eval_model().eval()
        suite_results[name] = ev.evaluate_suite(model, x, y, specs, seed=seed, device=device, progress=progress,
                                                engine=engine)
        results[name] = {"train": final, "suite": suite_results[name].to_dict()}
        if autoattack_n > 0:
            from ib_plugins.adapters.robustbench_eval import evaluate_for_leaderboard

            n_aa = min(autoattack_n, int(x.shape[0]))
            ib_config = None
            if cfg.ib:
                ib_config = {"layers": cfg.ib_layers, "alpha": cfg.alpha, "beta": cfg.beta, "y_kernel": cfg.y_kernel,
                             "mask": cfg.mask, "mask_every": cfg.mask_every}
            entry = evaluate_for_leaderboard(
                model, x[:n_aa], y[:n_aa], dataset="digits", threat_model="Linf", eps=budget_info.linf_eps,
                model_name=f"demo-{name.lower()}", batch_size=n_aa, seed=seed, out_dir=out, ib_config=ib_config,
                metadata={"name": f"DigitsCNN {name} (ib-plugins demo)", "architecture": "DigitsCNN",
                          "venue": "ib-plugins demo", "additional_data": False},
                state_dir=out / "autoattack" / name.lower(), device=device, progress=progress, overwrite=overwrite,
            )
            entries.append(entry)
            aa_results[name] = {"n": n_aa, "clean_accuracy": entry.clean_accuracy, "robust_accuracy": entry.robust_accuracy}
            results[name]["autoattack"] = aa_results[name]
    table = _demo_table(suite_results, aa_results)
    metrics: dict[str, Any] = {
        "models": results,
        "budget": dataclasses.asdict(budget_info),
        "n_eval": int(x.shape[0]),
    }
    if entries:
        from ib_plugins.leaderboard import render_leaderboard

        md_path, html_path = render_leaderboard(entries, out, title="ib-plugins demo: digits, Linf")
        metrics["leaderboard"] = {"markdown": str(md_path), "html": str(html_path)}
    metrics["wall_time_s"] = round(time.perf_counter() - t0, 2)
    write_json(out / "metrics.json", metrics)
    aa_note = (
        f" The AutoAttack column is standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) at ε = {budget_info.linf_eps} "
        f"on the first {min(autoattack_n, int(x.shape[0]))} test images."
        if aa_results else ""
    )
    md = [
        "# ib-plugins demo: CE vs IB-RAR on scikit-learn digits (8x8)",
        "",
        f"Both networks: DigitsCNN, {epochs} epochs, batch 50, seed {seed}; IB-RAR = IB term on the robust layers "
        f"({', '.join(map(md_text, get_preset('digits-cnn').robust_layers))}) "
        "+ channel mask (authors' code mode). Accuracy (%) on "
        f"{x.shape[0]} test images under the IB-RAR attack suite at the digits budget "
        f"(L∞ ε = {budget_info.linf_eps} for PGD, FGSM, FAB and NI-FGSM; CW is the paper's fixed-c CW-L2, "
        "see the note under the table).{aa_note}",
        "",
        table,
    ]
    _atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    metrics["table"] = table
    return metrics
