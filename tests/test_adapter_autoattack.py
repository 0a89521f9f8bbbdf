"""ib_plugins.adapters.autoattack_eval: run_autoattack against pyautoattack, RNG/mode hygiene, resume, errors."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
import torch.nn as nn

pyautoattack = pytest.importorskip("pyautoattack", reason="pyautoattack (pip install 'ib-plugins[autoattack]') is not installed")

from ib_plugins import wrap_model  # noqa: E402
from ib_plugins.adapters import autoattack_eval as aae  # noqa: E402
from ib_plugins.adapters.autoattack_eval import AutoAttackCompat, run_autoattack  # noqa: E402

FAST = {"apgd": {"n_iter": 10}}
FAST_KW = {"version": "custom", "attacks": ["apgd-ce"], "attack_options": FAST, "progress": False}


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


def _data(n: int = 16, *, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = TinyCNN()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.eval()
    x = torch.rand(n, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # every example is attacked
    return model, x, y


def _direct(model, x, y, *, batch_size, attacks=None, version="custom", n_iter=10, eps=8 / 255, seed=0):
    aa = pyautoattack.AutoAttack(model, attacks=attacks, version=version, eps=eps, norm="Linf", seed=seed, device="cpu")
    if n_iter is not None:
        aa.apgd.n_iter = n_iter
    x_adv, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    with torch.no_grad():
        by_forward = (model(x_adv).argmax(1) == y).float().mean().item()
    return by_forward, (y_adv == y).float().mean().item()


def test_matches_direct_pyautoattack_custom_multi_chunk():
    model, x, y = _data(16)
    res = run_autoattack(model, x, y, eps=8 / 255, version="custom", attacks=["apgd-ce"], attack_options=FAST,
                         batch_size=8, seed=0, progress=False)
    by_forward, by_labels = _direct(model, x, y, batch_size=8, attacks=["apgd-ce"])
    assert res.robust_accuracy == pytest.approx(by_forward) == pytest.approx(by_labels)
    assert res.clean_accuracy == 1.0
    assert 0.0 < res.robust_accuracy < 1.0  # the comparison is not trivial
    assert res.n == 16 and res.chunks_run == 2 and res.chunks_reused == 0
    assert res.robust_flags.dtype == torch.bool and res.robust_flags.shape == (16,)
    assert res.attacks == ("apgd-ce",) and res.backend == "pyautoattack"


@pytest.mark.slow
def test_matches_direct_pyautoattack_standard():
    """Standard AutoAttack (all four attacks) twice on 4 examples: ~12 s of CPU."""
    model, x, y = _data(4, seed=1)
    res = run_autoattack(model, x, y, eps=4 / 255, batch_size=4, seed=0, progress=False)
    by_forward, by_labels = _direct(model, x, y, batch_size=4, version="standard", n_iter=None, eps=4 / 255)
    assert res.robust_accuracy == pytest.approx(by_forward) == pytest.approx(by_labels)
    assert res.attacks == ("apgd-ce", "apgd-t", "fab-t", "square")


def test_global_rng_and_modes_are_restored():
    model, x, y = _data(8)
    wrapped = wrap_model(model, ib_layers=["act"], num_classes=10)
    wrapped.train()
    wrapped.model.fc.eval()  # a mixed state must come back exactly
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    run_autoattack(wrapped, x, y, version="custom", attacks=["apgd-ce"], attack_options=FAST, batch_size=4, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert wrapped.training and wrapped.model.conv.training and not wrapped.model.fc.training
    assert wrapped.num_records == 0  # attack forwards were not recorded


def test_modes_restored_when_the_attack_raises(monkeypatch):
    model, x, y = _data(4)
    model.train()

    def boom(self, *args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_autoattack(model, x, y, version="custom", attacks=["apgd-ce"], progress=False)
    assert model.training


def test_resume_reuses_finished_chunks(tmp_path, monkeypatch):
    model, x, y = _data(16)
    original = pyautoattack.AutoAttack.run_standard_evaluation
    calls = {"n": 0}

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 and calls.get("interrupt"):
            raise KeyboardInterrupt("simulated interruption in chunk 2")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", counting)
    kwargs = dict(eps=8 / 255, version="custom", attacks=["apgd-ce"], attack_options=FAST, batch_size=4, seed=0,
                  state_dir=tmp_path, progress=False)
    calls["interrupt"] = True
    with pytest.raises(KeyboardInterrupt):
        run_autoattack(model, x, y, **kwargs)
    files = sorted(p.name for p in tmp_path.glob("chunk_*.json"))
    assert files == ["chunk_000000.json"]
    saved = json.loads((tmp_path / files[0]).read_text())
    assert saved["chunk"] == 0 and len(saved["robust"]) == 4 and len(saved["fingerprint"]) == 64

    calls.update(n=0, interrupt=False)
    resumed = run_autoattack(model, x, y, **kwargs)
    assert calls["n"] == 3  # chunks 1..3 attacked, chunk 0 reused
    assert (resumed.chunks_run, resumed.chunks_reused) == (3, 1)

    fresh = run_autoattack(model, x, y, **{**kwargs, "state_dir": tmp_path / "fresh"})
    assert torch.equal(resumed.robust_flags, fresh.robust_flags)

    calls["n"] = 0
    again = run_autoattack(model, x, y, **kwargs)
    assert calls["n"] == 0 and again.chunks_reused == 4
    assert torch.equal(again.robust_flags, fresh.robust_flags)

    # another eps, seed or model does not reuse the files
    calls["n"] = 0
    run_autoattack(model, x, y, **{**kwargs, "eps": 4 / 255})
    assert calls["n"] == 4
    other = TinyCNN()
    calls["n"] = 0
    run_autoattack(other.eval(), x, y, **{**kwargs, "eps": 4 / 255})
    assert calls["n"] == 4


def test_model_name_replaces_the_weight_hash(tmp_path, monkeypatch):
    model, x, y = _data(8)
    kwargs = dict(version="custom", attacks=["apgd-ce"], attack_options=FAST, batch_size=4, state_dir=tmp_path,
                  progress=False, model_name="toy-v1")
    run_autoattack(model, x, y, **kwargs)
    saved = json.loads((tmp_path / "chunk_000000.json").read_text())
    # same name, same fingerprint: the files are reused even for a copy of the model
    copy = TinyCNN()
    copy.load_state_dict(model.state_dict())
    res = run_autoattack(copy.eval(), x, y, **kwargs)
    assert res.chunks_reused == 2
    assert json.loads((tmp_path / "chunk_000000.json").read_text())["fingerprint"] == saved["fingerprint"]


def test_progress_bar_counts_chunks(monkeypatch):
    model, x, y = _data(8)
    tqdm = pytest.importorskip("tqdm", reason="tqdm draws the progress bar")
    seen = []
    real = tqdm.tqdm

    class Recorder(real):  # type: ignore[misc, valid-type]
        def update(self, n=1):
            seen.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    monkeypatch.setattr("ib_plugins._progress.is_interactive", lambda stream=None: True)  # a terminal: tqdm
    run_autoattack(model, x, y, version="custom", attacks=["apgd-ce"], attack_options=FAST, batch_size=2, progress=True)
    assert seen == [1, 1, 1, 1]


def test_progress_without_a_terminal_is_plain_lines(capsys):
    model, x, y = _data(8)
    run_autoattack(model, x, y, version="custom", attacks=["apgd-ce"], attack_options=FAST, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("AutoAttack: ")]
    assert lines[0] == "AutoAttack: 0/4 batch" and lines[-1].startswith("AutoAttack: done, 4/4 batch in ")
    run_autoattack(model, x, y, version="custom", attacks=["apgd-ce"], attack_options=FAST, batch_size=2, progress=False)
    assert capsys.readouterr().err == ""


def test_to_dict_is_json():
    model, x, y = _data(4)
    res = run_autoattack(model, x, y, version="custom", attacks=["apgd-ce"], attack_options=FAST, progress=False)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["n"] == 4 and d["norm"] == "Linf" and d["version"] == "custom" and d["seed"] == 0
    assert len(d["robust_flags"]) == 4 and d["wall_time_s"] > 0
    assert d["robust_accuracy"] == res.robust_accuracy


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"eps": 0.0}, ValueError, r"eps: expected a finite radius > 0, got 0\.0"),
        ({"eps": -0.1}, ValueError, r"eps: .*-0\.1"),
        ({"eps": 2.0}, ValueError, r"eps: expected an L-inf radius <= 1"),
        ({"norm": "L3"}, ValueError, r"norm: expected one of 'Linf', 'L2', 'L1', got 'L3'"),
        ({"version": "fast"}, ValueError, r"version: expected one of 'standard', 'plus', 'rand', 'custom'"),
        ({"version": "custom"}, ValueError, r"attacks: version='custom' needs attacks=\[\.\.\.\]"),
        ({"version": "custom", "attacks": []}, ValueError, r"attacks: version='custom' needs"),
        ({"version": "custom", "attacks": ["pgd"]}, ValueError, r"attacks: expected one of 'apgd-ce'"),
        ({"attacks": ["apgd-ce"]}, ValueError, r"attacks: only used with version='custom'"),
        ({"batch_size": 0}, ValueError, r"batch_size: expected an int >= 1"),
        ({"attack_options": {"pgd": {}}}, ValueError, r"attack_options: expected keys among 'apgd'"),
        ({"version": "custom", "attacks": ["apgd-ce"], "attack_options": {"apgd": {"n_iters": 3}}}, ValueError,
         r"attack_options\['apgd'\]: APGDAttack has no attribute 'n_iters'"),
        ({"backend": "foolbox"}, ValueError, r"backend: expected one of 'auto', 'pyautoattack', 'autoattack'"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    model, x, y = _data(2)
    with pytest.raises(error, match=match):
        run_autoattack(model, x, y, progress=False, **kwargs)


def test_inputs_outside_unit_range_are_rejected_not_clamped():
    model, x, y = _data(2)
    below, above = x.clone(), x.clone()
    below[0, 0, 0, 0] = -0.5
    above[1, 0, 3, 3] = 2.0
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\].*got min -0\.5,.*not clamped"):
        run_autoattack(model, below, y, progress=False)
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\].*max 2;"):
        run_autoattack(model, above, y, progress=False)
    with pytest.raises(ValueError, match=r"y: expected class indices < 10"):
        run_autoattack(model, x, torch.tensor([0, 10]), version="custom", attacks=["apgd-ce"], progress=False)
    with pytest.raises(TypeError, match=r"y: expected an integer tensor"):
        run_autoattack(model, x, y.float(), progress=False)


def test_upstream_autoattack_fallback(monkeypatch):
    """Without pyautoattack, the original package's keyword API is used (faked here by the adapter)."""
    fake = types.ModuleType("autoattack")
    created = []

    class UpstreamLike(AutoAttackCompat):
        def __init__(self, model, norm="Linf", eps=0.3, seed=None, verbose=True, attacks_to_run=(),
                     version="standard", is_tf_model=False, device="cuda", log_path=None):
            created.append({"verbose": verbose, "log_path": log_path, "attacks_to_run": list(attacks_to_run)})
            super().__init__(model, norm=norm, eps=eps, seed=seed, verbose=verbose, attacks_to_run=attacks_to_run,
                             version=version, device=device, log_path=log_path)

    fake.AutoAttack = UpstreamLike
    monkeypatch.setitem(sys.modules, "autoattack", fake)
    monkeypatch.setattr(aae, "is_available", lambda name: name == "autoattack")
    model, x, y = _data(8)
    res = run_autoattack(model, x, y, version="custom", attacks=["apgd-ce"], attack_options=FAST, batch_size=8,
                         progress=False)
    assert res.backend == "autoattack"
    assert created == [{"verbose": False, "log_path": None, "attacks_to_run": ["apgd-ce"]}]
    direct, _ = _direct(model, x, y, batch_size=8, attacks=["apgd-ce"])
    assert res.robust_accuracy == pytest.approx(direct)


