"""Training the networks a runner compares: one :class:`~ib_plugins.training.Trainer` run with progress."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ib_plugins.training import (
    TrainConfig,
    Trainer,
)

logger = logging.getLogger(__name__)


def _fit_with_progress(
    cfg: TrainConfig, out_dir: Path, *, label: str, overwrite: bool, progress: bool, trainer_progress: bool = False,
) -> tuple[Trainer, dict[str, Any]]:
    """Train (or reuse) one network with an epoch bar named ``train <label>`` and log lines naming it.

    The trainer's own per-batch bar names the run by its method only (``ce``), so runs that
    differ in their IB settings get this bar instead (``trainer_progress=True`` keeps the per-batch
    bar as well, on a terminal only, for long epochs).
    """
    from ib_plugins._progress import is_interactive, progress_bar

    bar = progress_bar(total=cfg.epochs, desc=f"train {label}", unit="epoch", enabled=progress)

    def on_epoch(trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        del trainer
        acc = metrics.get("test_acc")
        if acc is not None:
            bar.set_postfix(test_acc=f"{float(acc):.3f}")
        bar.update(max(0, epoch - bar.n))
        logger.info("%s: epoch %d/%d, train loss %.4g%s", label, epoch, cfg.epochs, float(metrics.get("train_loss", 0.0)),
                    "" if acc is None else f", test acc {float(acc):.3f}")

    trainer = Trainer(cfg, out_dir=out_dir, resume="auto", overwrite=overwrite,
                      progress=progress and trainer_progress and is_interactive(), callbacks=[on_epoch])
    try:
        final = trainer.fit()
        bar.update(max(0, cfg.epochs - bar.n))  # a finished run that was reused trains no epoch
    finally:
        bar.close()
    return trainer, final


def _run_label(name: str, cfg: TrainConfig) -> str:
    """``name (method + IB on layers + mask)``: what the run is, for bars and log lines."""
    parts = [cfg.method]
    if cfg.ib:
        layers = cfg.ib_layers if isinstance(cfg.ib_layers, str) else ",".join(map(str, cfg.ib_layers or []))
        parts.append(f"IB on {layers}")
    if cfg.mask:
        parts.append(f"{cfg.mask} mask")
    return f"{name} ({' + '.join(parts)})"
