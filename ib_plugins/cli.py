"""The ``ib-plugins`` command line: demo, train, evaluate, select-layers, report, leaderboard, audit.

Run ``ib-plugins COMMAND --help`` for each command's options. Every command writes a results
folder (``config.json``, ``metrics.json``, ``results.md``, PNG plots) and refuses to overwrite a
folder that holds a different run (or output files without a ``config.json`` of ours) unless
``--overwrite`` is given.

Bad input never shows a traceback: the command exits with status 2 and one line on stderr,
``ib-plugins COMMAND: error: MESSAGE``, naming the argument and what was expected (usage errors
that argparse finds add a pointer to ``--help`` on the same line). A traceback means a bug.

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
import math
import os
import re
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
    "device": "auto (CUDA when available, else cpu), cpu, cuda, cuda:N; config.json records the device used",
    "schedule": "learning-rate schedule, per epoch: step (StepLR), multistep (MultiStepLR at --milestones), "
                "cosine (CosineAnnealingLR to 0 over the epochs after the warm-up) or none",
    "milestones": "comma-separated epochs at whose end the multistep schedule multiplies the rate by --gamma, "
                  "counted from the start of training, e.g. 75,90",
    "warmup_epochs": "linear warm-up over N epochs (LinearLR + SequentialLR) before the schedule",
    "ema_decay": "keep an exponential moving average of the weights with decay D in (0, 1), e.g. 0.999, saved "
                 "as model_ema beside the raw weights (the decay warms up as min(D, (1+n)/(10+n)) after n steps)",
    "robust_val_every": "every K epochs (and at the last), PGD accuracy on a validation split held out of the "
                        "training images; keeps checkpoint_best.pt by robust accuracy",
    "val_size": "images held out of the training set for --robust-val-every (default: 10%%, at most 1000)",
    "tensorboard": "also log every epoch's metrics to this TensorBoard folder (needs the tensorboard package)",
}
# TrainConfig fields whose None means "off" (not "from the preset").
_TRAIN_OFF_BY_DEFAULT = ("warmup_epochs", "ema_decay", "robust_val_every", "tensorboard")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> Any:
        """Print ``PROG: error: MESSAGE (usage hint)`` on one line and exit with status 2."""
        usage = " ".join(self.format_usage().split())
        hint = f"{usage}; see '{self.prog} --help'" if len(usage) <= 80 else f"see '{self.prog} --help' for the usage"
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} ({hint})\n")


def _shown(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _count(minimum: int) -> Any:
    """Argparse type: an int >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not an int, or more digits than Python converts
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {_shown(text)}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {_shown(text)}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def _finite_float(text: str) -> float:
    """Argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _step_counts(text: str) -> str:
    """Argparse type: comma-separated ints >= 1, e.g. ``1,10,20`` (checked, kept as text)."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [int(t) for t in parts]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated ints >= 1 such as 1,10,20, got {text!r}")
    return text


def _names(text: str) -> str:
    """Argparse type: a comma-separated list with at least one name (kept as text)."""
    if not [t for t in text.split(",") if t.strip()]:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return text


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
        elif field.name in _TRAIN_OFF_BY_DEFAULT:
            default_text = "off"
        if field.name not in ("milestones", "val_size"):  # their text says it
            help_text += f" (default: {default_text if default_text is not None else 'from the preset'})"
        if is_bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=typ, default=None, help=help_text, metavar=field.name.upper())


