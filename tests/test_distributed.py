"""Multi-process training with the gloo backend on CPU (torchrun-equivalent environment)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

import ib_plugins
from ib_plugins.training import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )




def _weights_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """Train 2 epochs, then store this rank's final parameters (fit returns after the group is gone)."""
    _env(rank, world, port)
    torch.set_num_threads(1)
    cfg = TrainConfig(method="ce", ib=True, ib_layers="robust", epochs=2, batch_size=10, train_limit=80, test_limit=40)
    trainer = Trainer(cfg, out_dir=out_dir, progress=False)
    trainer.fit()
    # Parameters only: DDP broadcasts BatchNorm buffers from rank 0 at the start of every forward, so
    # after the last step each rank's running statistics hold one local update (rank 0's are saved).
    params = {k: v.detach().clone() for k, v in trainer.base.named_parameters()}
    torch.save(params, os.path.join(out_dir, f"rank{rank}.pt"))


def test_ranks_hold_identical_parameters_after_training(tmp_path):
    port = _free_port()
    mp.spawn(_weights_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and isinstance(ckpt["rng"], list) and len(ckpt["rng"]) == 2
    history = ckpt["history"]
    assert len(history) == 2 and 0.0 <= history[-1]["train_acc"] <= 1.0


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


def _global_batch_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    _env(rank, world, port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(1)
        x = torch.rand(16, 1, 4, 4, generator=g)
        y = torch.arange(16) % 3
        local = slice(rank * 8, (rank + 1) * 8)
        model = ib_plugins.wrap_model(_mlp(), ib_layers=["2", "4"], num_classes=3).train()
        model.global_batch = True
        ddp = nn.parallel.DistributedDataParallel(model)
        out = ddp(x[local])
        terms = model.ib_terms(x[local], y[local], output=out)
        # Every parameter must take part in the backward (as CE + IB does in training), else DDP's
        # bucket with the unused classifier never becomes ready and is not averaged.
        (terms.loss + 0.0 * out.sum()).backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"loss": terms.loss.detach(), "hx": terms.hx.detach(), "grads": grads}, os.path.join(out_dir, f"gb{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_global_batch_ib_equals_single_process_on_concatenated_batch(tmp_path):
    port = _free_port()
    mp.spawn(_global_batch_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 4, 4, generator=g)
    y = torch.arange(16) % 3
    single = ib_plugins.wrap_model(_mlp(), ib_layers=["2", "4"], num_classes=3).train()
    out = single(x)
    terms = single.ib_terms(x, y, output=out)
    (terms.loss + 0.0 * out.sum()).backward()
    for rank in (0, 1):
        res = torch.load(tmp_path / f"gb{rank}.pt", weights_only=True)
        assert torch.allclose(res["loss"], terms.loss.detach(), rtol=1e-5, atol=1e-6)
        assert torch.allclose(res["hx"], terms.hx.detach(), rtol=1e-5, atol=1e-6)
        # DDP-averaged gradients of the global IB term equal the single-process gradients.
        for name, p in single.named_parameters():
            if p.grad is not None:
                assert torch.allclose(res["grads"][name], p.grad, rtol=1e-4, atol=1e-6), name


def test_global_batch_without_process_group_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="ib_global_batch: needs an initialised torch.distributed process group"):
        Trainer(TrainConfig(ib=True, epochs=1, train_limit=40, ib_global_batch=True), out_dir=tmp_path, progress=False).fit()


# -- evaluation across ranks: every rank gets exactly the single-process per-example results ------------------


def _eval_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5)).eval()


def _eval_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.rand(23, 1, 4, 4, generator=g), torch.randint(0, 5, (23,), generator=g)


def _eval_specs():
    from ib_plugins.evaluation import AttackSpec, build_suite

    return [*build_suite("ibrar", dataset="digits", num_classes=5, pgd_steps=3, cw_steps=5,
                         attacks=["pgd", "cw", "fgsm", "nifgsm", "cw-l2"]),
            AttackSpec("l2-pgd", "l2", 0.5, {"alpha": 0.1, "steps": 3, "random_start": True})]


def _suite_summary(res) -> dict:
    return {"clean": res.correct["clean"].tolist(),
            **{a.name: (res.correct[a.name].tolist(), a.n_robust, a.n_flipped, round(a.max_linf, 6),
                        round(a.mean_l2, 6), None if a.median_l2_success is None else round(a.median_l2_success, 6))
               for a in res.attacks},
            "adv": {k: v.tolist() for k, v in res.adversarial.items()}}


def _suite_and_autoattack():
    """The evaluation both runs do: the suite and a short custom AutoAttack on the same data and net."""
    from ib_plugins.adapters.autoattack_eval import run_autoattack
    from ib_plugins.evaluation import evaluate_suite

    x, y = _eval_data()
    res = evaluate_suite(_eval_net(), x, y, _eval_specs(), batch_size=4, seed=5, progress=False,
                         keep_adversarial=True)
    aa = run_autoattack(_eval_net(), x, y, eps=0.1, version="custom", attacks=["apgd-ce", "fab"],
                        attack_options={"apgd": {"n_iter": 5}, "fab": {"n_iter": 5}}, batch_size=6, seed=2,
                        progress=False)
    return res, aa


def _sharded_eval_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    _env(rank, world, port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        res, aa = _suite_and_autoattack()
        torch.save({"suite": _suite_summary(res), "aa": (aa.robust_flags.tolist(), aa.clean_flags.tolist())},
                   os.path.join(out_dir, f"eval{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_sharded_evaluation_equals_the_single_process_run(tmp_path):
    pytest.importorskip("pyautoattack", reason="AutoAttack comes from pyautoattack (pip install 'ib-plugins[autoattack]')")
    single, aa = _suite_and_autoattack()  # one process
    port = _free_port()
    mp.spawn(_sharded_eval_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    expected = _suite_summary(single)
    for rank in range(2):
        got = torch.load(tmp_path / f"eval{rank}.pt", weights_only=False)
        assert got["suite"] == expected, rank  # the same examples, flags and norms on every rank
        assert got["aa"] == (aa.robust_flags.tolist(), aa.clean_flags.tolist())


@pytest.mark.slow
def test_torchrun_evaluate_writes_the_single_process_numbers(tmp_path):
    import json
    import subprocess
    import sys

    from ib_plugins.experiments import evaluate_checkpoint

    run = tmp_path / "run"
    Trainer(TrainConfig(epochs=1, batch_size=25, train_limit=100, test_limit=40, device="cpu"), out_dir=run,
            progress=False).fit()
    # (no --n: torchrun's own argparse takes "--n" for an ambiguous abbreviation of its options)
    common = ["--batch-size", "50", "--attacks", "pgd,fgsm,cw", "--cw-steps", "5", "--no-progress"]
    single = evaluate_checkpoint(run / "checkpoint.pt", out_dir=tmp_path / "single", batch_size=50,
                                 attacks=["pgd", "fgsm", "cw"], cw_steps=5, progress=False, device="cpu")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
         "-m", "ib_plugins.cli", "evaluate", str(run / "checkpoint.pt"), "--out", str(tmp_path / "ranks"),
         "--device", "cpu", *common],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads((tmp_path / "ranks" / "metrics.json").read_text())

    def strip(suite: dict) -> dict:
        return {**suite, "attacks": [{k: v for k, v in a.items() if k != "seconds"} for a in suite["attacks"]]}

    assert strip(ranks["suite"]) == strip(single["suite"])
