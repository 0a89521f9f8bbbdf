"""Fuzzing the ``ib-plugins`` command line with bad input (issue 11: every bad input gets a clear error).

Table-driven: every case runs :func:`ib_plugins.cli.main` in-process and must end with exit status 2,
exactly one line on stderr that starts with ``ib-plugins`` (``ib-plugins COMMAND: error: ...``) and
matches the case's pattern, no traceback anywhere, and no results folder created. Every case fails
at validation (nothing trains), so the whole file runs in seconds.

The inputs (checkpoints, config files, model-info and metrics files) are written once per module
into a temporary folder and never modified; ``{name}`` placeholders in the argument lists refer to
them, ``{out}`` to a fresh path per case that must not exist afterwards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from ib_plugins.cli import main
from ib_plugins.training import TrainConfig, build_model, resolve_config, save_checkpoint


class _NotAllowed:
    """A class reference in a checkpoint: something ``torch.load(weights_only=True)`` refuses."""


# A user's own models file for --model-factory (evaluate, audit).
USER_MODELS = """
import torch.nn as nn


def make_cnn(num_classes=10):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, num_classes))


def make_cifar_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 10))


def broken():
    raise RuntimeError("no GPU here")


def returns_int():
    return 3


NOT_CALLABLE = 7
"""


def _model_info(**fields: object) -> str:
    data = {"dataset": "cifar10", "clean_acc": "91.00", "autoattack_acc": "40.00"}
    data.update(fields)
    return json.dumps(data)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fuzz")
    paths: dict[str, Path] = {}

    def put(name: str, content: str | bytes, rel: str | None = None) -> None:
        p = root / (rel or name)
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        paths[name] = p

    # Checkpoints: a good (untrained) one and every kind of bad one.
    config = resolve_config(TrainConfig())
    weights = build_model(config)[1].state_dict()
    paths["ckpt"] = root / "good" / "checkpoint.pt"
    paths["ckpt"].parent.mkdir()
    save_checkpoint(paths["ckpt"], {"format": 1, "epoch": 1, "model": weights, "config": config.to_dict()})
    good = paths["ckpt"].read_bytes()
    put("truncated", good[: len(good) // 2], "truncated.pt")
    put("empty", b"", "empty.pt")
    put("garbage", b"\x80\x04 this is not a checkpoint \xff\x00" * 10, "garbage.pt")
    put("text_ckpt", '{"model": {}, "config": {}}', "text.pt")
    paths["evil"] = root / "evil.pt"
    torch.save({"model": weights, "config": config.to_dict(), "payload": _NotAllowed}, paths["evil"])
    paths["bad_config_ckpt"] = root / "bad-config.pt"
    torch.save({"model": weights, "config": {**config.to_dict(), "ib": "no"}}, paths["bad_config_ckpt"])
    paths["no_config_ckpt"] = root / "no-config.pt"
    torch.save({"model": weights}, paths["no_config_ckpt"])
    paths["list_ckpt"] = root / "list.pt"
    torch.save([1, 2, 3], paths["list_ckpt"])
    paths["wrong_weights"] = root / "wrong-weights.pt"
    torch.save({"model": {"nope": torch.zeros(2)}, "config": config.to_dict()}, paths["wrong_weights"])
    paths["folder"] = root / "a-folder"
    paths["folder"].mkdir()
    put("afile", "just a file\n", "a-file.txt")

    # Config files for `train --config`.
    put("cfg_not_json", "{epochs: 1", "cfg/not-json.json")
    put("cfg_array", "[1, 2]", "cfg/array.json")
    put("cfg_string", '"epochs"', "cfg/string.json")
    put("cfg_binary", b"\xff\xfe\x00\x01garbage", "cfg/binary.json")
    put("cfg_deep", "[" * 100_000 + "]" * 100_000, "cfg/deep.json")
    put("cfg_ib_no", '{"ib": "no"}', "cfg/ib-no.json")
    put("cfg_negative_limit", '{"train_limit": -5}', "cfg/limit.json")
    put("cfg_unknown", '{"epochs": 1, "learning_rate": 0.1}', "cfg/unknown.json")
    put("cfg_overflow", '{"lr": 1e999}', "cfg/overflow.json")
    put("cfg_nan", '{"lr": NaN}', "cfg/nan.json")
    put("cfg_huge_int", '{"epochs": ' + "9" * 5000 + "}", "cfg/huge-int.json")
    put("cfg_epochs_str", '{"epochs": "3"}', "cfg/epochs-str.json")
    put("cfg_layers", '{"ib": true, "ib_layers": [1, 2]}', "cfg/layers.json")

    # Model-info files for `leaderboard`, one folder per kind of damage.
    put("lb_good", _model_info(), "lb/good/model_info/cifar10/Linf/good.json")
    put("lb_deep", "[" * 100_000 + "]" * 100_000, "lb/deep/x.json")
    put("lb_deep_object", '{"a":' * 100_000 + "1" + "}" * 100_000, "lb/deep-object/x.json")
    put("lb_inf_acc", _model_info(autoattack_acc=1e999).replace("Infinity", "1e999"), "lb/inf-acc/x.json")
    put("lb_inf_eps", _model_info(eps="1e999"), "lb/inf-eps/x.json")
    put("lb_binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xff", "lb/binary/x.json")
    put("lb_array", "[1, 2, 3]", "lb/array.json")
    put("lb_huge_int", '{"dataset": "cifar10", "clean_acc": ' + "9" * 5000 + "}", "lb/huge-int/x.json")
    put("lb_bad_acc", _model_info(clean_acc="lots"), "lb/bad-acc.json")
    (root / "lb" / "empty").mkdir(parents=True)
    paths["lb_empty"] = root / "lb" / "empty"
    for name in ("lb_deep", "lb_deep_object", "lb_inf_acc", "lb_inf_eps", "lb_binary", "lb_huge_int"):
        paths[name + "_dir"] = paths[name].parent

    # Metrics files for `report`.
    put("rep_garbage", "not json at all", "rep/garbage/metrics.json")
    put("rep_array", "[]", "rep/array/metrics.json")
    put("rep_no_suite", '{"epochs": 1}', "rep/no-suite/metrics.json")
    put("rep_no_attacks", '{"suite": {"clean_accuracy": 0.5}}', "rep/no-attacks/metrics.json")
    put("rep_bad_attack", '{"suite": {"clean_accuracy": 0.5, "attacks": [{"name": "pgd", "n": 1e999}]}}',
        "rep/bad-attack/metrics.json")
    put("rep_deep", '{"suite":' * 50_000 + "1" + "}" * 50_000, "rep/deep/metrics.json")
    for name in ("rep_garbage", "rep_array", "rep_no_suite", "rep_no_attacks", "rep_bad_attack", "rep_deep"):
        paths[name + "_dir"] = paths[name].parent
    paths["rep_empty"] = root / "rep" / "empty"
    paths["rep_empty"].mkdir()

    # A folder holding a user's own output-like files but no config.json.
    put("user_metrics", '{"mine": true}\n', "user-folder/metrics.json")
    paths["user_folder"] = paths["user_metrics"].parent
    paths["missing"] = root / "does-not-exist"

    # --model-factory / --weights: a user's models file, its weights, and bad ones.
    put("user_models", USER_MODELS, "user/user_models.py")
    put("bad_syntax", "def f(:\n    pass\n", "user/bad_syntax.py")
    put("bad_import", "import no_such_dependency_xyz\n", "user/bad_import.py")
    import importlib.util

    spec = importlib.util.spec_from_file_location("_fuzz_user_models", paths["user_models"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cnn = module.make_cnn()
    paths["user_weights"] = root / "user" / "cnn.pt"
    torch.save(cnn.state_dict(), paths["user_weights"])
    paths["user_weights_other"] = root / "user" / "other.pt"
    torch.save({"features.weight": torch.zeros(2), **{k: v for k, v in cnn.state_dict().items() if k != "0.bias"}},
               paths["user_weights_other"])
    paths["user_weights_evil"] = root / "user" / "evil.pt"
    torch.save({"model": cnn.state_dict(), "payload": _NotAllowed}, paths["user_weights_evil"])
    return {k: str(v) for k, v in paths.items()}


TRAIN = ["train", "--out", "{out}", "--epochs", "1", "--train-limit", "100", "--batch-size", "50", "--no-progress"]
EVAL = ["evaluate", "{ckpt}", "--out", "{out}", "--no-progress"]
AUDIT = ["audit", "{ckpt}", "--out", "{out}", "--quick", "--no-progress"]
SELECT = ["select-layers", "--out", "{out}", "--epochs", "1", "--train-limit", "100", "--no-progress"]
DEMO = ["demo", "--out", "{out}", "--epochs", "1", "--no-progress"]
FACTORY = ["--model-factory", "{user_models}:make_cnn", "--weights", "{user_weights}", "--dataset", "digits"]
EVAL_F = ["evaluate", "--out", "{out}", "--no-progress", "--n", "20"]
AUDIT_F = ["audit", "--out", "{out}", "--quick", "--no-progress", "--surrogate", "none"]

# (case id, argv, pattern the one stderr line must match)
CASES: list[tuple[str, list[str], str]] = [
    # -- the command itself ------------------------------------------------------------------
    ("no-command", [], r"^ib-plugins: error: the following arguments are required: COMMAND"),
    ("unknown-command", ["fly"], r"invalid choice: 'fly'"),
    ("unknown-flag", ["report", "{rep_empty}", "--colour"], r"^ib-plugins: error: unrecognized arguments: --colour"),
    # -- train: wrong types and values on the flags ------------------------------------------
    ("train-epochs-abc", [*TRAIN, "--epochs", "abc"], r"argument --epochs: invalid int value: 'abc'"),
    ("train-epochs-float", [*TRAIN, "--epochs", "1.5"], r"argument --epochs: invalid int value: '1.5'"),
    ("train-epochs-zero", [*TRAIN, "--epochs", "0"], r"epochs: expected an int >= 1, got 0"),
    ("train-lr-nan", [*TRAIN, "--lr", "nan"], r"lr: expected a finite number >= 0, got nan"),
    ("train-lr-inf", [*TRAIN, "--lr", "inf"], r"lr: expected a finite number >= 0, got inf"),
    ("train-lr-negative", [*TRAIN, "--lr", "-0.1"], r"lr: expected a finite number >= 0, got -0.1"),
    ("train-lr-text", [*TRAIN, "--lr", "fast"], r"argument --lr: invalid float value: 'fast'"),
    ("train-eps-negative", [*TRAIN, "--method", "pgd-at", "--eps", "-1"], r"eps: expected a number in \[0, 1\]"),
    ("train-eps-above-one", [*TRAIN, "--method", "pgd-at", "--eps", "2"], r"eps: expected a number in \[0, 1\]"),
    ("train-eps-zero-pgd-at", [*TRAIN, "--method", "pgd-at", "--eps", "0"],
     r"eps: expected a number in \(0, 1\] for adversarial training \(method 'pgd-at'\), got 0\.0"),
    ("train-eps-zero-trades", [*TRAIN, "--method", "trades", "--eps", "0"], r"eps: .*\(method 'trades'\)"),
    ("train-eps-zero-mart", [*TRAIN, "--method", "mart", "--eps", "0"], r"eps: .*\(method 'mart'\)"),
    ("train-pgd-alpha-zero", [*TRAIN, "--method", "pgd-at", "--pgd-alpha", "0"], r"pgd_alpha: expected a number > 0"),
    ("train-batch-size-zero", [*TRAIN, "--batch-size", "0"], r"batch_size: expected an int >= 1, got 0"),
    ("train-batch-size-negative", [*TRAIN, "--batch-size", "-50"], r"batch_size: expected an int >= 1, got -50"),
    ("train-seed-negative", [*TRAIN, "--seed", "-1"], r"seed: expected an int >= 0 and < 2\*\*63, got -1"),
    ("train-seed-huge", [*TRAIN, "--seed", str(2**64)], r"seed: expected an int >= 0 and < 2\*\*63"),
    ("train-limit-negative", [*TRAIN, "--train-limit", "-5"], r"train_limit: expected an int >= 1, got -5"),
    ("train-test-limit-zero", [*TRAIN, "--test-limit", "0"], r"test_limit: expected an int >= 1, got 0"),
    ("train-mask-every-zero", [*TRAIN, "--mask-every", "0"], r"mask_every: expected an int >= 1, got 0"),
    ("train-vib-k-zero", [*TRAIN, "--method", "vib", "--vib-k", "0"], r"vib_k: expected an int >= 1, got 0"),
    ("train-gamma-negative", [*TRAIN, "--gamma", "-1"], r"gamma: expected a finite number >= 0, got -1\.0"),
    ("train-momentum-nan", [*TRAIN, "--momentum", "nan"], r"momentum: expected a finite number >= 0, got nan"),
    ("train-ib-layers-empty", [*TRAIN, "--ib", "--ib-layers", ""], r"ib_layers: expected a layer spec"),
    # -- train: unknown choices ----------------------------------------------------------------
    ("train-method", [*TRAIN, "--method", "fgsm-at"], r"method: expected one of 'ce', 'pgd-at'.*got 'fgsm-at'"),
    ("train-dataset", [*TRAIN, "--dataset", "imagenet-1k"], r"dataset: expected one of .*got 'imagenet-1k'"),
    ("train-model", [*TRAIN, "--model", "gpt"], r"model: expected one of .*got 'gpt'"),
    ("train-preset", [*TRAIN, "--preset", "fast"], r"preset: expected one of 'ibrar-code', 'paper', 'standard'"),
    ("train-mask", [*TRAIN, "--mask", "random"], r"mask: expected one of 'paper', 'code', got 'random'"),
    ("train-amp", [*TRAIN, "--amp", "fp32"], r"amp: expected one of 'bf16', 'fp16', got 'fp32'"),
    ("train-optimizer", [*TRAIN, "--optimizer", "lion"], r"optimizer: expected one of 'sgd', 'adam', got 'lion'"),
    ("train-x-for-ib", [*TRAIN, "--x-for-ib", "both"], r"x_for_ib: expected one of 'clean', 'adv', got 'both'"),
    ("train-unknown-flag", [*TRAIN, "--learning-rate", "0.1"], r"unrecognized arguments: --learning-rate"),
    ("train-missing-out", ["train", "--epochs", "1"], r"the following arguments are required: --out"),
    # -- train: zero-batch epochs and conflicting settings -------------------------------------
    ("train-limit-below-batch", [*TRAIN, "--train-limit", "50", "--batch-size", "100"],
     r"train_limit, batch_size: expected train_limit >= batch_size, got train_limit=50 and batch_size=100"),
    ("train-limit-3-batch-50", [*TRAIN, "--train-limit", "3"],
     r"got train_limit=3 and batch_size=50: .*an epoch would have no batch"),
    ("train-batch-above-dataset", [*TRAIN[:5], "--batch-size", "5000", "--no-progress"],
     r"batch_size: expected at most the number of training images, got batch_size=5000 for 1347 images"),
    ("train-resume-and-overwrite", [*TRAIN, "--resume", "--overwrite"],
     r"--resume, --overwrite: expected at most one of them"),
    ("train-resume-without-checkpoint", [*TRAIN, "--resume"],
     r"resume: no checkpoint to resume from in .*rerun without --resume"),
    ("train-batch-1-batchnorm", [*TRAIN[:5], "--train-limit", "3", "--batch-size", "1", "--no-progress"],
     r"batch_size: expected at least 2 for 'digits-cnn', whose BatchNorm layers need more than one sample"),
    ("train-ib-batch-1", [*TRAIN, "--ib", "--batch-size", "1"], r"batch_size: the HSIC terms need batches of at least 2"),
    ("train-hbar-with-ib", [*TRAIN, "--method", "hbar", "--ib"], r"ib/mask: the IB-RAR term combines with methods"),
    ("train-vib-with-mask", [*TRAIN, "--method", "vib", "--mask", "code"], r"ib/mask: the IB-RAR term combines"),
    ("train-entropic-without-init", [*TRAIN, "--method", "entropic"], r"init_checkpoint: entropic retraining starts"),
    ("train-entropic-garbage-init", [*TRAIN, "--method", "entropic", "--init-checkpoint", "{garbage}"],
     r"init_checkpoint: checkpoint .*garbage\.pt is corrupt or truncated"),
    # -- train: devices ------------------------------------------------------------------------
    ("train-device-gpu", [*TRAIN, "--device", "gpu"], r"device: expected a device name such as 'cpu', 'cuda'.*got 'gpu'"),
    ("train-device-cuda-x", [*TRAIN, "--device", "cuda:x"], r"device: expected a device name .*got 'cuda:x'"),
    ("train-device-meta", [*TRAIN, "--device", "meta"], r"got 'meta' \(the meta device holds no data"),
    ("train-device-cpu-index", [*TRAIN, "--device", "cpu:3"], r"device: expected 'cpu' \(there is one CPU device\)"),
    ("train-device-cuda-99", [*TRAIN, "--device", "cuda:99"],
     r"device: ('cuda:99' was requested but CUDA is not available|expected a CUDA device index below)"),
    # -- train: config files -------------------------------------------------------------------
    ("config-missing", [*TRAIN, "--config", "{missing}"], r"config: .*does-not-exist does not exist"),
    ("config-folder", [*TRAIN, "--config", "{folder}"], r"config: expected a JSON file, got the folder"),
    ("config-not-json", [*TRAIN, "--config", "{cfg_not_json}"], r"config: .*not-json\.json is not valid JSON"),
    ("config-array", [*TRAIN, "--config", "{cfg_array}"], r"must hold a JSON object of TrainConfig fields, got a JSON array"),
    ("config-string", [*TRAIN, "--config", "{cfg_string}"], r"got a JSON string"),
    ("config-binary", [*TRAIN, "--config", "{cfg_binary}"], r"binary\.json is not a JSON file \(byte 0 is not UTF-8"),
    ("config-deep", [*TRAIN, "--config", "{cfg_deep}"], r"deep\.json is nested too deeply"),
    ("config-ib-no", [*TRAIN, "--config", "{cfg_ib_no}"], r"config: .*ib-no\.json: ib: expected true or false, got 'no'"),
    ("config-limit", [*TRAIN[:5], "--config", "{cfg_negative_limit}"], r"train_limit: expected an int >= 1, got -5"),
    ("config-unknown-key", [*TRAIN, "--config", "{cfg_unknown}"], r"unknown training config keys: learning_rate"),
    ("config-1e999", [*TRAIN, "--config", "{cfg_overflow}"], r"lr: expected a finite number >= 0, got inf"),
    ("config-nan", [*TRAIN, "--config", "{cfg_nan}"], r"lr: expected a finite number >= 0, got nan"),
    ("config-huge-int", [*TRAIN, "--config", "{cfg_huge_int}"], r"huge-int\.json is not valid JSON"),
    ("config-epochs-string", [*TRAIN[:3], "--config", "{cfg_epochs_str}"], r"epochs: expected an int >= 1, got '3'"),
    ("config-layers-ints", [*TRAIN, "--config", "{cfg_layers}"], r"ib_layers: expected .*got \[1, 2\]"),
    # -- train: results folders ----------------------------------------------------------------
    ("train-out-is-a-file", ["train", "--out", "{afile}", *TRAIN[3:]], r"out_dir: expected a folder, got the existing file"),
    ("train-out-user-files", ["train", "--out", "{user_folder}", *TRAIN[3:]],
     r"holds metrics\.json but no config\.json of an ib-plugins run"),
    # -- evaluate ------------------------------------------------------------------------------
    ("eval-missing", ["evaluate", "{missing}", "--out", "{out}"], r"checkpoint not found: .*does-not-exist"),
    ("eval-folder", ["evaluate", "{folder}", "--out", "{out}"], r"checkpoint: expected a checkpoint file, got the folder"),
    ("eval-truncated", ["evaluate", "{truncated}", "--out", "{out}"], r"truncated\.pt is corrupt or truncated"),
    ("eval-empty", ["evaluate", "{empty}", "--out", "{out}"], r"empty\.pt is empty \(0 bytes\)"),
    ("eval-garbage", ["evaluate", "{garbage}", "--out", "{out}"], r"garbage\.pt is corrupt or truncated"),
    ("eval-text", ["evaluate", "{text_ckpt}", "--out", "{out}"], r"text\.pt is corrupt or truncated"),
    ("eval-unsafe-objects", ["evaluate", "{evil}", "--out", "{out}"],
     r"evil\.pt holds objects that safe loading .* refuses .*never unpickles arbitrary objects"),
    ("eval-bad-stored-config", ["evaluate", "{bad_config_ckpt}", "--out", "{out}"],
     r"the stored config is invalid \(ib: expected true or false, got 'no'\)"),
    ("eval-no-config", ["evaluate", "{no_config_ckpt}", "--out", "{out}"], r"is not an ib-plugins checkpoint"),
    ("eval-list", ["evaluate", "{list_ckpt}", "--out", "{out}"], r"is not an ib-plugins checkpoint"),
    ("eval-wrong-weights", ["evaluate", "{wrong_weights}", "--out", "{out}"], r"the weights do not fit a 'digits-cnn' model"),
    ("eval-other-model", [*EVAL, "--model", "lenet5"], r"holds a 'digits-cnn' model, not 'lenet5'"),
    ("eval-unknown-attack", [*EVAL, "--attacks", "pgd,laser"], r"laser"),
    ("eval-empty-attacks", [*EVAL, "--attacks", ","], r"argument --attacks: expected comma-separated names"),
    ("eval-suite", [*EVAL, "--suite", "strongest"], r"strongest"),
    ("eval-budget", [*EVAL, "--budget", "huge"], r"huge"),
    ("eval-n-zero", [*EVAL, "--n", "0"], r"argument --n: expected an int >= 1, got '0'"),
    ("eval-n-text", [*EVAL, "--n", "all"], r"argument --n: expected an int >= 1, got 'all'"),
    ("eval-batch-size-zero", [*EVAL, "--batch-size", "0"], r"argument --batch-size: expected an int >= 1, got '0'"),
    ("eval-seed-negative", [*EVAL, "--seed", "-1"], r"argument --seed: expected an int >= 0, got '-1'"),
    ("eval-pgd-steps-zero", [*EVAL, "--pgd-steps", "0"], r"argument --pgd-steps: expected an int >= 1"),
    ("eval-steps-sweep-zero", [*EVAL, "--steps-sweep", "0,10"], r"argument --steps-sweep: expected comma-separated ints"),
    ("eval-steps-sweep-text", [*EVAL, "--steps-sweep", "a,b"], r"argument --steps-sweep: expected comma-separated ints"),
    ("eval-tendency", [*EVAL, "--tendency", "laser"], r"tendency: expected one of the evaluated attacks"),
    ("eval-tsne-layer", [*EVAL, "--tsne", "no.such.layer"], r"tsne_layer: .no\.such\.layer. is not a submodule"),
    ("eval-device-gpu", [*EVAL, "--device", "gpu"], r"device: expected a device name .*got 'gpu'"),
    ("eval-device-meta", [*EVAL, "--device", "meta"], r"the meta device holds no data"),
    ("eval-out-user-files", [*EVAL[:2], "--out", "{user_folder}"], r"holds metrics\.json but no config\.json"),
    ("eval-out-is-a-file", [*EVAL[:2], "--out", "{afile}"], r"out_dir: expected a folder, got the existing file"),
    # -- evaluate / audit: a user's model (--model-factory, --weights, --factory-kwargs, --dataset)
    ("factory-no-colon", [*EVAL_F, "--model-factory", "user_models", "--dataset", "digits"],
     r"model_factory: expected a module and a function separated by ':' \(got 'user_models'; expected "
     r"'package\.module:function'"),
    ("factory-no-module", [*EVAL_F, "--model-factory", "no_such_module_xyz:make", "--dataset", "digits"],
     r"model_factory: no module named 'no_such_module_xyz' in the current folder .* or on PYTHONPATH"),
    ("factory-not-a-module-name", [*EVAL_F, "--model-factory", "my-models:make", "--dataset", "digits"],
     r"model_factory: 'my-models' is not a module name"),
    ("factory-no-file", [*EVAL_F, "--model-factory", "{missing}.py:make", "--dataset", "digits"],
     r"model_factory: .*does-not-exist\.py does not exist"),
    ("factory-folder", [*EVAL_F, "--model-factory", "{folder}/:make", "--dataset", "digits"],
     r"model_factory: .*a-folder/? is a folder, not a Python file"),
    ("factory-no-attribute", [*EVAL_F, "--model-factory", "{user_models}:make_cn", "--dataset", "digits"],
     r"model_factory: .*user_models\.py has no attribute 'make_cn'; close matches: make_cnn"),
    ("factory-not-callable", [*EVAL_F, "--model-factory", "{user_models}:NOT_CALLABLE", "--dataset", "digits"],
     r"model_factory: .*:NOT_CALLABLE is a int, expected a function or class"),
    ("factory-raises", [*EVAL_F, "--model-factory", "{user_models}:broken", "--dataset", "digits"],
     r"model_factory: .*:broken\(\) raised RuntimeError: no GPU here"),
    ("factory-returns-int", [*EVAL_F, "--model-factory", "{user_models}:returns_int", "--dataset", "digits"],
     r"model_factory: .*:returns_int returned a int, expected a torch\.nn\.Module"),
    ("factory-syntax-error", [*EVAL_F, "--model-factory", "{bad_syntax}:f", "--dataset", "digits"],
     r"model_factory: importing .*bad_syntax\.py failed \(SyntaxError: "),
    ("factory-missing-dependency", [*EVAL_F, "--model-factory", "{bad_import}:f", "--dataset", "digits"],
     r"model_factory: importing .*bad_import\.py failed \(ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
    ("factory-kwargs-not-json", [*EVAL_F, *FACTORY, "--factory-kwargs", "{{num"],
     r"argument --factory-kwargs: expected a JSON object such as"),
    ("factory-kwargs-array", [*EVAL_F, *FACTORY, "--factory-kwargs", "[10]"],
     r"argument --factory-kwargs: expected a JSON object such as .*got '\[10\]'"),
    ("factory-kwargs-unknown", [*EVAL_F, *FACTORY, "--factory-kwargs", '{{"width": 3}}'],
     r"model_factory: .*make_cnn\(\*\*\{'width': 3\}\) raised TypeError: .*unexpected keyword argument 'width'"),
    ("factory-kwargs-shape", [*EVAL_F, *FACTORY, "--factory-kwargs", '{{"num_classes": 5}}'],
     r"weights: .*cnn\.pt does not match the model built by .*make_cnn: shape mismatch \(2\): 3\.weight \[10, 256\] "
     r"in the file vs \[5, 256\] in the model"),
    ("factory-no-dataset", [*EVAL_F, "--model-factory", "{user_models}:make_cnn"],
     r"dataset: expected the dataset to evaluate the factory's model on"),
    ("factory-unknown-dataset", [*EVAL_F, *FACTORY[:4], "--dataset", "imagenet-1k"],
     r"dataset: unknown dataset 'imagenet-1k'; expected one of 'digits'"),
    ("factory-and-checkpoint", ["evaluate", "{ckpt}", "--out", "{out}", *FACTORY],
     r"checkpoint, model_factory: expected a checkpoint .* or a model factory .*got both"),
    ("eval-neither", ["evaluate", "--out", "{out}"], r"checkpoint, model_factory: .*got neither"),
    ("weights-without-factory", [*EVAL, "--weights", "{user_weights}"],
     r"weights: goes with model_factory \(a checkpoint holds its own weights\)"),
    ("dataset-with-checkpoint", [*EVAL, "--dataset", "digits"], r"dataset: a checkpoint knows its dataset"),
    ("factory-with-model-check", [*EVAL_F, *FACTORY, "--model", "lenet5"], r"expect_model: checks the model of a checkpoint"),
    ("weights-missing", [*EVAL_F, *FACTORY[:2], "--weights", "{missing}", "--dataset", "digits"],
     r"weights: .*does-not-exist does not exist \(expected a state_dict"),
    ("weights-folder", [*EVAL_F, *FACTORY[:2], "--weights", "{folder}", "--dataset", "digits"],
     r"weights: expected a state_dict file, got the folder"),
    ("weights-empty", [*EVAL_F, *FACTORY[:2], "--weights", "{empty}", "--dataset", "digits"],
     r"weights: .*empty\.pt is empty \(0 bytes\)"),
    ("weights-garbage", [*EVAL_F, *FACTORY[:2], "--weights", "{garbage}", "--dataset", "digits"],
     r"weights: .*garbage\.pt is corrupt or truncated"),
    ("weights-list", [*EVAL_F, *FACTORY[:2], "--weights", "{list_ckpt}", "--dataset", "digits"],
     r"weights: .*list\.pt holds a list; expected a state_dict"),
    ("weights-unsafe", [*EVAL_F, *FACTORY[:2], "--weights", "{user_weights_evil}", "--dataset", "digits"],
     r"weights: .*evil\.pt holds objects that safe loading \(torch\.load with weights_only=True\) refuses"),
    ("weights-keys", [*EVAL_F, *FACTORY[:2], "--weights", "{user_weights_other}", "--dataset", "digits"],
     r"weights: .*other\.pt does not match the model built by .*: missing keys \(1\): 0\.bias; unexpected keys "
     r"\(1\): features\.weight"),
    ("weights-of-another-model", [*EVAL_F, *FACTORY[:2], "--weights", "{ckpt}", "--dataset", "digits"],
     r"weights: .*checkpoint\.pt does not match the model built by .*missing keys \(4\): 0\.weight, 0\.bias.*"
     r"\(state_dict from its 'model' entry\)"),
    ("factory-wrong-input-shape", [*EVAL_F, "--model-factory", "{user_models}:make_cifar_net", "--dataset", "digits"],
     r"model: the model built by .*make_cifar_net fails on the dataset's inputs of shape \[2, 1, 8, 8\] \(RuntimeError"),
    ("audit-factory-no-module", [*AUDIT_F, "--model-factory", "no_such_module_xyz:make", "--dataset", "digits"],
     r"model_factory: no module named 'no_such_module_xyz'"),
    ("audit-factory-keys", [*AUDIT_F, *FACTORY[:2], "--weights", "{user_weights_other}", "--dataset", "digits"],
     r"weights: .*other\.pt does not match the model built by .*missing keys \(1\): 0\.bias"),
    ("audit-factory-unsafe", [*AUDIT_F, *FACTORY[:2], "--weights", "{user_weights_evil}", "--dataset", "digits"],
     r"weights: .*holds objects that safe loading"),
    ("audit-factory-no-dataset", [*AUDIT_F, "--model-factory", "{user_models}:make_cnn"],
     r"dataset: expected the dataset"),
    ("audit-factory-unknown-dataset", [*AUDIT_F, *FACTORY[:4], "--dataset", "imagenet-1k"],
     r"dataset: unknown dataset 'imagenet-1k'"),
    ("audit-factory-kwargs", [*AUDIT_F, *FACTORY, "--factory-kwargs", "null"], r"argument --factory-kwargs: expected a JSON"),
    ("audit-factory-raises", [*AUDIT_F, "--model-factory", "{user_models}:broken", "--dataset", "digits"],
     r"raised RuntimeError: no GPU here"),
    ("audit-factory-and-checkpoint", ["audit", "{ckpt}", "--out", "{out}", *FACTORY], r"got both"),
    ("audit-neither", ["audit", "--out", "{out}"], r"checkpoint, model_factory: .*got neither"),
    ("audit-weights-without-factory", [*AUDIT, "--weights", "{user_weights}"], r"weights: goes with model_factory"),
    ("audit-factory-wrong-input-shape", [*AUDIT_F, "--model-factory", "{user_models}:make_cifar_net", "--dataset",
                                         "digits"], r"model: the forward fails on the test inputs of shape \[2, 1, 8, 8\]"),
    # -- audit ---------------------------------------------------------------------------------
    ("audit-missing", ["audit", "{missing}", "--out", "{out}"], r"checkpoint not found"),
    ("audit-garbage", ["audit", "{garbage}", "--out", "{out}"], r"corrupt or truncated"),
    ("audit-unsafe-objects", ["audit", "{evil}", "--out", "{out}"], r"holds objects that safe loading"),
    ("audit-eps-above-one", [*AUDIT, "--eps", "2"], r"eps: expected an L-inf radius in \(0, 1\], got 2\.0"),
    ("audit-eps-grid-order", [*AUDIT, "--eps-grid", "0.5,0.1"], r"eps_grid: expected strictly increasing radii"),
    ("audit-eps-grid-text", [*AUDIT, "--eps-grid", "a,b"], r"argument --eps-grid: expected comma-separated numbers"),
    ("audit-n-one", [*AUDIT, "--n", "1"], r"\bn\b.*2"),
    ("audit-batch-size", [*AUDIT, "--batch-size", "1"], r"batch_size"),
    ("audit-tol", [*AUDIT, "--tol", "-1"], r"tol"),
    ("audit-surrogate-epochs", [*AUDIT, "--surrogate-epochs", "0"], r"--surrogate-epochs: expected an int >= 1, got 0"),
    ("audit-surrogate-garbage", [*AUDIT, "--surrogate", "{garbage}"], r"garbage\.pt is corrupt or truncated"),
    ("audit-device", [*AUDIT, "--device", "cuda:x"], r"device: expected a device name .*got 'cuda:x'"),
    # -- select-layers -------------------------------------------------------------------------
    ("select-candidates-unknown", [*SELECT, "--candidates", "conv3,nope"], r"candidates: 'nope' is not a submodule"),
    ("select-candidates-empty", [*SELECT, "--candidates", ",,"], r"argument --candidates: expected comma-separated"),
    ("select-candidates-twice", [*SELECT, "--candidates", "conv3,conv3"], r"candidates: layer 'conv3' is listed twice"),
    ("select-tolerance", [*SELECT, "--tolerance", "1.5"], r"tolerance: expected a number in \[0, 1\)"),
    ("select-alpha-nan", [*SELECT, "--alpha", "nan"], r"argument --alpha: expected a finite number, got 'nan'"),
    ("select-beta-negative", [*SELECT, "--beta", "-1"], r"beta: expected a finite number >= 0, got -1\.0"),
    ("select-epochs-zero", [*SELECT, "--epochs", "0"], r"argument --epochs: expected an int >= 1, got '0'"),
    ("select-batch-size-1", [*SELECT, "--batch-size", "1"], r"batch_size: the HSIC terms need batches of at least 2"),
    ("select-limit-below-batch", [*SELECT[:5], "--train-limit", "10"],
     r"got train_limit=10 and batch_size=50"),
    ("select-dataset", [*SELECT, "--dataset", "nope"], r"dataset: expected one of"),
    ("select-model", [*SELECT, "--model", "nope"], r"model: expected one of"),
    ("select-device", [*SELECT, "--device", "gpu"], r"device: expected a device name"),
    ("select-eval-n", [*SELECT, "--eval-n", "-3"], r"argument --eval-n: expected an int >= 1, got '-3'"),
    # -- demo ----------------------------------------------------------------------------------
    ("demo-epochs-zero", [*DEMO, "--epochs", "0"], r"argument --epochs: expected an int >= 1, got '0'"),
    ("demo-epochs-text", [*DEMO, "--epochs", "ten"], r"argument --epochs: expected an int >= 1, got 'ten'"),
    ("demo-eval-n-zero", [*DEMO, "--eval-n", "0"], r"argument --eval-n: expected an int >= 1"),
    ("demo-autoattack-negative", [*DEMO, "--autoattack-n", "-1"], r"argument --autoattack-n: expected an int >= 0"),
    ("demo-seed-negative", [*DEMO, "--seed", "-2"], r"argument --seed: expected an int >= 0"),
    ("demo-device", [*DEMO, "--device", "gpu"], r"device: expected a device name .*got 'gpu'"),
    ("demo-out-is-a-file", ["demo", "--out", "{afile}", "--epochs", "1", "--no-progress"],
     r"out_dir: expected a folder, got the existing file"),
    ("demo-out-user-files", ["demo", "--out", "{user_folder}", "--epochs", "1", "--no-progress"],
     r"holds metrics\.json but no config\.json"),
    # -- report --------------------------------------------------------------------------------
    ("report-missing", ["report", "{missing}"], r"results: .*does-not-exist does not exist"),
    ("report-file", ["report", "{afile}"], r"results: expected a folder written by 'ib-plugins evaluate', got the file"),
    ("report-no-metrics", ["report", "{rep_empty}"], r"has no metrics\.json"),
    ("report-garbage", ["report", "{rep_garbage_dir}"], r"metrics\.json is not valid JSON"),
    ("report-array", ["report", "{rep_array_dir}"], r"holds no attack-suite results"),
    ("report-no-suite", ["report", "{rep_no_suite_dir}"], r"holds no attack-suite results"),
    ("report-no-attacks", ["report", "{rep_no_attacks_dir}"], r"is not a metrics\.json written by 'ib-plugins evaluate'"),
    ("report-bad-attack", ["report", "{rep_bad_attack_dir}"], r"is not a metrics\.json written by 'ib-plugins evaluate'"),
    ("report-deep", ["report", "{rep_deep_dir}"], r"metrics\.json is nested too deeply"),
    ("report-nothing", ["report"], r"the following arguments are required: results"),
    # -- leaderboard ---------------------------------------------------------------------------
    ("lb-missing", ["leaderboard", "{missing}", "--out", "{out}"], r"results: .*does-not-exist does not exist"),
    ("lb-empty-folder", ["leaderboard", "{lb_empty}", "--out", "{out}"], r"no model-info JSON files found"),
    ("lb-deep-array", ["leaderboard", "{lb_deep_dir}", "--out", "{out}"], r"x\.json is nested too deeply"),
    ("lb-deep-array-file", ["leaderboard", "{lb_deep}", "--out", "{out}"], r"x\.json is nested too deeply"),
    ("lb-deep-object", ["leaderboard", "{lb_deep_object_dir}", "--out", "{out}"], r"x\.json is nested too deeply"),
    ("lb-1e999-accuracy", ["leaderboard", "{lb_inf_acc_dir}", "--out", "{out}"], r"x\.json: field 'autoattack_acc'"),
    ("lb-1e999-eps", ["leaderboard", "{lb_inf_eps_dir}", "--out", "{out}"], r"x\.json: .*(eps|cannot be represented)"),
    ("lb-binary", ["leaderboard", "{lb_binary_dir}", "--out", "{out}"], r"x\.json is not a JSON file \(byte \d+ is not UTF-8"),
    ("lb-binary-file", ["leaderboard", "{lb_binary}", "--out", "{out}"], r"x\.json is not a JSON file"),
    ("lb-array", ["leaderboard", "{lb_array}", "--out", "{out}"], r"array\.json: expected a JSON object"),
    ("lb-huge-int", ["leaderboard", "{lb_huge_int_dir}", "--out", "{out}"], r"x\.json is not valid JSON"),
    ("lb-bad-accuracy", ["leaderboard", "{lb_bad_acc}", "--out", "{out}"], r"bad-acc\.json: field 'clean_acc'"),
    ("lb-out-is-a-file", ["leaderboard", "{lb_good}", "--out", "{afile}"], r"out: expected a folder .*got the file"),
    ("lb-nothing", ["leaderboard"], r"results: expected model-info JSON files or folders holding them \(or --submission"),
    ("lb-submission-missing", ["leaderboard", "--submission", "{missing}"], r"--submission: .*does-not-exist does not exist"),
    ("lb-submission-folder", ["leaderboard", "--submission", "{folder}"], r"--submission: expected a model-info JSON file, "
                                                                          r"got the folder"),
    ("lb-submission-bad-field", ["leaderboard", "--submission", "{lb_bad_acc}"], r"bad-acc\.json: field 'clean_acc'"),
    ("lb-submission-array", ["leaderboard", "--submission", "{lb_array}"], r"must hold a model-info JSON object, got a JSON array"),
    ("lb-submission-binary", ["leaderboard", "--submission", "{lb_binary}"], r"--submission: .*x\.json is not a JSON file"),
    ("lb-submission-deep", ["leaderboard", "--submission", "{lb_deep_object}"], r"x\.json is nested too deeply"),
    ("lb-submission-and-results", ["leaderboard", "{lb_good}", "--submission", "{lb_good}"],
     r"--submission: takes one model-info file and no results"),
    ("lb-submission-out-no-folder", ["leaderboard", "--submission", "{lb_good}", "--out", "{missing}/issue.md"],
     r"--out: the folder .*does-not-exist does not exist"),
    # -- reproduce -----------------------------------------------------------------------------
    ("rp-unknown-grid", ["reproduce", "no-such-grid", "--out", "{out}"], r"grid: expected a built-in grid .*digits-tiny"),
    ("rp-no-out", ["reproduce", "digits-tiny"], r"grid, --out: expected a grid .* and --out DIR"),
    ("rp-no-grid", ["reproduce", "--out", "{out}"], r"grid, --out: expected a grid"),
    ("rp-not-json", ["reproduce", "{cfg_not_json}", "--out", "{out}"], r"grid: .*not-json\.json is not valid JSON"),
    ("rp-array", ["reproduce", "{cfg_array}", "--out", "{out}"], r"grid: .*array\.json must hold an object"),
    ("rp-binary", ["reproduce", "{cfg_binary}", "--out", "{out}"], r"grid: .*binary\.json is not a text file"),
    ("rp-deep", ["reproduce", "{cfg_deep}", "--out", "{out}"], r"grid: .*deep\.json is nested too deeply"),
    ("rp-huge-int", ["reproduce", "{cfg_huge_int}", "--out", "{out}"], r"grid: .*huge-int\.json is not valid JSON"),
    ("rp-unknown-keys", ["reproduce", "{cfg_unknown}", "--out", "{out}"], r"grid: unknown keys \['epochs', 'learning_rate'\]"),
    ("rp-folder", ["reproduce", "{folder}", "--out", "{out}"], r"grid: expected a built-in grid .* got .*a-folder"),
    ("rp-workers-0", ["reproduce", "digits-tiny", "--out", "{out}", "--workers", "0"], r"--workers"),
    ("rp-seeds-abc", ["reproduce", "digits-tiny", "--out", "{out}", "--seeds", "abc"], r"--seeds"),
    ("rp-unknown-cell", ["reproduce", "digits-tiny", "--out", "{out}", "--cell", "x/y/z/seed0"], r"only: unknown cells"),
    ("rp-bad-device", ["reproduce", "digits-tiny", "--out", "{out}", "--device", "gpu"], r"device"),
    # -- new evaluate options ----------------------------------------------------------------------
    ("ev-autoattack-n-negative", ["evaluate", "{ckpt}", "--out", "{out}", "--autoattack-n", "-1"], r"--autoattack-n"),
]


def test_the_table_covers_every_subcommand_with_at_least_60_cases():
    assert len(CASES) >= 60
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)
    commands = {argv[0] for _, argv, _ in CASES if argv and not argv[0].startswith("-")}
    assert {"demo", "train", "evaluate", "select-layers", "report", "leaderboard", "audit", "reproduce"} <= commands


@pytest.mark.parametrize(("argv", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_status_2(files, tmp_path, capsys, argv, pattern):
    out = tmp_path / "out"
    args = [a.format(out=out, **files) for a in argv]
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse's usage errors (and only those) exit through SystemExit
        rc = exc.code
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2, f"exit status {rc}\nstdout: {captured.out}\nstderr: {err}"
    assert "Traceback" not in err and "Traceback" not in captured.out
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("ib-plugins"), lines[0]
    assert ": error: " in lines[0], lines[0]
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    assert not out.exists(), f"{out} was created"


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """Only user errors become one-line messages: an unexpected exception (a bug) propagates unchanged."""
    from ib_plugins import cli

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setitem(cli._COMMANDS, "report", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["report", "anything"])
    assert capsys.readouterr().err == ""
