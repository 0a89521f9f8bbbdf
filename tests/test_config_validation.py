"""Every bad input gets a clear error, nothing silent (issue 11): the training configuration, the results
folders, checkpoints and their writes.

One section per item of the issue: (1) typed and ranged TrainConfig fields, the same through the Python
API, ``--config FILE`` and the flags; (2) epochs without a batch; (3) ε = 0 for adversarial training;
(4) devices and non-finite losses; (5) Ctrl-C before the first checkpoint; (6) files the library did
not write are never replaced without ``overwrite``; (7) checkpoints that safe loading refuses; (8)
fsynced atomic writes; (9) the torch floor. All runs are tiny digits runs on the CPU (seconds).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import re
import stat
import sys
from pathlib import Path

import pytest
import torch

from ib_plugins.cli import main
from ib_plugins.experiments import prepare_results_dir, write_json
from ib_plugins.training import (
    METHODS,
    CheckpointError,
    RunExistsError,
    TrainConfig,
    Trainer,
    _device,
    build_model,
    load_checkpoint,
    resolve_config,
    save_checkpoint,
)

TINY = {"epochs": 1, "train_limit": 100, "test_limit": 40, "batch_size": 25}
TINY_FLAGS = ["--epochs", "1", "--train-limit", "100", "--test-limit", "40", "--batch-size", "25", "--no-progress"]


def _tiny(**overrides: object) -> TrainConfig:
    return TrainConfig(**{**TINY, **overrides})  # type: ignore[arg-type]


def _cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit status 2 and one error line; return the message after 'error: '."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.split(": error: ", 1)[1].strip()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# 1. Types and ranges of every field, the same on every path
# ---------------------------------------------------------------------------------------------
# A wrong-typed value for each kind of annotation, and the words the message must contain.
_WRONG = {
    bool: [("no", "expected true or false, got 'no'"), (1, "expected true or false, got 1"),
           (None, "expected true or false, got None")],
    int: [(True, "expected an int >= 1, got True"), (2.5, "expected an int >= 1, got 2.5"),
          ("3", "expected an int >= 1, got '3'"), (-5, "expected an int >= 1, got -5")],
    float: [("0.1", "expected a finite number >= 0, got '0.1'"), (True, "expected a finite number >= 0, got True"),
            (float("nan"), "expected a finite number >= 0, got nan"), (-1.0, "expected a finite number >= 0, got -1.0"),
            (10**400, "expected a finite number >= 0, got 1000")],
}


def _kind(field: dataclasses.Field) -> type | None:
    ann = str(field.type).replace(" | None", "")
    return {"bool": bool, "int": int, "float": float}.get(ann)


_TYPED = [(f.name, value, words) for f in dataclasses.fields(TrainConfig) if _kind(f) in _WRONG
          and f.name not in ("seed", "eps", "entropic_sigma") for value, words in _WRONG[_kind(f)]
          if not (value is None and "None" in str(f.type))]


def test_every_field_has_a_type_check_derived_from_its_annotation():
    """No field is left unchecked: an object of no JSON type is refused for every one, naming it."""
    for f in dataclasses.fields(TrainConfig):
        with pytest.raises(ValueError, match=rf"^{f.name}: expected .*, got <object object"):
            TrainConfig.from_dict({f.name: object()})


@pytest.mark.parametrize(("name", "value", "words"), _TYPED, ids=[f"{n}={v!r}"[:40] for n, v, _ in _TYPED])
def test_wrong_types_and_ranges_are_refused_naming_the_field(name, value, words):
    if name in ("record_masked", "augment"):  # bool | None: None means "as the preset says"
        words = words.replace("expected true", "expected None, true")
    with pytest.raises(ValueError, match=rf"^{name}: " + re.escape(words)):
        TrainConfig.from_dict({name: value})
    with pytest.raises(ValueError, match=rf"^{name}: " + re.escape(words)):
        resolve_config(TrainConfig(**{name: value}))


def test_ib_no_is_an_error_not_a_truthy_string(tmp_path, capsys):
    """{"ib": "no"} used to switch the IB term on and title the run "ce + IB"."""
    with pytest.raises(ValueError, match=r"^ib: expected true or false, got 'no'$"):
        TrainConfig.from_dict({"ib": "no"})
    with pytest.raises(ValueError, match="ib: expected true or false"):
        Trainer(TrainConfig(ib="no"), out_dir=tmp_path / "run")  # type: ignore[arg-type]
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"ib": "no"}')
    message = _cli_error(capsys, ["train", "--out", str(tmp_path / "run"), "--config", str(cfg), *TINY_FLAGS])
    assert message == f"config: {cfg}: ib: expected true or false, got 'no'"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("field", "value", "flag", "message"),
    [
        ("train_limit", -5, ["--train-limit", "-5"], "train_limit: expected an int >= 1, got -5"),
        ("epochs", 0, ["--epochs", "0"], "epochs: expected an int >= 1, got 0"),
        ("lr", float("nan"), ["--lr", "nan"], "lr: expected a finite number >= 0, got nan"),
        ("seed", -1, ["--seed", "-1"], "seed: expected an int >= 0 and < 2**63, got -1"),
        ("method", "nope", ["--method", "nope"], "method: expected one of 'ce', 'pgd-at'"),
        ("device", "gpu", ["--device", "gpu"], "device: expected a device name such as 'cpu', 'cuda' or 'cuda:0', got 'gpu'"),
        ("eps", 2.0, ["--eps", "2"], "eps: expected a number in [0, 1] (inputs are in [0, 1]), got 2.0"),
    ],
)
def test_python_api_config_file_and_flags_refuse_alike(tmp_path, capsys, field, value, flag, message):
    with pytest.raises(ValueError) as api:
        resolve_config(TrainConfig(**{field: value}))
    with pytest.raises(ValueError) as from_dict:
        TrainConfig.from_dict({field: value})
    assert str(api.value).startswith(message) and str(from_dict.value) == str(api.value)
    base = ["train", "--out", str(tmp_path / "run"), "--no-progress"]
    assert _cli_error(capsys, [*base, *flag]) == str(api.value)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({field: value}))
    assert _cli_error(capsys, [*base, "--config", str(cfg)]) == f"config: {cfg}: {api.value}"
    assert not (tmp_path / "run").exists()


def test_ints_are_fine_for_float_fields_and_lists_for_layers():
    c = TrainConfig.from_dict({"lr": 1, "alpha": 0, "ib": True, "ib_layers": ["conv3", "fc1"], "eps": 1})
    resolved = resolve_config(c)
    assert (resolved.lr, resolved.alpha, resolved.ib_layers) == (1, 0, ["conv3", "fc1"])
    assert resolve_config(TrainConfig(ib=True, ib_layers=("conv3",))).ib_layers == ["conv3"]  # type: ignore[arg-type]


def test_a_valid_config_round_trips_and_stored_configs_still_load():
    for method in METHODS:
        extra = {"init_checkpoint": "x.pt"} if method == "entropic" else {}
        c = resolve_config(TrainConfig(method=method, **extra))
        assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    # A stored config names a device of the machine that trained it: parsed, not required here.
    assert TrainConfig.from_dict({"device": "cuda:3"}).device == "cuda:3"


def test_from_dict_refuses_what_is_not_a_mapping():
    with pytest.raises(ValueError, match=r"^config: expected a mapping \(a JSON object\) of TrainConfig fields, got list"):
        TrainConfig.from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{epochs: 1", "is not valid JSON (Expecting property name enclosed in double quotes at line 1, column 2)"),
        ("[1, 2]", "must hold a JSON object of TrainConfig fields, got a JSON array"),
        (b"\xff\xfe{}", "is not a JSON file (byte 0 is not UTF-8 text)"),
        ("[" * 50_000 + "]" * 50_000, "is nested too deeply to be read as JSON (expected a JSON object)"),
        ('{"epochs": 1, "nope": 2}', ": unknown training config keys: nope; valid keys: "),
    ],
)
def test_a_config_file_that_is_not_a_json_object_is_one_line_naming_the_file(tmp_path, capsys, content, message):
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(content if isinstance(content, bytes) else content.encode())
    got = _cli_error(capsys, ["train", "--out", str(tmp_path / "run"), "--config", str(cfg)])
    assert got.startswith(f"config: {cfg}") and message in got, got


def test_flags_override_a_config_file_before_the_cross_field_checks(tmp_path, capsys):
    """The file alone is checked field by field; combinations are checked once the flags are merged."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"ib": True, "batch_size": 1}))
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--config", str(cfg), *TINY_FLAGS]) == 0, capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["batch_size"] == 25


