"""The demo: standard, IB-RAR and adversarially trained digits networks side by side (:func:`run_demo`)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from ib_plugins._markdown import md_cell, md_text
from ib_plugins._progress import PhaseProgress
from ib_plugins.experiments.results_dir import _check_count, _test_tensors, prepare_results_dir, write_json
from ib_plugins.experiments.runs import _fit_with_progress
from ib_plugins.training import (
    TrainConfig,
    _atomic_write_text,
    _device,
    resolve_config,
)

logger = logging.getLogger(__name__)


DEMO_EPOCHS = 20
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
    robust_layers = ", ".join(get_preset("digits-cnn").robust_layers)
    labels = {"CE": "CE (ce, no IB)", "IB-RAR": f"IB-RAR (ce + IB on {robust_layers} + code mask)"}
    phases = PhaseProgress(total=len(runs) * (3 if autoattack_n > 0 else 2), desc="demo", enabled=progress,
                           logger=logger)
    try:
        for name, cfg in runs.items():
            _demo_run(name, cfg, label=labels[name], phases=phases, out=out, x=x, y=y, specs=specs, seed=seed,
                      device=device, progress=progress, engine=engine, overwrite=overwrite, autoattack_n=autoattack_n,
                      budget_info=budget_info, results=results, suite_results=suite_results, aa_results=aa_results,
                      entries=entries)
    finally:
        phases.close()
    return _finish_demo(out, results=results, suite_results=suite_results, aa_results=aa_results, entries=entries,
                        budget_info=budget_info, x=x, epochs=epochs, seed=seed, autoattack_n=autoattack_n, t0=t0)


def _demo_run(
    name: str, cfg: TrainConfig, *, label: str, phases: PhaseProgress, out: Path, x: torch.Tensor, y: torch.Tensor,
    specs: Any, seed: int, device: str, progress: bool, engine: str, overwrite: bool, autoattack_n: int,
    budget_info: Any, results: dict[str, Any], suite_results: dict[str, Any], aa_results: dict[str, Any],
    entries: list[Any],
) -> None:
    """One network of the demo: train it, attack it with the suite, then AutoAttack (each a named phase)."""
    from ib_plugins import evaluation as ev

    with phases.phase(f"train {label}"):
        trainer, final = _fit_with_progress(cfg, out / name.lower(), label=label, overwrite=overwrite,
                                            progress=progress)
    model = trainer.eval_model().eval()
    with phases.phase(f"attack {name} (IB-RAR suite: {', '.join(s.name for s in specs)})"):
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
        with phases.phase(f"AutoAttack {name} (n={n_aa})"):
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


def _finish_demo(
    out: Path, *, results: dict[str, Any], suite_results: dict[str, Any], aa_results: dict[str, Any],
    entries: list[Any], budget_info: Any, x: torch.Tensor, epochs: int, seed: int, autoattack_n: int, t0: float,
) -> dict[str, Any]:
    """The demo's table, leaderboard files, metrics.json and results.md."""
    from ib_plugins.presets import get_preset

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
        f"see the note under the table).{aa_note}",
        "",
        table,
    ]
    _atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    metrics["table"] = table
    return metrics
