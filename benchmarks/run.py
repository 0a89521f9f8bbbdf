#!/usr/bin/env python
"""Performance benchmark of ib_plugins: training-step overheads, mask selection, memory, evaluation.

One command measures, side by side in the same run, and prints *ratios* (not just times):

(a) a training step (forward + loss + backward + SGD step, train mode, through
    ``ib_plugins.training.batch_loss`` as the Trainer runs it) with CE, CE+IB(robust layers),
    CE+IB(all layers) and CE+IB(all)+channel mask (every batch masked; "every 10" is derived as
    ``(9·IB(all) step + 1·masked step) / 10`` from the two separately timed steps), for the paper's
    VGG-16 at batch 100 on CIFAR-shaped synthetic data (3x32x32, 10 classes) and for the digits CNN
    (batch 50 on 1x8x8);
(b) a PGD-AT step (10 PGD steps, torchattacks through ``ib_plugins.training.TrainingAttack``)
    with and without the IB term;
(c) channel-mask selection on ``[100, 512, 1, 1]`` and ``[100, 320, 16, 16]`` features:
    ``select_channels(mode="code")`` (vectorised over channels) versus a per-channel Python loop over
    ``ib_plugins.nhsic``, and the vectorised selection as a fraction of one VGG-16 CE step;
(d) peak memory of an IB step versus a CE step (CPU: torch.profiler memory events; CUDA:
    ``torch.cuda.max_memory_allocated``);
(e) the attack-suite evaluation (``ib_plugins.evaluation.evaluate_suite``) versus the same attacks
    called directly through torchattacks on the same model, data and seed (PGD-10 and FGSM).

Timing: warm-up round(s), then ``--repeats`` rounds; in each round every compared variant runs once,
interleaved (A B C, then C B A in the next round, so that drift on a noisy shared machine cancels).
A variant's time is the median over rounds; a ratio is the median over rounds of the paired
per-round ratio ``t_variant / t_baseline``. ``torch.set_num_threads`` is set to the usable cores.

Usage::

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--out DIR] [--repeats N]
                             [--sections abcde] [--seed 0]

Writes ``results.json`` (every timing and ratio) and ``results.md`` (the table) into ``--out``
(default ``benchmarks/out/``) and prints the table. Progress goes to stderr, one line per step.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import ib_plugins  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ib_plugins import nhsic, select_channels, wrap_model
from ib_plugins.evaluation import batch_bounds, batch_seed, build_suite, evaluate_suite
from ib_plugins.models.small import DigitsCNN
from ib_plugins.models.vgg import VGG16
from ib_plugins.training import TrainConfig, TrainingAttack, batch_loss, resolve_config
from ib_plugins.wrap import IBModel

SCHEMA_VERSION = 1
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
SECTIONS = "abcde"
NUM_CLASSES = 10

# Targets of the issue (checked only at the full sizes; --quick sizes are not comparable).
TARGETS: dict[str, tuple[str, float, str]] = {
    # id -> (op, value, scope)
    "a.vgg16.ib_all": ("<=", 1.03, "any"),
    "a.vgg16.ib_robust": ("<=", 1.015, "any"),
    "a.vgg16.ib_all_mask_every10": ("<=", 1.05, "cuda"),
    "c.mask_512x1x1.fraction_of_vgg16_step": ("<=", 0.05, "any"),
    "c.mask_512x1x1.speedup": (">=", 12.0, "any"),
    "d.vgg16.ib_robust": ("<=", 1.10, "any"),
    "d.vgg16.ib_all": ("<=", 1.10, "any"),
    "e.vgg16.pgd": ("<=", 1.02, "any"),
    "e.vgg16.fgsm": ("<=", 1.02, "any"),
    "e.vgg16.total": ("<=", 1.02, "any"),
    "e.digits.pgd": ("<=", 1.02, "any"),
    "e.digits.fgsm": ("<=", 1.02, "any"),
    "e.digits.total": ("<=", 1.02, "any"),
    "e.vgg16.own_cost": ("<=", 1.02, "any"),
    "e.digits.own_cost": ("<=", 1.02, "any"),
}

_T0 = time.perf_counter()


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------
def log(message: str) -> None:
    """One progress line on stderr."""
    print(f"[bench {time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if abs(s) >= 1:
        return f"{s:.3f} s"
    if abs(s) >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_bytes(b: float | None) -> str:
    if b is None or not math.isfinite(b):
        return "-"
    return f"{b / 2**20:.1f} MiB"


def interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int,
    device: torch.device,
    label: str,
) -> dict[str, list[float]]:
    """Time every variant once per round, interleaved (order reversed every other round)."""
    names = list(fns)
    for w in range(warmup):
        for name in names:
            fns[name]()
            sync(device)
        log(f"{label}: warm-up {w + 1}/{warmup} done")
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
        summary = ", ".join(f"{n} {fmt_seconds(times[n][-1])}" for n in names)
        log(f"{label}: round {r + 1}/{repeats}: {summary}")
    return times


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over rounds of num[r] / den[r]."""
    return median([a / b for a, b in zip(num, den)])