# ---------------------------------------------------------------------------------------------
# 2. Epochs without a batch are refused before anything is written
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("train_limit", "batch_size"), [(50, 100), (3, 50), (24, 25)])
def test_a_train_limit_below_the_batch_size_is_refused_naming_both(tmp_path, train_limit, batch_size):
    """The trainer drops the last incomplete batch; an epoch without a batch died with KeyError: 'train_loss'."""
    message = (f"train_limit, batch_size: expected train_limit >= batch_size, got train_limit={train_limit} and "
               f"batch_size={batch_size}: the trainer drops each epoch's last incomplete batch")
    trainer = Trainer(TrainConfig(epochs=1, train_limit=train_limit, batch_size=batch_size, test_limit=40),
                      out_dir=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=re.escape(message)):
        trainer.fit()
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_the_dataset_is_refused_before_writing(tmp_path):
    trainer = Trainer(TrainConfig(epochs=1, batch_size=2000, test_limit=40), out_dir=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"batch_size: expected at most the number of training images, got "
                                         r"batch_size=2000 for 1347 images"):
        trainer.fit()
    assert not (tmp_path / "run").exists()


def test_one_full_batch_trains(tmp_path):
    metrics = Trainer(_tiny(train_limit=25), out_dir=tmp_path / "run", progress=False).fit()
    assert math.isfinite(metrics["train_loss"]) and json.loads((tmp_path / "run" / "history.json").read_text())