def _read_json_file(path: str | Path, arg: str) -> Any:
    """Read a JSON file the user named; every failure is a ValueError naming ``arg`` and the file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{arg}: {p} does not exist (expected a JSON file)") from None
    except IsADirectoryError:
        raise ValueError(f"{arg}: expected a JSON file, got the folder {p}") from None
    except OSError as err:
        raise ValueError(f"{arg}: cannot read {p} ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{arg}: {p} is not a JSON file (byte {err.start} is not UTF-8 text)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{arg}: {p} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except RecursionError:
        raise ValueError(f"{arg}: {p} is nested too deeply to be read as JSON (expected a JSON object)") from None
    except ValueError as err:  # e.g. an integer literal with more digits than Python converts
        reason = " ".join(str(err).split(";")[0].split())
        raise ValueError(f"{arg}: {p} is not valid JSON ({reason})") from None


def _config_from_args(args: argparse.Namespace) -> Any:
    from ib_plugins.training import TrainConfig, _check_fields

    data: dict[str, Any] = {}
    if args.config:
        from_file = _read_json_file(args.config, "config")
        if not isinstance(from_file, dict):
            raise ValueError(
                f"config: {args.config} must hold a JSON object of TrainConfig fields, got a JSON "
                f"{_json_type(from_file)}"
            )
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        try:
            unknown = sorted(set(from_file) - names)
            if unknown:
                raise ValueError(
                    f"unknown training config keys: {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}"
                )
            _check_fields(from_file)
        except ValueError as err:
            raise ValueError(f"config: {args.config}: {err}") from None
        data.update(from_file)
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is None:
            continue
        if field.name == "ib_layers" and isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",") if v.strip()]
        data[field.name] = value
    return TrainConfig.from_dict(data)


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


_ENGINES = ("builtin", "torchattacks")
_ENGINE_HELP = ("attack engine: builtin (default; plain torch with torchattacks' semantics) or torchattacks (the "
                "upstream package, pip install 'ib-plugins[torchattacks]')")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ib-plugins``.

    Returns:
        The parser, one sub-command per task.

    Example:
        >>> build_parser().parse_args(["demo", "--epochs", "5"]).epochs
        5
    """
    parser = _Parser(prog="ib-plugins", description="Information-bottleneck defences: train, attack, report.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="CE vs IB-RAR on scikit-learn digits: train, attack, compare (~3 min on 2 CPU cores)")
    demo.add_argument("--out", default="ib-plugins-demo", help="results folder (default: ib-plugins-demo)")
    demo.add_argument("--epochs", type=_count(1), default=None, help="epochs per network (default: 20)")
    demo.add_argument("--eval-n", type=_count(1), default=None, help="attack-suite test images (default: all 450)")
    demo.add_argument("--autoattack-n", type=_count(0), default=100,
                      help="test images for the AutoAttack column (0: skip)")
    demo.add_argument("--seed", type=_count(0), default=0)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--overwrite", action="store_true", help="replace a results folder of a different run")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.add_argument("--engine", choices=_ENGINES, default="builtin", help=_ENGINE_HELP)

    train = sub.add_parser("train", help="train one configuration (every epoch checkpointed; --resume continues)")
    train.add_argument("--out", required=True, help="results folder")
    train.add_argument("--config", help="JSON file with TrainConfig fields (flags override it)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace a results folder of a different run")
    train.add_argument("--no-progress", action="store_true")
    _add_train_options(train)

    ev = sub.add_parser("evaluate", help="attack a checkpoint (or your own model: --model-factory) with the IB-RAR or "
                                         "entropic suite")
    ev.add_argument("checkpoint", nargs="?", default=None,
                    help="checkpoint.pt written by 'ib-plugins train'; or use --model-factory")
    ev.add_argument("--out", help="results folder (default: next to the checkpoint, or to the --weights file)")
    ev.add_argument("--suite", default="ibrar", help="ibrar (PGD, CW, FGSM, FAB, NIFGSM) or entropic")
    ev.add_argument("--budget", help="ibrar-code or paper (default: the suite's default)")
    ev.add_argument("--attacks", type=_names, help="comma-separated subset of the suite")
    ev.add_argument("--n", type=_count(1), help="evaluate on a stratified subset of N test images")
    ev.add_argument("--batch-size", type=_count(1), default=100)
    ev.add_argument("--seed", type=_count(0), default=0)
    ev.add_argument("--pgd-steps", type=_count(1))
    ev.add_argument("--cw-steps", type=_count(1))
    ev.add_argument("--steps-sweep", type=_step_counts,
                    help="also PGD accuracy at these step counts, e.g. 1,10,20,30,40,50 (Fig. 3)")
    ev.add_argument("--noise", action="store_true", help="also accuracy under random L2/Linf noise (entropic Tables V-VI)")
    ev.add_argument("--tendency", help="also the misclassification-tendency table of this attack (Table IV)")
    ev.add_argument("--tsne", help="also a t-SNE plot of this layer (Fig. 1)")
    ev.add_argument("--model", help="refuse a checkpoint of another model")
    ev.add_argument("--data-dir")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--overwrite", action="store_true")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--engine", choices=_ENGINES, default="builtin", help=_ENGINE_HELP)
    ev.add_argument("--ema", action="store_true",
                    help="evaluate the checkpoint's averaged weights (a run trained with --ema-decay)")
    ev.add_argument("--autoattack-n", type=_count(0), default=0,
                    help="also run standard AutoAttack (Linf, the suite's eps) on the first N evaluated images")
    from ib_plugins.audit import add_model_factory_arguments

    add_model_factory_arguments(ev)

    sel = sub.add_parser("select-layers", help="Table III procedure: IB on one layer at a time, PGD accuracy per layer")
    sel.add_argument("--dataset", default="digits")
    sel.add_argument("--model", default="digits-cnn")
    sel.add_argument("--candidates", type=_names, help="comma-separated layers (default: the model's hook points)")
    sel.add_argument("--epochs", type=_count(1), default=20)
    sel.add_argument("--batch-size", type=_count(1), default=50)
    sel.add_argument("--alpha", type=_finite_float, default=0.008)
    sel.add_argument("--beta", type=_finite_float, default=0.08)
    sel.add_argument("--eval-n", type=_count(1), help="PGD on a subset of N test images")
    sel.add_argument("--tolerance", type=_finite_float, default=0.01,
                     help="PGD-accuracy gain over CE needed for selection")
    sel.add_argument("--train-limit", type=_count(1))
    sel.add_argument("--out", default="select-layers")
    sel.add_argument("--seed", type=_count(0), default=0)
    sel.add_argument("--data-dir")
    sel.add_argument("--device", default="cpu")
    sel.add_argument("--overwrite", action="store_true")
    sel.add_argument("--no-progress", action="store_true")

    rep = sub.add_parser(
        "report",
        help="side-by-side markdown table of evaluation results folders; for training run folders (with "
             "history.json) a summary row and the information-plane plot (information_plane.png in the run folder)",
    )
    rep.add_argument("results", nargs="+", help="results folders: of 'ib-plugins evaluate' (with metrics.json) or "
                                                "of 'ib-plugins train' (with history.json)")
    rep.add_argument("--out", help="write the table(s) to this markdown file as well")

    audit = sub.add_parser("audit", help="gradient-masking checks and adaptive attacks on a checkpoint (report folder)")
    from ib_plugins.audit import add_audit_arguments

    add_audit_arguments(audit)

    lb = sub.add_parser("leaderboard", help="render RobustBench-style leaderboard.md/.html from model-info JSON files, "
                                            "or (--submission) RobustBench's new-model issue for one entry")
    lb.add_argument("results", nargs="*", help="model-info JSON files or folders holding them")
    lb.add_argument("--out", default=None,
                    help="folder for leaderboard.md and leaderboard.html (default: the current folder); with "
                         "--submission, the file to write the issue text to (default: print it)")
    lb.add_argument("--title", default="ib-plugins leaderboard")
    lb.add_argument("--submission", metavar="ENTRY.json", default=None,
                    help="print the text of RobustBench's 'New Model(s)' issue filled from this model-info file")

    rp = sub.add_parser("reproduce", help="a grid of train + evaluate cells (datasets x models x methods x +-IB-RAR x "
                                          "seeds) with a report of mean +- std and paired differences")
    rp.add_argument("grid", nargs="?", help="a built-in grid (see --list) or a JSON/YAML grid file")
    rp.add_argument("--out", help="the grid's folder (cells/, report.md/.json/.html)")
    rp.add_argument("--list", action="store_true", help="list the built-in grids and exit")
    rp.add_argument("--workers", type=_count(1), default=1, help="run cells in N processes (one GPU each when several)")
    rp.add_argument("--seeds", type=_count(1), help="use only the first N seeds of the grid")
    rp.add_argument("--cell", action="append", default=None, metavar="KEY",
                    help="run only this cell (repeatable; e.g. one per scheduler task)")
    rp.add_argument("--print-commands", action="store_true",
                    help="write each cell's config and print the plain train/evaluate commands instead of running")
    rp.add_argument("--report-only", action="store_true", help="only collect the finished cells into the report")
    rp.add_argument("--archive", metavar="DEST", default=None,
                    help="then copy the results without checkpoints (JSON, markdown) into DEST, a folder to commit "
                         "and diff; DEST is itself a grid folder (--report-only and resuming work from it)")
    rp.add_argument("--device", default="cpu")
    rp.add_argument("--data-dir")
    rp.add_argument("--no-progress", action="store_true")
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
    print(f"ib-plugins demo: training CE and IB-RAR on scikit-learn digits, then attacking both; results in {args.out}/",
          flush=True)  # before the progress lines on stderr, also when both go into one pipe
    metrics = run_demo(
        out_dir=args.out, epochs=args.epochs or DEMO_EPOCHS, seed=args.seed, eval_n=args.eval_n,
        autoattack_n=args.autoattack_n, overwrite=args.overwrite, device=args.device, progress=not args.no_progress,
        engine=args.engine,
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


def _steps(text: str | None) -> list[int] | None:
    return [int(t) for t in text.split(",") if t.strip()] if text else None


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ib_plugins.experiments import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint, model_factory=args.model_factory, weights=args.weights, factory_kwargs=args.factory_kwargs,
        dataset=args.dataset, out_dir=args.out, suite=args.suite, budget=args.budget, attacks=_csv(args.attacks),
        n=args.n, batch_size=args.batch_size, seed=args.seed, pgd_steps=args.pgd_steps, cw_steps=args.cw_steps,
        steps_sweep=_steps(args.steps_sweep), noise=args.noise, tendency=args.tendency, tsne_layer=args.tsne,
        expect_model=args.model, data_dir=args.data_dir, device=args.device, overwrite=args.overwrite,
        progress=not args.no_progress, engine=args.engine, autoattack_n=args.autoattack_n, ema=args.ema,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 wrote the results and reports them
        return 0
    out = Path(metrics["out_dir"])
    _print_table((out / "results.md").read_text(encoding="utf-8"))
    print()
    print(f"clean accuracy {100 * metrics['suite']['clean_accuracy']:.2f}% on {metrics['suite']['n']} images")
    for attack in metrics["suite"]["attacks"]:
        line = (f"  {attack['name']:<10} accuracy {100 * attack['accuracy']:6.2f}%   "
                f"success rate {100 * (attack['success_rate'] or 0):6.2f}%")
        if attack["eps"] is None:  # fixed-c CW or the corrected cw-l2: say what it is and how far it went
            median = attack.get("median_l2_success")
            line += f"   median L2 of successes {'-' if median is None else f'{median:.3g}'}   [{attack['description']}]"
        print(line)
    if "autoattack" in metrics:
        aa = metrics["autoattack"]
        print(f"  AutoAttack robust accuracy {100 * aa['robust_accuracy']:6.2f}% on the first {aa['n']} images")
    written = sorted(p.name for p in out.iterdir() if p.is_file())
    print(f"\nResults in {out}/: {', '.join(written)}")
    return 0


def _check_candidates(args: argparse.Namespace) -> None:
    """Unknown or repeated ``--candidates`` are refused before the CE-only network is trained."""
    from ib_plugins.data import get_dataset_info, list_datasets
    from ib_plugins.errors import UnknownLayerError
    from ib_plugins.layer_selection import resolve_layers
    from ib_plugins.models import create_model, list_models

    if args.dataset not in list_datasets() or args.model not in list_models():
        return  # select_robust_layers names the valid ones
    info = get_dataset_info(args.dataset)
    network = create_model(args.model, num_classes=info.num_classes, in_channels=info.in_channels)
    try:
        resolve_layers(network, _csv(args.candidates))
    except UnknownLayerError as err:
        raise UnknownLayerError(f"candidates: {err}") from None


def _cmd_select(args: argparse.Namespace) -> int:
    from ib_plugins.experiments import select_robust_layers

    if args.candidates:
        _check_candidates(args)

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


_EVALUATE = "'ib-plugins evaluate'"


def _report_rows(folder: str) -> tuple[float, dict[str, Any]]:
    """(clean accuracy, {attack name: AttackResult}) of one evaluation folder; bad files are a ValueError."""
    p = Path(folder)
    if not p.exists():
        raise FileNotFoundError(f"results: {folder} does not exist (expected a folder written by {_EVALUATE})")
    if not p.is_dir():
        raise ValueError(f"results: expected a folder written by 'ib-plugins evaluate', got the file {folder}")
    path = p / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"results: {folder} has no metrics.json (expected a folder written by {_EVALUATE}, or a training run "
            "folder with a history.json written by 'ib-plugins train')"
        )
    metrics = _read_json_file(path, "results")
    if not isinstance(metrics, dict) or "suite" not in metrics:
        raise ValueError(f"results: {path} holds no attack-suite results")
    try:
        suite = metrics["suite"]
        clean = float(suite["clean_accuracy"])
        accs = {a["name"]: _report_result(a, suite) for a in suite["attacks"]}
        if not math.isfinite(clean) or not all(isinstance(name, str) for name in accs):
            raise ValueError("a non-finite accuracy or a non-string attack name")
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError, IndexError) as err:
        reason = f"missing field {err}" if isinstance(err, KeyError) else " ".join(str(err).split())[:200]
        raise ValueError(
            f"results: {path} is not a metrics.json written by 'ib-plugins evaluate' ({reason})"
        ) from None
    return clean, accs