class Results:
    """Accumulates measurement rows and renders them."""

    def __init__(self, *, quick: bool, device: torch.device) -> None:
        self.quick = quick
        self.device = device
        self.rows: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, Any] = {}
        self.notes: list[str] = []

    def _target(self, key: str, ratio: float | None) -> tuple[str, bool | None]:
        if key not in TARGETS:
            return "", None
        op, value, scope = TARGETS[key]
        text = f"{op} {value:g}" + (" (GPU only)" if scope == "cuda" else "")
        if self.quick or ratio is None or not math.isfinite(ratio):
            return text, None
        if scope == "cuda" and self.device.type != "cuda":
            return text, None
        ok = ratio <= value if op == "<=" else ratio >= value
        return text, bool(ok)

    def add(
        self,
        key: str,
        label: str,
        *,
        kind: str,
        value: float | None,
        samples: Sequence[float] | None = None,
        baseline: str | None = None,
        ratio: float | None = None,
        ratio_of_medians: float | None = None,
        ratio_name: str = "ratio to baseline",
        note: str = "",
    ) -> None:
        target, passed = self._target(key, ratio)
        self.rows[key] = {
            "id": key,
            "section": key.split(".", 1)[0],
            "label": label,
            "kind": kind,  # "time" (seconds), "memory" (bytes) or "derived" (seconds)
            "value": value,
            "samples": list(samples) if samples is not None else None,
            "baseline": baseline,
            "ratio": ratio,
            "ratio_of_medians": ratio_of_medians,
            "ratio_name": ratio_name,
            "target": target or None,
            "pass": passed,
            "note": note,
        }

    def ratios(self) -> dict[str, float]:
        return {k: r["ratio"] for k, r in self.rows.items() if r["ratio"] is not None}

    def markdown(self) -> str:
        lines = [
            "| measurement | time / memory | ratio to baseline | target | pass/fail |",
            "|---|---:|---:|---|---|",
        ]
        for row in self.rows.values():
            value = fmt_bytes(row["value"]) if row["kind"] == "memory" else fmt_seconds(row["value"])
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.4g}"
            if row["ratio_name"] != "ratio to baseline" and row["ratio"] is not None:
                ratio += f" ({row['ratio_name']})"
            if row["target"] is None:
                verdict = ""
            elif row["pass"] is None:
                verdict = "n/a (quick sizes)" if self.quick else "n/a"
            else:
                verdict = "PASS" if row["pass"] else "FAIL"
            label = row["label"] + (f" — {row['note']}" if row["note"] else "")
            lines.append(f"| {label} | {value} | {ratio} | {row['target'] or ''} | {verdict} |")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Models and training steps
# --------------------------------------------------------------------------------------------------
MODEL_SPECS: dict[str, dict[str, Any]] = {
    "vgg16": {"cls": VGG16, "dataset": "cifar10", "model": "vgg16", "shape": (3, 32, 32)},
    "digits": {"cls": DigitsCNN, "dataset": "digits", "model": "digits-cnn", "shape": (1, 8, 8)},
}

STEP_VARIANTS: dict[str, dict[str, Any]] = {
    "ce": {"ib": False, "layers": None, "mask": False, "label": "CE"},
    "ib_robust": {"ib": True, "layers": "robust", "mask": False, "label": "CE+IB(robust)"},
    "ib_all": {"ib": True, "layers": "all", "mask": False, "label": "CE+IB(all)"},
    "ib_all_mask": {"ib": True, "layers": "all", "mask": True, "label": "CE+IB(all)+mask(every 1)"},
}