def test_batches_of_one_are_refused_for_batchnorm_models_before_writing(tmp_path):
    trainer = Trainer(_tiny(train_limit=3, batch_size=1), out_dir=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"batch_size: expected at least 2 for 'digits-cnn', whose BatchNorm layers "
                                         r"need more than one sample per batch in training, got 1"):
        trainer.fit()
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# 3. ε <= 0 for adversarial training
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "extra"), [("pgd-at", {}), ("trades", {}), ("mart", {}), ("hbar", {"hbar_adv": True})])
def test_zero_eps_is_refused_for_adversarial_methods(method, extra):
    with pytest.raises(ValueError, match=re.escape(f"eps: expected a number in (0, 1] for adversarial training "
                                                   f"(method {method!r}), got 0.0")):
        resolve_config(TrainConfig(method=method, eps=0.0, **extra))
    with pytest.raises(ValueError, match=r"pgd_alpha: expected a number > 0 for adversarial training"):
        resolve_config(TrainConfig(method=method, pgd_alpha=0.0, **extra))


def test_zero_eps_is_fine_where_no_attack_trains():
    assert resolve_config(TrainConfig(method="ce", eps=0.0)).eps == 0.0
    assert resolve_config(TrainConfig(method="hbar", eps=0.0)).eps == 0.0


# ---------------------------------------------------------------------------------------------
# 4. Devices; a non-finite loss
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpu", "device: expected a device name such as 'cpu', 'cuda' or 'cuda:0', got 'gpu'"),
        ("cuda:x", "got 'cuda:x'"),
        ("", "got ''"),
        ("meta", "got 'meta' (the meta device holds no data to train or evaluate on)"),
        ("cpu:1", "device: expected 'cpu' (there is one CPU device), got 'cpu:1'"),
    ],
)
def test_unknown_device_names_are_refused(name, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _device(name)
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig.from_dict({"device": name})


def test_a_cuda_index_that_does_not_exist_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert _device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=re.escape("device: expected a CUDA device index below 1 (this machine has "
                                                   "1 CUDA device), got 'cuda:3'")):
        _device("cuda:3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device: 'cuda:0' was requested but CUDA is not available on this machine"):
        _device("cuda:0")