_TRAIN_FOLDER = "'ib-plugins train'"


def _is_training_folder(folder: str) -> bool:
    """A training run folder holds history.json (evaluation folders never do)."""
    return Path(folder).is_dir() and (Path(folder) / "history.json").is_file()


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _training_history(folder: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(history, metrics or {}) of a training run folder; a malformed history.json is a ValueError."""
    from ib_plugins.plots import information_plane_layers

    path = Path(folder) / "history.json"
    history = _read_json_file(path, "results")
    well_formed = (
        isinstance(history, list) and bool(history)
        and all(isinstance(h, dict) and isinstance(h.get("epoch"), int) and not isinstance(h["epoch"], bool)
                for h in history)
    )
    if not well_formed:
        raise ValueError(
            f"results: {path} is not a history.json written by {_TRAIN_FOLDER} (expected a non-empty list of "
            "per-epoch objects, each with an integer 'epoch')"
        )
    for name in information_plane_layers(history):
        for entry in history:
            for key in (f"hsic/{name}/x", f"hsic/{name}/y"):
                if key in entry and not _finite_number(entry[key]):
                    raise ValueError(f"results: {path}: epoch {entry['epoch']}'s {key!r} is not a finite number")
    metrics_path = Path(folder) / "metrics.json"
    metrics = _read_json_file(metrics_path, "results") if metrics_path.is_file() else {}
    return history, metrics if isinstance(metrics, dict) else {}


def _training_table(runs: list[tuple[str, list[dict[str, Any]], dict[str, Any], str]]) -> str:
    """A markdown row per training run: epochs, test accuracy, best robust validation, information plane."""
    from ib_plugins._markdown import md_cell

    def pct(value: Any) -> str:
        return f"{100 * value:.2f}" if _finite_number(value) else "-"

    lines = ["| training run | epochs | test acc | best robust val acc (epoch) | information plane |",
             "|---|---|---|---|---|"]
    for folder, history, metrics, plane in runs:
        last = history[-1]
        test = next((h["test_acc"] for h in reversed(history) if "test_acc" in h), None)
        key = next((k for k in ("val_robust_acc_ema", "val_robust_acc") if any(k in h for h in history)), None)
        best = "-"
        if key is not None:
            scored = [h for h in history if _finite_number(h.get(key))]
            if scored:
                top = max(scored, key=lambda h: h[key])  # the earliest on ties, as the trainer picks
                best = f"{pct(top[key])} ({top['epoch']}{', EMA' if key.endswith('_ema') else ''})"
        epochs = f"{last['epoch']}" + (f" of {metrics['epochs']}" if isinstance(metrics.get("epochs"), int)
                                        and metrics["epochs"] != last["epoch"] else "")
        lines.append(f"| {md_cell(folder)} | {epochs} | {pct(test)} | {best} | {md_cell(plane)} |")
    return "\n".join(lines) + "\n"


def _cmd_report(args: argparse.Namespace) -> int:
    rows = []
    runs: list[tuple[str, list[dict[str, Any]], dict[str, Any], str]] = []
    attack_names: list[str] = []
    specs: dict[str, Any] = {}
    for folder in args.results:
        if _is_training_folder(folder):
            history, metrics = _training_history(folder)
            runs.append((folder, history, metrics, "-"))
            continue
        clean, accs = _report_rows(folder)
        attack_names += [n for n in accs if n not in attack_names]
        specs.update({n: r.spec for n, r in accs.items() if n not in specs})
        rows.append((folder, clean, accs))
    from ib_plugins._markdown import md_cell
    from ib_plugins.evaluation import _accuracy_cell, _column_title, _fixed_c_note

    tables = []
    if rows:
        titles = [_column_title(n, specs[n]) for n in attack_names]
        lines = ["| run | Clean | " + " | ".join(titles) + " |", "|---|---|" + "---|" * len(attack_names)]
        for folder, clean, accs in rows:
            cells = [_accuracy_cell(accs[n]) if n in accs else "-" for n in attack_names]
            lines.append(f"| {md_cell(folder)} | {100 * clean:.2f} | " + " | ".join(cells) + " |")
        notes = _fixed_c_note([specs[n] for n in attack_names])
        tables.append("\n".join(lines + ([""] + notes if notes else [])) + "\n")
    if args.out and Path(args.out).is_dir():
        raise ValueError(f"out: expected a markdown file to write, got the folder {args.out}")
    if runs:
        from ib_plugins.plots import information_plane_layers, plot_information_plane

        for i, (folder, history, metrics, _) in enumerate(runs):
            if information_plane_layers(history):
                png = Path(folder) / "information_plane.png"
                config = _read_json_file(Path(folder) / "config.json", "results") if (
                    Path(folder) / "config.json").is_file() else {}
                title = ""
                if isinstance(config, dict) and isinstance(config.get("method"), str):
                    ib = " + IB" if config.get("ib") is True else ""
                    title = f"{config['method']}{ib} on {config.get('dataset')}"
                plot_information_plane(history, png, title=title)
                runs[i] = (folder, history, metrics, str(png))
            else:
                runs[i] = (folder, history, metrics, "- (no IB term: no hsic/<layer> values)")
        tables.append(_training_table(runs))
    table = "\n".join(tables)
    _print_table(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


def _leaderboard_files(paths: Sequence[str]) -> list[Path]:
    """The JSON files ``load_entries`` would read (folders searched recursively)."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise FileNotFoundError(f"results: {raw} does not exist (expected model-info JSON files or folders)")
        files += [f for f in sorted(p.rglob("*.json")) if f.is_file()] if p.is_dir() else [p]
    return files


def _cmd_submission(args: argparse.Namespace) -> int:
    """``leaderboard --submission ENTRY.json``: RobustBench's new-model issue, printed or written to --out."""
    from ib_plugins.leaderboard import LeaderboardEntry, robustbench_submission

    if args.results:
        raise ValueError(f"--submission: takes one model-info file and no results, got also {', '.join(args.results)}")
    path = Path(args.submission)
    if not path.exists():
        raise FileNotFoundError(f"--submission: {path} does not exist (expected a model-info JSON file)")
    if path.is_dir():
        raise ValueError(f"--submission: expected a model-info JSON file, got the folder {path}")
    data = _read_json_file(path, "--submission")
    if not isinstance(data, dict):
        raise ValueError(f"--submission: {path} must hold a model-info JSON object, got a JSON {_json_type(data)}")
    try:
        entry = LeaderboardEntry.from_json(path)
    except (RecursionError, OverflowError) as err:
        raise ValueError(f"--submission: {path}: a value cannot be represented ({type(err).__name__})") from None
    except ValueError as err:
        raise ValueError(f"--submission: {err}") from None
    text = robustbench_submission(entry)
    if args.out is None:
        print(text.rstrip())
        return 0
    out = Path(args.out)
    if out.is_dir():
        out = out / f"robustbench-new-model-{entry.model_name}.md"
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out: the folder {out.parent} does not exist")
    out.write_text(text, encoding="utf-8")
    print(f"Written: {out} (RobustBench's 'New Model(s)' issue for {entry.model_name}; review it, then paste it into "
          "https://github.com/RobustBench/robustbench/issues/new/choose)")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from ib_plugins.leaderboard import LeaderboardEntry, load_entries, render_leaderboard

    if args.submission is not None:
        return _cmd_submission(args)
    if not args.results:
        raise ValueError("results: expected model-info JSON files or folders holding them (or --submission ENTRY.json), "
                         "got none")
    if args.out is None:
        args.out = "."
    files = _leaderboard_files(args.results)
    for f in files:  # unreadable, non-UTF-8, not JSON, nested too deeply: named here, with the file
        _read_json_file(f, "results")
    unrepresentable = (RecursionError, OverflowError)
    try:
        entries = load_entries(args.results)
    except unrepresentable as err:
        for f in files:  # find the file, to name it
            try:
                LeaderboardEntry.from_json(f)
            except unrepresentable as file_err:
                raise ValueError(
                    f"results: {f}: a value cannot be represented ({type(file_err).__name__}: {file_err})"
                ) from None
            except (ValueError, OSError):
                continue
        raise ValueError(
            f"results: a model-info file holds a value that cannot be represented ({type(err).__name__}: {err})"
        ) from None
    if not entries:
        raise FileNotFoundError(f"results: no model-info JSON files found in {', '.join(args.results)}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out: expected a folder for leaderboard.md and leaderboard.html, got the file {out}")
    try:
        md_path, html_path = render_leaderboard(entries, args.out, title=args.title)
    except unrepresentable as err:
        raise ValueError(
            f"results: a model-info file holds a value that cannot be rendered ({type(err).__name__}: {err})"
        ) from None
    print(Path(md_path).read_text().rstrip())
    print(f"\nWritten: {md_path}, {html_path}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from ib_plugins import reproduce

    if args.list:
        for name in reproduce.list_grids():
            print(f"{name}: {reproduce.GRIDS[name]['description']}")
        return 0
    if not args.grid or not args.out:
        raise ValueError("grid, --out: expected a grid (a built-in name or a file) and --out DIR (see --list)")
    if args.archive is not None:
        if args.print_commands:
            raise ValueError("--archive: not with --print-commands, which runs nothing; after the printed commands, "
                             "run --report-only --archive DEST")
        reproduce._check_archive_dest(args.out, args.archive)  # before hours of work, not after
    if args.print_commands:
        print(reproduce.print_commands(args.grid, out_dir=args.out, seeds=args.seeds, device=args.device,
                                       data_dir=args.data_dir), end="")
        return 0
    if args.report_only:
        report = reproduce.build_report(args.out, args.grid)
    else:
        report = reproduce.run_grid(args.grid, out_dir=args.out, workers=args.workers, seeds=args.seeds,
                                    device=args.device, data_dir=args.data_dir, only=args.cell,
                                    progress=not args.no_progress)
    print((Path(args.out) / "report.md").read_text(encoding="utf-8").rstrip())
    print(f"\nReport: {Path(args.out) / 'report.md'}, report.json, report.html"
          + (f"; {len(report['missing'])} cell(s) missing" if report["missing"] else ""))
    if args.archive is not None:
        files = reproduce.archive_grid(args.out, args.archive)
        print(f"Archived {len(files)} files (no checkpoints) into {args.archive}")
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
    "reproduce": _cmd_reproduce,
}


# Commands with a --device option: checked before anything runs, so that a bad name never reaches torch.
_DEVICE_COMMANDS = ("demo", "evaluate", "select-layers", "audit", "reproduce")


def _check_args(args: argparse.Namespace) -> None:
    """Checks of parsed arguments that argparse cannot express (before the command runs)."""
    if args.command in _DEVICE_COMMANDS:
        from ib_plugins.training import _device

        _device(args.device)
    if args.command == "train" and args.resume and args.overwrite:
        raise ValueError(
            "--resume, --overwrite: expected at most one of them (--resume continues the run in --out, "
            "--overwrite replaces it), got both"
        )
    if args.command == "audit" and args.surrogate_epochs is not None and args.surrogate_epochs < 1:
        raise ValueError(f"--surrogate-epochs: expected an int >= 1, got {args.surrogate_epochs}")


def _one_line(err: BaseException) -> str:
    """The message of a user error, on one line (OSErrors as 'reason: path')."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        text = f"{err.strerror}: {err.filename}" + (f" -> {err.filename2}" if err.filename2 is not None else "")
    else:
        text = str(err) or type(err).__name__
    return re.sub(r"\s*\n\s*", " ", text).strip()


def _interrupted(args: argparse.Namespace) -> str:
    """What is true after Ctrl-C, and how to go on."""
    if args.command == "train":
        if (Path(args.out) / "checkpoint.pt").is_file():
            return f"interrupted; rerun with --resume to continue from the last checkpoint in {args.out}"
        return (
            "interrupted before the first epoch ended, so no checkpoint was written yet; rerun the same command "
            "without --resume to start from scratch"
        )
    if args.command in ("demo", "select-layers", "reproduce"):
        return "interrupted; rerun the same command to continue (finished networks are reused, others resume)"
    return "interrupted; nothing was finished: rerun the same command to start again"


# Exceptions that mean bad input (files, names, values, the environment), not a bug: one line,
# exit status 2. Everything else is a bug and keeps its traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (
    IBPluginsError, ValueError, TypeError, OSError, ImportError, FloatingPointError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ib-plugins`` console script.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 on bad input (one line ``ib-plugins COMMAND: error: ...``
        on stderr, without a traceback), 130 when interrupted (Ctrl-C).

    Raises:
        SystemExit: ``--help`` (status 0) and usage errors found by argparse (status 2, one line
            on stderr).

    Example:
        >>> main(["report", "/nonexistent-folder"])
        2
    """
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        _check_args(args)
        return _COMMANDS[args.command](args)
    except _USER_ERRORS as err:
        print(f"ib-plugins {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ib-plugins {args.command}: {_interrupted(args)}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
