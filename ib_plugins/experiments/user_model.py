"""A user's own model: ``package.module:function`` or ``path/to/file.py:function`` plus a state_dict."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ib_plugins.training import (
    _device,
)

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
    from ib_plugins.training.checkpoint import _safe_torch_load

    if path.is_dir():
        raise ValueError(f"weights: expected a state_dict file, got the folder {path}")
    if not path.is_file():
        raise FileNotFoundError(f"weights: {path} does not exist (expected a state_dict saved with torch.save)")
    if path.stat().st_size == 0:
        raise ValueError(f"weights: {path} is empty (0 bytes): corrupt or truncated")
    raw = _safe_torch_load(
        path, map_location="cpu", error=ValueError, subject=f"weights: {path}",
        refused_advice=": save the weights with torch.save(model.state_dict(), path)",
        not_torch="is corrupt or truncated, or not a torch file",
        corrupt="is corrupt or truncated, or not a torch file",
    )
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
    from ib_plugins._context import _inference_modes

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
