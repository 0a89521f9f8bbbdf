"""Experiment runners behind the command line: evaluate a checkpoint, select robust layers, the demo.

:func:`evaluate_checkpoint` also evaluates a model kept as code (:func:`load_model_from_factory`:
``"package.module:function"`` or ``"path/to/file.py:function"`` plus a state_dict). Long phases
report progress on stderr (:mod:`ib_plugins._progress`: tqdm on a terminal, plain lines otherwise),
each named: the demo's and the layer selection's networks by what they train (``IB-RAR (ce + IB on
conv3, fc1 + code mask)``), every attack by its name.

Each runner writes a results folder holding the resolved configuration (``config.json``), the
metrics (``metrics.json``), a markdown table (``results.md``) and PNG plots, and returns the metrics.
A folder that already holds a *different* run is refused unless ``overwrite=True``; nothing is
written before the inputs (checkpoints, datasets) have been read successfully.

Example:
    >>> import tempfile, json, os
    >>> d = tempfile.mkdtemp()
    >>> prepare_results_dir(d, {"kind": "example", "n": 1}, overwrite=False)
    >>> json.load(open(os.path.join(d, "config.json")))["kind"]
    'example'
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ib_plugins._markdown import md_cell, md_text
from ib_plugins._progress import PhaseProgress
from ib_plugins.training import (
    RunExistsError,
    TrainConfig,
    Trainer,
    _atomic_write_text,
    _check_has_a_batch,
    _device,
    load_model_from_checkpoint,
    resolve_config,
)

__all__ = [
    "prepare_results_dir",
    "write_json",
    "load_model_from_factory",
    "evaluate_checkpoint",
    "select_robust_layers",
    "run_demo",
    "DEMO_EPOCHS",
]

logger = logging.getLogger(__name__)

DEMO_EPOCHS = 20


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON atomically and durably, with sorted keys (diff-friendly).

    The text goes to a temporary file that is fsynced and renamed over ``path``, then the folder is
    fsynced: a crash or a power loss leaves the old file or the new one, never half of one.

    Args:
        path: destination file.
        data: JSON-serialisable data.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.json")
        >>> write_json(p, {"b": 1, "a": 2}); open(p).read().splitlines()[1]
        '  "a": 2,'
    """
    _atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


# What the runners write into a results folder besides config.json: a folder holding any of these
# but no config.json of ours is refused (they would be replaced), unless overwrite=True.
_OUTPUT_NAMES = (
    "metrics.json", "results.md", "history.json", "checkpoint.pt", "audit.json", "audit.md", "audit.html",
    "leaderboard.md", "leaderboard.html",
)
_OUTPUT_SUFFIXES = (".png",)


def _foreign_outputs(folder: Path) -> list[str]:
    """The files in ``folder`` that a runner would write (``folder`` holds no config.json)."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if p.name in _OUTPUT_NAMES or p.suffix.lower() in _OUTPUT_SUFFIXES
    )


def prepare_results_dir(out_dir: str | os.PathLike[str], config: dict[str, Any], *, overwrite: bool) -> None:
    """Create ``out_dir`` for a run described by ``config``, refusing a folder of a different run.

    Nothing the user had is replaced without ``overwrite=True``: a folder whose ``config.json``
    describes another run is refused, and so is a folder without a ``config.json`` that holds files
    a runner writes (``metrics.json``, ``results.md``, ``history.json``, ``checkpoint.pt``, PNGs...),
    since those are not known to be ours.

    Args:
        out_dir: the results folder.
        config: the run's configuration (compared with an existing ``config.json``).
        overwrite: replace a folder that holds a different run, or files of the user's own.

    Raises:
        RunExistsError: ``out_dir/config.json`` describes a different run, or ``out_dir`` holds output
            files but no ``config.json``, and ``overwrite`` is False.
        FileExistsError: ``out_dir`` is an existing file.
        ValueError: ``overwrite`` is not a bool.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> prepare_results_dir(d, {"a": 1}, overwrite=False)
        >>> try:
        ...     prepare_results_dir(d, {"a": 2}, overwrite=False)
        ... except RunExistsError:
        ...     print("refused")
        refused
        >>> mine = tempfile.mkdtemp()
        >>> _ = open(os.path.join(mine, "metrics.json"), "w").write("{}")
        >>> try:
        ...     prepare_results_dir(mine, {"a": 1}, overwrite=False)
        ... except RunExistsError as err:
        ...     print(str(err).split(" but")[0].split(" holds ")[1])
        metrics.json
    """
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite: expected True or False, got {overwrite!r}")
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"out_dir: expected a folder, got the existing file {p}")
    cfg_path = p / "config.json"
    if not overwrite:
        if cfg_path.is_file():
            try:
                same = json.loads(cfg_path.read_text(encoding="utf-8")) == json.loads(json.dumps(config, default=str))
            except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deeply: not ours
                same = False
            if not same:
                raise RunExistsError(
                    f"{p} already holds a different run (see its config.json); choose another folder or pass "
                    "overwrite=True (--overwrite) to replace it"
                )
        else:
            found = _foreign_outputs(p)
            if found:
                raise RunExistsError(
                    f"{p} holds {', '.join(found)} but no config.json of an ib-plugins run, so these files are not "
                    "known to be ours and would be replaced; choose another folder or pass overwrite=True "
                    "(--overwrite) to replace them"
                )
    p.mkdir(parents=True, exist_ok=True)
    write_json(cfg_path, config)


def _test_tensors(dataset: str, *, data_dir: str | None, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from ib_plugins.data import load_dataset

    ds = load_dataset(dataset, split="test", data_dir=data_dir, limit=n, seed=seed)
    if hasattr(ds, "tensors"):
        x, y = ds.tensors
        return x, y
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.as_tensor(ys)


def _check_count(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> None:
    """A CLI-facing count: an int >= ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}{' or None' if optional else ''}, got {value!r}")


# --------------------------------------------------------------------------------------------------
# A user's own model: "package.module:function" or "path/to/file.py:function", plus a state_dict
# --------------------------------------------------------------------------------------------------

_FACTORY_FORMS = "'package.module:function' (importable from the current folder or PYTHONPATH) or 'path/to/file.py:function'"


@contextlib.contextmanager
def _on_import_path(folder: Path) -> Iterator[None]:
    """Make ``folder`` importable while the block runs (as ``python file.py`` / ``python -m`` do), then undo it."""
    entry = str(folder)
    added = entry not in sys.path and not (folder == Path.cwd() and "" in sys.path)
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            try:
                sys.path.remove(entry)
            except ValueError:  # the imported code removed it itself
                pass


@contextlib.contextmanager
def _registered(name: str, module: Any) -> Iterator[None]:
    """``module`` importable as ``name`` while the block runs (a previous entry is put back afterwards)."""
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        yield
    finally:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous


def _factory_error(spec: str, what: str) -> ValueError:
    return ValueError(f"model_factory: {what} (got {spec!r}; expected {_FACTORY_FORMS})")