def test_a_non_finite_loss_is_one_line_and_a_non_zero_exit(tmp_path, capsys):
    run = tmp_path / "run"
    message = _cli_error(capsys, ["train", "--out", str(run), "--lr", "1e30", *TINY_FLAGS])
    assert message.startswith("the training loss became non-finite (NaN or inf) in epoch 1; its checkpoint was not "
                              "written, and none exists yet. Lower the learning rate (lr=1e+30)"), message
    assert not (run / "checkpoint.pt").exists()


# ---------------------------------------------------------------------------------------------
# 5. Ctrl-C says what is true
# ---------------------------------------------------------------------------------------------
def _interrupt_in_epoch(monkeypatch, epoch: int) -> None:
    original = Trainer._train_epoch

    def train_epoch(self, index):
        if index + 1 == epoch:
            raise KeyboardInterrupt
        return original(self, index)

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)


def test_ctrl_c_before_the_first_checkpoint_does_not_advise_resume(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), *TINY_FLAGS]
    with monkeypatch.context() as patch:
        _interrupt_in_epoch(patch, 1)
        assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.strip() == ("ib-plugins train: interrupted before the first epoch ended, so no checkpoint was written "
                           "yet; rerun the same command without --resume to start from scratch")
    message = _cli_error(capsys, [*argv, "--resume"])
    assert "no checkpoint to resume from" in message and "rerun without --resume" in message
    assert main(argv) == 0  # the same command starts from scratch
    assert (run / "checkpoint.pt").is_file()


def test_ctrl_c_after_a_checkpoint_advises_resume(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), *TINY_FLAGS[:-1], "--epochs", "2", "--no-progress"]
    with monkeypatch.context() as patch:
        _interrupt_in_epoch(patch, 2)
        assert main(argv) == 130
    assert "rerun with --resume to continue from the last checkpoint" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2


# ---------------------------------------------------------------------------------------------
# 6. Files the library did not write are not replaced without overwrite
# ---------------------------------------------------------------------------------------------
def test_train_refuses_a_folder_of_user_files_without_config_json(tmp_path, capsys):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "metrics.json").write_text('{"my": "numbers"}\n')
    (run / "results.md").write_text("# my notes\n")
    (run / "notes.txt").write_text("unrelated\n")
    before = _snapshot(run)
    with pytest.raises(RunExistsError, match=r"holds metrics\.json, results\.md but no config\.json"):
        Trainer(_tiny(), out_dir=run)
    with pytest.raises(RunExistsError, match=r"holds metrics\.json, results\.md"):
        Trainer(_tiny(), out_dir=run, resume="auto")
    message = _cli_error(capsys, ["train", "--out", str(run), *TINY_FLAGS])
    assert "holds metrics.json, results.md but no config.json of an ib-plugins run" in message and "--overwrite" in message
    assert _snapshot(run) == before
    assert main(["train", "--out", str(run), "--overwrite", *TINY_FLAGS]) == 0
    assert json.loads((run / "metrics.json").read_text()) != {"my": "numbers"}
    assert (run / "notes.txt").read_text() == "unrelated\n"


def test_a_lone_checkpoint_is_not_replaced(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"somebody's weights")
    with pytest.raises(RunExistsError, match=r"holds checkpoint\.pt but no config\.json"):
        Trainer(_tiny(), out_dir=run, resume="auto")
    assert (run / "checkpoint.pt").read_bytes() == b"somebody's weights"