def test_compat_adapter_maps_the_upstream_api():
    model, x, y = _data(4)
    adv = AutoAttackCompat(model, norm="Linf", eps=8 / 255, version="custom", attacks_to_run=["apgd-ce"], seed=0,
                           device="cpu", log_path="/nonexistent/log.txt", verbose=False)
    adv.apgd.n_iter = 10
    assert adv.attacks_to_run == ["apgd-ce"]
    state = torch.random.get_rng_state()
    x_adv = adv.run_standard_evaluation(x, y, bs=4)
    assert isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape
    assert torch.equal(torch.random.get_rng_state(), state)
    x_adv2, y_adv = adv.run_standard_evaluation(x, y, bs=4, return_labels=True)
    assert torch.equal(x_adv, x_adv2) and y_adv.shape == y.shape
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    with pytest.raises(ValueError, match="state_path: AutoAttack state files cannot be resumed"):
        adv.run_standard_evaluation(x, y, bs=4, state_path="state.json")
    with pytest.raises(ValueError, match="attacks_to_run will be overridden"):
        AutoAttackCompat(model, attacks_to_run=["apgd-ce"])
    standard = AutoAttackCompat(model, eps=0.1, version="standard", verbose=False)
    assert standard.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    individual = adv.run_standard_evaluation_individual(x, y, bs=4)
    assert list(individual) == ["apgd-ce"] and individual["apgd-ce"].shape == x.shape