def _import_factory_module(spec: str, module_part: str) -> Any:
    import importlib
    import importlib.util

    is_file = module_part.endswith(".py") or "/" in module_part or os.sep in module_part
    if is_file:
        path = Path(module_part).expanduser()
        if not path.is_file():
            what = "is a folder, not a Python file" if path.is_dir() else "does not exist"
            raise _factory_error(spec, f"{module_part} {what}")
        name = "_ib_plugins_user_factory_" + "".join(c if c.isalnum() else "_" for c in path.stem)
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise _factory_error(spec, f"{module_part} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        try:
            # The file's own imports of its neighbours work, and while it runs it is a registered module (as a
            # script is __main__: dataclasses and typing look their module up); both are undone afterwards.
            with _on_import_path(path.resolve().parent), _registered(name, module):
                module_spec.loader.exec_module(module)
        except Exception as err:  # the user's code: any failure is reported, on one line
            raise ValueError(
                f"model_factory: importing {module_part} failed ({type(err).__name__}: {_one_line_text(err)})"
            ) from err
        return module
    if not all(part.isidentifier() for part in module_part.split(".")):
        raise _factory_error(spec, f"{module_part!r} is not a module name")
    try:
        with _on_import_path(Path.cwd()):
            return importlib.import_module(module_part)
    except ModuleNotFoundError as err:
        parts = module_part.split(".")
        if err.name in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise _factory_error(
                spec, f"no module named {err.name!r} in the current folder ({Path.cwd()}) or on PYTHONPATH"
            ) from err
        raise ValueError(
            f"model_factory: importing {module_part} failed (ModuleNotFoundError: {_one_line_text(err)})"
        ) from err
    except Exception as err:  # the user's code: any failure is reported, on one line
        raise ValueError(
            f"model_factory: importing {module_part} failed ({type(err).__name__}: {_one_line_text(err)})"
        ) from err


def _one_line_text(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _state_dict_from_file(path: Path) -> tuple[dict[str, Any], str]:
    """The state_dict in ``path`` (safe loading) and where in the file it was found."""
    import pickle
    import warnings

    from ib_plugins.training import _REFUSED_BY_SAFE_LOADING, _load_error_reason

    if path.is_dir():
        raise ValueError(f"weights: expected a state_dict file, got the folder {path}")
    if not path.is_file():
        raise FileNotFoundError(f"weights: {path} does not exist (expected a state_dict saved with torch.save)")
    if path.stat().st_size == 0:
        raise ValueError(f"weights: {path} is empty (0 bytes): corrupt or truncated")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if _REFUSED_BY_SAFE_LOADING.search(str(err)):
            raise ValueError(
                f"weights: {path} holds objects that safe loading (torch.load with weights_only=True) refuses "
                f"({_load_error_reason(err)}); ib-plugins never unpickles arbitrary objects (that would run code "
                "from the file): save the weights with torch.save(model.state_dict(), path)"
            ) from err
        raise ValueError(f"weights: {path} is corrupt or truncated, or not a torch file ({_load_error_reason(err)})") from err
    except Exception as err:  # torch raises RuntimeError/EOFError/KeyError... on corrupt files
        raise ValueError(f"weights: {path} is corrupt or truncated, or not a torch file ({_load_error_reason(err)})") from err
    where = "the file"
    if isinstance(raw, Mapping) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(raw.get(key), Mapping):
                raw, where = raw[key], f"its {key!r} entry"
                break
    if (not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw)
            or not any(isinstance(v, torch.Tensor) for v in raw.values())):
        got = f"a {type(raw).__name__}" if not isinstance(raw, Mapping) else "a dict without tensors"
        raise ValueError(
            f"weights: {path} holds {got}; expected a state_dict (torch.save(model.state_dict(), path)) or a "
            "checkpoint dict with a 'model' (or 'state_dict') state_dict"
        )
    return dict(raw), where


def _match_state_dict(state: dict[str, Any], expected: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``state`` with a ``model.`` (an IBModel's) or ``module.`` (DataParallel's) prefix removed when that fits better."""
    best, best_prefix, best_overlap = state, None, len(expected.keys() & state.keys())
    for prefix in ("model.", "module."):
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        overlap = len(expected.keys() & stripped.keys())
        if overlap > best_overlap:
            best, best_prefix, best_overlap = stripped, prefix, overlap
    return best, best_prefix


def _names_text(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_model_from_factory(
    factory: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
    map_location: str = "cpu",
) -> torch.nn.Module:
    """Build a user's model from ``"package.module:function"`` (or ``"path/to/file.py:function"``) and load its weights.

    This is how ``ib-plugins evaluate`` and ``ib-plugins audit`` reach models kept as code
    (``--model-factory``/``--weights``), e.g. a RobustBench architecture: the factory is imported
    (a dotted module from the current folder or ``PYTHONPATH``; or a file, run like a script: its
    folder importable and itself a registered module while it loads, both undone afterwards) and
    called with ``factory_kwargs``; the weights are read with
    ``torch.load(weights_only=True)`` (never unpickling arbitrary objects) and loaded strictly. A
    checkpoint dict with a ``"model"`` (or ``"state_dict"``) entry is understood, and so is the
    ``model.`` prefix of an :class:`~ib_plugins.wrap.IBModel`'s state_dict (its mask state is
    ignored) and DataParallel's ``module.``. Building the model leaves the global RNGs as they were.
    The model must take inputs in ``[0, 1]`` and return logits ``[N, num_classes]``.

    Args:
        factory: ``"package.module:function"`` or ``"path/to/file.py:function"``; ``function`` may
            be a dotted attribute path (``"module:Class.build"``).
        weights: a state_dict file; None: keep the weights the factory gives (e.g. a factory that
            downloads or loads them itself).
        factory_kwargs: keyword arguments of the factory (e.g. ``{"num_classes": 10}``).
        map_location: the device the model is moved to.

    Returns:
        The model, in eval mode, on ``map_location``.

    Raises:
        ValueError: a malformed ``factory``, a module that cannot be imported or has no such
            attribute, a factory that raises, weights that are corrupt, refused by safe loading, or
            do not fit the model (the message lists missing and unexpected keys and shape
            mismatches). Every message starts with the argument (``model_factory:``/``weights:``).
        TypeError: the attribute is not callable, or returns something else than a torch module;
            ``factory_kwargs`` is not a dict with string keys.
        FileNotFoundError: ``weights`` does not exist.

    Example:
        >>> import os, tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> with open(os.path.join(d, "nets.py"), "w") as f:
        ...     _ = f.write("import torch.nn as nn\\ndef tiny(classes=3):\\n    return nn.Linear(4, classes)\\n")
        >>> torch.save(torch.nn.Linear(4, 3).state_dict(), os.path.join(d, "w.pt"))
        >>> net = load_model_from_factory(os.path.join(d, "nets.py") + ":tiny", weights=os.path.join(d, "w.pt"))
        >>> type(net).__name__, net.training
        ('Linear', False)
        >>> try:
        ...     load_model_from_factory(os.path.join(d, "nets.py") + ":tiny", weights=os.path.join(d, "w.pt"),
        ...                             factory_kwargs={"classes": 5})
        ... except ValueError as err:
        ...     print(str(err).split("tiny: ")[1].split(" in the file")[0])
        shape mismatch (2): weight [3, 4]
    """
    if not isinstance(factory, str):
        raise TypeError(f"model_factory: expected a string such as {_FACTORY_FORMS}, got {type(factory).__name__}")
    module_part, sep, attr = factory.strip().rpartition(":")
    if not sep or not module_part or not attr:
        raise _factory_error(factory, "expected a module and a function separated by ':'")
    if factory_kwargs is None:
        factory_kwargs = {}
    if not isinstance(factory_kwargs, Mapping) or not all(isinstance(k, str) for k in factory_kwargs):
        raise TypeError(f"factory_kwargs: expected a dict with string keys, got {factory_kwargs!r}")
    _device(map_location)
    weights_path = None if weights is None else Path(weights)
    state: dict[str, Any] | None = None
    where = ""
    if weights_path is not None:  # read the weights first: a bad file is named before any user code runs
        state, where = _state_dict_from_file(weights_path)
    module = _import_factory_module(factory, module_part)
    target: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(target, part):
            owner = module_part if i == 0 else ".".join(attr.split(".")[:i])
            import difflib

            candidates = [n for n in dir(target) if not n.startswith("_") and callable(getattr(target, n, None))]
            close = difflib.get_close_matches(part, candidates, n=3, cutoff=0.5)
            hint = f"; close matches: {', '.join(close)}" if close else (
                f"; callables there: {_names_text(sorted(candidates))}" if candidates else "")
            raise ValueError(f"model_factory: {owner} has no attribute {part!r}{hint}")
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"model_factory: {factory} is a {type(target).__name__}, expected a function or class that "
                        "returns a torch.nn.Module")
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda):  # the model's initial weights do not move the caller's RNG
            model = target(**factory_kwargs)
    except Exception as err:  # the user's code: any failure is reported, on one line
        call = f"{factory}(**{dict(factory_kwargs)!r})" if factory_kwargs else f"{factory}()"
        raise ValueError(f"model_factory: {call} raised {type(err).__name__}: {_one_line_text(err)}") from err
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model_factory: {factory} returned a {type(model).__name__}, expected a torch.nn.Module")
    if state is not None:
        assert weights_path is not None
        expected = model.state_dict()
        state, prefix = _match_state_dict(state, expected)
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        shapes = [f"{k} {list(v.shape)} in the file vs {list(expected[k].shape)} in the model" for k, v in state.items()
                  if k in expected and isinstance(v, torch.Tensor) and isinstance(expected[k], torch.Tensor)
                  and v.shape != expected[k].shape]
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {_names_text(missing)}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_names_text(unexpected)}")
        if shapes:
            problems.append(f"shape mismatch ({len(shapes)}): {_names_text(shapes, 3)}")
        if problems:
            source = where + (f", prefix {prefix!r} removed" if prefix else "")
            raise ValueError(f"weights: {weights_path} does not match the model built by {factory}: "
                             f"{'; '.join(problems)} (state_dict from {source})")
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, ValueError, KeyError) as err:
            raise ValueError(f"weights: {weights_path} cannot be loaded into the model built by {factory} "
                             f"({_one_line_text(err)})") from err
    return model.to(map_location).eval()


def _probe_model(model: torch.nn.Module, x: torch.Tensor, *, device: str, what: str) -> int:
    """Run the model on two inputs; its failure or non-logit output is a user error naming the input shape."""
    from ib_plugins.wrap import _inference_modes

    sample = x[:2].to(device)
    dev = torch.device(device)
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=cuda), _inference_modes(model):
            out = model(sample)
    except Exception as err:  # the user's forward: reported with the input it failed on
        raise ValueError(f"model: {what} fails on the dataset's inputs of shape {list(sample.shape)} "
                         f"({type(err).__name__}: {_one_line_text(err)})") from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model: {what} returns {got} on inputs of shape {list(sample.shape)}; expected logits "
                         "[N, num_classes]")
    return int(out.shape[1])


def _dataset_info(dataset: str) -> Any:
    """:func:`ib_plugins.data.get_dataset_info`, its error naming the ``dataset`` argument."""
    from ib_plugins.data import get_dataset_info

    try:
        return get_dataset_info(dataset)
    except ValueError as err:
        raise ValueError(f"dataset: {str(err).removeprefix('name: ')}") from None


def _check_model_source(
    checkpoint: Any, *, model_factory: Any, weights: Any, factory_kwargs: Any, dataset: Any
) -> None:
    """Exactly one of a checkpoint and a model factory; the factory's companions only with a factory."""
    if (checkpoint is None) == (model_factory is None):
        got = "both" if checkpoint is not None else "neither"
        raise ValueError(
            "checkpoint, model_factory: expected a checkpoint written by 'ib-plugins train', or a model factory "
            f"({_FACTORY_FORMS}, --model-factory) with its weights, got {got}"
        )
    if model_factory is None:
        for name, value in (("weights", weights), ("factory_kwargs", factory_kwargs)):
            if value is not None:
                raise ValueError(f"{name}: goes with model_factory (a checkpoint holds its own weights), got {value!r}")
        if dataset is not None:
            raise ValueError(f"dataset: a checkpoint knows its dataset; dataset= goes with model_factory, got {dataset!r}")
    elif dataset is None:
        raise ValueError("dataset: expected the dataset to evaluate the factory's model on (e.g. 'cifar10'), got None")


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    model_factory: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    suite: str = "ibrar",
    budget: str | None = None,
    attacks: Sequence[str] | None = None,
    n: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    pgd_steps: int | None = None,
    cw_steps: int | None = None,
    steps_sweep: Sequence[int] | None = None,
    noise: bool = False,
    tendency: str | None = None,
    tsne_layer: str | None = None,
    expect_model: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    engine: str = "builtin",
    autoattack_n: int = 0,
    autoattack_version: str = "standard",
    ema: bool = False,
) -> dict[str, Any]:
    """Evaluate a trained checkpoint, or a user's own model, with an attack suite and write a results folder.

    The model is either a checkpoint of :class:`~ib_plugins.training.Trainer` (which knows its
    dataset) or a model kept as code: ``model_factory`` (``"package.module:function"`` or
    ``"path/to/file.py:function"``) with ``weights`` (a state_dict), evaluated on ``dataset``; see
    :func:`load_model_from_factory`.

    Args:
        checkpoint: a checkpoint written by :class:`~ib_plugins.training.Trainer` (None with
            ``model_factory``).
        model_factory: instead of a checkpoint, the function that builds the model.
        weights: the model's state_dict file (with ``model_factory``; None: the factory's weights).
        factory_kwargs: keyword arguments of the factory, e.g. ``{"num_classes": 10}``.
        dataset: the test set of a ``model_factory`` model (a checkpoint knows its own).
        out_dir: results folder (default: ``<checkpoint folder>/eval-<suite>-<budget>``; for a
            factory ``<weights folder>/eval-<suite>-<budget>``, or that name in the current folder).
        suite: ``"ibrar"`` (PGD, CW, FGSM, FAB, NIFGSM) or ``"entropic"``.
        budget: the suite's budget name (default per suite; see :mod:`ib_plugins.evaluation`).
        attacks: subset of the suite's attacks.
        n: evaluate on a stratified subset of this many test images (None = the whole test set).
        batch_size: attack batch size.
        seed: attack seed.
        pgd_steps: PGD steps (suite default otherwise).
        cw_steps: CW steps (suite default otherwise).
        steps_sweep: also measure PGD accuracy at these step counts (IB-RAR Fig. 3) and plot it.
        noise: also measure accuracy under random L2/L∞ noise of the suite's radii (entropic Tables V–VI).
        tendency: also compute the misclassification-tendency table for this attack (Table IV).
        tsne_layer: also plot a t-SNE of this layer's test representation (Fig. 1).
        expect_model: refuse a checkpoint of another model.
        data_dir: folder with dataset files.
        device: ``"cpu"`` or a CUDA device.
        overwrite: replace a results folder of a different evaluation.
        progress: show progress bars.
        engine: the attack engine, ``"builtin"`` (default) or ``"torchattacks"`` (see
            :func:`ib_plugins.evaluation.run_attack`); recorded in ``config.json`` and the results.
        autoattack_n: also run AutoAttack (L∞, the suite's ε) on the first this many evaluated images
            (0 = no; ``metrics["autoattack"]``, a column in ``results.md``; resumable chunk files in
            ``<out>/autoattack``).
        autoattack_version: ``"standard"`` (APGD-CE, APGD-T, FAB-T, Square) or ``"rand"``.
        ema: evaluate the checkpoint's exponential moving average of the weights (``--ema-decay``
            runs) instead of the raw weights; recorded in ``config.json``.

    Returns:
        The metrics written to ``metrics.json`` (``"out_dir"``: the results folder, as given).

    Raises:
        CheckpointError: the checkpoint is missing, corrupt, or of another model (nothing is written).
        RunExistsError: ``out_dir`` holds a different evaluation.
        ValueError: bad names or budgets; both or neither of ``checkpoint`` and ``model_factory``;
            a factory model without ``dataset``, or one that cannot be built, loaded or run on the
            dataset's inputs (see :func:`load_model_from_factory`).

    Under ``torchrun --nproc_per_node=N ib-plugins evaluate ...`` the process group is set up here
    (NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on CPU), every rank attacks its share of
    the batches (see :func:`ib_plugins.evaluation.evaluate_suite`; AutoAttack chunks likewise), and
    rank 0 alone writes the results folder, which holds exactly the single-process numbers.
    """
    args = dict(locals())  # the arguments, passed on as they are
    import torch.distributed as dist

    from ib_plugins.distributed import env_world_size, world_info

    owns_group = False
    if env_world_size() > 1 and not (dist.is_available() and dist.is_initialized()):
        dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
        owns_group = True
    rank, world = world_info()
    if world > 1 and str(device).startswith("cuda"):
        args["device"] = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(torch.device(args["device"]))
    try:
        result = _evaluate(rank=rank, world=world, **args)
        if owns_group and world > 1:
            # Leave together: a rank that tears its gloo pairs down while rank 0 still writes the
            # results folder was seen to abort ("terminate called without an active exception").
            dist.barrier()
        return result
    finally:
        if owns_group:
            dist.destroy_process_group()