@pytest.mark.parametrize("name", ["metrics.json", "results.md", "history.json", "checkpoint.pt", "plot.png"])
def test_prepare_results_dir_refuses_output_files_it_did_not_write(tmp_path, name):
    (tmp_path / name).write_text("mine")
    (tmp_path / "readme.txt").write_text("mine too")
    with pytest.raises(RunExistsError, match=rf"{tmp_path} holds {re.escape(name)} but no config\.json"):
        prepare_results_dir(tmp_path, {"kind": "x"}, overwrite=False)
    assert not (tmp_path / "config.json").exists()
    prepare_results_dir(tmp_path, {"kind": "x"}, overwrite=True)
    assert (tmp_path / name).read_text() == "mine"  # overwrite lets the runner replace it; nothing is deleted


def test_prepare_results_dir_accepts_unrelated_files_and_its_own_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("mine")
    prepare_results_dir(tmp_path, {"kind": "x"}, overwrite=False)
    (tmp_path / "metrics.json").write_text("{}")
    prepare_results_dir(tmp_path, {"kind": "x"}, overwrite=False)  # config.json is ours and the same: reuse


def test_evaluate_into_a_folder_of_user_files_is_refused(tmp_path, capsys):
    ckpt = tmp_path / "checkpoint.pt"
    config = resolve_config(TrainConfig())
    save_checkpoint(ckpt, {"model": build_model(config)[1].state_dict(), "config": config.to_dict()})
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.md").write_text("keep me\n")
    message = _cli_error(capsys, ["evaluate", str(ckpt), "--out", str(out), "--n", "20", "--no-progress"])
    assert message.startswith(f"{out} holds results.md but no config.json")
    assert _snapshot(out) == {"results.md": b"keep me\n"}


# ---------------------------------------------------------------------------------------------
# 7. Checkpoints that safe loading refuses, versus truncated ones
# ---------------------------------------------------------------------------------------------
class _Payload:
    """An arbitrary class: pickling stores a reference that weights_only loading refuses."""


def test_a_checkpoint_with_objects_safe_loading_refuses_is_reported_as_such(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": _Payload}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "holds objects that safe loading (torch.load with weights_only=True) refuses" in message
    assert "_Payload" in message and "never unpickles arbitrary objects" in message
    assert "corrupt" not in message and "truncated" not in message and "\n" not in message


def test_a_truncated_or_empty_checkpoint_is_corrupt_or_truncated(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"model": {"w": torch.zeros(100)}, "config": {}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"is corrupt or truncated and cannot be read \(RuntimeError: "):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\): corrupt or truncated"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"checkpoint: expected a checkpoint file, got the folder"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"map_location: expected a device name .*got 'gpu'"):
        load_checkpoint(path, map_location="gpu")


# ---------------------------------------------------------------------------------------------
# 8. Atomic writes are fsynced: the file before the rename, the folder after it
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def fsyncs(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        calls.append("dir" if stat.S_ISDIR(mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


@pytest.mark.skipif(sys.platform == "win32", reason="folders cannot be fsynced on Windows (the code skips it there)")
@pytest.mark.parametrize("writer", ["save_checkpoint", "write_json"])
def test_atomic_writes_fsync_the_file_then_the_folder(tmp_path, fsyncs, writer):
    path = tmp_path / "out"
    if writer == "save_checkpoint":
        save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {}})
        assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    else:
        write_json(path, {"a": 1})
        assert json.loads(path.read_text()) == {"a": 1}
    assert fsyncs == ["file", "dir"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": {}})
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(path, {"model": {}, "config": {}, "bad": lambda: None})  # lambdas cannot be pickled
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


# ---------------------------------------------------------------------------------------------
# 9. The torch floor
# ---------------------------------------------------------------------------------------------
def test_pyproject_requires_torch_2_6_or_later():
    """torch < 2.6 lets a crafted file bypass weights_only=True (CVE-2025-32434)."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    torch_reqs = [d for d in pyproject["project"]["dependencies"] if re.match(r"torch\b(?!\w)", d)]
    assert torch_reqs == ["torch>=2.6"]
