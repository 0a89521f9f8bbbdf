"""ib_plugins.adapters.robustbench_eval: leaderboard evaluation and the scoped RobustBench compatibility layer."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import warnings

import pytest
import torch
import torch.nn as nn

pyautoattack = pytest.importorskip("pyautoattack", reason="pyautoattack (pip install 'ib-plugins[autoattack]') is not installed")

from ib_plugins import wrap_model  # noqa: E402
from ib_plugins.adapters import robustbench_eval as rbe  # noqa: E402
from ib_plugins.adapters.autoattack_eval import AutoAttackCompat, run_autoattack  # noqa: E402
from ib_plugins.adapters.robustbench_eval import evaluate_for_leaderboard, robustbench_compat  # noqa: E402
from ib_plugins.errors import MissingOptionalDependencyError  # noqa: E402
from ib_plugins.leaderboard import MODEL_INFO_FIELDS, LeaderboardEntry, load_entries  # noqa: E402

FAST = dict(version="custom", attacks=["apgd-ce"], attack_options={"apgd": {"n_iter": 10}}, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyCNN(nn.Module):
    def __init__(self, in_channels: int = 1, size: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * (size // 2) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


def _wrapped(in_channels: int = 1, size: int = 8, n: int = 8):
    g = torch.Generator().manual_seed(0)
    net = TinyCNN(in_channels, size)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model = wrap_model(net, ib_layers=["act"], num_classes=10).eval()
    x = torch.rand(n, in_channels, size, size, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _robustbench_installed() -> None:
    if importlib.util.find_spec("robustbench") is None:
        pytest.skip("robustbench is not installed (pip install 'ib-plugins[robustbench]')")


def _rb_modules() -> set[str]:
    return {n for n in sys.modules if n in ("autoattack", "robustbench") or n.startswith(("autoattack.", "robustbench."))}


# --------------------------------------------------------------------------------------------------
# evaluate_for_leaderboard
# --------------------------------------------------------------------------------------------------


def test_writes_a_robustbench_model_info_file(tmp_path):
    model, x, y = _wrapped()
    entry = evaluate_for_leaderboard(
        model, x, y, dataset="cifar10", eps=8 / 255, model_name="ibrar_tiny", batch_size=4, out_dir=tmp_path,
        metadata={"link": "https://example.org/p", "venue": "Preprint"}, **FAST,
    )
    path = tmp_path / "model_info" / "cifar10" / "Linf" / "ibrar_tiny.json"
    assert entry.path == path and path.is_file()
    data = json.loads(path.read_text())
    assert list(data)[: len(MODEL_INFO_FIELDS)] == list(MODEL_INFO_FIELDS)
    direct = run_autoattack(model, x, y, eps=8 / 255, batch_size=4, **FAST)
    assert data["clean_acc"] == str(round(direct.clean_accuracy * 100, 2)) == "100.0"
    assert data["autoattack_acc"] == str(round(direct.robust_accuracy * 100, 2))
    assert data["eps"] == pytest.approx(8 / 255) and data["dataset"] == "cifar10"
    assert data["link"] == "https://example.org/p" and data["name"] == "ibrar_tiny" and data["venue"] == "Preprint"
    assert data["architecture"] == "TinyCNN + IB-RAR" and data["additional_data"] is False
    assert data["unreliable"] is False and "external" not in data
    assert "not comparable" in data["footnote"]  # a custom AutoAttack is flagged
    ib = data["ib_plugins"]
    assert ib["ib_config"] == model.ib_config() and ib["threat_model"] == "Linf" and ib["n_examples"] == 8
    assert ib["autoattack"]["attacks"] == ["apgd-ce"] and ib["autoattack"]["seed"] == 0
    assert ib["attack_suite"] is None
    assert LeaderboardEntry.from_json(path) == entry
    assert [e.model_name for e in load_entries(tmp_path)] == ["ibrar_tiny"]


def test_existing_file_is_merged_like_update_json(tmp_path):
    model, x, y = _wrapped(n=4)
    path = tmp_path / "model_info" / "cifar10" / "L2" / "m.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"link": "https://hand.written", "authors": "A. B.", "dataset": "cifar10",
                                "clean_acc": "1.0", "autoattack_acc": "0.5", "extra_key": 7}))
    entry = evaluate_for_leaderboard(model, x, y, dataset="cifar10", threat_model="L2", eps=0.5, model_name="m",
                                     out_dir=tmp_path, ib_config={"alpha": 1.0}, **FAST)
    data = json.loads(path.read_text())
    assert data["link"] == "https://hand.written" and data["authors"] == "A. B." and data["extra_key"] == 7
    assert data["clean_acc"] == "100.0" and entry.threat_model == "L2"
    assert data["ib_plugins"]["ib_config"] == {"alpha": 1.0}


def test_paper_attack_suite_is_added(tmp_path):
    pytest.importorskip("torchattacks", reason="torchattacks (pip install 'ib-plugins[attacks]') runs the suite")
    model, x, y = _wrapped(n=4)
    entry = evaluate_for_leaderboard(model, x, y, dataset="digits", eps=0.1, model_name="m", attack_suite=["fgsm"],
                                     out_dir=tmp_path, **FAST)
    suite = entry.ib_plugins["attack_suite"]
    assert suite["suite"] == "ibrar" and [a["name"] for a in suite["attacks"]] == ["fgsm"]
    assert suite["attacks"][0]["eps"] == pytest.approx(0.1)
    assert json.loads(entry.path.read_text())["ib_plugins"]["attack_suite"] == suite


def test_loads_the_test_set_by_name(tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn ships the digits data set")
    from ib_plugins.models import DigitsCNN

    model = wrap_model(DigitsCNN(), ib_layers="robust", num_classes=10).eval()
    entry = evaluate_for_leaderboard(model, None, None, dataset="digits", eps=0.1, model_name="d", n_examples=6,
                                     batch_size=6, **FAST)
    assert entry.ib_plugins["n_examples"] == 6 and entry.ib_plugins["data"]["source"].startswith("ib_plugins.data")
    assert entry.path is None  # no out_dir: nothing written


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threat_model": "corruptions"}, r"threat_model: 'corruptions' \(common corruptions\) is not supported.*'Linf', 'L2'"),
        ({"threat_model": "Linf2"}, r"threat_model: expected one of 'Linf', 'L2', got 'Linf2'"),
        ({"eps": 0}, r"eps: expected a finite radius > 0"),
        ({"model_name": "a/b"}, r"model_name: expected a name usable as a file name"),
        ({"dataset": ""}, r"dataset: expected a non-empty string"),
        ({"n_examples": 100}, r"n_examples: expected <= 4"),
        ({"metadata": {"paper": "x"}}, r"metadata: unknown key\(s\) \['paper'\]; expected keys among link"),
        ({"metadata": {"additional_data": "yes"}}, r"metadata: field 'additional_data'"),
    ],
)
def test_bad_arguments(kwargs, match):
    model, x, y = _wrapped(n=4)
    args = {"dataset": "cifar10", "eps": 0.03, "model_name": "m", **FAST, **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate_for_leaderboard(model, x, y, **args)


def test_x_without_y_is_rejected():
    model, x, _ = _wrapped(n=2)
    with pytest.raises(ValueError, match=r"x, y: expected both tensors, or both None"):
        evaluate_for_leaderboard(model, x, None, dataset="cifar10", eps=0.03, model_name="m")


def test_unreadable_existing_file_fails_before_the_attack(tmp_path, monkeypatch):
    model, x, y = _wrapped(n=2)
    path = tmp_path / "model_info" / "cifar10" / "Linf" / "m.json"
    path.parent.mkdir(parents=True)
    path.write_text("{broken")
    monkeypatch.setattr(rbe, "run_autoattack", lambda *a, **k: pytest.fail("attacked before checking out_dir"))
    with pytest.raises(ValueError, match=r"out_dir: the existing model-info file .*m\.json is not JSON"):
        evaluate_for_leaderboard(model, x, y, dataset="cifar10", eps=0.03, model_name="m", out_dir=tmp_path, **FAST)


def test_entry_records_n(tmp_path):
    model, x, y = _wrapped(n=4)
    entry = evaluate_for_leaderboard(model, x, y, dataset="cifar10", eps=0.03, model_name="m", out_dir=tmp_path, **FAST)
    data = json.loads(entry.path.read_text())
    assert entry.n == 4 and data["n"] == 4 and data["ib_plugins"]["n_examples"] == 4
    assert len(data["ib_plugins"]["model_sha256"]) == 64
    assert LeaderboardEntry.from_json(entry.path).n == 4


def test_same_evaluation_is_merged_again(tmp_path):
    model, x, y = _wrapped(n=4)
    args = dict(dataset="cifar10", eps=0.03, model_name="m", out_dir=tmp_path, **FAST)
    first = evaluate_for_leaderboard(model, x, y, metadata={"link": "https://example.org/p"}, **args)
    again = evaluate_for_leaderboard(model, x, y, **args)  # same weights, eps, n: update_json-style merge
    assert again.path == first.path and again.link == "https://example.org/p" and again.n == 4


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        ({"eps": 0.05}, [r"eps \(0\.03 in the file, 0\.05 now\)"]),
        ({"n": 3}, [r"n \(4 examples in the file, 3 now\)"]),
        ({"other_model": True}, [r"model \(weights sha256 [0-9a-f]{12}\.\.\. in the file"]),
        ({"eps": 0.05, "n": 3, "other_model": True}, [r"model \(weights", r"eps \(0\.03", r"n \(4 examples"]),
    ],
)
def test_a_different_evaluation_is_refused_before_the_attack(tmp_path, monkeypatch, change, fields):
    from ib_plugins.training import RunExistsError

    model, x, y = _wrapped(n=4)
    path = evaluate_for_leaderboard(model, x, y, dataset="cifar10", eps=0.03, model_name="m", out_dir=tmp_path,
                                    metadata={"link": "https://example.org/old"}, **FAST).path
    before = path.read_bytes()
    other = model
    if change.get("other_model"):
        other, _, _ = _wrapped(n=4)
        with torch.no_grad():
            other.model.fc.bias.add_(1.0)
    n = change.get("n", 4)
    eps = change.get("eps", 0.03)
    monkeypatch.setattr(rbe, "run_autoattack", lambda *a, **k: pytest.fail("attacked before checking out_dir"))
    with pytest.raises(RunExistsError, match=r"m\.json already holds the entry of a different evaluation") as info:
        evaluate_for_leaderboard(other, x[:n], y[:n], dataset="cifar10", eps=eps, model_name="m", out_dir=tmp_path,
                                 **FAST)
    text = str(info.value)
    for pattern in fields:
        assert re.search(pattern, text), text
    assert "overwrite=True" in text and isinstance(info.value, FileExistsError)
    assert path.read_bytes() == before  # nothing written
    monkeypatch.undo()
    # asked for explicitly: replaced, and nothing of the old entry (its link) is kept
    entry = evaluate_for_leaderboard(other, x[:n], y[:n], dataset="cifar10", eps=eps, model_name="m", out_dir=tmp_path,
                                     overwrite=True, **FAST)
    data = json.loads(path.read_text())
    assert entry.n == n and data["n"] == n and data["eps"] == pytest.approx(eps) and data["link"] is None


def test_old_files_without_n_or_fingerprint_are_compared_on_what_they_record(tmp_path):
    from ib_plugins.training import RunExistsError

    model, x, y = _wrapped(n=4)
    path = tmp_path / "model_info" / "cifar10" / "Linf" / "m.json"
    path.parent.mkdir(parents=True)
    # an older ib_plugins file: n only under ib_plugins, no weights hash
    path.write_text(json.dumps({"dataset": "cifar10", "clean_acc": "1.0", "autoattack_acc": "0.5", "eps": 0.03,
                                "architecture": "TinyCNN + IB-RAR", "ib_plugins": {"n_examples": 10}}))
    with pytest.raises(RunExistsError, match=r"n \(10 examples in the file, 4 now\)"):
        evaluate_for_leaderboard(model, x, y, dataset="cifar10", eps=0.03, model_name="m", out_dir=tmp_path, **FAST)
    path.write_text(json.dumps({"dataset": "cifar10", "clean_acc": "1.0", "autoattack_acc": "0.5", "eps": "8/255",
                                "architecture": "WRN-28-10"}))
    with pytest.raises(RunExistsError, match=r"model \(architecture 'WRN-28-10' in the file, 'TinyCNN \+ IB-RAR' "
                                             r"now\); eps \('8/255' in the file, 0\.03 now\)"):
        evaluate_for_leaderboard(model, x, y, dataset="cifar10", eps=0.03, model_name="m", out_dir=tmp_path, **FAST)
    with pytest.raises(TypeError, match=r"overwrite: expected True or False, got str"):
        evaluate_for_leaderboard(model, x, y, dataset="cifar10", eps=0.03, model_name="m", overwrite="yes", **FAST)


# --------------------------------------------------------------------------------------------------
# robustbench_compat
# --------------------------------------------------------------------------------------------------


def _import_robustbench_outcome() -> str:
    try:
        importlib.import_module("robustbench")
    except Exception as err:  # noqa: BLE001 - we record what happens
        return f"{type(err).__name__}: {err}"
    return "ok"


@pytest.mark.slow
def test_benchmark_runs_through_the_compat_layer(tmp_path, monkeypatch):
    """robustbench.eval.benchmark on a wrapped toy model (data fed by monkeypatching load_clean_dataset)."""
    _robustbench_installed()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before_outcome = _import_robustbench_outcome()  # leaves stale robustbench.* modules when it fails
    before_modules = _rb_modules()
    model, x, y = _wrapped(in_channels=3, size=32, n=6)
    monkeypatch.chdir(tmp_path)  # update_json writes ./model_info
    rng = torch.random.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with robustbench_compat() as rb:
            assert rb.eval.AutoAttack is AutoAttackCompat or before_outcome == "ok"
            calls = []

            def fake_loader(dataset, n_examples, data_dir, prepr):
                calls.append((dataset.value, n_examples))
                return x[:n_examples], y[:n_examples]

            monkeypatch.setattr(rb.eval, "load_clean_dataset", fake_loader)
            clean, robust = rb.eval.benchmark(model, n_examples=6, dataset="cifar10", threat_model="Linf",
                                              eps=8 / 255, batch_size=6, to_disk=True, model_name="toy")
            with robustbench_compat() as inner:  # nesting shares the layer
                assert inner is rb
    assert calls == [("cifar10", 6)]
    assert clean == 1.0 and 0.0 <= robust <= clean
    assert torch.equal(torch.random.get_rng_state(), rng)
    written = LeaderboardEntry.from_json(tmp_path / "model_info" / "cifar10" / "Linf" / "toy.json")
    assert written.clean_acc == "100.0" and written.autoattack_acc == str(round(robust * 100, 2))
    # everything the layer added is gone; importing behaves as before
    assert _rb_modules() == before_modules
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _import_robustbench_outcome() == before_outcome
    if before_outcome != "ok":
        assert "autoattack" in before_outcome and "autoattack" not in sys.modules


@pytest.mark.slow
def test_compat_restores_a_preexisting_alias_and_rebinding(monkeypatch):
    """Someone's plain alias (autoattack = pyautoattack) is put back, and robustbench.eval.AutoAttack restored."""
    _robustbench_installed()
    if rbe._upstream_autoattack() is not None:
        pytest.skip("the original autoattack package is installed: the compatibility layer does nothing")
    import pyautoattack.state

    saved = {n: sys.modules.pop(n) for n in list(sys.modules) if n == "robustbench" or n.startswith("robustbench.")}
    try:
        monkeypatch.setitem(sys.modules, "autoattack", pyautoattack)
        monkeypatch.setitem(sys.modules, "autoattack.state", pyautoattack.state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rb = importlib.import_module("robustbench")
            assert rb.eval.AutoAttack is pyautoattack.AutoAttack
            with robustbench_compat() as inside:
                assert inside is rb and rb.eval.AutoAttack is AutoAttackCompat
                assert sys.modules["autoattack"].AutoAttack is AutoAttackCompat
        assert rb.eval.AutoAttack is pyautoattack.AutoAttack
        assert sys.modules["autoattack"] is pyautoattack and sys.modules["autoattack.state"] is pyautoattack.state
        assert sys.modules["robustbench"] is rb
    finally:
        for n in [n for n in sys.modules if n == "robustbench" or n.startswith("robustbench.")]:
            del sys.modules[n]
        sys.modules.update(saved)


def test_missing_pkg_resources_is_explained_and_cleaned_up(monkeypatch):
    _robustbench_installed()
    if rbe._upstream_autoattack() is not None:
        pytest.skip("the original autoattack package is installed: robustbench is imported as is")
    before = _rb_modules()
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # what setuptools >= 81 looks like
    monkeypatch.setattr(rbe, "_robustbench_version", lambda: "1.2.0")
    with pytest.warns(UserWarning, match=r"robustbench 1\.2\.0 is outside .*tested with robustbench 1\.1\.1"):
        with pytest.raises(MissingOptionalDependencyError) as info:
            with robustbench_compat():
                pytest.fail("the block must not run")
    text = str(info.value)
    assert "pkg_resources" in text and "setuptools<81" in text and "evaluate_for_leaderboard" in text
    assert _rb_modules() == before


def test_robustbench_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "robustbench", None)  # find_spec now reports it missing
    with pytest.raises(MissingOptionalDependencyError, match=r"robustbench is not installed.*evaluate_for_leaderboard"):
        with robustbench_compat():
            pytest.fail("the block must not run")
    assert "autoattack" not in sys.modules or rbe._upstream_autoattack() is not None


def test_autoattack_flags_mark_the_entry_unreliable():
    model, x, y = _wrapped(n=4)

    class Noisy(nn.Module):  # randomised at eval time: AutoAttack's check_randomized flags it
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, inp):
            return self.inner(inp) + torch.randn(inp.shape[0], 10)

    flagged = evaluate_for_leaderboard(Noisy(model), x, y, dataset="cifar10", eps=0.03, model_name="n", **FAST)
    assert flagged.unreliable is True
    assert any("randomized" in msg for msg in flagged.ib_plugins["autoattack"]["checks"])
    overridden = evaluate_for_leaderboard(Noisy(model), x, y, dataset="cifar10", eps=0.03, model_name="n",
                                          metadata={"unreliable": False}, **FAST)
    assert overridden.unreliable is False
    assert flagged.ib_plugins["ib_config"] == model.ib_config()  # found inside the wrapper
