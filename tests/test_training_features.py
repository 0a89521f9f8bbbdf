"""Issue 14, items 1-4 and 8: training as researchers run it.

(1) learning-rate schedules (step, multistep, cosine, warm-up) through torch's schedulers, checkpointed
and resumed exactly; (2) an EMA of the weights saved beside the raw ones and loadable on its own;
(3) robust validation on a split held out of the training set, with ``checkpoint_best.pt``; (4) the
information plane (per-layer ``nHSIC(T, X)``/``nHSIC(T, Y)`` per epoch), its plot, ``ib-plugins report``
on training folders and optional TensorBoard logging; (8) ``device="auto"``. The acceptance test: a
run interrupted in the middle of a cosine + warm-up schedule with EMA and robust validation, then
resumed, ends bit-identical to an uninterrupted one. Everything runs on the CPU with tiny digits runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from _models import Interrupt, interrupt_after
from torch.utils.data import TensorDataset

from ib_plugins import training
from ib_plugins._markdown import md_cell
from ib_plugins.cli import main
from ib_plugins.data import load_dataset
from ib_plugins.errors import MissingOptionalDependencyError
from ib_plugins.training import (
    CheckpointError,
    RunExistsError,
    TrainConfig,
    Trainer,
    _build_scheduler,
    _validation_split,
    batch_loss,
    build_model,
    load_model_from_checkpoint,
    resolve_config,
)

TINY = {"epochs": 1, "train_limit": 100, "test_limit": 40, "batch_size": 25}


def _tiny(**overrides: object) -> TrainConfig:
    return TrainConfig(**{**TINY, **overrides})  # type: ignore[arg-type]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _equal(a: object, b: object, where: str = "") -> list[str]:
    """Paths at which two nested checkpoint structures differ (tensors compared bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if ok else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys {sorted(map(str, a))} != {sorted(map(str, b))}"]
        return [d for k in a for d in _equal(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _equal(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def _cli_error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.split(": error: ", 1)[1].strip()


# ---------------------------------------------------------------------------------------------
# The acceptance test: an interrupted cosine + warm-up + EMA + robust-validation run resumes exactly
# ---------------------------------------------------------------------------------------------
def test_resume_mid_cosine_warmup_with_ema_and_robust_validation_is_bit_identical(tmp_path):
    # PGD-AT + IB: the training attack draws random starts from the global RNG, which the robust
    # validation's PGD (forked, seeded on its own) must leave alone, as it must the loader's generator.
    cfg = TrainConfig(
        dataset="digits", model="digits-cnn", method="pgd-at", ib=True, pgd_steps=2, epochs=3, train_limit=120,
        test_limit=40, batch_size=20, schedule="cosine", warmup_epochs=1, ema_decay=0.9, robust_val_every=1,
        val_size=20,
    )
    a, b = tmp_path / "straight", tmp_path / "resumed"
    Trainer(cfg, out_dir=a, progress=False).fit()
    with pytest.raises(Interrupt):
        Trainer(cfg, out_dir=b, progress=False, callbacks=[interrupt_after(2)]).fit()
    mid = _load(b / "checkpoint.pt")
    assert mid["epoch"] == 2 and 0 < mid["scheduler"]["last_epoch"] < 3  # in the middle of the schedule
    Trainer(cfg, out_dir=b, resume=True, progress=False).fit()

    ca, cb = _load(a / "checkpoint.pt"), _load(b / "checkpoint.pt")
    for key in ("model", "model_ema", "ema_n_averaged", "optimizer", "scheduler", "rng", "history", "validation",
                "ib_state", "config"):
        assert not _equal(ca[key], cb[key], key), _equal(ca[key], cb[key], key)
    assert int(ca["ema_n_averaged"]) == 3 * 5  # 100 training images / batch 20, 3 epochs: one update per step
    assert _equal(ca["model"], ca["model_ema"])  # the average is not the raw weights (they differ)
    assert (a / "history.json").read_bytes() == (b / "history.json").read_bytes()
    best_a, best_b = _load(a / "checkpoint_best.pt"), _load(b / "checkpoint_best.pt")
    assert best_a["epoch"] == best_b["epoch"]
    assert not _equal(best_a["model"], best_b["model"]) and not _equal(best_a["model_ema"], best_b["model_ema"])
    history = json.loads((a / "history.json").read_text())
    validation = {"val_clean_acc", "val_robust_acc", "val_clean_acc_ema", "val_robust_acc_ema"}
    assert all(validation <= set(h) for h in history)
    # The warm-up, then the cosine: lr after epochs 1, 2, 3 (the rate the next epoch trains at).
    assert [h["lr"] for h in history] == pytest.approx([0.01, 0.005, 0.0], abs=1e-12)


def test_extending_a_multistep_warmup_run_with_ema_and_validation_matches_a_straight_one(tmp_path):
    """epochs=2, then resumed with epochs=3 (schedules other than the cosine do not depend on epochs)."""
    cfg = TrainConfig(
        dataset="digits", model="digits-cnn", method="pgd-at", pgd_steps=1, epochs=3, train_limit=80, test_limit=20,
        batch_size=20, schedule="multistep", milestones=[2], warmup_epochs=1, ema_decay=0.8, robust_val_every=1,
        val_size=20,
    )
    a, b = tmp_path / "straight", tmp_path / "extended"
    Trainer(cfg, out_dir=a, progress=False).fit()
    Trainer(dataclasses.replace(cfg, epochs=2), out_dir=b, progress=False).fit()
    Trainer(cfg, out_dir=b, resume=True, progress=False).fit()
    ca, cb = _load(a / "checkpoint.pt"), _load(b / "checkpoint.pt")
    for key in ("model", "model_ema", "ema_n_averaged", "optimizer", "scheduler", "rng", "history"):
        assert not _equal(ca[key], cb[key], key), _equal(ca[key], cb[key], key)
    assert _load(a / "checkpoint_best.pt")["epoch"] == _load(b / "checkpoint_best.pt")["epoch"]


# ---------------------------------------------------------------------------------------------
# 1. Schedules
# ---------------------------------------------------------------------------------------------
def _lrs(config: TrainConfig, epochs: int) -> list[float]:
    """The learning rate each epoch trains at, under the trainer's scheduler."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
    sched = _build_scheduler(opt, config)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return rates


def test_cosine_with_warmup_follows_its_closed_form():
    c = resolve_config(TrainConfig(schedule="cosine", warmup_epochs=3, epochs=10, lr=0.1))
    expected = [0.1 * (e + 1) / 4 for e in range(3)] + [0.05 * (1 + math.cos(math.pi * e / 7)) for e in range(7)]
    assert _lrs(c, 10) == pytest.approx(expected, rel=1e-9)
    plain = resolve_config(TrainConfig(schedule="cosine", epochs=4, lr=0.1))
    assert _lrs(plain, 4) == pytest.approx([0.05 * (1 + math.cos(math.pi * e / 4)) for e in range(4)], rel=1e-9)


def test_multistep_milestones_count_from_the_start_of_training_also_after_a_warmup():
    c = resolve_config(TrainConfig(schedule="multistep", milestones="3,5", gamma=0.1, epochs=6, lr=1.0))
    assert c.milestones == [3, 5]  # the command line's text, stored as a list
    assert _lrs(c, 6) == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01])
    warm = resolve_config(dataclasses.replace(c, warmup_epochs=2))
    assert _lrs(warm, 6) == pytest.approx([1 / 3, 2 / 3, 1, 0.1, 0.1, 0.01])


def test_step_schedule_and_warmup_without_a_schedule():
    step = resolve_config(TrainConfig(schedule="step", step_size=2, gamma=0.5, lr=1.0, epochs=5))
    assert type(_build_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), step)).__name__ == "StepLR"
    assert _lrs(step, 5) == pytest.approx([1, 1, 0.5, 0.5, 0.25])
    flat = resolve_config(TrainConfig(schedule="none", warmup_epochs=1, lr=1.0, epochs=3))
    assert _lrs(flat, 3) == pytest.approx([0.5, 1, 1])
    assert _build_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0),
                            resolve_config(TrainConfig(schedule="none"))) is None


def test_default_schedules_are_unchanged():
    assert resolve_config(TrainConfig()).schedule == "step"
    assert resolve_config(TrainConfig(method="pgd-at")).schedule == "step"
    assert resolve_config(TrainConfig(method="mart")).schedule == "none"  # ibrar-code MART: no decay
    assert resolve_config(TrainConfig(method="mart", preset="paper")).schedule == "none"
    assert resolve_config(TrainConfig(method="mart", preset="standard")).schedule == "step"
    c = resolve_config(TrainConfig())
    assert (c.milestones, c.warmup_epochs, c.ema_decay, c.robust_val_every, c.val_size, c.tensorboard) == (None,) * 6


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"schedule": "multistep"}, "milestones: expected the epochs at which the multistep schedule decays"),
        ({"milestones": "5,8"}, "milestones: only the multistep schedule uses them; .*got schedule=None"),
        ({"schedule": "cosine", "milestones": [5]}, "milestones: only the multistep schedule uses them"),
        ({"schedule": "multistep", "milestones": "8,5"}, "milestones: expected increasing epochs .*got '8,5'"),
        ({"schedule": "multistep", "milestones": "5,5"}, "milestones: expected increasing epochs"),
        ({"schedule": "multistep", "milestones": "0,5"}, "milestones: expected increasing epochs"),
        ({"schedule": "multistep", "milestones": "a,b"}, "milestones: expected increasing epochs .*got 'a,b'"),
        ({"schedule": "multistep", "milestones": ""}, "milestones: expected increasing epochs"),
        ({"schedule": "multistep", "milestones": []}, r"milestones: expected increasing epochs .*got \[\]"),
        ({"schedule": "multistep", "milestones": [5, True]}, "milestones: expected increasing epochs"),
        ({"schedule": "multistep", "milestones": 5}, "milestones: expected increasing epochs .*got 5"),
        ({"schedule": "multistep", "milestones": [2, 8], "warmup_epochs": 2, "epochs": 10},
         r"milestones: expected epochs after the warm-up \(warmup_epochs=2"),
        ({"warmup_epochs": 5, "epochs": 5}, r"warmup_epochs: expected fewer than epochs \(5\)"),
        ({"warmup_epochs": 0}, "warmup_epochs: expected an int >= 1, got 0"),
        ({"schedule": "linear"}, "schedule: expected one of 'step', 'none', 'multistep', 'cosine', got 'linear'"),
        ({"ema_decay": 0.0}, r"ema_decay: expected a number in \(0, 1\)"),
        ({"ema_decay": 1.0}, r"ema_decay: expected a number in \(0, 1\)"),
        ({"ema_decay": 1.5}, r"ema_decay: expected a number in \(0, 1\)"),
        ({"ema_decay": -0.5}, "ema_decay: expected a finite number >= 0, got -0.5"),
        ({"ema_decay": "0.9"}, "ema_decay: expected a finite number >= 0, got '0.9'"),
        ({"robust_val_every": 0}, "robust_val_every: expected an int >= 1, got 0"),
        ({"val_size": 50}, "val_size: the validation split is held out only for robust validation"),
        ({"robust_val_every": 1, "val_size": 0}, "val_size: expected an int >= 1, got 0"),
        ({"tensorboard": ""}, "tensorboard: expected a non-empty string, got ''"),
        ({"device": "gpu"}, "device: expected a device name such as 'cpu', 'cuda' or 'cuda:0', got 'gpu'"),
    ],
)
def test_new_fields_are_validated_naming_the_argument(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve_config(TrainConfig(**overrides))
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(overrides)
    with pytest.raises(ValueError, match=message):
        Trainer(TrainConfig(**overrides), out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_flags_reach_the_config_and_bad_ones_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--epochs", "2", "--train-limit", "100", "--test-limit", "20",
            "--batch-size", "25", "--no-progress", "--schedule", "multistep", "--milestones", "1", "--warmup-epochs",
            "1", "--gamma", "0.5"]
    message = _cli_error(capsys, argv)  # milestone 1 falls inside the one-epoch warm-up
    assert message.startswith("milestones: expected epochs after the warm-up") and not out.exists()
    argv[argv.index("--milestones") + 1] = "2"
    assert main([*argv, "--ema-decay", "0.5", "--robust-val-every", "2", "--val-size", "20", "--device", "auto"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["schedule"], config["milestones"], config["warmup_epochs"], config["ema_decay"]) == (
        "multistep", [2], 1, 0.5)
    assert (config["robust_val_every"], config["val_size"]) == (2, 20)
    assert config["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    history = json.loads((out / "history.json").read_text())
    # epoch 1 (warm-up) trains at 0.005, epoch 2 at 0.01, which then decays at milestone 2
    assert [h["lr"] for h in history] == pytest.approx([0.01, 0.005])
    assert ["val_robust_acc" in h for h in history] == [False, True]  # every 2 epochs (and at the last)
    assert _cli_error(capsys, [*argv[:-8], "--ema-decay", "2"]).startswith("ema_decay: expected a number in (0, 1)")


def test_a_cosine_run_cannot_be_resumed_with_other_epochs(tmp_path):
    cfg = _tiny(schedule="cosine", epochs=2)
    Trainer(cfg, out_dir=tmp_path / "run", progress=False).fit()
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(RunExistsError, match=r"cosine over epochs=2; resuming with epochs=3 would change that curve"):
        Trainer(dataclasses.replace(cfg, epochs=3), out_dir=tmp_path / "run", resume=True, progress=False).fit()
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# 2. Weight averaging
# ---------------------------------------------------------------------------------------------
class _RecordingTrainer(Trainer):
    """Records the raw network's parameters and buffers at every EMA update."""

    seen: list[dict[str, torch.Tensor]]

    def _update_ema(self) -> None:
        if not hasattr(self, "seen"):
            self.seen = []
        self.seen.append({k: v.detach().clone() for k, v in self.eval_model().state_dict().items()})
        super()._update_ema()


def test_ema_step_is_torchs_update_parameters_without_the_device_copy():
    from torch.optim.swa_utils import AveragedModel

    cfg = resolve_config(TrainConfig())
    nets = [training._plain_network(cfg) for _ in range(3)]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for net in nets:  # different weights and BatchNorm statistics each
            for t in (*net.parameters(), *(b for b in net.buffers() if b.is_floating_point())):
                t.add_(torch.randn(t.shape, generator=g))
    ours = AveragedModel(nets[0], multi_avg_fn=training._WarmupEMA(0.8), use_buffers=True)
    torchs = AveragedModel(nets[0], multi_avg_fn=training._WarmupEMA(0.8), use_buffers=True)
    for net in nets * 2:
        training._ema_step(ours, net)
        torchs.update_parameters(net)
    assert not _equal(ours.state_dict(), torchs.state_dict()) and int(ours.n_averaged) == 6
    assert _equal(ours.module.state_dict(), nets[-1].state_dict())  # an average, not the last network
    assert ours.n_averaged.device.type == "cpu"


def test_ema_is_the_exponential_average_of_weights_and_batchnorm_buffers_after_every_step(tmp_path):
    decay = 0.75
    trainer = _RecordingTrainer(_tiny(ema_decay=decay, epochs=2), out_dir=tmp_path / "run", progress=False)
    trainer.fit()
    assert len(trainer.seen) == 8  # 100 images / batch 25, 2 epochs
    expected = dict(trainer.seen[0])
    for n, state in enumerate(trainer.seen[1:], start=1):  # n earlier updates: the decay has warmed up to
        d = min(decay, (1 + n) / (10 + n))  # TensorFlow's num_updates rule (0.75 from n = 26 on)
        for key, value in state.items():
            if value.is_floating_point():
                expected[key] = d * expected[key] + (1 - d) * value
    ckpt = _load(tmp_path / "run" / "checkpoint.pt")
    ema = ckpt["model_ema"]
    assert ema.keys() == ckpt["model"].keys()
    assert any("running_mean" in k for k in ema)  # BatchNorm statistics are averaged too (use_buffers)
    for key, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(ema[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert int(ckpt["ema_n_averaged"]) == 8
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all(0.0 <= h["test_acc_ema"] <= 1.0 for h in history)


def test_the_decay_warms_up_so_a_short_runs_average_is_not_its_first_weights(tmp_path):
    ema = training._WarmupEMA(0.99)
    assert [round(ema.decay_at(n), 4) for n in (0, 1, 10, 100, 1000, 10**6)] == [0.1, 0.1818, 0.55, 0.9182, 0.99, 0.99]
    # With a fixed 0.99, 12 digits epochs (156 steps) gave an average at chance (10 %) beside 99 % raw:
    # its BatchNorm statistics still held a fifth of the untrained ones.
    cfg = TrainConfig(dataset="digits", model="digits-cnn", method="ce", epochs=4, ema_decay=0.99, test_limit=200)
    Trainer(cfg, out_dir=tmp_path / "run", progress=False).fit()
    last = json.loads((tmp_path / "run" / "history.json").read_text())[-1]
    assert last["test_acc"] > 0.8 and last["test_acc_ema"] > last["test_acc"] - 0.1


def test_load_model_from_checkpoint_picks_raw_or_ema_weights(tmp_path):
    Trainer(_tiny(ema_decay=0.9), out_dir=tmp_path / "ema", progress=False).fit()
    path = tmp_path / "ema" / "checkpoint.pt"
    ckpt = _load(path)
    state = torch.get_rng_state()
    raw, _, _ = load_model_from_checkpoint(path)
    ema, cfg, _ = load_model_from_checkpoint(path, weights="ema", expect_model="digits-cnn")
    assert torch.equal(state, torch.get_rng_state()) and not ema.training and cfg.ema_decay == 0.9
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in raw.state_dict().items())
    assert all(torch.equal(v, ckpt["model_ema"][k]) for k, v in ema.state_dict().items())
    assert not all(torch.equal(v, ckpt["model"][k]) for k, v in ema.state_dict().items())
    Trainer(_tiny(), out_dir=tmp_path / "plain", progress=False).fit()
    with pytest.raises(CheckpointError, match="weights='ema' was asked for, but the checkpoint holds no EMA weights"):
        load_model_from_checkpoint(tmp_path / "plain" / "checkpoint.pt", weights="ema")
    with pytest.raises(ValueError, match="weights: expected one of 'raw', 'ema', got 'best'"):
        load_model_from_checkpoint(path, weights="best")


def test_ema_does_not_change_the_raw_training(tmp_path):
    a = Trainer(_tiny(epochs=2), out_dir=tmp_path / "a", progress=False)
    a.fit()
    b = Trainer(_tiny(epochs=2, ema_decay=0.5), out_dir=tmp_path / "b", progress=False)
    b.fit()
    sa, sb = a.base.state_dict(), b.base.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ValueError, match="weights: 'ema' needs a run with ema_decay set"):
        a.evaluate_clean(weights="ema")


# ---------------------------------------------------------------------------------------------
# 3. Robust validation and the best checkpoint
# ---------------------------------------------------------------------------------------------
def test_validation_split_is_seeded_stratified_and_disjoint_from_training():
    train = load_dataset("digits", split="train", limit=300, seed=0)
    kept, (xv, yv), idx = _validation_split(train, size=None, seed=0)
    assert len(idx) == 30 and len(kept) == 270  # default: 10% of the training images
    x, y = train.tensors
    assert torch.equal(xv, x[idx]) and torch.equal(yv, y[idx])
    rest = torch.tensor(sorted(set(range(300)) - set(idx.tolist())))
    assert torch.equal(kept.tensors[0], x[rest]) and torch.equal(kept.tensors[1], y[rest])  # training order kept
    share = torch.bincount(y, minlength=10).double() * 30 / 300  # class-stratified: proportional shares
    assert ((torch.bincount(yv, minlength=10).double() - share).abs() < 1).all()
    again = _validation_split(train, size=None, seed=0)[2]
    other = _validation_split(train, size=None, seed=1)[2]
    assert torch.equal(idx, again) and not torch.equal(idx, other)
    big = TensorDataset(torch.zeros(20_000, 1), torch.arange(20_000) % 10)
    assert len(_validation_split(big, size=None, seed=0)[2]) == 1000  # capped
    with pytest.raises(ValueError, match="val_size: expected fewer than the 300 training images"):
        _validation_split(train, size=300, seed=0)


def test_robust_validation_holds_out_training_images_and_keeps_the_best_checkpoint(tmp_path):
    cfg = _tiny(train_limit=120, val_size=20, robust_val_every=2, epochs=3, batch_size=20, pgd_steps=2)
    trainer = Trainer(cfg, out_dir=tmp_path / "run", progress=False)
    final = trainer.fit()
    assert len(trainer.train_set) == 100 and len(trainer.loader) == 5  # the split does not train
    train_x, train_y = load_dataset("digits", split="train", limit=120, seed=0).tensors
    held_out = trainer.val_indices
    assert len(held_out) == 20 and len(set(held_out.tolist())) == 20 and int(held_out.max()) < 120
    # The split is drawn from the training images (never the test set) ...
    assert torch.equal(trainer.val_set[0], train_x[held_out]) and torch.equal(trainer.val_set[1], train_y[held_out])
    # ... and what trains is exactly the rest.
    rest = torch.tensor(sorted(set(range(120)) - set(held_out.tolist())))
    assert torch.equal(trainer.train_set.tensors[0], train_x[rest])
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [("val_robust_acc" in h, "val_clean_acc" in h) for h in history] == [(False, False), (True, True),
                                                                               (True, True)]
    validated = [h for h in history if "val_robust_acc" in h]
    assert all(h["val_n"] == 20 and 0 <= h["val_robust_acc"] <= 1 and 0 <= h["val_clean_acc"] <= 1 for h in validated)
    top = max(validated, key=lambda h: h["val_robust_acc"])
    best = _load(tmp_path / "run" / "checkpoint_best.pt")
    assert best["epoch"] == top["epoch"] == final["best_epoch"]
    assert final["best_val_robust_acc"] == top["val_robust_acc"]
    assert best["validation"]["attack"]["name"] == "pgd" and best["validation"]["attack"]["eps"] == 0.1
    assert best["validation"]["attack"]["kwargs"]["steps"] == 2
    assert "pgd (L-inf, eps=0.1, 2 steps" in final["val_attack"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["robust_val_every"] == 2


def test_robust_validation_leaves_the_training_streams_alone(tmp_path):
    """Validating every epoch or only at the end trains the same weights (PGD-AT draws from the global RNG)."""
    base = _tiny(method="pgd-at", pgd_steps=2, train_limit=120, batch_size=20, val_size=20, epochs=2)
    weights = []
    for every in (1, 2):
        trainer = Trainer(dataclasses.replace(base, robust_val_every=every), out_dir=tmp_path / str(every),
                          progress=False)
        trainer.fit()
        weights.append(trainer.base.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_fresh_start_removes_a_stale_best_checkpoint(tmp_path):
    out = tmp_path / "run"
    Trainer(_tiny(robust_val_every=1, val_size=10), out_dir=out, progress=False).fit()
    assert (out / "checkpoint_best.pt").is_file()
    Trainer(_tiny(), out_dir=out, overwrite=True, progress=False).fit()
    assert not (out / "checkpoint_best.pt").exists()


def test_val_size_larger_than_the_training_set_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"val_size: expected fewer than the 100 training images \(.*\), got 100"):
        Trainer(_tiny(robust_val_every=1, val_size=100), out_dir=tmp_path / "run", progress=False).fit()
    with pytest.raises(ValueError, match=r"val_size: holding 90 of the 100 training images out for validation leaves "
                                         r"10, fewer than one batch \(batch_size=25\)"):
        Trainer(_tiny(robust_val_every=1, val_size=90), out_dir=tmp_path / "run", progress=False).fit()
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# 4. The information plane, report, TensorBoard
# ---------------------------------------------------------------------------------------------
def test_batch_loss_returns_the_per_layer_information_plane_values():
    x, y = load_dataset("digits", split="train", limit=20, seed=0).tensors
    cfg = resolve_config(TrainConfig(method="ce", ib=True))
    model, _ = build_model(cfg)
    out = batch_loss(cfg, model.train(), x, y)
    assert out.layer_hsic.shape == (2, len(model.layers)) == (2, 2)
    torch.testing.assert_close(out.layer_hsic.sum(1), torch.stack([out.parts["hx"], out.parts["hy"]]))
    plain = resolve_config(TrainConfig(method="ce"))
    assert batch_loss(plain, build_model(plain)[0].train(), x, y).layer_hsic is None


def test_information_plane_step_reads_no_host_value_off_cpu():
    """The per-layer values and the EMA update stay on the device (meta tensors refuse host reads)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    cfg = resolve_config(TrainConfig(method="ce", ib=True))
    model, _ = build_model(cfg)
    model.to("meta").train()
    x = torch.empty(8, 1, 8, 8, device="meta")
    y = torch.empty(8, dtype=torch.long, device="meta")
    out = batch_loss(cfg, model, x, y)
    out.loss.backward()
    layer_sum = out.layer_hsic * 8 + out.layer_hsic * 8
    assert layer_sum.device.type == "meta" and layer_sum.shape == (2, 2)
    net = training._plain_network(cfg).to("meta")  # the trainer averages a hook-free copy
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    training._ema_step(ema, model.model)
    training._ema_step(ema, model.model)
    assert int(ema.n_averaged) == 2 and next(ema.module.parameters()).device.type == "meta"


@pytest.mark.parametrize(("method", "passes"), [("ce", 1), ("trades", 2)])
def test_history_logs_epoch_means_of_each_layers_nhsic(tmp_path, method, passes):
    cfg = _tiny(method=method, ib=True, pgd_steps=1, epochs=2)
    Trainer(cfg, out_dir=tmp_path / "run", progress=False).fit()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    layers = ["conv3", "fc1"] if method == "ce" else ["conv1", "conv2", "conv3", "fc1"]
    for h in history:
        assert sorted(k for k in h if k.startswith("hsic/")) == sorted(f"hsic/{n}/{a}" for n in layers for a in "xy")
        # train_hx sums the layers (and TRADES' two passes, which the per-layer values average)
        assert sum(h[f"hsic/{n}/x"] for n in layers) * passes == pytest.approx(h["train_hx"], rel=1e-5)
        assert sum(h[f"hsic/{n}/y"] for n in layers) * passes == pytest.approx(h["train_hy"], rel=1e-5)
        assert all(h[f"hsic/{n}/y"] > 0 for n in layers)
    assert (tmp_path / "run" / "information_plane.png").stat().st_size > 0


def test_plot_information_plane_needs_hsic_values(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib")
    from ib_plugins.plots import information_plane_layers, plot_information_plane

    history = [{"epoch": e, "hsic/a/x": 1.0 / e, "hsic/a/y": 0.1 * e, "hsic/b/x": 2.0, "hsic/b/y": 0.5}
               for e in (1, 2, 3)]
    assert information_plane_layers(history) == ["a", "b"]
    plot_information_plane(history, tmp_path / "plane.png", title="t")
    assert (tmp_path / "plane.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="history: expected per-layer information-plane values"):
        plot_information_plane([{"epoch": 1, "train_acc": 0.5}], tmp_path / "none.png")


def test_report_draws_the_information_plane_of_training_folders(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib")
    ib, plain = tmp_path / "ib", tmp_path / "plain"
    Trainer(_tiny(ib=True, epochs=2, robust_val_every=1, val_size=10), out_dir=ib, progress=False).fit()
    Trainer(_tiny(), out_dir=plain, progress=False).fit()
    (ib / "information_plane.png").unlink()
    table_file = tmp_path / "table.md"
    assert main(["report", str(ib), str(plain), "--out", str(table_file)]) == 0
    out = capsys.readouterr().out
    assert (ib / "information_plane.png").stat().st_size > 0 and not (plain / "information_plane.png").exists()
    assert "| training run | epochs | test acc | best robust val acc (epoch) | information plane |" in out
    row = rf"\| {re.escape(md_cell(ib))} \| 2 \| [0-9.]+ \| [0-9.]+ \([12]\) \| .*information_plane\.png \|"
    assert re.search(row, out)
    assert "no IB term" in out and table_file.read_text().strip() == out.strip()
    # A training folder with a broken history is one clear error line.
    (plain / "history.json").write_text('[{"epoch": "one"}]')
    message = _cli_error(capsys, ["report", str(plain)])
    assert message.startswith(f"results: {plain / 'history.json'} is not a history.json written by 'ib-plugins train'")
    (plain / "history.json").write_text('[{"epoch": 1, "hsic/a/x": "big", "hsic/a/y": 1}]')
    assert "'hsic/a/x' is not a finite number" in _cli_error(capsys, ["report", str(plain)])
    # Folders with neither file keep the evaluation message, now naming both kinds.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no metrics.json (expected a folder written by 'ib-plugins evaluate', or a training run" in _cli_error(
        capsys, ["report", str(empty)])


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from ib_plugins import _optional

    monkeypatch.setattr(_optional, "is_available", lambda name: name != "tensorboard")
    with pytest.raises(MissingOptionalDependencyError, match="tensorboard: .*needs the 'tensorboard' package"):
        Trainer(_tiny(tensorboard=str(tmp_path / "tb")), out_dir=tmp_path / "run")
    message = _cli_error(capsys, ["train", "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb"),
                                  "--epochs", "1", "--no-progress"])
    assert message.startswith("tensorboard: logging to a TensorBoard folder needs the 'tensorboard' package")
    assert "pip install tensorboard" in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()


class _FakeWriter:
    instances: list[_FakeWriter] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.closed, self.flushes = log_dir, [], False, 0
        _FakeWriter.instances.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


def test_tensorboard_logs_every_numeric_metric_per_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr(training.trainer, "_summary_writer_class", lambda: _FakeWriter)
    _FakeWriter.instances.clear()
    cfg = _tiny(ib=True, epochs=2, robust_val_every=1, val_size=10, tensorboard=str(tmp_path / "tb"))
    Trainer(cfg, out_dir=tmp_path / "run", progress=False).fit()
    (writer,) = _FakeWriter.instances
    assert writer.log_dir == str(tmp_path / "tb") and writer.closed and writer.flushes == 2
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    expected = [(k, v, h["epoch"]) for h in history for k, v in sorted(h.items()) if k != "epoch"]
    assert writer.scalars == expected
    assert {"hsic/fc1/x", "val_robust_acc", "train_loss", "lr"} <= {tag for tag, _, _ in writer.scalars}
    # The log folder is not part of the run: resuming with another one is the same run.
    same = resolve_config(dataclasses.replace(cfg, tensorboard=None))
    assert resolve_config(cfg).run_identity() == same.run_identity()


# ---------------------------------------------------------------------------------------------
# 8. device="auto"
# ---------------------------------------------------------------------------------------------
def test_device_auto_is_the_default_and_resolves_to_cuda_when_available(monkeypatch, tmp_path):
    assert TrainConfig().device == "auto"
    assert resolve_config(TrainConfig()).device == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_config(TrainConfig()).device == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    c = resolve_config(TrainConfig(device="auto"))
    assert c.device == "cpu" and resolve_config(c) == c
    assert c.run_identity() == resolve_config(TrainConfig(device="cpu")).run_identity()  # device is not identity
    Trainer(_tiny(), out_dir=tmp_path / "run", progress=False).fit()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["device"] == "cpu"  # the resolved device