def test_no_sys_modules_writes():
    before = set(sys.modules)
    model, x, y = _data(2)
    run_autoattack(model, x, y, version="custom", attacks=["apgd-ce"], attack_options=FAST, progress=False)
    assert "autoattack" not in sys.modules or "autoattack" in before


def test_checks_are_reported_and_dynamic_counters_do_not_leak():
    import pyautoattack.checks as checks

    model, x, y = _data(4)
    saved = dict(checks.funcs)
    checks.funcs["grad"] = 5  # as left behind by an earlier "dynamic" model in the same process
    try:
        clean = run_autoattack(model, x, y, **FAST_KW)
        assert clean.checks == ()
        assert checks.funcs["grad"] == 5  # put back as found

        class Noisy(nn.Module):  # a randomised defence: AutoAttack's check_randomized flags it
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, inp):
                return self.inner(inp) + torch.randn(inp.shape[0], 10)

        flagged = run_autoattack(Noisy(model), x, y, **FAST_KW)
        assert any("randomized defense" in msg for msg in flagged.checks)
    finally:
        checks.funcs.clear()
        checks.funcs.update(saved)



# --------------------------------------------------------------------------------------------------
# issue 11: iteration counts up front, float64 models, corrupt resume files
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"apgd": {"n_iter": 0}}, ValueError, r"attack_options\['apgd'\]\['n_iter'\]: expected an int >= 1 .*got 0"),
        ({"apgd": {"n_iter": -3}}, ValueError, r"attack_options\['apgd'\]\['n_iter'\]: expected an int >= 1"),
        ({"apgd": {"n_restarts": 0}}, ValueError, r"attack_options\['apgd'\]\['n_restarts'\]"),
        ({"square": {"n_queries": 0}}, ValueError, r"attack_options\['square'\]\['n_queries'\]"),
        ({"fab": {"n_target_classes": 0}}, ValueError, r"attack_options\['fab'\]\['n_target_classes'\]"),
        ({"apgd": {"n_iter": 2.5}}, TypeError, r"attack_options\['apgd'\]\['n_iter'\]: expected .*got float"),
        ({"apgd": {"n_iter": True}}, TypeError, r"attack_options\['apgd'\]\['n_iter'\]"),
    ],
)
def test_non_positive_iteration_counts_are_rejected_before_any_attack_runs(monkeypatch, options, error, match):
    model, x, y = _data(4)
    made = []
    monkeypatch.setattr(aae, "_make_adversary", lambda *a, **k: made.append(1) or pytest.fail("attack built"))
    with pytest.raises(error, match=match):
        run_autoattack(model, x, y, **{**FAST_KW, "attack_options": options})
    assert made == []


