"""Tests of the experiment runners (`ib_plugins.experiments`): checkpoint evaluation, results
folders, clear errors that leave nothing half-written, and a one-epoch Fashion-MNIST CI run.

All runs are tiny (digits, DigitsCNN, one epoch on a few hundred images, attacks on 20-50 test
images) and CPU-only; assertions are about structure, ranges and consistency, never accuracy levels.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

from ib_plugins.data import load_dataset
from ib_plugins.experiments import evaluate_checkpoint, prepare_results_dir, write_json
from ib_plugins.training import (
    CheckpointError,
    RunExistsError,
    TrainConfig,
    Trainer,
    load_model_from_checkpoint,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A finished one-epoch CE run on 200 digits; returns its checkpoint (do not modify the folder)."""
    out = tmp_path_factory.mktemp("digits") / "run"
    Trainer(TrainConfig(epochs=1, train_limit=200, test_limit=50, batch_size=50), out_dir=out, progress=False).fit()
    return out / "checkpoint.pt"


@pytest.fixture
def occupied(tmp_path) -> Path:
    """A results folder that already holds something (must stay untouched by failing calls)."""
    folder = tmp_path / "occupied"
    folder.mkdir()
    (folder / "results.md").write_text("earlier results\n")
    (folder / "config.json").write_text('{"kind": "something else"}\n')
    return folder


# ---------------------------------------------------------------------------------------------
# evaluate_checkpoint
# ---------------------------------------------------------------------------------------------
def test_evaluate_checkpoint_results_folder_and_metrics(digits_run, tmp_path):
    out = tmp_path / "eval"
    metrics = evaluate_checkpoint(digits_run, out_dir=out, attacks=["pgd", "fgsm"], n=50, progress=False)
    assert {"config.json", "metrics.json", "results.md"} <= {p.name for p in out.iterdir()}
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))

    suite = metrics["suite"]
    assert (metrics["model"], metrics["dataset"]) == ("digits-cnn", "digits")
    assert suite["n"] == 50 and 0 <= suite["n_clean_correct"] <= 50
    assert suite["clean_accuracy"] == pytest.approx(suite["n_clean_correct"] / 50)
    assert [a["name"] for a in suite["attacks"]] == ["pgd", "fgsm"]
    for attack in suite["attacks"]:
        assert attack["n"] == 50 and attack["eps"] == pytest.approx(0.1)  # the digits budget
        assert 0 <= attack["n_robust"] <= 50 and 0 <= attack["n_flipped"] <= suite["n_clean_correct"]
        assert attack["accuracy"] == pytest.approx(attack["n_robust"] / 50)
        assert attack["max_linf"] <= attack["eps"] + 1e-6
        if suite["n_clean_correct"]:
            assert 0.0 <= attack["success_rate"] <= 1.0
    md = (out / "results.md").read_text()
    assert "pgd" in md and "fgsm" in md

    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "evaluate" and config["checkpoint_epoch"] == 1 and config["n"] == 50
    assert config["train_config"] == torch.load(digits_run, weights_only=True)["config"]
    assert config["checkpoint"] == str(digits_run.resolve())


def test_evaluated_clean_accuracy_matches_an_independent_count(digits_run, tmp_path):
    metrics = evaluate_checkpoint(digits_run, out_dir=tmp_path / "e", attacks=["fgsm"], n=40, seed=0, progress=False)
    model, _, _ = load_model_from_checkpoint(digits_run)
    x, y = load_dataset("digits", split="test", limit=40, seed=0).tensors
    with torch.no_grad():
        correct = int((model(x).argmax(1) == y).sum())
    assert metrics["suite"]["n_clean_correct"] == correct


def test_evaluate_is_deterministic_for_a_seed(digits_run, tmp_path):
    a = evaluate_checkpoint(digits_run, out_dir=tmp_path / "a", attacks=["pgd"], n=30, seed=3, progress=False)
    b = evaluate_checkpoint(digits_run, out_dir=tmp_path / "b", attacks=["pgd"], n=30, seed=3, progress=False)
    strip = lambda m: [{k: v for k, v in r.items() if k != "seconds"} for r in m["suite"]["attacks"]]  # noqa: E731
    assert strip(a) == strip(b)