def _evaluate(  # noqa: C901 - one straight pipeline: load, check, attack, write
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    rank: int = 0,
    world: int = 1,
    model_factory: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    suite: str = "ibrar",
    budget: str | None = None,
    attacks: Sequence[str] | None = None,
    n: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    pgd_steps: int | None = None,
    cw_steps: int | None = None,
    steps_sweep: Sequence[int] | None = None,
    noise: bool = False,
    tendency: str | None = None,
    tsne_layer: str | None = None,
    expect_model: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    engine: str = "builtin",
    autoattack_n: int = 0,
    autoattack_version: str = "standard",
    ema: bool = False,
) -> dict[str, Any]:
    from ib_plugins import evaluation as ev

    progress = progress and rank == 0
    # Validate the plain options before reading anything (nothing is written before all checks pass).
    _device(device)
    _check_count("batch_size", batch_size)
    _check_count("n", n, optional=True)
    _check_count("seed", seed, minimum=0)
    _check_count("pgd_steps", pgd_steps, optional=True)
    _check_count("cw_steps", cw_steps, optional=True)
    _check_count("autoattack_n", autoattack_n, minimum=0)
    if autoattack_version not in ("standard", "rand"):
        raise ValueError(f"autoattack_version: expected 'standard' or 'rand', got {autoattack_version!r}")
    engine = ev._check_engine(engine)
    if not isinstance(ema, bool):
        raise TypeError(f"ema: expected True or False, got {ema!r}")
    if ema and model_factory is not None:
        raise ValueError("ema: selects the averaged weights of a training checkpoint; with model_factory pass those "
                         "weights as weights=")
    from ib_plugins.data import get_dataset_info

    _check_model_source(checkpoint, model_factory=model_factory, weights=weights, factory_kwargs=factory_kwargs,
                        dataset=dataset)
    train_cfg = None
    if model_factory is None:
        model, train_cfg, ckpt = load_model_from_checkpoint(checkpoint, map_location=device, expect_model=expect_model,
                                                             weights="ema" if ema else "raw")
        dataset_name, model_name, method = train_cfg.dataset, train_cfg.model, train_cfg.method
        data_dir = data_dir or train_cfg.data_dir
    else:
        if expect_model is not None:
            raise ValueError(f"expect_model: checks the model of a checkpoint; with model_factory it does not apply, "
                             f"got {expect_model!r}")
        assert dataset is not None
        _dataset_info(dataset)  # an unknown name is refused before any user code runs
        model = load_model_from_factory(model_factory, weights=weights, factory_kwargs=factory_kwargs,
                                        map_location=device)
        dataset_name, model_name, method = dataset, model_factory, "model"
    info = get_dataset_info(dataset_name)
    x, y = _test_tensors(dataset_name, data_dir=data_dir, n=n, seed=seed)
    if model_factory is not None:
        _probe_model(model, x, device=device, what=f"the model built by {model_factory}")
    specs = ev.build_suite(
        suite, budget=budget, dataset=dataset_name, num_classes=info.num_classes,
        pgd_steps=pgd_steps, cw_steps=cw_steps, attacks=attacks,
    )
    budget_name = budget or ev.default_budget(dataset_name, suite).name
    # Validate every option before anything is written.
    if tendency is not None and tendency not in [s.name for s in specs]:
        raise ValueError(f"tendency: expected one of the evaluated attacks ({', '.join(s.name for s in specs)}), got {tendency!r}")
    if tsne_layer is not None:
        from ib_plugins.errors import UnknownLayerError
        from ib_plugins.layer_selection import resolve_layers

        try:
            resolve_layers(model, [tsne_layer])
        except UnknownLayerError as err:
            raise UnknownLayerError(f"tsne_layer: {err}") from err
    if steps_sweep is not None:
        steps_sweep = list(steps_sweep)
        if not steps_sweep or any(not isinstance(k, int) or k < 1 for k in steps_sweep):
            raise ValueError(f"steps_sweep: expected positive integers, got {steps_sweep!r}")
    if train_cfg is not None:
        source: dict[str, Any] = {
            "checkpoint": str(Path(checkpoint).resolve()),  # type: ignore[arg-type]
            "checkpoint_epoch": int(ckpt.get("epoch", 0)),
            "train_config": train_cfg.to_dict(),
        }
    else:
        source = {
            "model_factory": model_factory,
            "factory_kwargs": dict(factory_kwargs or {}),
            "weights": None if weights is None else str(Path(weights).resolve()),
            "dataset": dataset_name,
        }
    eval_config = {
        "kind": "evaluate",
        **source,
        "suite": suite,
        "budget": budget_name,
        "attacks": [s.to_dict() for s in specs],
        "n": int(x.shape[0]),
        "seed": seed,
        "batch_size": batch_size,
        "steps_sweep": list(steps_sweep) if steps_sweep else None,
        "noise": noise,
        "tendency": tendency,
        "tsne_layer": tsne_layer,
        "engine": engine,
        **({"autoattack_n": autoattack_n, "autoattack_version": autoattack_version} if autoattack_n else {}),
        **({"ema_weights": True} if ema else {}),
    }
    if out_dir is not None:
        out = Path(out_dir)
    else:
        anchor = checkpoint if checkpoint is not None else weights
        out = (Path(anchor).parent if anchor is not None else Path()) / f"eval-{suite}-{budget_name}"
    if rank == 0:
        prepare_results_dir(out, eval_config, overwrite=overwrite)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # the folder exists before any rank writes AutoAttack chunk files into it
    t0 = time.perf_counter()
    result = ev.evaluate_suite(
        model, x, y, specs, batch_size=batch_size, seed=seed, device=device, progress=progress,
        keep_adversarial=tendency is not None, engine=engine,
    )
    metrics: dict[str, Any] = {"suite": result.to_dict(), "model": model_name, "dataset": dataset_name}
    md = [f"# {md_text(suite)} suite ({md_text(budget_name)}) on {md_text(dataset_name)} / "
          f"{md_text(model_name)}", "", result.to_markdown()]
    if steps_sweep:
        steps, accs = ev.accuracy_vs_steps(
            model, x, y, steps=list(steps_sweep), suite=suite, budget=budget, dataset=dataset_name,
            num_classes=info.num_classes, batch_size=batch_size, seed=seed, device=device, progress=progress,
            engine=engine,
        )
        metrics["accuracy_vs_steps"] = {"steps": steps, "accuracy": accs}
        if rank == 0:
            ev.plot_accuracy_vs_steps({method: (steps, accs)}, out / "accuracy_vs_steps.png")
        md += ["", "## PGD accuracy vs steps", "", "| steps | " + " | ".join(map(str, steps)) + " |",
               "|---|" + "---|" * len(steps), "| accuracy (%) | " + " | ".join(f"{100 * a:.2f}" for a in accs) + " |"]
    if noise:
        entropic_budget = ev.default_budget(dataset_name, "entropic")
        noise_res = {}
        for norm, eps in (("l2", entropic_budget.l2_eps), ("linf", entropic_budget.linf_eps)):
            noise_res[norm] = {"eps": eps, "accuracy": ev.noise_accuracy(model, x, y, norm=norm, eps=eps, seed=seed, device=device)}
        metrics["noise"] = noise_res
        md += ["", "## Accuracy under random noise", "", "| norm | eps | accuracy (%) |", "|---|---|---|"]
        md += [f"| {k} | {v['eps']:.4g} | {100 * v['accuracy']:.2f} |" for k, v in noise_res.items()]
    if tendency is not None:
        matrix = ev.misclassification_tendency(model, x, y, result.adversarial[tendency], num_classes=info.num_classes, device=device)
        metrics["tendency"] = {"attack": tendency, "counts": matrix.tolist()}
        md += ["", f"## Misclassification tendency under {md_text(tendency)}", "", ev.tendency_markdown(matrix)]
    if tsne_layer is not None:
        from ib_plugins.activation_capture import capture_activations
        from ib_plugins.plots import plot_tsne

        with torch.no_grad(), capture_activations(model, [tsne_layer], when="always", detach=True) as cap:
            model(x.to(device))
        if rank == 0:
            plot_tsne(cap.activations[tsne_layer].cpu(), y, out / f"tsne_{tsne_layer.replace('.', '_')}.png",
                      title=f"t-SNE of {tsne_layer}")
    if autoattack_n:
        from ib_plugins.adapters.autoattack_eval import run_autoattack

        n_aa = min(autoattack_n, int(x.shape[0]))
        linf = next((s.eps for s in specs if s.norm == "linf" and s.eps is not None),
                    ev.default_budget(dataset_name, suite, budget).linf_eps)
        aa = run_autoattack(model, x[:n_aa], y[:n_aa], norm="Linf", eps=linf, version=autoattack_version,
                            batch_size=batch_size, seed=seed, device=device, state_dir=out / "autoattack",
                            progress=progress)
        low, high = _wilson(int(aa.robust_flags.sum()), n_aa)
        metrics["autoattack"] = {**aa.to_dict(), "robust_accuracy_ci": [low, high]}
        md += ["", f"## AutoAttack ({md_text(autoattack_version)}, L∞ ε = {linf:.4g}) on the first {n_aa} images", "",
               "| clean (%) | robust (%) | robust 95 % interval (Wilson) |", "|---|---|---|",
               f"| {100 * aa.clean_accuracy:.2f} | {100 * aa.robust_accuracy:.2f} | "
               f"[{100 * low:.1f}, {100 * high:.1f}] |"]
    metrics["wall_time_s"] = round(time.perf_counter() - t0, 2)
    metrics["out_dir"] = str(out)
    if rank == 0:
        write_json(out / "metrics.json", metrics)
        _atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    return metrics