def test_compat_rejects_non_positive_iteration_counts_before_running():
    model, x, y = _data(4)
    adv = AutoAttackCompat(model, norm="Linf", eps=0.1, version="custom", attacks_to_run=["apgd-ce"], seed=0,
                           verbose=False)
    adv.apgd.n_iter = 0
    with pytest.raises(ValueError, match=r"apgd\.n_iter: expected an int >= 1 \(a count of iterations\), got 0"):
        adv.run_standard_evaluation(x, y, bs=4)
    adv.apgd.n_iter = 2
    adv.square.n_queries = -1
    with pytest.raises(ValueError, match=r"square\.n_queries: expected an int >= 1"):
        adv.run_standard_evaluation_individual(x, y, bs=4)


@pytest.mark.parametrize("x_dtype", [torch.float64, torch.float32])
def test_float64_model_is_supported(x_dtype):
    """AutoAttack computes in float32; a float64 model is attacked through a cast, not refused."""
    model32, x, y = _data(8)
    model64 = TinyCNN().double()
    model64.load_state_dict(model32.state_dict())
    model64.eval()
    kw = {**FAST_KW, "attack_options": {"apgd": {"n_iter": 3, "n_restarts": 1}}}
    r64 = run_autoattack(model64, x.to(x_dtype), y, **kw)
    r32 = run_autoattack(model32, x, y, **kw)
    with torch.no_grad():
        clean64 = (model64(x.double()).argmax(1) == y).float().mean().item()
    assert r64.clean_accuracy == pytest.approx(clean64)
    assert r64.n == 8 and 0.0 <= r64.robust_accuracy <= r64.clean_accuracy
    assert not bool((r64.robust_flags & ~r64.clean_flags).any())
    # the same weights in float32: the same clean predictions, robust flags within an example or two
    assert torch.equal(r64.clean_flags, r32.clean_flags)
    assert int((r64.robust_flags != r32.robust_flags).sum()) <= 2
    assert all(p.dtype == torch.float64 for p in model64.parameters())  # the model is not converted