def test_evaluate_default_folder_rerun_and_refusal(digits_run, tmp_path):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(digits_run.read_bytes())
    evaluate_checkpoint(ckpt, attacks=["fgsm"], n=20, progress=False)
    (out,) = ckpt.parent.glob("eval-ibrar-*")
    assert out.name == "eval-ibrar-ibrar-code"
    evaluate_checkpoint(ckpt, attacks=["fgsm"], n=20, progress=False)  # the same evaluation: allowed
    before = _snapshot(out)
    with pytest.raises(RunExistsError, match="already holds a different run"):
        evaluate_checkpoint(ckpt, attacks=["fgsm"], n=30, progress=False)
    assert _snapshot(out) == before
    evaluate_checkpoint(ckpt, attacks=["fgsm"], n=30, overwrite=True, progress=False)
    assert json.loads((out / "config.json").read_text())["n"] == 30


def test_evaluate_extras_steps_sweep_noise_tendency_tsne(digits_run, tmp_path):
    pytest.importorskip("sklearn.manifold", reason="the t-SNE plot needs scikit-learn")
    out = tmp_path / "extras"
    metrics = evaluate_checkpoint(
        digits_run, out_dir=out, attacks=["fgsm"], n=30, steps_sweep=[1, 2], noise=True, tendency="fgsm",
        tsne_layer="fc1", progress=False,
    )
    sweep = metrics["accuracy_vs_steps"]
    assert sweep["steps"] == [1, 2] and all(0.0 <= a <= 1.0 for a in sweep["accuracy"])
    assert set(metrics["noise"]) == {"l2", "linf"}
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in metrics["noise"].values())
    counts = torch.tensor(metrics["tendency"]["counts"])
    assert counts.shape == (10, 10) and int(counts.diagonal().sum()) == 0
    assert int(counts.sum()) == metrics["suite"]["attacks"][0]["n_flipped"]  # one entry per successful attack
    names = {p.name for p in out.iterdir()}
    assert {"accuracy_vs_steps.png", "tsne_fc1.png", "results.md"} <= names


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing created or overwritten
# ---------------------------------------------------------------------------------------------
def test_checkpoint_of_another_model_is_refused(digits_run, tmp_path, occupied):
    with pytest.raises(CheckpointError, match="holds a 'digits-cnn' model, not 'lenet5'"):
        load_model_from_checkpoint(digits_run, expect_model="lenet5")
    before = _snapshot(occupied)
    with pytest.raises(CheckpointError, match="not 'lenet5'"):
        evaluate_checkpoint(digits_run, out_dir=occupied, expect_model="lenet5", attacks=["fgsm"], n=20, progress=False)
    assert _snapshot(occupied) == before
    with pytest.raises(CheckpointError):
        evaluate_checkpoint(
            digits_run, out_dir=tmp_path / "new", expect_model="lenet5", attacks=["fgsm"], progress=False
        )
    assert not (tmp_path / "new").exists()