def _wilson(successes: int, n: int) -> tuple[float, float]:
    from ib_plugins.stats import wilson_interval

    return wilson_interval(successes, n)


def select_robust_layers(
    *,
    dataset: str = "digits",
    model: str = "digits-cnn",
    candidates: Sequence[str] | None = None,
    epochs: int = 20,
    batch_size: int = 50,
    alpha: float = 0.008,
    beta: float = 0.08,
    eval_n: int | None = None,
    tolerance: float = 0.01,
    out_dir: str | os.PathLike[str] = "select-layers",
    seed: int = 0,
    data_dir: str | None = None,
    train_limit: int | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """IB-RAR's Table III procedure: which layers, regularised alone, make the network robust?

    Trains a CE-only network, one network per candidate layer with the IB term on that layer only,
    one with all candidates, and finally one with the selected set, all from the same seed and
    without adversarial training; evaluates each with the suite's PGD. A layer is selected when its
    single-layer PGD accuracy beats CE-only by more than ``tolerance`` (absolute).

    The report says how much to trust that: every accuracy carries its Wilson 95 % interval, every
    gain over CE-only the paired 95 % interval of the difference on the same test images
    (:func:`ib_plugins.stats.paired_difference_interval`), and it warns (in ``results.md``, the
    log and ``metrics.json["warnings"]``) when a network sits at chance (its clean accuracy is
    statistically indistinguishable from ``1/C``) or when a gain that decides a selection is inside
    its interval. When every network is at chance, nothing is selected and the report says why.

    Args:
        dataset: dataset name.
        model: model name (must have a layer preset unless ``candidates`` is given).
        candidates: layers to try (default: the model preset's hook points).
        epochs: epochs per network.
        batch_size: minibatch size.
        alpha: α of the IB term.
        beta: β of the IB term.
        eval_n: evaluate PGD on a subset of this many test images (None = all).
        tolerance: required PGD-accuracy gain over CE-only for selection.
        out_dir: results folder (each network in a subfolder).
        seed: seed shared by every network.
        data_dir: dataset folder.
        train_limit: train on a subset.
        device: device.
        overwrite: replace a folder of a different selection run.
        progress: show progress bars.

    Returns:
        ``{"rows": [...], "selected": [...], "ce_pgd": ...}`` as written to ``metrics.json``.
    """
    from ib_plugins import evaluation as ev
    from ib_plugins.data import get_dataset_info
    from ib_plugins.models import create_model
    from ib_plugins.presets import preset_for_model

    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ValueError(f"tolerance: expected a number in [0, 1) (a PGD-accuracy gain), got {tolerance!r}")
    _device(device)
    _check_count("eval_n", eval_n, optional=True)
    base = TrainConfig(
        dataset=dataset, model=model, method="ce", epochs=epochs, batch_size=batch_size, alpha=alpha, beta=beta,
        seed=seed, data_dir=data_dir, train_limit=train_limit, device=device,
    )
    resolve_config(base)  # names, types and ranges, before anything is trained or written
    info = get_dataset_info(dataset)
    if candidates is None:
        preset = preset_for_model(create_model(model, num_classes=info.num_classes, in_channels=info.in_channels))
        if preset is None:
            raise ValueError(f"candidates: {model!r} has no layer preset; pass the layers to try")
        candidates = list(preset.layers)
    if isinstance(candidates, str) or not all(isinstance(c, str) for c in candidates) or not list(candidates):
        raise ValueError(f"candidates: expected a non-empty list of layer names, got {candidates!r}")
    candidates = list(candidates)
    resolve_config(dataclasses.replace(base, ib=True, ib_layers=candidates))
    _check_has_a_batch(batch_size=batch_size, train_limit=train_limit)
    config = {"kind": "select-layers", "base": base.to_dict(), "candidates": candidates, "tolerance": tolerance, "eval_n": eval_n}
    out = Path(out_dir)
    x, y = _test_tensors(dataset, data_dir=data_dir, n=eval_n, seed=seed)
    prepare_results_dir(out, config, overwrite=overwrite)
    pgd = ev.build_suite("ibrar", dataset=dataset, num_classes=info.num_classes, attacks=["pgd"])

    from ib_plugins.stats import paired_difference_interval, wilson_interval

    n_eval = int(x.shape[0])
    chance = 1.0 / info.num_classes
    pgd_correct: dict[str, torch.Tensor] = {}

    n_runs = 2 + len(candidates)  # ce, one per candidate, all-layers (+ "selected", counted when it runs)
    phases = PhaseProgress(total=n_runs, desc="select-layers", enabled=progress, unit="network", logger=logger)

    def run(name: str, cfg: TrainConfig) -> dict[str, Any]:
        label = _run_label(name, cfg)
        with phases.phase(label):
            trainer, final = _fit_with_progress(cfg, out / name, label=label, overwrite=overwrite, progress=progress,
                                                trainer_progress=True)
            res = ev.evaluate_suite(trainer.eval_model(), x, y, pgd, seed=seed, device=device, progress=progress)
        pgd_correct[name] = res.correct["pgd"]
        clean_low, clean_high = wilson_interval(res.n_clean_correct, n_eval)
        pgd_low, pgd_high = wilson_interval(res["pgd"].n_robust, n_eval)
        return {"name": name, "layers": cfg.ib_layers if cfg.ib else [], "test_acc": res.clean_accuracy,
                "test_acc_ci": [clean_low, clean_high], "pgd_acc": res["pgd"].accuracy, "pgd_acc_ci": [pgd_low, pgd_high],
                "near_chance": clean_low <= chance, "train_epochs": final.get("epochs")}

    def versus_ce(row: dict[str, Any]) -> None:
        ce_ok, ok = pgd_correct["ce"], pgd_correct[row["name"]]
        diff, low, high = paired_difference_interval(
            better=int((ok & ~ce_ok).sum()), worse=int((~ok & ce_ok).sum()), n=n_eval)
        row.update(gain=diff, gain_ci=[low, high], gain_inside_noise=low <= 0.0 <= high)

    try:
        rows = [run("ce", base)]
        for layer in candidates:
            rows.append(run(f"layer-{layer}", dataclasses.replace(base, ib=True, ib_layers=[layer])))
        rows.append(run("all-layers", dataclasses.replace(base, ib=True, ib_layers=candidates)))
        ce_pgd = rows[0]["pgd_acc"]
        all_at_chance = all(r["near_chance"] for r in rows)
        selected = [] if all_at_chance else [
            r["layers"][0] for r in rows[1 : 1 + len(candidates)] if r["pgd_acc"] > ce_pgd + tolerance]
        if selected:
            phases.bar.total = n_runs + 1
            rows.append(run("selected", dataclasses.replace(base, ib=True, ib_layers=selected)))
    finally:
        phases.close()
    for r in rows[1:]:
        versus_ce(r)
    warnings_ = _selection_warnings(rows[: 1 + len(candidates)], selected, chance=chance, n_eval=n_eval)
    for text in warnings_:
        logger.warning("select-layers: %s", text)
    metrics = {"rows": rows, "selected": selected, "ce_pgd": ce_pgd, "pgd": pgd[0].to_dict(), "n_eval": n_eval,
               "chance_accuracy": chance, "warnings": warnings_}
    write_json(out / "metrics.json", metrics)
    spec = pgd[0]
    md = [
        f"# Robust-layer selection on {md_text(dataset)} / {md_text(model)} (Table III procedure)",
        "",
        f"- Networks: {md_text(model)}, CE without adversarial training, {epochs} epochs, batch {batch_size}, seed "
        f"{seed}; IB term α = {alpha:g}, β = {beta:g} on the listed layers.",
        f"- PGD (the IB-RAR suite's `pgd`): {spec.describe()}, {spec.kwargs['steps']} steps of "
        f"{spec.kwargs['alpha']:.4g}, random start; on {n_eval} test images.",
        f"- A layer is selected when its single-layer PGD accuracy beats CE-only by more than {100 * tolerance:.1f} "
        "points. Intervals are 95 %: Wilson for accuracies, paired (Agresti–Min, same test images) for gains.",
        "",
        "| network | IB layers | test acc. (%) | PGD acc. (%) | PGD gain vs CE (points) |",
        "|---|---|---|---|---|",
    ]

    def pct_ci(value: float, ci: Sequence[float]) -> str:
        return f"{100 * value:.2f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"

    for r in rows:
        layers = ", ".join(md_cell(layer) for layer in r["layers"]) or "-"
        gain = "-" if "gain" not in r else (
            f"{100 * r['gain']:+.2f} [{100 * r['gain_ci'][0]:+.1f}, {100 * r['gain_ci'][1]:+.1f}]"
            + (" (inside the noise)" if r["gain_inside_noise"] else ""))
        test = pct_ci(r["test_acc"], r["test_acc_ci"]) + (" (chance)" if r["near_chance"] else "")
        md.append(f"| {md_cell(r['name'])} | {layers} | {test} | {pct_ci(r['pgd_acc'], r['pgd_acc_ci'])} | {gain} |")
    if all_at_chance:
        verdict = "none: every network is at chance accuracy, so no layer can be judged"
    else:
        verdict = ", ".join(md_text(layer) for layer in selected) if selected else "none"
    md += ["", f"Selected robust layers: {verdict}"]
    if warnings_:
        md += ["", "Warnings:", ""] + [f"- {md_text(w)}" for w in warnings_]
    _atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    return metrics


def _selection_warnings(
    rows: Sequence[dict[str, Any]], selected: Sequence[str], *, chance: float, n_eval: int
) -> list[str]:
    """What a reader of a layer selection must know: networks at chance, selections inside the noise.

    ``rows`` are CE-only first, then one row per single-layer network (with ``near_chance``,
    ``gain``, ``gain_ci`` and ``gain_inside_noise`` filled in).
    """
    if all(r["near_chance"] for r in rows):
        return [f"every network sits at chance accuracy ({100 * chance:.1f}%): their PGD accuracies say nothing "
                "about the layers; train longer (--epochs) or on more data"]
    found = [f"network {r['name']!r} sits at chance accuracy (test {100 * r['test_acc']:.1f}%, its 95% interval "
             f"reaches {100 * chance:.1f}%): its PGD accuracy says nothing" for r in rows if r["near_chance"]]
    for r in rows[1:]:
        if r["layers"][0] in selected and r["gain_inside_noise"]:
            found.append(
                f"{r['layers'][0]!r} is selected on a PGD gain of {100 * r['gain']:+.1f} points over CE-only whose 95% "
                f"interval [{100 * r['gain_ci'][0]:+.1f}, {100 * r['gain_ci'][1]:+.1f}] includes 0 "
                f"({n_eval} test images): the selection is inside the noise")
    return found


def _fit_with_progress(
    cfg: TrainConfig, out_dir: Path, *, label: str, overwrite: bool, progress: bool, trainer_progress: bool = False,
) -> tuple[Trainer, dict[str, Any]]:
    """Train (or reuse) one network with an epoch bar named ``train <label>`` and log lines naming it.

    The trainer's own per-batch bar names the run by its method only (``ce``), so runs that
    differ in their IB settings get this bar instead (``trainer_progress=True`` keeps the per-batch
    bar as well, on a terminal only, for long epochs).
    """
    from ib_plugins._progress import is_interactive, progress_bar

    bar = progress_bar(total=cfg.epochs, desc=f"train {label}", unit="epoch", enabled=progress)

    def on_epoch(trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        del trainer
        acc = metrics.get("test_acc")
        if acc is not None:
            bar.set_postfix(test_acc=f"{float(acc):.3f}")
        bar.update(max(0, epoch - bar.n))
        logger.info("%s: epoch %d/%d, train loss %.4g%s", label, epoch, cfg.epochs, float(metrics.get("train_loss", 0.0)),
                    "" if acc is None else f", test acc {float(acc):.3f}")

    trainer = Trainer(cfg, out_dir=out_dir, resume="auto", overwrite=overwrite,
                      progress=progress and trainer_progress and is_interactive(), callbacks=[on_epoch])
    try:
        final = trainer.fit()
        bar.update(max(0, cfg.epochs - bar.n))  # a finished run that was reused trains no epoch
    finally:
        bar.close()
    return trainer, final


def _run_label(name: str, cfg: TrainConfig) -> str:
    """``name (method + IB on layers + mask)``: what the run is, for bars and log lines."""
    parts = [cfg.method]
    if cfg.ib:
        layers = cfg.ib_layers if isinstance(cfg.ib_layers, str) else ",".join(map(str, cfg.ib_layers or []))
        parts.append(f"IB on {layers}")
    if cfg.mask:
        parts.append(f"{cfg.mask} mask")
    return f"{name} ({' + '.join(parts)})"


def _demo_table(suite_results: dict[str, Any], aa_results: dict[str, Any]) -> str:
    from ib_plugins.evaluation import _accuracy_cell, _column_title, _fixed_c_note

    specs = [a.spec for a in next(iter(suite_results.values())).attacks]
    header = ["Model", "Clean", *(_column_title(s.name, s) for s in specs)]
    header += [f"AutoAttack (n={next(iter(aa_results.values()))['n']})"] if aa_results else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, res in suite_results.items():
        cells = [md_cell(model), f"{100 * res.clean_accuracy:.2f}", *(_accuracy_cell(a) for a in res.attacks)]
        if aa_results:
            cells.append(f"{100 * aa_results[model]['robust_accuracy']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    notes = _fixed_c_note(specs)
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def run_demo(
    *,
    out_dir: str | os.PathLike[str] = "ib-plugins-demo",
    epochs: int = DEMO_EPOCHS,
    seed: int = 0,
    eval_n: int | None = None,
    autoattack_n: int = 100,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
    engine: str = "builtin",
) -> dict[str, Any]:
    """The main job: CE versus IB-RAR (robust layers + channel mask) on scikit-learn's digits.

    Trains both networks from the same seed (authors' non-AT recipe: SGD 0.01, momentum 0.9,
    StepLR(20, 0.2); batch 50), evaluates IB-RAR's attack suite (PGD, CW, FGSM, FAB, NIFGSM at the
    digits budget) on the test set, AutoAttack on the first ``autoattack_n`` test images, and writes
    the side-by-side table and leaderboard files. Finished networks are reused when the demo is run
    again with the same settings.

    Args:
        out_dir: results folder.
        epochs: training epochs per network.
        seed: seed of both runs and of the attacks.
        eval_n: evaluate the attack suite on a subset (None: all 450 test images).
        autoattack_n: number of test images for the AutoAttack column (0 = skip).
        overwrite: replace a folder of a different demo run (and its leaderboard model-info files).
        device: device.
        progress: show progress bars.
        engine: the attack engine of the suite, ``"builtin"`` (default) or ``"torchattacks"``.

    Returns:
        The metrics written to ``metrics.json``.
    """
    from ib_plugins import evaluation as ev
    from ib_plugins.presets import get_preset

    _device(device)
    _check_count("eval_n", eval_n, optional=True)
    _check_count("autoattack_n", autoattack_n, minimum=0)
    from ib_plugins.evaluation import _check_engine

    engine = _check_engine(engine)
    runs = {
        "CE": TrainConfig(epochs=epochs, batch_size=50, seed=seed, device=device),
        "IB-RAR": TrainConfig(epochs=epochs, batch_size=50, seed=seed, device=device, ib=True, ib_layers="robust", mask="code"),
    }
    for run_config in runs.values():
        resolve_config(run_config)  # epochs, seed and device, before anything is written
    config = {"kind": "demo", "runs": {k: v.to_dict() for k, v in runs.items()}, "eval_n": eval_n, "autoattack_n": autoattack_n,
              "engine": engine}
    out = Path(out_dir)
    x, y = _test_tensors("digits", data_dir=None, n=eval_n, seed=seed)
    prepare_results_dir(out, config, overwrite=overwrite)
    specs = ev.build_suite("ibrar", dataset="digits", num_classes=10)
    budget_info = ev.default_budget("digits", "ibrar")
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    suite_results = {}
    aa_results: dict[str, Any] = {}
    entries = []
    robust_layers = ", ".join(get_preset("digits-cnn").robust_layers)
    labels = {"CE": "CE (ce, no IB)", "IB-RAR": f"IB-RAR (ce + IB on {robust_layers} + code mask)"}
    phases = PhaseProgress(total=len(runs) * (3 if autoattack_n > 0 else 2), desc="demo", enabled=progress,
                           logger=logger)
    try:
        for name, cfg in runs.items():
            _demo_run(name, cfg, label=labels[name], phases=phases, out=out, x=x, y=y, specs=specs, seed=seed,
                      device=device, progress=progress, engine=engine, overwrite=overwrite, autoattack_n=autoattack_n,
                      budget_info=budget_info, results=results, suite_results=suite_results, aa_results=aa_results,
                      entries=entries)
    finally:
        phases.close()
    return _finish_demo(out, results=results, suite_results=suite_results, aa_results=aa_results, entries=entries,
                        budget_info=budget_info, x=x, epochs=epochs, seed=seed, autoattack_n=autoattack_n, t0=t0)


def _demo_run(
    name: str, cfg: TrainConfig, *, label: str, phases: PhaseProgress, out: Path, x: torch.Tensor, y: torch.Tensor,
    specs: Any, seed: int, device: str, progress: bool, engine: str, overwrite: bool, autoattack_n: int,
    budget_info: Any, results: dict[str, Any], suite_results: dict[str, Any], aa_results: dict[str, Any],
    entries: list[Any],
) -> None:
    """One network of the demo: train it, attack it with the suite, then AutoAttack (each a named phase)."""
    from ib_plugins import evaluation as ev

    with phases.phase(f"train {label}"):
        trainer, final = _fit_with_progress(cfg, out / name.lower(), label=label, overwrite=overwrite,
                                            progress=progress)
    model = trainer.eval_model().eval()
    with phases.phase(f"attack {name} (IB-RAR suite: {', '.join(s.name for s in specs)})"):
        suite_results[name] = ev.evaluate_suite(model, x, y, specs, seed=seed, device=device, progress=progress,
                                                engine=engine)
    results[name] = {"train": final, "suite": suite_results[name].to_dict()}
    if autoattack_n > 0:
        from ib_plugins.adapters.robustbench_eval import evaluate_for_leaderboard

        n_aa = min(autoattack_n, int(x.shape[0]))
        ib_config = None
        if cfg.ib:
            ib_config = {"layers": cfg.ib_layers, "alpha": cfg.alpha, "beta": cfg.beta, "y_kernel": cfg.y_kernel,
                         "mask": cfg.mask, "mask_every": cfg.mask_every}
        with phases.phase(f"AutoAttack {name} (n={n_aa})"):
            entry = evaluate_for_leaderboard(
                model, x[:n_aa], y[:n_aa], dataset="digits", threat_model="Linf", eps=budget_info.linf_eps,
                model_name=f"demo-{name.lower()}", batch_size=n_aa, seed=seed, out_dir=out, ib_config=ib_config,
                metadata={"name": f"DigitsCNN {name} (ib-plugins demo)", "architecture": "DigitsCNN",
                          "venue": "ib-plugins demo", "additional_data": False},
                state_dir=out / "autoattack" / name.lower(), device=device, progress=progress, overwrite=overwrite,
            )
        entries.append(entry)
        aa_results[name] = {"n": n_aa, "clean_accuracy": entry.clean_accuracy, "robust_accuracy": entry.robust_accuracy}
        results[name]["autoattack"] = aa_results[name]


def _finish_demo(
    out: Path, *, results: dict[str, Any], suite_results: dict[str, Any], aa_results: dict[str, Any],
    entries: list[Any], budget_info: Any, x: torch.Tensor, epochs: int, seed: int, autoattack_n: int, t0: float,
) -> dict[str, Any]:
    """The demo's table, leaderboard files, metrics.json and results.md."""
    from ib_plugins.presets import get_preset

    table = _demo_table(suite_results, aa_results)
    metrics: dict[str, Any] = {
        "models": results,
        "budget": dataclasses.asdict(budget_info),
        "n_eval": int(x.shape[0]),
    }
    if entries:
        from ib_plugins.leaderboard import render_leaderboard

        md_path, html_path = render_leaderboard(entries, out, title="ib-plugins demo: digits, Linf")
        metrics["leaderboard"] = {"markdown": str(md_path), "html": str(html_path)}
    metrics["wall_time_s"] = round(time.perf_counter() - t0, 2)
    write_json(out / "metrics.json", metrics)
    aa_note = (
        f" The AutoAttack column is standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) at ε = {budget_info.linf_eps} "
        f"on the first {min(autoattack_n, int(x.shape[0]))} test images."
        if aa_results else ""
    )
    md = [
        "# ib-plugins demo: CE vs IB-RAR on scikit-learn digits (8x8)",
        "",
        f"Both networks: DigitsCNN, {epochs} epochs, batch 50, seed {seed}; IB-RAR = IB term on the robust layers "
        f"({', '.join(map(md_text, get_preset('digits-cnn').robust_layers))}) "
        "+ channel mask (authors' code mode). Accuracy (%) on "
        f"{x.shape[0]} test images under the IB-RAR attack suite at the digits budget "
        f"(L∞ ε = {budget_info.linf_eps} for PGD, FGSM, FAB and NI-FGSM; CW is the paper's fixed-c CW-L2, "
        f"see the note under the table).{aa_note}",
        "",
        table,
    ]
    _atomic_write_text(out / "results.md", "\n".join(md) + "\n")
    metrics["table"] = table
    return metrics
