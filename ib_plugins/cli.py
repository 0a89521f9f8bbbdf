"""The ``ib-plugins`` command line: demo, train, evaluate, select-layers, report, leaderboard, audit.

Run ``ib-plugins COMMAND --help`` for each command's options. Every command writes a results
folder (``config.json``, ``metrics.json``, ``results.md``, PNG plots) and refuses to overwrite a
folder that holds a different run unless ``--overwrite`` is given.

Example:
    >>> parser = build_parser()
    >>> parser.parse_args(["train", "--method", "trades", "--ib", "--out", "runs/x"]).method
    'trades'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ib_plugins.errors import IBPluginsError

__all__ = ["main", "build_parser"]

_TRAIN_HELP = {
    "dataset": "dataset name",
    "model": "model name",
    "method": "training method",
    "preset": "hyperparameter preset (ibrar-code: the authors' scripts; paper: the paper's text; standard: TRADES/MART beta=6)",
    "ib": "add the IB-RAR HSIC term",
    "ib_layers": "IB layers: 'robust', 'all', a preset name, or comma-separated dotted names; by default as the "
                 "authors' scripts: every hook point for pgd-at/trades/mart, the robust layers for ce where the "
                 "model has them (vgg16: block5,fc1,fc2), else every hook point",
    "record_masked": "when the mask layer is also an IB layer, the IB term sees its masked output (or, with "
                     "--no-record-masked, the unmasked one); by default ibrar-code follows the authors' order per "
                     "architecture (vgg16: masked; resnet18: unmasked pooled vector), paper/standard: masked",
    "mask": "channel mask mode: code or paper",
    "mask_every": "mask one batch in N (10: authors' code; 1: Algorithm 1)",
    "ib_on": "forwards the IB term regularises under adversarial training: adv, clean, both",
    "x_for_ib": "X of I(X,T): clean (authors) or adv",
    "init_checkpoint": "checkpoint to start from (entropic retraining)",
    "amp": "mixed precision: bf16 or fp16 (torch.autocast; fp16 adds a GradScaler; HSIC stays float32)",
    "train_limit": "train on a stratified subset of N images",
    "test_limit": "test on a stratified subset of N images",
}


def _field_type(field: dataclasses.Field[Any]) -> tuple[Any, bool]:
    """(python type for argparse, is_bool) from a TrainConfig field annotation."""
    ann = str(field.type)
    if ann.startswith("bool"):
        return None, True
    for name, typ in (("int", int), ("float", float)):
        if ann.startswith(name):
            return typ, False
    return str, False


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    from ib_plugins.training import TrainConfig

    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        typ, is_bool = _field_type(field)
        default_text = field.default if field.default is not dataclasses.MISSING else None
        help_text = _TRAIN_HELP.get(field.name, field.name.replace("_", " "))
        if field.name == "amp":
            default_text = "off, float32"
        help_text += f" (default: {default_text if default_text is not None else 'from the preset'})"
        if is_bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=typ, default=None, help=help_text, metavar=field.name.upper())


def _config_from_args(args: argparse.Namespace) -> Any:
    from ib_plugins.training import TrainConfig

    data: dict[str, Any] = {}
    if args.config:
        data.update(json.loads(Path(args.config).read_text()))
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is None:
            continue
        if field.name == "ib_layers" and isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",") if v.strip()]
        data[field.name] = value
    return TrainConfig.from_dict(data)


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _ints(text: str | None) -> list[int] | None:
    return [int(t) for t in text.split(",") if t.strip()] if text else None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ib-plugins``.

    Returns:
        The parser, one sub-command per task.

    Example:
        >>> build_parser().parse_args(["demo", "--epochs", "5"]).epochs
        5
    """
    parser = argparse.ArgumentParser(prog="ib-plugins", description="Information-bottleneck defences: train, attack, report.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="CE vs IB-RAR on scikit-learn digits: train, attack, compare (~3 min on 2 CPU cores)")
    demo.add_argument("--out", default="ib-plugins-demo", help="results folder (default: ib-plugins-demo)")
    demo.add_argument("--epochs", type=int, default=None, help="epochs per network (default: 20)")
    demo.add_argument("--eval-n", type=int, default=None, help="attack-suite test images (default: all 450)")
    demo.add_argument("--autoattack-n", type=int, default=100, help="test images for the AutoAttack column (0: skip)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--overwrite", action="store_true", help="replace a results folder of a different run")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")

    train = sub.add_parser("train", help="train one configuration (every epoch checkpointed; --resume continues)")
    train.add_argument("--out", required=True, help="results folder")
    train.add_argument("--config", help="JSON file with TrainConfig fields (flags override it)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace a results folder of a different run")
    train.add_argument("--no-progress", action="store_true")
    _add_train_options(train)

    ev = sub.add_parser("evaluate", help="attack a checkpoint with the IB-RAR or entropic suite")
    ev.add_argument("checkpoint", help="checkpoint.pt written by 'ib-plugins train'")
    ev.add_argument("--out", help="results folder (default: next to the checkpoint)")
    ev.add_argument("--suite", default="ibrar", help="ibrar (PGD, CW, FGSM, FAB, NIFGSM) or entropic")
    ev.add_argument("--budget", help="ibrar-code or paper (default: the suite's default)")
    ev.add_argument("--attacks", help="comma-separated subset of the suite")
    ev.add_argument("--n", type=int, help="evaluate on a stratified subset of N test images")
    ev.add_argument("--batch-size", type=int, default=100)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--pgd-steps", type=int)
    ev.add_argument("--cw-steps", type=int)
    ev.add_argument("--steps-sweep", help="also PGD accuracy at these step counts, e.g. 1,10,20,30,40,50 (Fig. 3)")
    ev.add_argument("--noise", action="store_true", help="also accuracy under random L2/Linf noise (entropic Tables V-VI)")
    ev.add_argument("--tendency", help="also the misclassification-tendency table of this attack (Table IV)")
    ev.add_argument("--tsne", help="also a t-SNE plot of this layer (Fig. 1)")
    ev.add_argument("--model", help="refuse a checkpoint of another model")
    ev.add_argument("--data-dir")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--overwrite", action="store_true")
    ev.add_argument("--no-progress", action="store_true")

    sel = sub.add_parser("select-layers", help="Table III procedure: IB on one layer at a time, PGD accuracy per layer")
    sel.add_argument("--dataset", default="digits")
    sel.add_argument("--model", default="digits-cnn")
    sel.add_argument("--candidates", help="comma-separated layers (default: the model's hook points)")
    sel.add_argument("--epochs", type=int, default=20)
    sel.add_argument("--batch-size", type=int, default=50)
    sel.add_argument("--alpha", type=float, default=0.008)
    sel.add_argument("--beta", type=float, default=0.08)
    sel.add_argument("--eval-n", type=int, help="PGD on a subset of N test images")
    sel.add_argument("--tolerance", type=float, default=0.01, help="PGD-accuracy gain over CE needed for selection")
    sel.add_argument("--train-limit", type=int)
    sel.add_argument("--out", default="select-layers")
    sel.add_argument("--seed", type=int, default=0)
    sel.add_argument("--data-dir")
    sel.add_argument("--device", default="cpu")
    sel.add_argument("--overwrite", action="store_true")
    sel.add_argument("--no-progress", action="store_true")

    rep = sub.add_parser("report", help="side-by-side markdown table of evaluation results folders")
    rep.add_argument("results", nargs="+", help="results folders (with metrics.json)")
    rep.add_argument("--out", help="write the table to this markdown file as well")

    audit = sub.add_parser("audit", help="gradient-masking checks and adaptive attacks on a checkpoint (report folder)")
    from ib_plugins.audit import add_audit_arguments

    add_audit_arguments(audit)

    lb = sub.add_parser("leaderboard", help="render RobustBench-style leaderboard.md/.html from model-info JSON files")
    lb.add_argument("results", nargs="+", help="model-info JSON files or folders holding them")
    lb.add_argument("--out", default=".", help="folder for leaderboard.md and leaderboard.html")
    lb.add_argument("--title", default="ib-plugins leaderboard")
    return parser


def _print_table(markdown: str) -> None:
    print(markdown.rstrip())


def _cmd_demo(args: argparse.Namespace) -> int:
    import os

    import torch

    from ib_plugins.experiments import DEMO_EPOCHS, run_demo

    if "OMP_NUM_THREADS" not in os.environ and args.device == "cpu":
        # The demo's 8x8 CNN is far too small to gain from intra-op threads, and on a busy machine
        # spinning OpenMP threads slow it down many times over; OMP_NUM_THREADS overrides this.
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    print(f"ib-plugins demo: training CE and IB-RAR on scikit-learn digits, then attacking both; results in {args.out}/")
    metrics = run_demo(
        out_dir=args.out, epochs=args.epochs or DEMO_EPOCHS, seed=args.seed, eval_n=args.eval_n,
        autoattack_n=args.autoattack_n, overwrite=args.overwrite, device=args.device, progress=not args.no_progress,
    )
    print()
    _print_table(metrics["table"])
    print(f"\nAccuracy (%) on {metrics['n_eval']} test images. Written: {args.out}/results.md, metrics.json, config.json")
    if "leaderboard" in metrics:
        print(f"Leaderboard: {metrics['leaderboard']['markdown']} and {metrics['leaderboard']['html']}")
    print(f"Total wall time: {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ib_plugins.training import Trainer

    config = _config_from_args(args)
    trainer = Trainer(config, out_dir=args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    final = trainer.fit()
    print(trainer.summary_markdown(final).rstrip())
    print(f"\nCheckpoint: {Path(args.out) / 'checkpoint.pt'}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ib_plugins.experiments import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint, out_dir=args.out, suite=args.suite, budget=args.budget, attacks=_csv(args.attacks), n=args.n,
        batch_size=args.batch_size, seed=args.seed, pgd_steps=args.pgd_steps, cw_steps=args.cw_steps,
        steps_sweep=_ints(args.steps_sweep), noise=args.noise, tendency=args.tendency, tsne_layer=args.tsne,
        expect_model=args.model, data_dir=args.data_dir, device=args.device, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"clean accuracy {100 * metrics['suite']['clean_accuracy']:.2f}% on {metrics['suite']['n']} images")
    for attack in metrics["suite"]["attacks"]:
        line = (f"  {attack['name']:<10} accuracy {100 * attack['accuracy']:6.2f}%   "
                f"success rate {100 * (attack['success_rate'] or 0):6.2f}%")
        if attack["eps"] is None:  # fixed-c CW or the corrected cw-l2: say what it is and how far it went
            median = attack.get("median_l2_success")
            line += f"   median L2 of successes {'-' if median is None else f'{median:.3g}'}   [{attack['description']}]"
        print(line)
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from ib_plugins.experiments import select_robust_layers

    select_robust_layers(
        dataset=args.dataset, model=args.model, candidates=_csv(args.candidates), epochs=args.epochs,
        batch_size=args.batch_size, alpha=args.alpha, beta=args.beta, eval_n=args.eval_n, tolerance=args.tolerance,
        out_dir=args.out, seed=args.seed, data_dir=args.data_dir, train_limit=args.train_limit, device=args.device,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    print((Path(args.out) / "results.md").read_text().rstrip())
    return 0


def _report_result(attack: dict[str, Any], suite: dict[str, Any]) -> Any:
    """An AttackResult rebuilt from an evaluation's metrics.json (older files lack the median L2)."""
    from ib_plugins.evaluation import AttackResult, AttackSpec

    spec = AttackSpec(attack["name"], attack["norm"], attack["eps"], attack.get("kwargs") or {}, attack=attack["attack"])
    return AttackResult(
        spec, int(attack["n"]), int(attack["n_robust"]), int(attack["n_clean_correct"]), int(attack["n_flipped"]),
        float(attack["seconds"]), float(attack["max_linf"]), float(attack["mean_l2"]), attack.get("median_l2_success"),
    )


def _cmd_report(args: argparse.Namespace) -> int:
    rows = []
    attack_names: list[str] = []
    specs: dict[str, Any] = {}
    for folder in args.results:
        path = Path(folder) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"results: {folder} has no metrics.json (expected a folder written by 'ib-plugins evaluate')")
        metrics = json.loads(path.read_text())
        if "suite" not in metrics:
            raise ValueError(f"results: {path} holds no attack-suite results")
        suite = metrics["suite"]
        accs = {a["name"]: _report_result(a, suite) for a in suite["attacks"]}
        attack_names += [n for n in accs if n not in attack_names]
        specs.update({n: r.spec for n, r in accs.items() if n not in specs})
        rows.append((folder, suite["clean_accuracy"], accs))
    from ib_plugins._markdown import md_cell
    from ib_plugins.evaluation import _accuracy_cell, _column_title, _fixed_c_note

    titles = [_column_title(n, specs[n]) for n in attack_names]
    lines = ["| run | Clean | " + " | ".join(titles) + " |", "|---|---|" + "---|" * len(attack_names)]
    for folder, clean, accs in rows:
        cells = [_accuracy_cell(accs[n]) if n in accs else "-" for n in attack_names]
        lines.append(f"| {md_cell(folder)} | {100 * clean:.2f} | " + " | ".join(cells) + " |")
    notes = _fixed_c_note([specs[n] for n in attack_names])
    table = "\n".join(lines + ([""] + notes if notes else [])) + "\n"
    _print_table(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from ib_plugins.leaderboard import load_entries, render_leaderboard

    entries = load_entries(args.results)
    if not entries:
        raise FileNotFoundError(f"results: no model-info JSON files found in {', '.join(args.results)}")
    md_path, html_path = render_leaderboard(entries, args.out, title=args.title)
    print(Path(md_path).read_text().rstrip())
    print(f"\nWritten: {md_path}, {html_path}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from ib_plugins.audit import audit_command

    return audit_command(args)


_COMMANDS = {
    "demo": _cmd_demo,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "select-layers": _cmd_select,
    "report": _cmd_report,
    "leaderboard": _cmd_leaderboard,
    "audit": _cmd_audit,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ib-plugins`` console script.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input (the error is printed, without a traceback).

    Example:
        >>> main(["report", "/nonexistent-folder"])
        2
    """
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _COMMANDS[args.command](args)
    except (IBPluginsError, ValueError, TypeError, FileNotFoundError, FileExistsError, ImportError) as err:
        print(f"ib-plugins {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ib-plugins {args.command}: interrupted; rerun with --resume (train) to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
