"""The :class:`Trainer`: one configuration trained into a results folder, checkpointed every epoch."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._context import _eval_mode, _no_record, _null_context
from ib_plugins._markdown import md_cell, md_code, md_text
from ib_plugins.errors import IBPluginsError
from ib_plugins.training.attacks import TrainingAttack
from ib_plugins.training.checkpoint import (
    _WEIGHTS,
    CHECKPOINT_FORMAT,
    CheckpointError,
    _atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from ib_plugins.training.config import _AT_METHODS, TrainConfig, _device, _no_batch_error, _short_repr, resolve_config
from ib_plugins.training.holdout import _validation_split
from ib_plugins.training.losses import batch_loss
from ib_plugins.training.model import _plain_network, build_model
from ib_plugins.training.schedule import _build_scheduler, _ema_step, _WarmupEMA
from ib_plugins.wrap import IBModel

logger = logging.getLogger(__name__)


class RunExistsError(IBPluginsError, FileExistsError):
    """The results folder already holds a different run (pass ``overwrite=True`` to replace it).

    Example:
        >>> issubclass(RunExistsError, FileExistsError)
        True
    """



# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    _atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _summary_writer_class() -> Any:
    """:class:`torch.utils.tensorboard.SummaryWriter`, or a clear error when tensorboard is missing."""
    from ib_plugins._optional import is_available
    from ib_plugins.errors import MissingOptionalDependencyError

    if not is_available("tensorboard"):
        raise MissingOptionalDependencyError(
            "tensorboard: logging to a TensorBoard folder needs the 'tensorboard' package, which is not "
            "installed; install it (pip install tensorboard) or train without tensorboard (--tensorboard)"
        )
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


def _log_scalars(writer: Any, metrics: Mapping[str, Any], epoch: int) -> None:
    """Every numeric metric of an epoch (but ``epoch``) as a TensorBoard scalar at step ``epoch``."""
    for key in sorted(metrics):
        value = metrics[key]
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(key, value, epoch)
    writer.flush()


def _best_in_history(history: list[dict[str, Any]], key: str) -> tuple[int, float] | None:
    """``(epoch, value)`` of the highest ``key`` in ``history`` (the earliest on ties), or None."""
    best: tuple[int, float] | None = None
    for entry in history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and (best is None or value > best[1]):
            best = (int(entry["epoch"]), float(value))
    return best


class Trainer:
    """Train one configuration, writing a results folder and a checkpoint every epoch.

    The folder holds ``config.json`` (the resolved config), ``checkpoint.pt`` (latest epoch),
    ``history.json`` (per-epoch metrics), ``metrics.json`` (final metrics), ``results.md`` (a
    markdown table of the final metrics) and ``training_curves.png``; with ``robust_val_every``
    also ``checkpoint_best.pt`` (the whole checkpoint of the epoch with the best robust validation
    accuracy), and for runs with an IB term ``information_plane.png`` (see
    :func:`ib_plugins.plots.plot_information_plane`).

    Checkpoints hold ``model`` (the trained weights), ``model_ema`` and ``ema_n_averaged`` (the
    weight average of ``ema_decay``, else None), ``optimizer``, ``scheduler``, ``grad_scaler``,
    ``rng`` (every random stream), ``config``, ``history``, ``validation`` (the held-out split's
    ``indices`` into the training images and its ``attack``, else None) and ``epoch``.

    Each ``history.json`` entry has ``epoch``, ``lr`` (the rate after that epoch's scheduler step),
    ``train_*`` (epoch means of the loss and its parts, ``train_acc``), ``test_acc`` (every
    ``eval_every`` epochs) and, when configured: ``test_acc_ema``; ``val_n``, ``val_clean_acc``,
    ``val_robust_acc`` (and ``*_ema``) on validation epochs; ``hsic/<layer>/x`` and
    ``hsic/<layer>/y``, the epoch means of ``nHSIC(T_l, X)`` and ``nHSIC(T_l, Y)`` that the IB term
    computed on each training batch (the information plane).

    Args:
        config: the run's configuration (resolved on construction).
        out_dir: results folder.
        resume: continue from ``out_dir/checkpoint.pt`` (the config must be the same run; ``epochs``
            may grow); ``"auto"`` resumes when the folder holds a checkpoint of this run and starts
            afresh otherwise (a finished run is then not trained again).
        overwrite: replace a folder that holds a different run.
        progress: show tqdm progress bars.
        callbacks: functions ``(trainer, epoch, metrics)`` called after each epoch.

    Raises:
        RunExistsError: ``out_dir`` holds a different run and ``overwrite`` is False, holds this
            run's checkpoint and neither ``resume`` nor ``overwrite`` is set, or holds files the
            trainer writes (``metrics.json``, ``checkpoint.pt``...) without a ``config.json`` of a
            run (they are not known to be ours; ``overwrite=True`` replaces them).
        CheckpointError: ``resume`` without a readable checkpoint.
        ValueError: an invalid config (see :meth:`TrainConfig.validate`), a device this machine does
            not have, or both ``resume=True`` and ``overwrite=True``.
        MissingOptionalDependencyError: ``tensorboard`` is set but the tensorboard package is not
            installed.

    Example:
        >>> import tempfile
        >>> cfg = TrainConfig(epochs=1, train_limit=100, test_limit=50, batch_size=50)
        >>> metrics = Trainer(cfg, out_dir=tempfile.mkdtemp(), progress=False).fit()
        >>> 0.0 <= metrics["test_acc"] <= 1.0
        True
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        out_dir: str | os.PathLike[str],
        resume: bool | str = False,
        overwrite: bool = False,
        progress: bool = True,
        callbacks: list[Callable[[Trainer, int, dict[str, Any]], None]] | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        self.config = resolve_config(config)
        self.device = _device(self.config.device)
        if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
            raise TypeError(f"out_dir: expected a folder path, got {_short_repr(out_dir)}")
        self.out_dir = Path(out_dir)
        if resume not in (True, False, "auto") or isinstance(resume, int) and not isinstance(resume, bool):
            raise ValueError(f"resume: expected True, False or 'auto', got {resume!r}")
        if not isinstance(overwrite, bool):
            raise ValueError(f"overwrite: expected True or False, got {overwrite!r}")
        if resume is True and overwrite:
            raise ValueError(
                "resume, overwrite: expected at most one of them (resume continues the run in out_dir, overwrite "
                "replaces it), got both"
            )
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress
        self.callbacks = list(callbacks or [])
        self.history: list[dict[str, Any]] = []
        self._writer_class = _summary_writer_class() if self.config.tensorboard is not None else None
        self._check_out_dir()

    # -- results folder ------------------------------------------------------------------------
    # Files the trainer writes into out_dir (config.json aside).
    _OUTPUT_FILES = (
        "checkpoint.pt", "checkpoint_best.pt", "history.json", "metrics.json", "results.md", "training_curves.png",
        "information_plane.png",
    )

    def _check_out_dir(self) -> None:
        cfg_path = self.out_dir / "config.json"
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise FileExistsError(f"out_dir: expected a folder, got the existing file {self.out_dir}")
        if self.resume == "auto":
            self.resume = False
            if not self.overwrite and (self.out_dir / "checkpoint.pt").is_file() and cfg_path.is_file():
                try:
                    existing = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
                    self.resume = existing.run_identity() == self.config.run_identity()
                except (ValueError, TypeError, RecursionError, OSError):
                    self.resume = False
        if self.resume:
            if not (self.out_dir / "checkpoint.pt").is_file():
                started = (
                    " (a run was started there but stopped before its first epoch ended)" if cfg_path.is_file() else ""
                )
                raise CheckpointError(
                    f"resume: no checkpoint to resume from in {self.out_dir}{started}; none is written before the "
                    "first epoch ends, so there is nothing to continue: rerun without --resume (resume=False) to "
                    "start from scratch"
                )
            return
        if self.overwrite:
            return
        if not cfg_path.is_file():
            found = [name for name in self._OUTPUT_FILES if (self.out_dir / name).exists()]
            if found:
                raise RunExistsError(
                    f"{self.out_dir} holds {', '.join(found)} but no config.json of an ib-plugins run, so these "
                    "files are not known to be ours and training would replace them; choose another folder or "
                    "pass overwrite=True (--overwrite) to replace them"
                )
            return
        try:
            existing = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
            same = existing.run_identity() == self.config.run_identity()
        except (ValueError, TypeError, RecursionError, OSError):
            same = False
        if not same:
            raise RunExistsError(
                f"{self.out_dir} already holds a different run (see its config.json); choose another folder or "
                "pass overwrite=True (--overwrite) to replace it"
            )
        if (self.out_dir / "checkpoint.pt").is_file():
            raise RunExistsError(
                f"{self.out_dir} already holds a checkpoint of this run; pass resume=True (--resume) to continue it "
                "or overwrite=True (--overwrite) to start again"
            )

    # -- setup ---------------------------------------------------------------------------------
    rank = 0
    world = 1
    # Set by _setup (at the start of fit); None until then and when not configured.
    ema: Any = None
    val_set: tuple[Tensor, Tensor] | None = None
    val_indices: Tensor | None = None
    _val_spec: Any = None

    def _setup(self) -> None:
        from ib_plugins.data import get_dataset_info, load_dataset, make_loader, train_transform

        c = self.config
        info = get_dataset_info(c.dataset)
        self.info = info
        self.train_set = load_dataset(c.dataset, split="train", data_dir=c.data_dir, limit=c.train_limit, seed=c.seed)
        self.test_set = load_dataset(c.dataset, split="test", data_dir=c.data_dir, limit=c.test_limit, seed=c.seed)
        self.val_set = None
        self.val_indices = None
        if c.robust_val_every is not None:
            # Held out of the training images (never the test set), before the loader is built.
            n_images = len(self.train_set)
            self.train_set, self.val_set, self.val_indices = _validation_split(
                self.train_set, size=c.val_size, seed=c.seed
            )
            if c.batch_size > 1 and len(self.train_set) < c.batch_size * self.world:
                raise ValueError(
                    f"val_size: holding {len(self.val_indices)} of the {n_images} training images out for validation "
                    f"leaves {len(self.train_set)}, fewer than one batch (batch_size={c.batch_size}"
                    f"{f' x {self.world} processes' if self.world > 1 else ''}); lower val_size or batch_size"
                )
        if self.world > 1:
            # Every rank gets the same number of full batches (uneven tails are dropped), so
            # activations can be gathered and DDP's collectives line up.
            from torch.utils.data import DataLoader
            from torch.utils.data.distributed import DistributedSampler

            self.sampler = DistributedSampler(
                self.train_set, num_replicas=self.world, rank=self.rank, shuffle=True, seed=c.seed, drop_last=True
            )
            self.loader = DataLoader(self.train_set, batch_size=c.batch_size, sampler=self.sampler, drop_last=True)
        else:
            self.sampler = None
            self.loader = make_loader(
                self.train_set, batch_size=c.batch_size, shuffle=True, seed=c.seed, drop_last=c.batch_size > 1
            )
        if len(self.loader) == 0:
            # Checked before anything is written: an epoch without a batch has nothing to train or report.
            raise _no_batch_error(
                batch_size=c.batch_size, train_limit=c.train_limit, n_images=len(self.train_set), world=self.world
            )
        self.augment = train_transform(c.dataset, seed=c.seed + 1) if c.augment else None
        self.model, self.base = build_model(c)
        if c.batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
            raise ValueError(
                f"batch_size: expected at least 2 for {c.model!r}, whose BatchNorm layers need more than one sample "
                f"per batch in training, got {c.batch_size}"
            )
        self.model.to(self.device)
        if isinstance(self.model, IBModel):
            self.model.global_batch = c.ib_global_batch
        self.forward: nn.Module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
        self.extra: dict[str, Any] = {}
        if c.method == "entropic":
            self._setup_entropic()
        if c.method == "vib":
            self.extra["vib_head"] = self.model.head  # type: ignore[union-attr]
        if c.method == "hbar" and c.mixup_alpha > 0:
            self.extra["mixup_generator"] = torch.Generator().manual_seed(c.seed + 2)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        self.scheduler = _build_scheduler(self.optimizer, c)
        self.ema = self._build_ema(c.ema_decay) if c.ema_decay is not None else None
        self._val_spec = None
        if self.val_set is not None:
            from ib_plugins.evaluation import build_suite

            budget = "paper" if c.preset == "paper" else "ibrar-code"
            self._val_spec = build_suite(
                "ibrar", budget=budget, dataset=c.dataset, attacks=["pgd"], eps=c.eps, pgd_steps=c.pgd_steps
            )[0]
        self._warned_layers = False
        self._amp_context: Callable[[], Any] = _null_context
        if c.amp is not None:
            if not torch.amp.is_autocast_available(self.device.type):
                raise ValueError(f"amp: torch.autocast is not available on device {str(self.device)!r}; use amp=None")
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[c.amp]
            self._amp_context = lambda: torch.autocast(self.device.type, dtype=dtype)
        self.scaler = torch.amp.GradScaler(self.device.type) if c.amp == "fp16" else None
        at = c.method in _AT_METHODS or (c.method == "hbar" and c.hbar_adv)
        needs_pgd = at and not (c.method == "trades" and c.variant == "standard")
        self.attack = TrainingAttack(self.model, eps=c.eps, alpha=c.pgd_alpha, steps=c.pgd_steps) if needs_pgd else None
        self._probe_layers = self._entropy_layers()

    def _build_ema(self, decay: float) -> Any:
        """An :class:`~torch.optim.swa_utils.AveragedModel` of the evaluated network (no IB hooks)."""
        from torch.optim.swa_utils import AveragedModel

        source = self.eval_model()
        net = _plain_network(self.config)
        names = [n for n, _ in net.named_parameters()] + [n for n, _ in net.named_buffers()]
        if names != [n for n, _ in source.named_parameters()] + [n for n, _ in source.named_buffers()]:
            raise ValueError(
                f"ema_decay: the trained {type(source).__name__} has parameters or buffers that a fresh "
                f"{self.config.model!r} network lacks, so their average cannot be kept; train without ema_decay"
            )
        net.load_state_dict(source.state_dict())
        net.to(self.device)
        # n_averaged stays on the CPU (no device argument): _ema_step reads it there, for free.
        ema = AveragedModel(net, multi_avg_fn=_WarmupEMA(decay), use_buffers=True)
        ema.module.eval()
        return ema

    def _update_ema(self) -> None:
        """One step of the weight average (after every optimiser step)."""
        _ema_step(self.ema, self.eval_model())

    @property
    def ema_model(self) -> nn.Module | None:
        """The weight-averaged network (``ema_decay``), or None.

        Returns:
            A plain network (no IB hooks), in whatever mode it is; its weights are the running average.
        """
        return None if self.ema is None else self.ema.module

    def _entropy_layers(self) -> list[str] | None:
        from ib_plugins.presets import preset_for_model

        preset = preset_for_model(self.base)
        return list(preset.layers) if preset is not None else None

    def _setup_entropic(self) -> None:
        from ib_plugins.data import make_loader
        from ib_plugins.entropic import EntropicLoss, EntropyProbe, compute_reference_entropy_flow

        c = self.config
        try:
            ckpt = load_checkpoint(c.init_checkpoint, map_location=self.device)  # type: ignore[arg-type]
        except CheckpointError as err:
            raise CheckpointError(f"init_checkpoint: {err}") from err
        if ckpt["config"].get("model") != c.model:
            raise CheckpointError(
                f"init_checkpoint holds a {ckpt['config'].get('model')!r} model but this run trains {c.model!r}"
            )
        try:
            self.base.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise CheckpointError(f"init_checkpoint: weights do not fit {c.model!r} ({err})") from err
        layers = self._entropy_layers()
        if not layers:
            raise ValueError(f"entropic retraining needs a layer preset for {c.model!r}")
        ref_loader = make_loader(self.train_set, batch_size=256, shuffle=False, seed=c.seed)
        reference = compute_reference_entropy_flow(self.base, ref_loader, layers=layers, device=self.device, progress=self.progress)
        self.extra["reference"] = reference
        self.extra["loss"] = EntropicLoss(reference=reference, lam=c.entropic_lambda, sigma=c.entropic_sigma)
        probe = EntropyProbe(self.base, layers)
        probe.__enter__()
        self.extra["probe"] = probe

    # -- state ---------------------------------------------------------------------------------
    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.loader.generator is not None:
            state["loader"] = self.loader.generator.get_state()
        if self.augment is not None:
            state["augment"] = self.augment.generator.get_state()
        if "mixup_generator" in self.extra:
            state["mixup"] = self.extra["mixup_generator"].get_state()
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if self.loader.generator is not None and "loader" in state:
            self.loader.generator.set_state(state["loader"])
        if self.augment is not None and "augment" in state:
            self.augment.generator.set_state(state["augment"])
        if "mixup" in state:
            self.extra["mixup_generator"].set_state(state["mixup"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _gather_rng_states(self) -> Any:
        state = self._rng_state()
        if self.world == 1:
            return state
        import torch.distributed as dist

        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, state)
        return states

    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": self.model.state_dict() if self.config.method == "vib" else self.base.state_dict(),
            "ib_state": self.model.state_dict() if isinstance(self.model, IBModel) else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_n_averaged": self.ema.n_averaged.clone() if self.ema is not None else None,
            "validation": (
                {"indices": self.val_indices, "attack": self._val_spec.to_dict()} if self.val_set is not None else None
            ),
            "rng": self._gather_rng_states(),
            "config": self.config.to_dict(),
            "history": self.history,
            "extra": {"reference": self.extra.get("reference")},
        }

    def _restore(self, ckpt: dict[str, Any]) -> int:
        stored = TrainConfig.from_dict(ckpt["config"])
        if int(ckpt["epoch"]) > self.config.epochs:
            raise RunExistsError(
                f"resume: the checkpoint in {self.out_dir} is at epoch {ckpt['epoch']}, beyond epochs={self.config.epochs}; "
                "pass at least that many epochs"
            )
        if stored.run_identity() != self.config.run_identity():
            diff = sorted(k for k, v in stored.run_identity().items() if self.config.run_identity().get(k) != v)
            raise RunExistsError(f"resume: the checkpoint in {self.out_dir} is a different run (differs in: {', '.join(diff)})")
        if stored.schedule == "cosine" and stored.epochs != self.config.epochs:
            raise RunExistsError(
                f"resume: the run in {self.out_dir} anneals its learning rate with a cosine over "
                f"epochs={stored.epochs}; resuming with epochs={self.config.epochs} would change that curve midway, "
                f"so pass epochs={stored.epochs} (or start a new run)"
            )
        if self.val_set is not None:
            stored_split = ckpt.get("validation") or {}
            indices = stored_split.get("indices")
            if not isinstance(indices, Tensor) or not torch.equal(indices.cpu(), self.val_indices):
                raise CheckpointError(
                    f"resume: the validation split held out of the training images differs from the one in "
                    f"{self.out_dir}'s checkpoint (different training files?); start a new run"
                )
        if ckpt["ib_state"] is not None:
            self.model.load_state_dict(ckpt["ib_state"])
        elif self.config.method == "vib":
            self.model.load_state_dict(ckpt["model"])
        else:
            self.base.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("grad_scaler") is not None:
            self.scaler.load_state_dict(ckpt["grad_scaler"])
        if self.ema is not None:
            if not isinstance(ckpt.get("model_ema"), Mapping) or not isinstance(ckpt.get("ema_n_averaged"), Tensor):
                raise CheckpointError(f"resume: the checkpoint in {self.out_dir} holds no EMA weights")
            self.ema.module.load_state_dict(ckpt["model_ema"])
            self.ema.n_averaged.copy_(ckpt["ema_n_averaged"])
        rng = ckpt["rng"]
        if isinstance(rng, list):
            if len(rng) != self.world:
                raise CheckpointError(f"resume: the checkpoint was written by {len(rng)} processes, this run has {self.world}")
            rng = rng[self.rank]
        elif self.world > 1:
            raise CheckpointError(f"resume: the checkpoint was written by 1 process, this run has {self.world}")
        self._set_rng_state(rng)
        self.history = list(ckpt.get("history") or [])
        return int(ckpt["epoch"])

    # -- loop ----------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``config.epochs`` (resuming if asked), write the results folder, return final metrics.

        Returns:
            Final metrics: ``test_acc``, ``train_acc``, ``train_loss``, ``epochs``, ``wall_time_s``...

        Raises:
            RunExistsError: see the class.
            CheckpointError: an unreadable or mismatching checkpoint on resume.
            ValueError: an epoch would have no batch (fewer training images than ``batch_size``), or
                batches of one for a model with BatchNorm layers; raised before anything is written.
            FloatingPointError: the training loss became non-finite (the last good checkpoint is kept).
        """
        from ib_plugins.distributed import env_world_size, world_info

        owns_group = False
        if env_world_size() > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            owns_group = True
        self.rank, self.world = world_info()
        if self.config.ib_global_batch and not torch.distributed.is_initialized():
            raise ValueError(
                "ib_global_batch: needs an initialised torch.distributed process group; launch with "
                "`torchrun --nproc_per_node=N ib-plugins train ... --ib-global-batch`"
            )
        if self.world > 1 and self.config.method == "entropic":
            raise ValueError("method: entropic retraining runs in a single process; launch it without torchrun")
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.config.seed + self.rank)
                try:
                    return self._fit()
                finally:
                    probe = self.extra.get("probe") if hasattr(self, "extra") else None
                    if probe is not None:
                        probe.__exit__(None, None, None)
        finally:
            if owns_group:
                torch.distributed.destroy_process_group()

    def _fit(self) -> dict[str, Any]:
        c = self.config
        self._setup()
        start_epoch = 0
        if self.resume:
            start_epoch = self._restore(load_checkpoint(self.out_dir / "checkpoint.pt", map_location=self.device))
            logger.info("resuming %s from epoch %d", self.out_dir, start_epoch)
        lead = self.rank == 0  # only rank 0 writes files and logs
        if lead:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _write_json(self.out_dir / "config.json", c.to_dict())
            if start_epoch == 0:
                # A fresh start (into an empty folder, over an unfinished start of this run, or with
                # overwrite): a best checkpoint or plot left there belongs to no epoch of this run.
                for name in ("checkpoint_best.pt", "information_plane.png"):
                    (self.out_dir / name).unlink(missing_ok=True)
        best_key = self._best_key()
        best = _best_in_history(self.history, best_key) if best_key is not None else None
        writer = self._writer_class(log_dir=c.tensorboard) if self._writer_class is not None and lead else None
        t0 = time.perf_counter()
        try:
            for epoch in range(start_epoch, c.epochs):
                if self.sampler is not None:
                    self.sampler.set_epoch(epoch)
                metrics = self._train_epoch(epoch)
                last = epoch + 1 == c.epochs
                if (epoch + 1) % c.eval_every == 0 or last:
                    metrics["test_acc"] = self.evaluate_clean()
                    if self.ema is not None:
                        metrics["test_acc_ema"] = self.evaluate_clean(weights="ema")
                    metrics.update(self._entropy_metrics())
                if self.val_set is not None and lead and ((epoch + 1) % c.robust_val_every == 0 or last):
                    metrics.update(self.validate())
                self.history.append(metrics)
                new_best = best_key in metrics and (best is None or metrics[best_key] > best[1])
                if new_best:
                    best = (epoch + 1, float(metrics[best_key]))
                payload = self._checkpoint(epoch + 1)  # collective in multi-process runs: every rank calls it
                if lead:
                    if new_best:  # before checkpoint.pt: a resume after a crash in between redoes this epoch
                        save_checkpoint(self.out_dir / "checkpoint_best.pt", payload)
                    save_checkpoint(self.out_dir / "checkpoint.pt", payload)
                    _write_json(self.out_dir / "history.json", self.history)
                    logger.info("epoch %d/%d: %s", epoch + 1, c.epochs, metrics)
                    if writer is not None:
                        _log_scalars(writer, metrics, epoch + 1)
                if self.world > 1:
                    torch.distributed.barrier()
                for callback in self.callbacks:
                    callback(self, epoch + 1, metrics)
        finally:
            if writer is not None:
                writer.close()
        final = dict(self.history[-1]) if self.history else {}
        final.update({"epochs": c.epochs, "wall_time_s": round(time.perf_counter() - t0, 2)})
        if "test_acc" not in final:
            final["test_acc"] = self.evaluate_clean()
        if best is not None:
            final.update({"best_epoch": best[0], f"best_{best_key}": best[1]})
        if self._val_spec is not None:
            kw = self._val_spec.kwargs
            final["val_attack"] = (
                f"{self._val_spec.name} ({self._val_spec.describe()}, {kw['steps']} steps of {kw['alpha']:.4g}, "
                f"random start, seed {c.seed})"
            )
        if "reference" in self.extra:
            final["entropic_reference_et"] = self.extra["reference"]
        if self.world > 1:
            final["world_size"] = self.world
        if lead:
            _write_json(self.out_dir / "metrics.json", final)
            _atomic_write_text(self.out_dir / "results.md", self.summary_markdown(final))
            self._plot()
        return final

    def _best_key(self) -> str | None:
        """The history key that picks ``checkpoint_best.pt`` (robust validation accuracy, of the EMA if kept)."""
        if self.config.robust_val_every is None:
            return None
        return "val_robust_acc_ema" if self.config.ema_decay is not None else "val_robust_acc"

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        c = self.config
        self.model.train()
        if isinstance(self.model, IBModel):
            self.model.start_epoch()
        sums: dict[str, Tensor] = {}
        layer_sum: Tensor | None = None  # [2, L]: per-layer nHSIC(T, X) and nHSIC(T, Y), times batch sizes
        correct = torch.zeros((), device=self.device)
        seen = 0
        batches = 0
        bar = None
        if self.progress and self.rank == 0:
            from ib_plugins._progress import progress_bar

            # A bar with a total, updated by hand, rather than tqdm(self.loader): tqdm.auto's class
            # (tqdm_asyncio) calls iter() on its iterable in its constructor, which draws from the
            # loader's generator and so changed the shuffling whenever progress bars were shown.
            # On a terminal a tqdm bar; piped or in a log file, plain lines without carriage returns.
            bar = progress_bar(total=len(self.loader), desc=f"{c.method} epoch {epoch + 1}/{c.epochs}", unit="batch")
        try:
            for x, y in self.loader:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                if self.augment is not None:
                    x = self.augment(x)
                with self._amp_context():
                    out = batch_loss(c, self.model, x, y, attack=self.attack, extra=self.extra, forward=self.forward)
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is None:
                    out.loss.backward()
                    self.optimizer.step()
                else:
                    self.scaler.scale(out.loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                if self.ema is not None:
                    self._update_ema()
                if isinstance(self.model, IBModel):
                    self.model.clear_records()  # unconsumed records (e.g. mask-only runs) would keep graphs alive
                n = y.shape[0]
                seen += n
                batches += 1
                correct += (out.logits.detach().argmax(1) == y).sum()
                sums["loss"] = sums.get("loss", torch.zeros((), device=self.device)) + out.loss.detach() * n
                for key, value in out.parts.items():
                    sums[key] = sums.get(key, torch.zeros((), device=self.device)) + value.float() * n
                if out.layer_hsic is not None:  # summed on the device, read once at the end of the epoch
                    layer_sum = out.layer_hsic * n if layer_sum is None else layer_sum + out.layer_hsic * n
                if bar is not None:
                    bar.update(1)
                    if batches % 10 == 1 or batches == len(self.loader):  # a host read every 10 batches
                        bar.set_postfix(
                            {k: f"{float(v) / seen:.4g}" for k, v in sums.items()} | {"acc": f"{float(correct) / seen:.3f}"}
                        )
        finally:
            if bar is not None:
                bar.close()
        if self.scheduler is not None:
            self.scheduler.step()
        keys = sorted(sums)
        from ib_plugins.distributed import all_reduce_sum

        scalars = torch.stack(
            [*(sums[k].float() for k in keys), correct.float(), torch.tensor(float(seen), device=self.device)]
        )
        layer_names = self._info_plane_layers(layer_sum)
        pieces = [scalars] if layer_names is None else [scalars, layer_sum.flatten()]  # type: ignore[union-attr]
        totals = all_reduce_sum(torch.cat(pieces)).tolist()  # the epoch's one host read
        n_scalars = len(keys) + 2
        seen_all = max(totals[n_scalars - 1], 1.0)
        metrics: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        for key, value in zip(keys, totals):
            metrics[f"train_{key}"] = value / seen_all
        metrics["train_acc"] = totals[n_scalars - 2] / seen_all
        if layer_names is not None:
            per_layer = totals[n_scalars:]
            for i, name in enumerate(layer_names):
                metrics[f"hsic/{name}/x"] = per_layer[i] / seen_all
                metrics[f"hsic/{name}/y"] = per_layer[len(layer_names) + i] / seen_all
        if not math.isfinite(metrics["train_loss"]):
            # Checked once per epoch, not per step (a per-step check would stall an accelerator);
            # the checkpoint of the previous epoch is kept.
            kept = (
                "the previous epoch's is kept" if (self.out_dir / "checkpoint.pt").is_file() else "and none exists yet"
            )
            raise FloatingPointError(
                f"the training loss became non-finite (NaN or inf) in epoch {epoch + 1}; its checkpoint was not "
                f"written, {kept}. Lower the learning rate (lr={c.lr}) and rerun with overwrite=True (--overwrite) "
                "or into another folder, or set check_finite=True on the IBModel to find the layer on the step it "
                "happens"
            )
        if isinstance(self.model, IBModel) and self.model.mask is not None:
            metrics["masked_forwards"] = self.model.mask.num_masked
        return metrics

    def _info_plane_layers(self, layer_sum: Tensor | None) -> list[str] | None:
        """The IB layers' names for the ``[2, L]`` per-layer sums, or None (no IB term, or reused layers)."""
        if layer_sum is None or not isinstance(self.model, IBModel):
            return None
        names = list(self.model.layers)
        if layer_sum.shape != (2, len(names)):
            if not self._warned_layers:
                logger.warning(
                    "the IB term returned %d per-layer values for %d layers (a layer runs more than once per "
                    "forward); the information plane is not logged", layer_sum.shape[-1], len(names)
                )
                self._warned_layers = True
            return None
        return names

    def eval_model(self) -> nn.Module:
        """The network to evaluate (the plain network; VIB keeps its deterministic head).

        Returns:
            The module, in whatever mode it currently is.
        """
        return self.model if self.config.method == "vib" else self.base

    @torch.no_grad()
    def evaluate_clean(self, *, weights: str = "raw") -> float:
        """Clean accuracy on the test set (eval mode, restored afterwards).

        Args:
            weights: ``"raw"`` (the trained network) or ``"ema"`` (its weight average; needs
                ``ema_decay``).

        Returns:
            Accuracy in [0, 1].

        Raises:
            ValueError: an unknown ``weights``, or ``"ema"`` without ``ema_decay``.
        """
        if weights not in _WEIGHTS:
            raise ValueError(f"weights: expected one of {', '.join(map(repr, _WEIGHTS))}, got {_short_repr(weights)}")
        if weights == "ema" and self.ema is None:
            raise ValueError("weights: 'ema' needs a run with ema_decay set, got ema_decay=None")
        model = self.eval_model() if weights == "raw" else self.ema.module
        with _eval_mode(model):
            correct = torch.zeros((), device=self.device)
            total = 0
            for start in range(0, len(self.test_set), 500):
                x, y = self.test_set[start : start + 500]
                x, y = x.to(self.device), y.to(self.device)
                correct += (model(x).argmax(1) == y).sum()
                total += y.shape[0]
        return float(correct) / max(total, 1)

    def validate(self) -> dict[str, Any]:
        """Clean and PGD accuracy on the held-out validation split (``robust_val_every``).

        The attack runs through :func:`ib_plugins.evaluation.evaluate_suite`: eval mode, IB recording
        paused, inside a forked RNG seeded with the run's ``seed`` (the same random starts at every
        validation, and the training's random streams untouched).

        Returns:
            ``val_n``, ``val_clean_acc``, ``val_robust_acc``, and with ``ema_decay`` the same two for
            the averaged weights (``val_clean_acc_ema``, ``val_robust_acc_ema``).

        Raises:
            ValueError: the run has no validation split (``robust_val_every`` is None).
        """
        if self.val_set is None:
            raise ValueError("robust_val_every: this run holds out no validation split, got robust_val_every=None")
        from ib_plugins.evaluation import evaluate_suite

        c = self.config
        x, y = self.val_set
        out: dict[str, Any] = {"val_n": int(y.shape[0])}
        for suffix, model in (("", self.eval_model()), ("_ema", self.ema_model)):
            if model is None:
                continue
            result = evaluate_suite(
                model, x, y, [self._val_spec], batch_size=c.batch_size, seed=c.seed, device=self.device,
                progress=False,
            )
            out[f"val_clean_acc{suffix}"] = result.clean_accuracy
            out[f"val_robust_acc{suffix}"] = result[self._val_spec.name].accuracy
        return out

    @torch.no_grad()
    def _entropy_metrics(self) -> dict[str, float]:
        if not self._probe_layers:
            return {}
        from ib_plugins.entropic import EntropyProbe, entropy_flow, normalized_entropy

        x, _ = self.test_set[: min(256, len(self.test_set))]
        model = self.base
        with _eval_mode(model), _no_record(self.model):
            if "probe" in self.extra:
                _, hs = self.extra["probe"].run(x.to(self.device))
            else:
                with EntropyProbe(model, self._probe_layers) as probe:
                    _, hs = probe.run(x.to(self.device))
        return {"E_N": float(normalized_entropy(hs).mean()), "E_T": float(entropy_flow(hs).mean())}

    def summary_markdown(self, final: dict[str, Any]) -> str:
        """A short markdown summary of the run.

        Args:
            final: final metrics.

        Returns:
            Markdown text.
        """
        c = self.config
        lines = [
            f"# {md_text(c.method)}{' + IB' if c.ib else ''}{' + mask (' + md_text(c.mask) + ')' if c.mask else ''} "
            f"on {md_text(c.dataset)} / {md_text(c.model)}",
            "",
            f"Preset {md_code(c.preset)}, {c.epochs} epochs, batch {c.batch_size}, seed {c.seed}.",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        for key in sorted(final):
            value = final[key]
            cell = f"{value:.4f}" if isinstance(value, float) else md_cell(value)
            lines.append(f"| {md_cell(key)} | {cell} |")
        return "\n".join(lines) + "\n"

    def _plot(self) -> None:
        from ib_plugins._optional import is_available

        if not is_available("matplotlib") or not self.history:
            return
        from ib_plugins.plots import plot_training_curves

        title = f"{self.config.method}{' + IB' if self.config.ib else ''} on {self.config.dataset}"
        plot_training_curves(self.history, self.out_dir / "training_curves.png", title=title)
        if any(key.startswith("hsic/") for key in self.history[-1]):
            from ib_plugins.plots import plot_information_plane

            plot_information_plane(self.history, self.out_dir / "information_plane.png", title=title)