def make_data(name: str, batch: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = MODEL_SPECS[name]["shape"]
    x = torch.rand(batch, *shape, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    return x.to(device), y.to(device)


def build_net(name: str, seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)  # identical initial weights for every variant
    return MODEL_SPECS[name]["cls"](num_classes=NUM_CLASSES).to(device)


def build_variant(
    name: str,
    variant: str,
    *,
    method: str,
    device: torch.device,
    seed: int,
    pgd_steps: int = 10,
) -> tuple[nn.Module, TrainConfig, torch.optim.Optimizer]:
    spec, v = MODEL_SPECS[name], STEP_VARIANTS[variant]
    base = build_net(name, seed, device)
    cfg = resolve_config(
        TrainConfig(
            method=method,
            dataset=spec["dataset"],
            model=spec["model"],
            ib=v["ib"],
            ib_layers=v["layers"] or "robust",
            mask="code" if v["mask"] else None,
            mask_every=1,
            y_kernel="linear",
            pgd_steps=pgd_steps,
            device=str(device),
            seed=seed,
        )
    )
    model: nn.Module = base
    if v["ib"]:
        model = wrap_model(
            base,
            v["layers"],
            alpha=cfg.alpha,
            beta=cfg.beta,
            num_classes=NUM_CLASSES,
            y_kernel="linear",
            mask="code" if v["mask"] else None,
        )
        if model.mask is not None:  # every batch masked (Algorithm 1); no mask = no cost
            model.mask.every = 1
            model.mask.skip_first = False
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return model, cfg, opt


def make_step(
    model: nn.Module,
    cfg: TrainConfig,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[], None]:
    """One training step exactly as ``Trainer._train_epoch`` runs it (minus metric bookkeeping)."""

    def step() -> None:
        out = batch_loss(cfg, model, x, y, attack=attack)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if isinstance(model, IBModel):
            model.clear_records()

    return step


# --------------------------------------------------------------------------------------------------
# (a) training steps
# --------------------------------------------------------------------------------------------------
def section_a(res: Results, ctx: dict[str, Any], args: argparse.Namespace, sizes: dict[str, Any]) -> None:
    device = ctx["device"]
    for name in ("vgg16", "digits"):
        batch = sizes["batch"][name]
        x, y = make_data(name, batch, device, args.seed)
        built = {v: build_variant(name, v, method="ce", device=device, seed=args.seed) for v in STEP_VARIANTS}
        steps = {v: make_step(m, c, o, x, y) for v, (m, c, o) in built.items()}
        label = f"(a) {name} b{batch}"
        times = interleaved(steps, repeats=args.repeats, warmup=sizes["warmup"], device=device, label=label)
        mask_model = built["ib_all_mask"][0]
        assert isinstance(mask_model, IBModel) and mask_model.mask is not None
        res.checks[f"a.{name}.masked_forwards"] = mask_model.mask.num_masked
        res.checks[f"a.{name}.masked_every_step"] = mask_model.mask.num_masked == sizes["warmup"] + args.repeats
        ce = times["ce"]
        for v, t in times.items():
            key = f"a.{name}.{v}"
            desc = f"(a) {name} b{batch} step: {STEP_VARIANTS[v]['label']}"
            if v == "ce":
                res.add(key, desc, kind="time", value=median(t), samples=t, ratio=1.0, ratio_of_medians=1.0)
            else:
                res.add(
                    key, desc, kind="time", value=median(t), samples=t, baseline=f"a.{name}.ce",
                    ratio=paired_ratio(t, ce), ratio_of_medians=median(t) / median(ce),
                )
        every10 = [(9 * a + b) / 10 for a, b in zip(times["ib_all"], times["ib_all_mask"])]
        res.add(
            f"a.{name}.ib_all_mask_every10",
            f"(a) {name} b{batch} step: CE+IB(all)+mask(every 10)",
            kind="derived", value=median(every10), samples=every10, baseline=f"a.{name}.ce",
            ratio=paired_ratio(every10, ce), ratio_of_medians=median(every10) / median(ce),
            note="(9·IB(all) + 1·masked)/10",
        )
        # The mask's cost inside a real step: a difference of two noisy times, so it can come out
        # negative on a busy machine; it is reported as a check, not as a ratio.
        mask_delta = [(b - a) / c for a, b, c in zip(times["ib_all"], times["ib_all_mask"], ce)]
        res.checks[f"a.{name}.mask_in_step_fraction_of_ce_step"] = median(mask_delta)
        ctx[f"ce_step_{name}"] = median(ce)
        ctx[f"models_{name}"] = built  # reused by (d)
        ctx[f"data_{name}"] = (x, y)


# --------------------------------------------------------------------------------------------------
# (b) PGD-AT steps
# --------------------------------------------------------------------------------------------------
def section_b(res: Results, ctx: dict[str, Any], args: argparse.Namespace, sizes: dict[str, Any]) -> None:
    device = ctx["device"]
    n_steps = sizes["pgd_steps"]
    plan = {"vgg16": ("ce", "ib_robust"), "digits": ("ce", "ib_robust", "ib_all")}
    for name in sizes["models_b"]:
        variants = plan[name]
        batch = sizes["batch"][name]
        x, y = make_data(name, batch, device, args.seed + 1)
        steps = {}
        for v in variants:
            model, cfg, opt = build_variant(name, v, method="pgd-at", device=device, seed=args.seed, pgd_steps=n_steps)
            attack = TrainingAttack(model, eps=cfg.eps, alpha=cfg.pgd_alpha, steps=cfg.pgd_steps)
            steps[v] = make_step(model, cfg, opt, x, y, attack=attack)
        label = f"(b) {name} b{batch} PGD-{n_steps}"
        times = interleaved(steps, repeats=args.repeats, warmup=sizes["warmup"], device=device, label=label)
        base = times["ce"]
        for v, t in times.items():
            key = f"b.{name}.pgd_at" if v == "ce" else f"b.{name}.pgd_at_{v}"
            what = "PGD-AT" if v == "ce" else f"PGD-AT+IB({STEP_VARIANTS[v]['layers']})"
            res.add(
                key, f"(b) {name} b{batch} step: {what} (PGD-{n_steps})", kind="time", value=median(t), samples=t,
                baseline=None if v == "ce" else f"b.{name}.pgd_at",
                ratio=1.0 if v == "ce" else paired_ratio(t, base),
                ratio_of_medians=1.0 if v == "ce" else median(t) / median(base),
            )
        if f"ce_step_{name}" in ctx:
            res.checks[f"b.{name}.pgd_at_over_ce_step"] = median(base) / ctx[f"ce_step_{name}"]
        del steps
        gc.collect()


# --------------------------------------------------------------------------------------------------
# (c) mask selection
# --------------------------------------------------------------------------------------------------
def loop_select(
    features: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, k_low_y: int, k_high_x: int
) -> torch.Tensor:
    """The straightforward per-channel loop: nhsic(x, f_c) and nhsic(f_c, y_onehot) per channel."""
    y_onehot = F.one_hot(y, NUM_CLASSES).float()
    with torch.no_grad():
        ix, iy = [], []
        for c in range(features.shape[1]):
            f_c = features[:, c]
            ix.append(nhsic(x, f_c))
            iy.append(nhsic(f_c, y_onehot))
        ix_t, iy_t = torch.stack(ix), torch.stack(iy)
    keep = torch.ones(features.shape[1], dtype=torch.bool, device=features.device)
    keep[iy_t.topk(k_low_y, largest=False).indices] = False
    keep[ix_t.topk(k_high_x, largest=True).indices] = False
    return keep


def section_c(res: Results, ctx: dict[str, Any], args: argparse.Namespace, sizes: dict[str, Any]) -> None:
    device = ctx["device"]
    g = torch.Generator().manual_seed(args.seed + 2)
    m = 100
    x = torch.rand(m, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (m,), generator=g).to(device)
    k = 10
    fns: dict[str, Callable[[], Any]] = {}
    shapes = sizes["mask_shapes"]
    tags = []
    # The scalar-channel maps once more with activations ×10 (max|f| ≈ 43 > 3.7σ): on CPU these take
    # the dense float64 solve instead of the short feature-map series; reported, not judged.
    cases = [(shape, 1.0) for shape in shapes] + [(shape, 10.0) for shape in shapes if shape[2:] == (1, 1)]
    for shape, scale in cases:
        feats = (torch.relu(torch.randn(shape, generator=g)) * scale).to(device)
        tag = "x".join(str(s) for s in shape[1:]) + ("" if scale == 1.0 else f"_x{scale:g}")
        tags.append((tag, shape))
        kk = min(k, shape[1] // 4)
        fns[f"vec_{tag}"] = (lambda f=feats, kk=kk: select_channels(
            f, x, y, num_classes=NUM_CLASSES, mode="code", k_low_y=kk, k_high_x=kk))
        fns[f"loop_{tag}"] = (lambda f=feats, kk=kk: loop_select(f, x, y, k_low_y=kk, k_high_x=kk))
        # agreement with the loop in float64 (a float32 loop can itself flip near-ties)
        a = fns[f"vec_{tag}"]()
        b = loop_select(feats.double(), x.double(), y, k_low_y=kk, k_high_x=kk)
        res.checks[f"c.mask_{tag}.selection_agrees"] = bool(torch.equal(a.cpu(), b.cpu()))
    # One VGG-16 CE training step in the same interleaved rounds, so that the selection's fraction
    # of a step is a paired per-round ratio (a step timed minutes earlier would carry the drift).
    built = ctx.get("models_vgg16")
    if built is not None:
        model, cfg, opt = built["ce"]
        xs, ys = ctx["data_vgg16"]
    else:
        model, cfg, opt = build_variant("vgg16", "ce", method="ce", device=device, seed=args.seed)
        xs, ys = make_data("vgg16", sizes["batch"]["vgg16"], device, args.seed)
    fns["vgg16_ce_step"] = make_step(model, cfg, opt, xs, ys)
    times = interleaved(fns, repeats=args.repeats, warmup=sizes["warmup"], device=device, label="(c) mask selection")
    step_t = times["vgg16_ce_step"]
    res.add("c.vgg16_ce_step", f"(c) VGG-16 b{xs.shape[0]} CE training step (same rounds)", kind="time",
            value=median(step_t), samples=step_t)
    for tag, shape in tags:
        vec, loop = times[f"vec_{tag}"], times[f"loop_{tag}"]
        what = f"{list(shape)}" + ("" if "_x" not in tag else f" ×{tag.split('_x')[1]}")
        res.add(f"c.mask_{tag}.vectorised", f"(c) select_channels(code) on {what}: vectorised",
                kind="time", value=median(vec), samples=vec)
        res.add(f"c.mask_{tag}.loop", f"(c) select_channels(code) on {what}: per-channel nhsic loop",
                kind="time", value=median(loop), samples=loop)
        res.add(
            f"c.mask_{tag}.speedup", f"(c) mask {what}: speed-up of vectorised over the loop", kind="derived",
            value=median(vec), samples=vec, baseline=f"c.mask_{tag}.loop", ratio=paired_ratio(loop, vec),
            ratio_of_medians=median(loop) / median(vec), ratio_name="speed-up",
        )
        res.add(
            f"c.mask_{tag}.fraction_of_vgg16_step",
            f"(c) mask {what}: vectorised selection / one VGG-16 b{xs.shape[0]} CE step", kind="derived",
            value=median(vec), samples=vec, baseline="c.vgg16_ce_step", ratio=paired_ratio(vec, step_t),
            ratio_of_medians=median(vec) / median(step_t), ratio_name="fraction of a step",
        )


# --------------------------------------------------------------------------------------------------
# (d) peak memory
# --------------------------------------------------------------------------------------------------
def _persistent_bytes(model: nn.Module, opt: torch.optim.Optimizer, extra: Sequence[torch.Tensor]) -> int:
    tensors: list[torch.Tensor] = list(model.parameters()) + list(model.buffers()) + list(extra)
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    for state in opt.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    seen, total = set(), 0
    for t in tensors:
        storage = t.untyped_storage()
        key = (storage.data_ptr(), str(t.device))
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def cpu_step_peak(step: Callable[[], None]) -> tuple[int, int]:
    """(transient peak, net change) of CPU memory allocated by torch during ``step``.

    Runs the step under ``torch.profiler.profile(profile_memory=True)``; every allocation and free
    of torch's CPU allocator is a ``[memory]`` event with a signed byte count; the running sum in
    time order is the live memory above the starting point, and its maximum is the peak.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    mem = sorted(
        (e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    )
    current = peak = 0
    for _, nbytes in mem:
        current += nbytes
        peak = max(peak, current)
    return peak, current


def section_d(res: Results, ctx: dict[str, Any], args: argparse.Namespace, sizes: dict[str, Any]) -> None:
    device = ctx["device"]
    method = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "torch.profiler memory events"
    res.checks["d.method"] = method
    for name in ("vgg16", "digits"):
        built = ctx.get(f"models_{name}")
        warmed = built is not None  # the variants of (a) have run steps: optimizer state exists
        if built is None:  # section (a) not run: build the variants here
            built = {v: build_variant(name, v, method="ce", device=device, seed=args.seed) for v in STEP_VARIANTS}
            x, y = make_data(name, sizes["batch"][name], device, args.seed)
        else:
            x, y = ctx[f"data_{name}"]
        batch = x.shape[0]
        peaks: dict[str, tuple[int, int]] = {}
        for v, (model, cfg, opt) in built.items():
            if v not in sizes["memory_variants"]:
                continue
            step = make_step(model, cfg, opt, x, y)
            if not warmed:
                step()  # allocates the optimizer state, as in any step after the first
            opt.zero_grad(set_to_none=True)
            gc.collect()
            sync(device)
            base = _persistent_bytes(model, opt, (x, y))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                start = torch.cuda.memory_allocated(device)
                step()
                sync(device)
                transient = torch.cuda.max_memory_allocated(device) - start
                total = torch.cuda.max_memory_allocated(device)
            else:
                transient, _ = cpu_step_peak(step)
                total = base + transient
            peaks[v] = (total, transient)
            log(f"(d) {name} b{batch} {v}: peak {fmt_bytes(total)} (step transient {fmt_bytes(transient)})")
        ce_total, ce_transient = peaks["ce"]
        for v, (total, transient) in peaks.items():
            key = f"d.{name}.{v}"
            res.add(
                key, f"(d) {name} b{batch} peak memory: {STEP_VARIANTS[v]['label']} step", kind="memory", value=total,
                baseline=None if v == "ce" else f"d.{name}.ce", ratio=total / ce_total,
                note=f"transient {fmt_bytes(transient)}, ×{transient / ce_transient:.3f}",
            )
            res.checks[f"d.{name}.{v}.transient_bytes"] = transient
            res.checks[f"d.{name}.{v}.transient_ratio"] = transient / ce_transient
        ctx.pop(f"models_{name}", None)
        del built
        gc.collect()


# --------------------------------------------------------------------------------------------------
# (e) evaluation overhead
# --------------------------------------------------------------------------------------------------
def direct_torchattacks(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, specs: Sequence[Any], *, batch_size: int, seed: int
) -> dict[str, float]:
    """What a user writes without ib_plugins: clean accuracy, then each attack and its accuracy."""
    import torchattacks

    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        clean = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    out["clean"] = int((clean == y).sum()) / len(y)
    for spec in specs:
        atk = getattr(torchattacks, spec.attack_class)(model, **spec.constructor_kwargs())
        preds = []
        # the library seeds each batch on its own (evaluation.batch_seed), so that sharded runs are exact
        for b, (lo, hi) in enumerate(batch_bounds(len(x), batch_size)):
            torch.manual_seed(batch_seed(seed, b))
            adv = atk(x[lo:hi], y[lo:hi])
            with torch.no_grad():
                preds.append(model(adv).argmax(1))
        out[spec.name] = int((torch.cat(preds) == y).sum()) / len(y)
    return out


def section_e(res: Results, ctx: dict[str, Any], args: argparse.Namespace, sizes: dict[str, Any]) -> None:
    device = ctx["device"]
    for name in sizes["models_e"]:
        n, batch = sizes["eval"][name]
        x, y = make_data(name, n, device, args.seed + 3)
        model = build_net(name, args.seed, device).eval()
        dataset = MODEL_SPECS[name]["dataset"]
        specs = build_suite("ibrar", dataset=dataset, attacks=["pgd", "fgsm"], pgd_steps=sizes["eval_pgd_steps"])
        by_name = {s.name: s for s in specs}
        last: dict[str, Any] = {}

        def suite_run(spec_name: str) -> None:
            r = evaluate_suite(model, x, y, [by_name[spec_name]], batch_size=batch, seed=args.seed, progress=False)
            last[f"suite_{spec_name}"] = (r.clean_accuracy, r[spec_name].accuracy)

        def direct_run(spec_name: str) -> None:
            r = direct_torchattacks(model, x, y, [by_name[spec_name]], batch_size=batch, seed=args.seed)
            last[f"direct_{spec_name}"] = (r["clean"], r[spec_name])

        fns = {
            "suite_pgd": lambda: suite_run("pgd"),
            "direct_pgd": lambda: direct_run("pgd"),
            "suite_fgsm": lambda: suite_run("fgsm"),
            "direct_fgsm": lambda: direct_run("fgsm"),
        }
        label = f"(e) {name} N={n} b{batch}"
        times = interleaved(fns, repeats=args.repeats, warmup=sizes["warmup"], device=device, label=label)
        steps = sizes["eval_pgd_steps"]
        for atk, what in (("pgd", f"PGD-{steps}"), ("fgsm", "FGSM")):
            res.checks[f"e.{name}.{atk}.same_accuracy"] = last[f"suite_{atk}"] == last[f"direct_{atk}"]
            res.checks[f"e.{name}.{atk}.accuracy"] = {"suite": last[f"suite_{atk}"], "direct": last[f"direct_{atk}"]}
            d, s = times[f"direct_{atk}"], times[f"suite_{atk}"]
            res.add(f"e.{name}.{atk}_direct", f"(e) {name} N={n}: {what} via torchattacks directly",
                    kind="time", value=median(d), samples=d)
            res.add(
                f"e.{name}.{atk}", f"(e) {name} N={n}: {what} via evaluate_suite", kind="time", value=median(s),
                samples=s, baseline=f"e.{name}.{atk}_direct", ratio=paired_ratio(s, d),
                ratio_of_medians=median(s) / median(d),
            )
        tot_s = [a + b for a, b in zip(times["suite_pgd"], times["suite_fgsm"])]
        tot_d = [a + b for a, b in zip(times["direct_pgd"], times["direct_fgsm"])]
        res.add(
            f"e.{name}.total", f"(e) {name} N={n}: PGD-{steps} + FGSM via evaluate_suite (sum)", kind="derived",
            value=median(tot_s), samples=tot_s, baseline=f"e.{name}.pgd_direct + fgsm_direct",
            ratio=paired_ratio(tot_s, tot_d), ratio_of_medians=median(tot_s) / median(tot_d),
        )
        own_cost_row(res, name, x, y, specs, batch=batch, seed=args.seed, device=device,
                     repeats=max(3 * args.repeats, 3), warmup=sizes["warmup"], real_direct=tot_d)
        model = None  # frees the network (the closures above share this variable) before the next one
        gc.collect()


def own_cost_row(
    res: Results,
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    specs: Sequence[Any],
    *,
    batch: int,
    seed: int,
    device: torch.device,
    repeats: int,
    warmup: int,
    real_direct: Sequence[float],
) -> None:
    """evaluate_suite's own cost, isolated from the model's compute.

    The same data, batches and attacks on a linear stand-in model make the attack compute almost
    free, so the paired difference (suite - direct) is what evaluate_suite adds: its checks,
    contexts and bookkeeping. Compared with the real model's direct time it bounds the overhead
    without the kernel-speed noise of a shared machine, which moves the direct ratios by a few
    percent either way. The stand-in has 3 modules; saving and restoring modes costs about 1 us per
    module of an eval-mode model per context (3 contexts per attack), ~0.2 ms for VGG-16's 61.
    """
    torch.manual_seed(seed)
    stand_in = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), NUM_CLASSES)).to(device).eval()
    fns = {
        "suite": lambda: evaluate_suite(stand_in, x, y, specs, batch_size=batch, seed=seed, progress=False),
        "direct": lambda: direct_torchattacks(stand_in, x, y, specs, batch_size=batch, seed=seed),
    }
    times = interleaved(fns, repeats=repeats, warmup=warmup, device=device, label=f"(e) {name} linear stand-in")
    extra = median([a - b for a, b in zip(times["suite"], times["direct"])])
    base = median(real_direct)
    res.add(
        f"e.{name}.own_cost", f"(e) {name}: evaluate_suite's own cost (same batches and attacks, linear stand-in)",
        kind="derived", value=extra,
        samples=[a - b for a, b in zip(times["suite"], times["direct"])], baseline=f"e.{name} direct (sum)",
        ratio=1 + extra / base, ratio_name="1 + own cost / direct",
    )


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Benchmark ib_plugins: IB/mask overhead of training steps, mask selection, memory, evaluation.",
    )
    p.add_argument(
        "--quick", action="store_true",
        help="smoke run for CI: small sizes, 1 repeat, no warm-up (its figures are not comparable to the targets)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per measurement (default 5; quick: 1)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 1; quick: 0)")
    p.add_argument("--sections", default=SECTIONS, help="which sections to run, a subset of 'abcde' (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of data and weights (default 0)")
    p.add_argument(
        "--threads", type=int, default=None,
        help="torch intra-op threads (default: the usable cores). On an oversubscribed machine (load average "
        "above the core count) 1 thread avoids OpenMP stalls that inflate every small operation",
    )
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.repeats < 1:
        p.error(f"--repeats: expected an int >= 1, got {args.repeats}")
    if args.warmup is None:
        args.warmup = 0 if args.quick else 1
    if args.warmup < 0:
        p.error(f"--warmup: expected an int >= 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads: expected an int >= 1, got {args.threads}")
    bad = sorted(set(args.sections) - set(SECTIONS))
    if bad or not args.sections:
        p.error(f"--sections: expected letters from {SECTIONS!r}, got {args.sections!r}")
    return args


def sizes_for(quick: bool, warmup: int) -> dict[str, Any]:
    if quick:
        # A smoke run for CI: every code path once, at sizes that take seconds. VGG-16 runs in (a)
        # and (d) only; PGD-AT (b) and the evaluation (e) use the digits CNN.
        return {
            "batch": {"vgg16": 8, "digits": 50},
            "models_b": ("digits",),
            "pgd_steps": 2,
            "mask_shapes": [(100, 64, 1, 1), (100, 16, 8, 8)],
            "memory_variants": ("ce", "ib_robust", "ib_all"),
            "models_e": ("digits",),
            "eval": {"digits": (100, 50)},
            "eval_pgd_steps": 2,
            "warmup": warmup,
        }
    return {
        "batch": {"vgg16": 100, "digits": 50},
        "models_b": ("vgg16", "digits"),
        "pgd_steps": 10,
        "mask_shapes": [(100, 512, 1, 1), (100, 320, 16, 16)],
        # evaluate_suite overhead: PGD-10 on VGG-16 costs ~30 forward passes per sample, so a smaller
        # N keeps the run affordable on 2 cores; the overhead ratio does not depend on N.
        "memory_variants": tuple(STEP_VARIANTS),
        "models_e": ("vgg16", "digits"),
        "eval": {"vgg16": (20, 20), "digits": (500, 50)},
        "eval_pgd_steps": 10,
        "warmup": warmup,
    }


def machine_info(device: torch.device, requested: str) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_model": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "requested_device": requested,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model_name(),
        "load_average_start": load_average(),
    }
    try:
        import torchattacks

        info["torchattacks"] = torchattacks.__version__
    except ImportError:  # pragma: no cover - the attacks extra is needed for (b) and (e)
        info["torchattacks"] = None
    return info


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or usable_cores())
    requested = args.device
    if requested == "cuda" and not torch.cuda.is_available():
        print(
            "benchmarks/run.py: --device cuda was requested but CUDA is not available "
            "(torch.cuda.is_available() is False); running the benchmark on the CPU instead.",
            file=sys.stderr,
            flush=True,
        )
        device = torch.device("cpu")
    else:
        device = torch.device(requested)
    torch.manual_seed(args.seed)
    sizes = sizes_for(args.quick, args.warmup)
    info = machine_info(device, requested)
    print("ib_plugins benchmark" + (" (--quick)" if args.quick else ""))
    print(f"  processor: {info['processor'] or '-'} ({info['cpu_model']})")
    print(f"  CPUs: {info['cpu_count']} (usable {info['usable_cores']}, torch threads {info['torch_threads']})")
    print(f"  torch {info['torch']}, torchattacks {info['torchattacks']}, python {info['python']}")
    print(f"  device: {info['device']} ({info['device_name']})" + (
        f" — requested {requested}, not available" if requested != device.type else ""))
    print(f"  load average at start: {info['load_average_start']}")
    print(f"  repeats {args.repeats}, warm-up {args.warmup}, sections {args.sections}", flush=True)
    cores, load = usable_cores(), info["load_average_start"]
    if load is not None and load[0] > cores and torch.get_num_threads() > 1:
        print(
            f"benchmarks/run.py: the load average ({load[0]}) exceeds the {cores} usable cores; with "
            f"{torch.get_num_threads()} threads OpenMP stalls on descheduled threads inflate small operations "
            "(the IB terms, the mask) far more than large ones; consider --threads 1",
            file=sys.stderr, flush=True,
        )

    res = Results(quick=args.quick, device=device)
    ctx: dict[str, Any] = {"device": device}
    start = time.perf_counter()
    runners = {"a": section_a, "b": section_b, "c": section_c, "d": section_d, "e": section_e}
    durations: dict[str, float] = {}
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for letter in SECTIONS:
        if letter in args.sections:
            t0 = time.perf_counter()
            log(f"section ({letter}) starts")
            runners[letter](res, ctx, args, sizes)
            durations[letter] = round(time.perf_counter() - t0, 2)
            log(f"section ({letter}) done in {durations[letter]:.1f} s")
            # Partial results after every section, so a long run that is stopped leaves its figures.
            write_outputs(out, res, info, args, sizes, durations, time.perf_counter() - start, complete=False)
    elapsed = time.perf_counter() - start
    info["load_average_end"] = load_average()
    table = write_outputs(out, res, info, args, sizes, durations, elapsed, complete=True)
    print()
    print(table)
    print()
    failed = [k for k, r in res.rows.items() if r["pass"] is False]
    print(f"checks: {json.dumps(res.checks, default=str)}")
    print(f"targets failed: {', '.join(failed) if failed else 'none'}")
    print(f"load average at end: {info['load_average_end']}")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} in {elapsed:.1f} s")
    return 0


def write_outputs(
    out: Path,
    res: Results,
    info: dict[str, Any],
    args: argparse.Namespace,
    sizes: dict[str, Any],
    durations: dict[str, float],
    elapsed: float,
    *,
    complete: bool,
) -> str:
    """Write results.json and results.md; return the markdown table."""
    table = res.markdown()
    payload = {
        "schema_version": SCHEMA_VERSION,
        "complete": complete,
        "machine": info,
        "config": {
            "quick": args.quick,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "sections": args.sections,
            "seed": args.seed,
            "threads": torch.get_num_threads(),
            "sizes": sizes,
            "timing": "interleaved rounds (order reversed every other round); time = median over rounds; "
            "ratio = median over rounds of the paired ratio t_variant/t_baseline",
            "memory_method": res.checks.get("d.method"),
        },
        "measurements": res.rows,
        "ratios": res.ratios(),
        "targets": {k: {"target": r["target"], "ratio": r["ratio"], "pass": r["pass"]}
                    for k, r in res.rows.items() if r["target"]},
        "checks": res.checks,
        "section_seconds": durations,
        "total_seconds": round(elapsed, 2),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    header = [
        "# ib_plugins benchmark" + (" (--quick: small sizes, targets not checked)" if args.quick else "")
        + ("" if complete else " — PARTIAL (run still going or stopped)"),
        "",
        f"- machine: {info['cpu_model']}, {info['cpu_count']} CPUs (torch threads {torch.get_num_threads()}), "
        f"device {info['device']} ({info['device_name']})",
        f"- torch {info['torch']}, torchattacks {info['torchattacks']}",
        f"- load average start {info['load_average_start']}, end {info.get('load_average_end')}",
        f"- repeats {args.repeats}, warm-up {args.warmup}; time = median over interleaved rounds, "
        "ratio = median of per-round paired ratios",
        f"- memory: {res.checks.get('d.method', '-')} (peak = persistent tensors + step transient)",
        f"- sections {args.sections}: " + ", ".join(f"({k}) {v:.0f} s" for k, v in durations.items())
        + f"; total {elapsed:.1f} s",
        "",
    ]
    (out / "results.md").write_text("\n".join(header) + table + "\n", encoding="utf-8")
    return table


if __name__ == "__main__":
    sys.exit(main())