def test_float64_inputs_for_a_float32_model_are_cast():
    model, x, y = _data(6)
    r = run_autoattack(model, x.double(), y, **FAST_KW)
    r32 = run_autoattack(model, x, y, **FAST_KW)
    assert torch.equal(r.clean_flags, r32.clean_flags) and torch.equal(r.robust_flags, r32.robust_flags)


@pytest.mark.parametrize("payload", ["[]", "null", "3", '"chunk"', "[1, 0, 1]", '{"robust": null}', "not json"])
def test_resume_ignores_chunk_files_that_are_not_chunk_records(tmp_path, caplog, payload):
    model, x, y = _data(8)
    fresh = run_autoattack(model, x, y, batch_size=4, state_dir=tmp_path, **FAST_KW)
    (tmp_path / "chunk_000000.json").write_text(payload)
    with caplog.at_level("INFO", logger="ib_plugins.adapters.autoattack_eval"):
        again = run_autoattack(model, x, y, batch_size=4, state_dir=tmp_path, **FAST_KW)
    assert (again.chunks_run, again.chunks_reused) == (1, 1)  # chunk 0 recomputed, chunk 1 reused
    assert torch.equal(fresh.robust_flags, again.robust_flags)
    messages = [r.getMessage() for r in caplog.records if "chunk_000000.json" in r.getMessage()]
    assert messages, "the ignored file was not reported"
    if payload not in ('{"robust": null}',):  # a dict without our fingerprint just belongs to another run
        assert any(r.levelname == "WARNING" and "chunk_000000.json" in r.getMessage() for r in caplog.records)
    # the recomputed chunk was written back as a proper record
    assert isinstance(json.loads((tmp_path / "chunk_000000.json").read_text()), dict)


def test_resume_ignores_a_matching_chunk_record_with_bad_flags(tmp_path, caplog):
    model, x, y = _data(8)
    fresh = run_autoattack(model, x, y, batch_size=4, state_dir=tmp_path, **FAST_KW)
    path = tmp_path / "chunk_000000.json"
    record = json.loads(path.read_text())
    record["robust"] = ["yes", "no", "yes", "no"]  # right length, matching fingerprint, not flags
    path.write_text(json.dumps(record))
    with caplog.at_level("WARNING", logger="ib_plugins.adapters.autoattack_eval"):
        again = run_autoattack(model, x, y, batch_size=4, state_dir=tmp_path, **FAST_KW)
    assert again.chunks_run == 1 and torch.equal(fresh.robust_flags, again.robust_flags)
    assert any("expected 'robust' to be a list of 4 flags" in r.getMessage() for r in caplog.records)
