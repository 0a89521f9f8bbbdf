"""Training-step cost of IB-RAR on a GPU: VGG-16 at batch 128, CE vs CE+IB(all)+mask, float32 vs bf16, eager vs compiled.

Part of ``benchmarks/device_check.sh``; runs on CPU too (small sizes) so that it can be tested anywhere.
One step is ``ib_plugins.training.batch_loss`` + backward + SGD, as the Trainer runs it, on synthetic
CIFAR-shaped data. Every variant is timed in the same interleaved rounds, so the ratios compare like
with like on a shared machine; CUDA time is measured with ``torch.cuda.synchronize`` around each step.

Writes ``gpu_step.json`` and ``gpu_step.md`` into ``--out`` and prints the table.

Run::

    python benchmarks/gpu_step.py --device cuda --out benchmarks/out/device_check
    python benchmarks/gpu_step.py --device cpu --batch 8 --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ib_plugins import wrap_model
from ib_plugins.models import create_model
from ib_plugins.training import TrainConfig, batch_loss, resolve_config
from ib_plugins.wrap import IBModel


def build(variant: str, device: torch.device, compiled: bool) -> tuple[torch.nn.Module, TrainConfig, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = create_model("vgg16", num_classes=10, in_channels=3).to(device)
    ib = variant != "ce"
    cfg = resolve_config(TrainConfig(dataset="cifar10", model="vgg16", ib=ib, ib_layers="all",
                                     mask="code" if ib else None, mask_every=1, device=str(device)))
    model: torch.nn.Module = net
    if ib:
        model = wrap_model(net, "all", num_classes=10, y_kernel=cfg.y_kernel, mask="code")
        model.mask.every, model.mask.skip_first = 1, False  # every timed step computes a mask
    if compiled:
        net.compile()  # nn.Module.compile: module hooks (IB recording, the mask) keep firing
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, cfg, opt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (interleaved)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/device_check"))
    args = p.parse_args(argv)
    # Several instances of VGG-16 are compiled in this process, some wrapped (hooks) and some not: make
    # dynamo guard on module hooks, or it replays the hook-free graph for the wrapped instances.
    torch._dynamo.config.skip_nnmodule_hook_guards = False
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_step: no CUDA device (torch.cuda.is_available() is False); use --device cpu", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, generator=g).to(device)
    y = (torch.arange(args.batch) % 10).to(device)
    variants = [(v, amp, comp) for comp in ([False] if args.no_compile else [False, True])
                for amp in (None, "bf16") for v in ("ce", "ib_mask")]
    steps = {}
    for v, amp, comp in variants:
        model, cfg, opt = build(v, device, comp)
        autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp == "bf16"
                    else contextlib.nullcontext())

        def step(model=model, cfg=cfg, opt=opt, autocast=autocast) -> None:
            with autocast:
                out = batch_loss(cfg, model, x, y)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            if isinstance(model, IBModel):
                model.clear_records()

        steps[(v, amp, comp)] = step
    times: dict[tuple, list[float]] = {k: [] for k in steps}
    for r in range(args.warmup + args.rounds):
        for key, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r >= args.warmup:
                times[key].append(time.perf_counter() - t0)
        print(f"gpu_step: round {r + 1}/{args.warmup + args.rounds}", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for (v, amp, comp), t in med.items():
        base = med[("ce", amp, comp)]
        rows.append({"variant": "CE" if v == "ce" else "CE+IB(all)+mask(every step)", "precision": amp or "float32",
                     "compiled": comp, "step_ms": round(1000 * t, 3), "ratio_to_ce": round(t / base, 3)})
    md = [f"VGG-16, batch {args.batch}, {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}; median of {args.rounds} interleaved rounds after {args.warmup} warm-up rounds.",
          "", "| variant | precision | compiled | step (ms) | ratio to CE |", "|---|---|---|---|---|"]
    md += [f"| {r['variant']} | {r['precision']} | {r['compiled']} | {r['step_ms']} | {r['ratio_to_ce']} |" for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_step.json").write_text(json.dumps({"rows": rows, "batch": args.batch, "device": str(device),
                                                         "torch": torch.__version__}, indent=2) + "\n")
    (args.out / "gpu_step.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
