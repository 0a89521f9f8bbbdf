"""RobustBench-compatible evaluation: leaderboard files without robustbench, and a scoped shim for it.

Two ways to get RobustBench-style results for a (wrapped) model:

* :func:`evaluate_for_leaderboard` (recommended) needs only an AutoAttack package: it takes tensors
  (or loads a test set with :func:`ib_plugins.data.load_dataset`), computes clean and AutoAttack
  accuracy exactly as ``robustbench.eval.benchmark`` does (standard AutoAttack, worst case over
  its attacks, eval-mode predictions on the adversarial examples), optionally adds the papers'
  torchattacks suite (:mod:`ib_plugins.evaluation`), and writes
  ``model_info/<dataset>/<threat_model>/<model_name>.json`` in RobustBench's schema (see
  :mod:`ib_plugins.leaderboard`).
* :func:`robustbench_compat` makes ``robustbench.eval.benchmark`` itself usable. RobustBench 1.1.1
  imports the module ``autoattack`` and calls the original AutoAttack API, but its PyPI metadata
  installs ``pyautoattack``, whose API differs (``attacks=``, ``batch_size=``, no ``log_path``, a
  tuple return), so ``import robustbench`` fails and a plain ``sys.modules`` alias only moves the
  failure into ``benchmark``. Inside the context manager an API adapter
  (:class:`~ib_plugins.adapters.autoattack_eval.AutoAttackCompat`) stands in for ``autoattack``;
  on exit every alias and every robustbench module imported through it is removed again, and
  anything replaced is put back. With the original ``autoattack`` installed it changes nothing.

Example:
    >>> import torch, torch.nn as nn, tempfile
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> entry = evaluate_for_leaderboard(
    ...     net, x, y, dataset="toy", eps=0.05, model_name="toy_linear", batch_size=4, out_dir=tempfile.mkdtemp(),
    ...     version="custom", attacks=["apgd-ce"], attack_options={"apgd": {"n_iter": 5}}, progress=False)
    >>> entry.path.relative_to(entry.path.parents[3]).as_posix(), float(entry.autoattack_acc) <= float(entry.clean_acc)
    ('model_info/toy/Linf/toy_linear.json', True)
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import sys
import threading
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._context import _inference_modes
from ib_plugins._optional import require
from ib_plugins._types import PathLike
from ib_plugins.adapters.autoattack_eval import AutoAttackCompat, _is_upstream_api, model_fingerprint, run_autoattack
from ib_plugins.errors import IBPluginsError, MissingOptionalDependencyError
from ib_plugins.leaderboard import LeaderboardEntry, _eps_value
from ib_plugins.training import RunExistsError
from ib_plugins.wrap import IBModel

__all__ = [
    "LEADERBOARD_THREAT_MODELS",
    "TESTED_ROBUSTBENCH",
    "RobustBenchImportError",
    "robustbench_compat",
    "evaluate_for_leaderboard",
]

logger = logging.getLogger(__name__)

_PURPOSE = "ib_plugins.adapters.robustbench_eval"

#: Threat models :func:`evaluate_for_leaderboard` evaluates.
LEADERBOARD_THREAT_MODELS: tuple[str, ...] = ("Linf", "L2")
#: The robustbench release the compatibility layer was written and tested against.
TESTED_ROBUSTBENCH = "1.1.1"
_TESTED_PREFIX = "1.1."

#: ModelInfo fields (and extras) that ``metadata`` may set.
_METADATA_KEYS: tuple[str, ...] = (
    "link",
    "name",
    "authors",
    "additional_data",
    "number_forward_passes",
    "venue",
    "architecture",
    "reported",
    "footnote",
    "unreliable",
    "external",
)

_ALTERNATIVE = (
    "To evaluate without robustbench, use ib_plugins.adapters.robustbench_eval.evaluate_for_leaderboard("
    "model, x, y, dataset=..., eps=..., model_name=...), which runs the same AutoAttack evaluation and writes "
    "the same model_info JSON."
)


class RobustBenchImportError(IBPluginsError, RuntimeError):
    """robustbench is installed but importing it failed for a reason other than a missing module.

    Example:
        >>> issubclass(RobustBenchImportError, RuntimeError)
        True
    """


# --------------------------------------------------------------------------------------------------
# The scoped compatibility layer
# --------------------------------------------------------------------------------------------------

_LOCK = threading.RLock()
_DEPTH = 0
_ACTIVE: types.ModuleType | None = None
_MISSING = object()


def _is_robustbench_module(name: str) -> bool:
    return name == "robustbench" or name.startswith("robustbench.")


def _robustbench_version() -> str | None:
    try:
        return importlib.metadata.version("robustbench")
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_version() -> None:
    version = _robustbench_version()
    if version is not None and not version.startswith(_TESTED_PREFIX):
        warnings.warn(
            f"robustbench {version} is outside the range this compatibility layer was tested with "
            f"(1.1.x, tested with robustbench {TESTED_ROBUSTBENCH}); benchmark() may call AutoAttack differently",
            UserWarning,
            stacklevel=4,
        )


def _import_failure(err: BaseException) -> Exception:
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, ImportError):
        missing = getattr(err, "name", None) or ""
        hint = ""
        if missing == "pkg_resources" or "pkg_resources" in str(err):
            hint = (
                " robustbench 1.1.1 imports pkg_resources, which setuptools >= 81 no longer ships: "
                "pip install 'setuptools<81'."
            )
        elif missing == "robustbench" or "robustbench" == missing.split(".")[0]:
            hint = " Install it with: pip install 'ib-plugins[robustbench]'."
        elif missing:
            hint = f" robustbench needs the module {missing!r}; install it (pip install 'ib-plugins[robustbench]')."
        return MissingOptionalDependencyError(
            f"robustbench could not be imported ({text}), so robustbench.eval.benchmark is unavailable.{hint} "
            + _ALTERNATIVE
        )
    return RobustBenchImportError(
        f"robustbench could not be imported ({text}), so robustbench.eval.benchmark is unavailable. " + _ALTERNATIVE
    )


def _upstream_autoattack() -> types.ModuleType | None:
    """The original ``autoattack`` module when importable with its keyword API, else None."""
    current = sys.modules.get("autoattack", _MISSING)
    if current is None:
        return None
    if current is not _MISSING:
        return current if isinstance(current, types.ModuleType) and _is_upstream_api(current) else None
    try:
        if importlib.util.find_spec("autoattack") is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        module = importlib.import_module("autoattack")
    except Exception:  # a broken install: fall back to the adapter
        sys.modules.pop("autoattack", None)
        return None
    return module if _is_upstream_api(module) else None


def _import_robustbench() -> types.ModuleType:
    try:
        if importlib.util.find_spec("robustbench") is None:
            raise ImportError("No module named 'robustbench'", name="robustbench")
    except ValueError as err:  # a broken entry in sys.modules
        raise ImportError(str(err), name="robustbench") from err
    try:
        return importlib.import_module("robustbench")
    except Exception as err:
        raise _import_failure(err) from err


def _make_shim() -> tuple[types.ModuleType, types.ModuleType]:
    """The ``autoattack`` / ``autoattack.state`` stand-ins (API adapter, pyautoattack's state class)."""
    pyaa = require("pyautoattack", purpose=f"{_PURPOSE}.robustbench_compat")
    state_mod = importlib.import_module("pyautoattack.state")
    shim = types.ModuleType("autoattack", "ib_plugins' AutoAttack API adapter over pyautoattack (temporary).")
    shim.AutoAttack = AutoAttackCompat  # type: ignore[attr-defined]
    shim.__version__ = getattr(pyaa, "__version__", "unknown")  # type: ignore[attr-defined]
    shim.__ib_plugins_shim__ = True  # type: ignore[attr-defined]
    shim_state = types.ModuleType("autoattack.state", "pyautoattack.state (temporary alias).")
    shim_state.EvaluationState = state_mod.EvaluationState  # type: ignore[attr-defined]
    shim.state = shim_state  # type: ignore[attr-defined]
    return shim, shim_state


@contextlib.contextmanager
def robustbench_compat() -> Iterator[types.ModuleType]:
    """Make ``import robustbench`` and ``robustbench.eval.benchmark`` work, for the ``with`` block only.

    * When the original ``autoattack`` (github.com/fra31/auto-attack) is importable, robustbench
      works as is: it is imported and yielded, nothing else happens.
    * Otherwise (pyautoattack only), while the block runs:

      - ``sys.modules["autoattack"]`` is a small module whose ``AutoAttack`` is
        :class:`~ib_plugins.adapters.autoattack_eval.AutoAttackCompat` (``attacks_to_run`` →
        ``attacks``, ``bs`` → ``batch_size``, ``log_path``/``verbose`` dropped, ``x_adv`` returned;
        the global RNG is left alone) and ``sys.modules["autoattack.state"]`` holds pyautoattack's
        ``EvaluationState``;
      - robustbench is imported through them (stale ``robustbench.*`` modules of an earlier failed
        import are set aside first, so the package is complete);
      - if robustbench was already imported (e.g. through someone's plain alias),
        ``robustbench.eval.AutoAttack`` is re-bound to the adapter.

      On exit (also after an exception) the ``autoattack`` / ``autoattack.state`` entries are
      removed or restored to what they were, every ``robustbench*`` module imported inside is
      removed and the set-aside ones are put back, and ``robustbench.eval.AutoAttack`` gets its old
      value: ``import robustbench`` outside behaves as before. Module objects you kept a
      reference to still work (they hold the adapter class).

    ``benchmark(..., aa_state_path=...)`` is not supported (robustbench 1.1.1 crashes on it and
    AutoAttack's resume is broken); use :func:`~ib_plugins.adapters.autoattack_eval.run_autoattack`
    with ``state_dir``. Nested ``with`` blocks share one layer. ``sys.modules`` is process-wide:
    other threads importing ``autoattack`` meanwhile see the adapter.

    Yields:
        The ``robustbench`` module.

    Raises:
        MissingOptionalDependencyError: robustbench or pyautoattack is not installed, or importing
            robustbench failed on a missing module (e.g. ``pkg_resources`` with setuptools >= 81);
            the message says why and points to :func:`evaluate_for_leaderboard`.
        RobustBenchImportError: importing robustbench failed otherwise.

    Warns:
        UserWarning: the installed robustbench is not a 1.1.x release.

    Example:
        >>> import sys
        >>> with robustbench_compat() as rb:
        ...     callable(rb.eval.benchmark), rb.eval.AutoAttack.__name__ in ("AutoAttack", "AutoAttackCompat")
        (True, True)

        Call ``rb.eval.benchmark(model, dataset="cifar10", threat_model="Linf", eps=8/255)``
        inside the block. Afterwards (pyautoattack only) ``sys.modules`` holds the same
        ``autoattack`` / ``robustbench`` entries as before the block.
    """
    global _DEPTH, _ACTIVE
    with _LOCK:
        if _DEPTH > 0 and _ACTIVE is not None:
            _DEPTH += 1
            try:
                yield _ACTIVE
            finally:
                _DEPTH -= 1
            return
        if importlib.util.find_spec("robustbench") is None:
            raise MissingOptionalDependencyError(
                "robustbench is not installed, so robustbench.eval.benchmark is unavailable. Install it with: "
                "pip install 'ib-plugins[robustbench]'. " + _ALTERNATIVE
            )
        _check_version()
        if _upstream_autoattack() is not None:
            try:
                rb = importlib.import_module("robustbench")
            except Exception as err:
                raise _import_failure(err) from err
            _DEPTH, _ACTIVE = 1, rb
            try:
                yield rb
            finally:
                _DEPTH, _ACTIVE = 0, None
            return

        shim, shim_state = _make_shim()
        saved_aliases = {name: sys.modules.get(name, _MISSING) for name in ("autoattack", "autoattack.state")}
        preloaded = sys.modules.get("robustbench")
        set_aside: dict[str, Any] = {}
        rebound: tuple[Any, Any] | None = None
        before: set[str] = set()
        try:
            sys.modules["autoattack"] = shim
            sys.modules["autoattack.state"] = shim_state
            if preloaded is not None:
                rb = preloaded
                eval_mod = sys.modules.get("robustbench.eval") or importlib.import_module("robustbench.eval")
                rebound = (eval_mod, eval_mod.__dict__.get("AutoAttack", _MISSING))
                eval_mod.AutoAttack = AutoAttackCompat  # type: ignore[attr-defined]
            else:
                for name in [n for n in sys.modules if _is_robustbench_module(n)]:
                    set_aside[name] = sys.modules.pop(name)
                before = set(sys.modules)
                try:
                    with warnings.catch_warnings():
                        # a second import re-registers robustbench's timm models
                        warnings.filterwarnings("ignore", message=r"Overwriting .* in registry", category=UserWarning)
                        rb = importlib.import_module("robustbench")
                except Exception as err:
                    raise _import_failure(err) from err
            _DEPTH, _ACTIVE = 1, rb
            yield rb
        finally:
            _DEPTH, _ACTIVE = 0, None
            if rebound is not None:
                eval_mod, old = rebound
                if old is _MISSING:
                    eval_mod.__dict__.pop("AutoAttack", None)
                else:
                    eval_mod.AutoAttack = old
            if preloaded is None:
                for name in [n for n in sys.modules if _is_robustbench_module(n) and n not in before]:
                    del sys.modules[name]
                sys.modules.update(set_aside)
            for name, old in saved_aliases.items():
                if old is _MISSING:
                    if sys.modules.get(name) is (shim if name == "autoattack" else shim_state):
                        del sys.modules[name]
                else:
                    sys.modules[name] = old


# --------------------------------------------------------------------------------------------------
# Leaderboard evaluation
# --------------------------------------------------------------------------------------------------


def _check_threat_model(threat_model: object) -> str:
    value = getattr(threat_model, "value", threat_model)  # robustbench's ThreatModel enum
    if isinstance(value, str):
        for t in LEADERBOARD_THREAT_MODELS:
            if value.lower() == t.lower():
                return t
        if value.lower() in ("corruptions", "corruptions_3d"):
            raise ValueError(
                f"threat_model: {value!r} (common corruptions) is not supported by evaluate_for_leaderboard, "
                "which runs AutoAttack; expected one of 'Linf', 'L2' (for corruptions use robustbench.eval.benchmark "
                "inside robustbench_compat() with the CIFAR-10-C data)"
            )
    raise ValueError(f"threat_model: expected one of 'Linf', 'L2', got {threat_model!r}")


def _check_name(value: object, arg: str) -> str:
    value = getattr(value, "value", value)  # robustbench's BenchmarkDataset enum
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{arg}: expected a non-empty string, got {value!r}")
    if any(c in value for c in "/\\\0") or value in (".", "..") or value != value.strip():
        raise ValueError(f"{arg}: expected a name usable as a file name (no path separators), got {value!r}")
    return value


def _check_metadata(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata: expected a dict of model-info fields, got {type(metadata).__name__}")
    unknown = sorted(set(metadata) - set(_METADATA_KEYS))
    if unknown:
        raise ValueError(f"metadata: unknown key(s) {unknown}; expected keys among {', '.join(_METADATA_KEYS)}")
    return dict(metadata)


def _find_ib_config(model: nn.Module) -> dict[str, Any] | None:
    for m in model.modules():
        if isinstance(m, IBModel):
            return m.ib_config()
    return None


def _architecture(model: nn.Module) -> str:
    inner = model.model if isinstance(model, IBModel) else model
    name = type(inner).__name__
    return f"{name} + IB-RAR" if isinstance(model, IBModel) else name


def _load_test_set(dataset: str, data_dir: PathLike | None, n_examples: int | None) -> tuple[Tensor, Tensor]:
    from ib_plugins.data import load_dataset

    ds = load_dataset(dataset, split="test", data_dir=data_dir)
    tensors = getattr(ds, "tensors", None)
    if tensors is not None:
        x, y = tensors[0], tensors[1]
    else:
        n = len(ds) if n_examples is None else min(n_examples, len(ds))  # type: ignore[arg-type]
        items = [ds[i] for i in range(n)]
        x = torch.stack([item[0] for item in items])
        y = torch.tensor([int(item[1]) for item in items])
    return x, y


def _read_existing(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"out_dir: the existing model-info file {path} is not JSON ({err}); move it away") from err
    if not isinstance(data, dict):
        raise ValueError(f"out_dir: the existing model-info file {path} is not a JSON object; move it away")
    return data


def _percent(value: float) -> str:
    return str(round(value * 100, 2))


def _recorded_eps(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return _eps_value(value)
    except (ValueError, ZeroDivisionError):
        return None


def _recorded_n(data: Mapping[str, Any]) -> int | None:
    n = data.get("n")
    if n is None and isinstance(data.get("ib_plugins"), Mapping):
        n = data["ib_plugins"].get("n_examples")
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def _differences(existing: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What makes the evaluation ``new`` another one than the file's ``existing`` (fields it records).

    Compared: the model (its weights' SHA-256 when both record it, else the architecture), eps,
    n and dataset. A field the existing file does not record (e.g. ``n`` in RobustBench's files, or
    a hand-written file holding only ``link`` and ``authors``) is not compared.
    """
    out: list[str] = []
    ib = existing.get("ib_plugins") if isinstance(existing.get("ib_plugins"), Mapping) else {}
    old_sha = ib.get("model_sha256")
    if isinstance(old_sha, str) and old_sha:
        if old_sha != new["model_sha256"]:
            out.append(f"model (weights sha256 {old_sha[:12]}... in the file, {new['model_sha256'][:12]}... now)")
    elif existing.get("architecture") is not None and existing.get("architecture") != new["architecture"]:
        out.append(f"model (architecture {existing['architecture']!r} in the file, {new['architecture']!r} now)")
    if existing.get("eps") is not None:
        old_eps = _recorded_eps(existing["eps"])
        if old_eps is None or not math.isclose(old_eps, new["eps"], rel_tol=1e-9, abs_tol=1e-12):
            out.append(f"eps ({existing['eps']!r} in the file, {new['eps']!r} now)")
    old_n = _recorded_n(existing)
    if old_n is not None and old_n != new["n"]:
        out.append(f"n ({old_n} examples in the file, {new['n']} now)")
    if existing.get("dataset") is not None and existing.get("dataset") != new["dataset"]:
        out.append(f"dataset ({existing['dataset']!r} in the file, {new['dataset']!r} now)")
    return out


def _check_external(
    external: object, *, threat: str, eps: float, dataset: str, meta: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, list[str]]:
    """``external=`` as ``({"accuracy", "source", ...}, masking warnings)``; validated before any attack runs."""
    if external is None:
        return None, []
    if "external" in meta:
        raise ValueError("external, metadata['external']: expected at most one of them, got both")
    from ib_plugins.audit import AuditReport

    if isinstance(external, AuditReport):
        acc = external.robust_accuracy
        if acc is None:
            raise ValueError("external: the audit report has no robust accuracy (no attack ran at its main eps)")
        numbers = external.numbers
        if threat != "Linf":
            raise ValueError(f"external: the audit attacks in L-inf, but this entry's threat model is {threat!r}")
        audit_eps = numbers.get("eps")
        if isinstance(audit_eps, (int, float)) and not math.isclose(float(audit_eps), eps, rel_tol=1e-6, abs_tol=1e-12):
            raise ValueError(f"external: the audit ran at eps={float(audit_eps):g}, this entry is at eps={eps:g}; "
                             "audit at the entry's eps (ib-plugins audit --eps)")
        audit_dataset = external.config.get("dataset")
        if isinstance(audit_dataset, str) and audit_dataset != dataset:
            raise ValueError(f"external: the audit ran on dataset {audit_dataset!r}, this entry is on {dataset!r}")
        worst = numbers.get("worst_case") or {}
        n_attacks = len(worst.get("attacks") or [])
        info = {
            "accuracy": float(acc),
            "source": f"ib-plugins audit: worst case per example over {n_attacks} attacks at eps={eps:g}"
                      + (f" on {numbers['n']} examples" if isinstance(numbers.get("n"), int) else ""),
            "kind": "audit",
            "n": numbers.get("n"),
            "eps": audit_eps,
            "verdict": external.verdict,
            "masking_warnings": list(external.masking_warnings),
            "weak_attack_warnings": list(external.weak_attack_warnings),
            "report": str(external.out_dir) if external.out_dir is not None else None,
        }
        return info, list(external.masking_warnings)
    if isinstance(external, Mapping):
        acc, source = external.get("accuracy"), external.get("source")
        unknown = sorted(set(external) - {"accuracy", "source"})
        if unknown:
            raise ValueError(f"external: unknown key(s) {unknown}; expected 'accuracy' and 'source'")
    elif isinstance(external, (tuple, list)) and len(external) == 2:
        acc, source = external
    else:
        raise TypeError(
            "external: expected an AuditReport, an (accuracy, source) pair such as (0.42, 'PGD-100 with 10 restarts') "
            f"or a dict with 'accuracy' and 'source', got {type(external).__name__}"
        )
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0.0 <= float(acc) <= 1.0:
        raise ValueError(f"external: expected the robust accuracy as a fraction in [0, 1], got {acc!r}")
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"external: expected where the accuracy comes from (a non-empty string), got {source!r}")
    return {"accuracy": float(acc), "source": source.strip(), "kind": "given"}, []


def evaluate_for_leaderboard(
    model: nn.Module,
    x: Tensor | None = None,
    y: Tensor | None = None,
    *,
    dataset: str,
    threat_model: str = "Linf",
    eps: float,
    model_name: str,
    n_examples: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    attack_suite: Sequence[str] | None = None,
    suite: str = "ibrar",
    suite_options: Mapping[str, Any] | None = None,
    out_dir: PathLike | None = None,
    ib_config: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    data_dir: PathLike | None = None,
    version: str = "standard",
    attacks: Sequence[str] | None = None,
    attack_options: Mapping[str, Mapping[str, Any]] | None = None,
    state_dir: PathLike | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    external: Any = None,
) -> LeaderboardEntry:
    """Clean and AutoAttack accuracy in RobustBench's format, optionally written as a model-info file.

    Runs :func:`~ib_plugins.adapters.autoattack_eval.run_autoattack` (standard AutoAttack by
    default, as ``robustbench.eval.benchmark``) on the first ``n_examples`` examples, then, when
    ``attack_suite`` names attacks, the papers' torchattacks suite
    (:func:`ib_plugins.evaluation.build_suite` / :func:`~ib_plugins.evaluation.evaluate_suite`).
    With ``out_dir`` the entry is written to
    ``out_dir/model_info/<dataset>/<threat_model>/<model_name>.json``. An existing file there of
    the *same* evaluation is merged like RobustBench's ``update_json`` does (fields not set now,
    such as a hand-written ``link``, are kept). One of a different evaluation is refused before
    anything runs, with a message naming the differing fields, unless ``overwrite=True`` (then it
    is replaced, nothing of it kept): a different model (the weights' SHA-256, recorded as
    ``ib_plugins.model_sha256``; for files without it, the architecture), ``eps``, ``n`` or
    dataset. Fields the existing file does not record are not compared.

    The file holds every RobustBench ``ModelInfo`` field (accuracies as percentage strings,
    ``str(round(acc * 100, 2))``), ``n`` (the number of evaluated examples), ``unreliable`` (True
    when AutoAttack's own checks flagged the model, e.g. as randomised, unless ``metadata`` says
    otherwise), and an ``ib_plugins`` object: ``ib_config`` (given, or read from the
    :class:`~ib_plugins.wrap.IBModel` inside ``model``), the SHA-256 of the model's weights, the
    AutoAttack settings and counts, and the suite results.

    Args:
        model: the classifier (inputs in ``[0, 1]``, logits out), e.g. an ``IBModel``.
        x: test inputs ``[N, ...]`` in ``[0, 1]``; None with ``y`` None = load the test split of
            ``dataset`` with :func:`ib_plugins.data.load_dataset` from ``data_dir``.
        y: test labels ``[N]``.
        dataset: dataset name (the folder in ``model_info/``), e.g. ``"cifar10"``.
        threat_model: ``"Linf"`` or ``"L2"``.
        eps: the radius, e.g. ``8/255`` (Linf) or ``0.5`` (L2).
        model_name: the model ID (the file name).
        n_examples: evaluate the first ``n_examples`` examples (RobustBench's convention); None =
            all.
        batch_size: examples per AutoAttack chunk / forward.
        seed: seed of the attacks (the caller's RNG state is unchanged).
        attack_suite: attack names of ``suite`` to run as well (e.g. ``["pgd", "fgsm"]``); None =
            none.
        suite: ``"ibrar"`` or ``"entropic"`` (see :func:`ib_plugins.evaluation.list_suites`).
        suite_options: more keywords for :func:`ib_plugins.evaluation.build_suite` (``budget``,
            ``pgd_steps``...).
        out_dir: where to write ``model_info/...``; None = write nothing.
        ib_config: the IB settings to record; None = ``model``'s own if it contains an IBModel.
        metadata: model-info fields: ``link, name, authors, additional_data,
            number_forward_passes, venue, architecture, reported, footnote, unreliable, external``.
        data_dir: folder of the test set when ``x``/``y`` are None.
        version: AutoAttack version (``"standard"`` for leaderboard numbers).
        attacks: attacks for ``version="custom"``.
        attack_options: sub-attack settings, see :func:`~ib_plugins.adapters.autoattack_eval.run_autoattack`.
        state_dir: per-chunk resume files for AutoAttack.
        device: where to run; None = the model's device.
        progress: show progress bars.
        overwrite: replace an existing model-info file of a different evaluation (another model,
            eps, n or dataset) instead of refusing.
        external: an evaluation beside AutoAttack, for RobustBench's ``external`` field (the best
            known robust accuracy, the lower of it and AutoAttack's): an
            :class:`~ib_plugins.audit.AuditReport` of the same model (its worst-case accuracy over
            every attack at the entry's eps, :attr:`~ib_plugins.audit.AuditReport.robust_accuracy`;
            L∞ only, same eps; its masking indicators, and only those, mark the entry ``unreliable``,
            not its weak-attack findings), or an ``(accuracy, source)`` pair / ``{"accuracy",
            "source"}`` dict with the accuracy as a fraction and where it comes from. Recorded in
            ``ib_plugins.external``.

    Returns:
        The :class:`~ib_plugins.leaderboard.LeaderboardEntry` (``path`` set when written).

    Raises:
        ValueError: unknown threat model (the message lists 'Linf', 'L2' and says corruptions are
            not supported), bad ``eps``/``n_examples``/names/metadata, inputs outside ``[0, 1]``,
            only one of ``x``/``y``, or an existing unreadable model-info file.
        RunExistsError: (a ``FileExistsError``) the model-info file exists and holds a different
            evaluation, and ``overwrite`` is False; raised before any attack runs.
        MissingOptionalDependencyError: no AutoAttack package (or torchattacks for the suite).

    Example:
        >>> import torch.nn as nn
        >>> try:
        ...     evaluate_for_leaderboard(nn.Linear(2, 2), dataset="cifar10", threat_model="corruptions",
        ...                              eps=0.1, model_name="m")
        ... except ValueError as err:
        ...     print(str(err)[:65])
        threat_model: 'corruptions' (common corruptions) is not supported
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    threat = _check_threat_model(threat_model)
    dataset = _check_name(dataset, "dataset")
    model_name = _check_name(model_name, "model_name")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(float(eps)) or eps <= 0:
        raise ValueError(f"eps: expected a finite radius > 0, got {eps!r}")
    eps = float(eps)
    if n_examples is not None and (isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1):
        raise ValueError(f"n_examples: expected an int >= 1 or None, got {n_examples!r}")
    meta = _check_metadata(metadata)
    external_info, masking = _check_external(external, threat=threat, eps=eps, dataset=dataset, meta=meta)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite: expected True or False, got {type(overwrite).__name__}")
    if ib_config is not None and not isinstance(ib_config, Mapping):
        raise TypeError(f"ib_config: expected a dict or None, got {type(ib_config).__name__}")
    if attack_suite is not None:
        if isinstance(attack_suite, str):
            attack_suite = [attack_suite]
        attack_suite = list(attack_suite)
        if not attack_suite:
            attack_suite = None
    if suite_options is not None and not isinstance(suite_options, Mapping):
        raise TypeError(f"suite_options: expected a dict or None, got {type(suite_options).__name__}")
    if (x is None) != (y is None):
        raise ValueError("x, y: expected both tensors, or both None to load the test set of `dataset`")
    source = "tensors"
    if x is None:
        x, y = _load_test_set(dataset, data_dir, n_examples)
        source = "ib_plugins.data.load_dataset(split='test')"
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"x, y: expected torch.Tensors, got {type(x).__name__} and {type(y).__name__}")
    if n_examples is not None:
        if n_examples > x.shape[0]:
            raise ValueError(f"n_examples: expected <= {x.shape[0]} (the number of examples given), got {n_examples}")
        x, y = x[:n_examples], y[:n_examples]

    target: Path | None = None
    existing: dict[str, Any] | None = None
    architecture = meta.get("architecture", _architecture(model))
    weights_sha256 = model_fingerprint(model)
    if out_dir is not None:
        folder = Path(out_dir) / "model_info" / dataset / threat
        target = folder / f"{model_name}.json"
        existing = _read_existing(target)
    if existing is not None:
        differing = _differences(existing, {"model_sha256": weights_sha256, "architecture": architecture, "eps": eps,
                                            "n": int(x.shape[0]), "dataset": dataset})
        if differing and not overwrite:
            raise RunExistsError(
                f"out_dir: {target} already holds the entry of a different evaluation, which would be merged with "
                f"this one; it differs in: {'; '.join(differing)}. Pass overwrite=True (ib-plugins demo: "
                "--overwrite) to replace it, or choose another model_name or out_dir"
            )
        if differing:
            logger.warning("replacing %s (a different evaluation: %s)", target, "; ".join(differing))
            existing = None

    aa = run_autoattack(
        model, x, y, norm=threat, eps=eps, version=version, batch_size=batch_size, seed=seed,  # type: ignore[arg-type]
        attacks=attacks, device=device, state_dir=state_dir, progress=progress, attack_options=attack_options,
    )

    suite_result: dict[str, Any] | None = None
    if attack_suite is not None:
        evaluation = importlib.import_module("ib_plugins.evaluation")
        with _inference_modes(model), torch.no_grad():
            first = x[:1].to(next((p.device for p in model.parameters()), x.device))
            num_classes = int(model(first).shape[1])
        options = dict(suite_options or {})
        if threat == "Linf":
            options.setdefault("eps", eps)
        specs = evaluation.build_suite(suite, dataset=dataset, num_classes=num_classes, attacks=attack_suite, **options)
        res = evaluation.evaluate_suite(model, x, y, specs, batch_size=batch_size, seed=seed, device=device,
                                        progress=progress)
        suite_result = {"suite": suite, **res.to_dict()}

    if ib_config is None:
        ib_config = _find_ib_config(model)
    import ib_plugins

    aa_info = {k: v for k, v in aa.to_dict().items() if k not in ("robust_flags", "clean_flags")}
    aa_info["n_robust"] = int(aa.robust_flags.sum())
    aa_info["n_clean_correct"] = int(aa.clean_flags.sum())
    ib_info = {
        "version": ib_plugins.__version__,
        "model_name": model_name,
        "threat_model": threat,
        "n_examples": int(x.shape[0]),
        "model_sha256": weights_sha256,
        "data": {"dataset": dataset, "source": source},
        "seed": seed,
        "ib_config": dict(ib_config) if ib_config is not None else None,
        "autoattack": aa_info,
        "attack_suite": suite_result,
    }
    reasons = [f"AutoAttack: {message}" for message in aa.checks]
    if masking:
        reasons.append(f"ib-plugins audit: masking indicators warn ({', '.join(masking)})")
    external_text = meta.get("external")
    if external_info is not None:
        if aa.robust_accuracy is not None and external_info["accuracy"] > aa.robust_accuracy:
            logger.warning("external: the external accuracy %.2f%% is above AutoAttack's %.2f%%; the best known robust "
                           "accuracy stays AutoAttack's", 100 * external_info["accuracy"], 100 * aa.robust_accuracy)
        external_info["lower_than_autoattack"] = external_info["accuracy"] < aa.robust_accuracy
        external_text = _percent(min(external_info["accuracy"], aa.robust_accuracy))
        if external_info.get("n") not in (None, int(x.shape[0])):
            logger.warning("external: the audit evaluated %s examples, this entry %d", external_info["n"], x.shape[0])
    ib_info["external"] = external_info
    ib_info["unreliable_reasons"] = reasons
    footnote = meta.get("footnote")
    if "footnote" not in meta and (version != "standard" or n_examples is not None):
        footnote = (
            f"AutoAttack {version} ({', '.join(aa.attacks)}) on the first {aa.n} test examples; not comparable "
            "with RobustBench's 10,000-example standard evaluation."
            if version != "standard"
            else f"Standard AutoAttack on the first {aa.n} test examples (RobustBench uses 10,000)."
        )
    fields: dict[str, Any] = {
        "link": meta.get("link"),
        "name": meta.get("name", model_name),
        "authors": meta.get("authors"),
        "additional_data": meta.get("additional_data", False),
        "number_forward_passes": meta.get("number_forward_passes", 1),
        "dataset": dataset,
        "venue": meta.get("venue"),
        "architecture": architecture,
        "eps": eps,
        "clean_acc": _percent(aa.clean_accuracy),
        "reported": meta.get("reported"),
        "autoattack_acc": _percent(aa.robust_accuracy),
        "footnote": footnote,
        "unreliable": meta.get("unreliable", bool(reasons)),
        "external": external_text,
        "n": int(x.shape[0]),
        "ib_plugins": ib_info,
    }
    if existing is not None:
        merged = dict(existing)
        merged.update({k: v for k, v in fields.items() if v is not None})
        fields = merged
    try:
        entry = LeaderboardEntry.from_dict(fields, model_name=model_name, threat_model=threat)
    except ValueError as err:
        raise ValueError(f"metadata: {err}") from err
    if target is not None:
        entry.to_json(target)
        logger.info("wrote %s", target)
    return entry
