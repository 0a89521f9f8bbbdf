"""Selecting robust layers by training and attacking one network per candidate: :func:`select_robust_layers`."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ib_plugins._markdown import md_cell, md_text
from ib_plugins._progress import PhaseProgress
from ib_plugins.experiments.results_dir import _check_count, _test_tensors, prepare_results_dir, write_json
from ib_plugins.experiments.runs import _fit_with_progress, _run_label
from ib_plugins.training import (
    TrainConfig,
    _atomic_write_text,
    _check_has_a_batch,
    _device,
    resolve_config,
)

logger = logging.getLogger(__name__)


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

    n_runs = 2 + len(candidates)  # ce, one per candidate, all-layers (+ "selected", counted when it runs)
    phases = PhaseProgress(total=n_runs, desc="select-layers", enabled=progress, unit="network", logger=logger)

    def run(name: str, cfg: TrainConfig) -> dict[str, Any]:
        label = _run_label(name, cfg)
        with phases.phase(label):
            trainer, final = _fit_with_progress(cfg, out / name, label=label, overwrite=overwrite, progress=progress,
                                                trainer_progress=True)
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

    try:
        rows = [run("ce", base)]
        for layer in candidates:
            rows.append(run(f"layer-{layer}", dataclasses.replace(base, ib=True, ib_layers=[layer])))
        rows.append(run("all-layers", dataclasses.replace(base, ib=True, ib_layers=candidates)))
        ce_pgd = rows[0]["pgd_acc"]
        all_at_chance = all(r["near_chance"] for r in rows)
        selected = [] if all_at_chance else [
            r["layers"][0] for r in rows[1 : 1 + len(candidates)] if r["pgd_acc"] > ce_pgd + tolerance]
        if selected:
            phases.bar.total = n_runs + 1
            rows.append(run("selected", dataclasses.replace(base, ib=True, ib_layers=selected)))
    finally:
        phases.close()
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