def test_truncated_checkpoint_is_refused(digits_run, tmp_path, occupied):
    data = digits_run.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model_from_checkpoint(bad)
    before = _snapshot(occupied)
    with pytest.raises(CheckpointError, match=re.escape(str(bad))):
        evaluate_checkpoint(bad, out_dir=occupied, attacks=["fgsm"], n=20, progress=False)
    assert _snapshot(occupied) == before
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        evaluate_checkpoint(garbage, out_dir=tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_other_unreadable_checkpoints(digits_run, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model_from_checkpoint(tmp_path / "missing.pt")
    plain = tmp_path / "plain.pt"
    torch.save([1, 2, 3], plain)
    with pytest.raises(CheckpointError, match="not an ib-plugins checkpoint"):
        load_model_from_checkpoint(plain)
    ckpt = torch.load(digits_run, weights_only=True)
    del ckpt["model"]["classifier.weight"]
    torch.save(ckpt, tmp_path / "missing-key.pt")
    with pytest.raises(CheckpointError, match="do not fit a 'digits-cnn' model"):
        load_model_from_checkpoint(tmp_path / "missing-key.pt")
    ckpt = torch.load(digits_run, weights_only=True)
    ckpt["config"]["nope"] = 1
    torch.save(ckpt, tmp_path / "bad-config.pt")
    with pytest.raises(CheckpointError, match="stored config is invalid"):
        load_model_from_checkpoint(tmp_path / "bad-config.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here, so device='cuda' is valid")
def test_evaluate_on_cuda_without_cuda(digits_run, tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available"):
        evaluate_checkpoint(digits_run, out_dir=tmp_path / "new", device="cuda", progress=False)
    assert not (tmp_path / "new").exists()


def test_unknown_attack_is_refused_before_writing(digits_run, tmp_path):
    with pytest.raises(ValueError, match="nope"):
        evaluate_checkpoint(digits_run, out_dir=tmp_path / "new", attacks=["nope"], progress=False)
    assert not (tmp_path / "new").exists()


def test_bad_tendency_attack_is_refused_before_writing(digits_run, tmp_path):
    """The tendency attack must be one of the evaluated ones; the check must come before any write."""
    with pytest.raises(ValueError, match="tendency: expected one of the evaluated attacks"):
        evaluate_checkpoint(
            digits_run, out_dir=tmp_path / "new", attacks=["fgsm"], n=20, tendency="pgd", progress=False
        )
    assert not (tmp_path / "new").exists()


def test_unknown_tsne_layer_is_refused_before_writing(digits_run, tmp_path):
    from ib_plugins import UnknownLayerError

    with pytest.raises(UnknownLayerError, match="nope"):
        evaluate_checkpoint(
            digits_run, out_dir=tmp_path / "new", attacks=["fgsm"], n=20, tsne_layer="nope", progress=False
        )
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------
# Checkpoints of other methods evaluate as plain networks
# ---------------------------------------------------------------------------------------------
def test_ib_mask_checkpoint_loads_as_the_plain_network(tmp_path):
    cfg = TrainConfig(ib=True, mask="code", mask_every=1, epochs=1, train_limit=60, test_limit=20, batch_size=20)
    trainer = Trainer(cfg, out_dir=tmp_path / "run", progress=False)
    trainer.fit()
    model, config, _ = load_model_from_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert type(model).__name__ == "DigitsCNN" and config.ib and config.mask == "code"
    x, _ = load_dataset("digits", split="test", limit=20, seed=0).tensors
    reference = trainer.eval_model().eval()
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))  # the mask never acts at evaluation time
    metrics = evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", attacks=["fgsm"], n=20, progress=False)
    assert metrics["suite"]["n"] == 20


def test_vib_checkpoint_keeps_its_deterministic_head(tmp_path):
    cfg = TrainConfig(method="vib", vib_k=8, epochs=1, train_limit=60, test_limit=20, batch_size=20)
    Trainer(cfg, out_dir=tmp_path / "run", progress=False).fit()
    model, _, _ = load_model_from_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert type(model).__name__ == "VIBClassifier"
    x, _ = load_dataset("digits", split="test", limit=20, seed=0).tensors
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    metrics = evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", attacks=["fgsm"], n=20, progress=False)
    assert 0.0 <= metrics["suite"]["clean_accuracy"] <= 1.0


# ---------------------------------------------------------------------------------------------
# prepare_results_dir / write_json
# ---------------------------------------------------------------------------------------------
def test_prepare_results_dir(tmp_path):
    out = tmp_path / "a" / "b"
    prepare_results_dir(out, {"kind": "x", "n": 1}, overwrite=False)
    assert json.loads((out / "config.json").read_text()) == {"kind": "x", "n": 1}
    prepare_results_dir(out, {"n": 1, "kind": "x"}, overwrite=False)  # the same run
    with pytest.raises(RunExistsError, match=re.escape(str(out)) + " already holds a different run"):
        prepare_results_dir(out, {"kind": "x", "n": 2}, overwrite=False)
    assert json.loads((out / "config.json").read_text())["n"] == 1
    prepare_results_dir(out, {"kind": "x", "n": 2}, overwrite=True)
    assert json.loads((out / "config.json").read_text())["n"] == 2
    (out / "config.json").write_text("{ not json")
    with pytest.raises(RunExistsError):
        prepare_results_dir(out, {"kind": "x", "n": 2}, overwrite=False)


def test_write_json_sorted_and_atomic(tmp_path):
    p = tmp_path / "m.json"
    write_json(p, {"b": 1, "a": {"d": 2, "c": Path("x")}})
    text = p.read_text()
    assert text.index('"a"') < text.index('"b"') and text.index('"c"') < text.index('"d"')
    assert json.loads(text)["a"]["c"] == "x"
    assert os.listdir(tmp_path) == ["m.json"]


# ---------------------------------------------------------------------------------------------
# CI: one epoch on a 2,000-image subset of Fashion-MNIST from the Debian package, then attacks
# ---------------------------------------------------------------------------------------------
def _fashion_available() -> bool:
    return all((FASHION_DIR / f).is_file() or (FASHION_DIR / f"{f}.gz").is_file() for f in FASHION_FILES)


@pytest.mark.skipif(
    not _fashion_available(),
    reason=f"Fashion-MNIST IDX files are not in {FASHION_DIR} (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_one_epoch_train_and_evaluate(tmp_path, capsys):
    from ib_plugins.cli import main

    out = tmp_path / "fmnist"
    rc = main([
        "train", "--dataset", "fashion-mnist", "--model", "lenet5", "--epochs", "1", "--train-limit", "2000",
        "--test-limit", "500", "--out", str(out), "--no-progress",
    ])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Checkpoint:" in captured.out
    train = json.loads((out / "metrics.json").read_text())
    assert train["epochs"] == 1 and 0.0 <= train["test_acc"] <= 1.0 and math.isfinite(train["train_loss"])
    config = json.loads((out / "config.json").read_text())
    subset = (config["dataset"], config["model"], config["train_limit"], config["test_limit"])
    assert subset == ("fashion-mnist", "lenet5", 2000, 500)

    metrics = evaluate_checkpoint(out / "checkpoint.pt", attacks=["pgd", "fgsm"], n=200, progress=False)
    suite = metrics["suite"]
    assert (metrics["dataset"], metrics["model"], suite["n"]) == ("fashion-mnist", "lenet5", 200)
    assert 0.0 <= suite["clean_accuracy"] <= 1.0
    assert [a["name"] for a in suite["attacks"]] == ["pgd", "fgsm"]
    for attack in suite["attacks"]:
        assert 0.0 <= attack["accuracy"] <= 1.0 and attack["n_robust"] <= 200
        assert attack["n_flipped"] <= suite["n_clean_correct"]
        assert attack["max_linf"] <= attack["eps"] + 1e-6
    assert (out / "eval-ibrar-ibrar-code" / "results.md").is_file()


# -- select-layers: honest about chance-level networks and gains inside the noise -----------------------


def _row(name, layers, *, near_chance=False, gain=None, ci=None, test_acc=0.9):
    row = {"name": name, "layers": layers, "near_chance": near_chance, "test_acc": test_acc}
    if gain is not None:
        row.update(gain=gain, gain_ci=ci, gain_inside_noise=ci[0] <= 0.0 <= ci[1])
    return row


def test_selection_warnings_name_chance_networks_and_noisy_selections():
    from ib_plugins.experiments import _selection_warnings

    ce = _row("ce", [])
    noisy = _row("layer-a", ["a"], gain=0.01, ci=[-0.02, 0.04])
    solid = _row("layer-b", ["b"], gain=0.08, ci=[0.03, 0.13])
    found = _selection_warnings([ce, noisy, solid], ["a", "b"], chance=0.1, n_eval=100)
    assert len(found) == 1 and "'a' is selected on a PGD gain of +1.0 points" in found[0]
    assert "[-2.0, +4.0] includes 0 (100 test images): the selection is inside the noise" in found[0]
    assert _selection_warnings([ce, noisy, solid], ["b"], chance=0.1, n_eval=100) == []  # unselected: no claim
    at_chance = _row("layer-c", ["c"], near_chance=True, gain=0.0, ci=[-0.1, 0.1], test_acc=0.11)
    found = _selection_warnings([ce, at_chance], [], chance=0.1, n_eval=100)
    assert found == ["network 'layer-c' sits at chance accuracy (test 11.0%, its 95% interval reaches 10.0%): "
                     "its PGD accuracy says nothing"]
    everyone = [_row("ce", [], near_chance=True), at_chance]
    assert _selection_warnings(everyone, [], chance=0.1, n_eval=100)[0].startswith("every network sits at chance")


@pytest.mark.slow
def test_select_layers_at_chance_selects_nothing_and_says_why(tmp_path):
    from ib_plugins.experiments import select_robust_layers

    # two SGD steps on 20 images: every network is still at chance level
    metrics = select_robust_layers(epochs=1, train_limit=20, batch_size=10, eval_n=60, candidates=["conv3", "fc1"],
                                   out_dir=tmp_path / "sel", progress=False)
    assert all(r["near_chance"] for r in metrics["rows"])
    assert metrics["selected"] == [] and metrics["warnings"][0].startswith("every network sits at chance")
    md = (tmp_path / "sel" / "results.md").read_text()
    assert "Selected robust layers: none: every network is at chance accuracy" in md
    assert "{" not in md  # no raw Python dict
    for r in metrics["rows"][1:]:
        low, high = r["gain_ci"]
        assert low <= r["gain"] <= high and r["gain_inside_noise"] == (low <= 0 <= high)
        assert r["test_acc_ci"][0] <= r["test_acc"] <= r["test_acc_ci"][1]
    with pytest.raises(ValueError, match=r"tolerance: expected a number in \[0, 1\)"):
        select_robust_layers(tolerance=-0.5, out_dir=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
