"""A user's own model from the command line (issue 14, item 5): ``--model-factory`` + ``--weights``.

The model is defined in a file the test writes into ``tmp_path`` (a small CNN for scikit-learn's
8x8 digits), trained for a moment and saved as a state_dict, then evaluated and audited through
``ib-plugins evaluate`` / ``ib-plugins audit`` exactly as a researcher would, and loaded through
:func:`ib_plugins.experiments.load_model_from_factory` in its other forms (a dotted module from the
current folder, IBModel and checkpoint-dict state_dicts). The one-line errors of every bad input
are in ``tests/test_cli_fuzz.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ib_plugins.cli import main
from ib_plugins.experiments import evaluate_checkpoint, load_model_from_factory

USER_FILE = """
import torch.nn as nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def small_cnn(num_classes=10, width=8):
    return SmallCNN(num_classes=num_classes, width=width)
"""


def _load_user_module(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_test_user_models_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def user_model(tmp_path_factory) -> tuple[Path, Path]:
    """(models file, weights file): a SmallCNN trained for 3 epochs on digits, saved as a state_dict."""
    from ib_plugins.data import load_dataset

    root = tmp_path_factory.mktemp("user")
    path = root / "my_models.py"
    path.write_text(USER_FILE)
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = _load_user_module(path).small_cnn()
    x, y = load_dataset("digits", split="train").tensors
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(3):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    weights = root / "weights" / "small_cnn.pt"
    weights.parent.mkdir()
    torch.save(net.state_dict(), weights)
    return path, weights


def _independent_accuracy(net: nn.Module, n: int, seed: int = 0) -> float:
    from ib_plugins.data import load_dataset

    x, y = load_dataset("digits", split="test", limit=n, seed=seed).tensors
    with torch.no_grad():
        return float((net.eval()(x).argmax(1) == y).float().mean())


def test_evaluate_a_model_from_the_users_own_file(user_model, tmp_path, capsys):
    path, weights = user_model
    out = tmp_path / "eval"
    spec = f"{path}:small_cnn"
    argv = ["evaluate", "--model-factory", spec, "--weights", str(weights), "--dataset", "digits", "--n", "40",
            "--attacks", "fgsm,pgd", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results_md = (out / "results.md").read_text()
    assert results_md.strip() in printed  # the tables are echoed
    assert f"Results in {out}/: config.json, metrics.json, results.md" in printed
    assert "| fgsm" in printed and "clean accuracy" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert metrics["model"] == spec and metrics["dataset"] == "digits"
    assert config["model_factory"] == spec and config["weights"] == str(weights.resolve())
    assert config["factory_kwargs"] == {} and "checkpoint" not in config
    assert [a["name"] for a in metrics["suite"]["attacks"]] == ["fgsm", "pgd"]
    # the evaluated network is the saved one: its clean accuracy matches an independent count
    net = _load_user_module(path).small_cnn()
    net.load_state_dict(torch.load(weights, weights_only=True))
    assert metrics["suite"]["clean_accuracy"] == pytest.approx(_independent_accuracy(net, 40))

    # the same evaluation again is allowed (same config); other factory kwargs are another run
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--factory-kwargs", '{"width": 8}']) == 2
    assert "already holds a different run" in capsys.readouterr().err


def test_audit_a_model_from_the_users_own_file(user_model, tmp_path, capsys):
    path, weights = user_model
    out = tmp_path / "audit"
    spec = f"{path}:small_cnn"
    argv = ["audit", "--model-factory", spec, "--weights", str(weights), "--dataset", "digits", "--quick",
            "--n", "20", "--eps-grid", "0,0.1,0.5", "--surrogate", "none", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith(("PASS", "WARN"))
    assert f"Report: {out / 'audit.md'}" in printed
    report = json.loads((out / "audit.json").read_text())
    assert report["config"]["target"] == spec and report["config"]["dataset"] == "digits"
    assert report["numbers"]["n"] == 20 and report["numbers"]["num_classes"] == 10
    assert 0.0 <= report["robust_accuracy"] <= 1.0
    assert f"Gradient-masking audit: {spec}" in (out / "audit.md").read_text()


def test_default_results_folder_is_next_to_the_weights(user_model, tmp_path):
    path, weights = user_model
    local = tmp_path / "w" / "net.pt"
    local.parent.mkdir()
    local.write_bytes(weights.read_bytes())
    metrics = evaluate_checkpoint(model_factory=f"{path}:small_cnn", weights=local, dataset="digits", attacks=["fgsm"],
                                  n=20, progress=False)
    assert Path(metrics["out_dir"]) == local.parent / "eval-ibrar-ibrar-code"
    assert (local.parent / "eval-ibrar-ibrar-code" / "metrics.json").is_file()


def test_a_dotted_module_from_the_current_folder(user_model, tmp_path, monkeypatch):
    path, weights = user_model
    package = tmp_path / "ib_test_user_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(USER_FILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "ib_test_user_pkg", raising=False)
    monkeypatch.delitem(sys.modules, "ib_test_user_pkg.models", raising=False)
    path_before = list(sys.path)
    state = torch.get_rng_state()
    net = load_model_from_factory("ib_test_user_pkg.models:small_cnn", weights=weights)
    assert type(net).__name__ == "SmallCNN" and not net.training
    assert sys.path == path_before  # the current folder was importable only during the import
    assert torch.equal(state, torch.get_rng_state())  # building the model left the global RNG alone
    # a class, called with factory kwargs, and an attribute path
    wide = load_model_from_factory("ib_test_user_pkg.models:SmallCNN", factory_kwargs={"width": 4, "num_classes": 3})
    assert wide.head.out_features == 3 and wide.head.in_features == 8
    monkeypatch.delitem(sys.modules, "ib_test_user_pkg", raising=False)
    monkeypatch.delitem(sys.modules, "ib_test_user_pkg.models", raising=False)


def test_state_dicts_of_an_ibmodel_a_checkpoint_dict_and_dataparallel_load(user_model, tmp_path):
    from ib_plugins import wrap_model

    path, weights = user_model
    spec = f"{path}:small_cnn"
    plain = load_model_from_factory(spec, weights=weights)
    reference = {k: v.clone() for k, v in plain.state_dict().items()}
    wrapped = wrap_model(_load_user_module(path).small_cnn(), ["features.5"], mask="code", mask_layer="features.5",
                         num_classes=10)
    wrapped.model.load_state_dict(reference)
    forms = {
        "ibmodel.pt": wrapped.state_dict(),  # keys "model.features.0.weight"..., plus the mask's state
        "checkpoint.pt": {"model": reference, "epoch": 3},
        "lightning.pt": {"state_dict": reference, "epoch": 3},
        "dataparallel.pt": {f"module.{k}": v for k, v in reference.items()},
    }
    assert any(k.startswith("model.") for k in forms["ibmodel.pt"]) and "mask._extra_state" in forms["ibmodel.pt"]
    for name, state in forms.items():
        torch.save(state, tmp_path / name)
        net = load_model_from_factory(spec, weights=tmp_path / name)
        for key, value in net.state_dict().items():
            assert torch.equal(value, reference[key]), (name, key)


def test_python_errors_name_the_argument(user_model):
    path, weights = user_model
    with pytest.raises(TypeError, match=r"factory_kwargs: expected a dict with string keys, got \[1\]"):
        load_model_from_factory(f"{path}:small_cnn", factory_kwargs=[1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model_factory: expected a string"):
        load_model_from_factory(nn.Linear)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"checkpoint, model_factory: .*got neither"):
        evaluate_checkpoint(progress=False)
    with pytest.raises(ValueError, match=r"^dataset: expected the dataset"):
        evaluate_checkpoint(model_factory=f"{path}:small_cnn", weights=weights, progress=False)
    with pytest.raises(ValueError, match=r"device: "):
        load_model_from_factory(f"{path}:small_cnn", map_location="gpu")


def test_a_file_with_dataclasses_and_relative_neighbours_imports_like_a_script(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "ib_test_blocks.py").write_text("import torch.nn as nn\n\ndef head(n):\n    return nn.Linear(4, n)\n")
    (folder / "net.py").write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "from ib_test_blocks import head\n\n"
        "@dataclass\n"
        "class Config:\n"
        "    classes: int = 3\n\n"
        "def build(classes: int = 3):\n"
        "    return head(Config(classes).classes)\n"
    )
    modules_before, path_before = set(sys.modules), list(sys.path)
    net = load_model_from_factory(f"{folder / 'net.py'}:build", factory_kwargs={"classes": 5})
    assert net.out_features == 5
    assert sys.path == path_before
    assert not [m for m in set(sys.modules) - modules_before if m.startswith("_ib_plugins_user_factory")]
    sys.modules.pop("ib_test_blocks", None)  # imported by the user's file, as a script's import would
