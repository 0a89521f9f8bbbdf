"""Checkpoint IO: atomic writes, saving and loading checkpoints, rebuilding a trained network from one."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ib_plugins.errors import IBPluginsError
from ib_plugins.training.config import TrainConfig, _device, _short_repr
from ib_plugins.training.model import _plain_network

CHECKPOINT_FORMAT = 1


class CheckpointError(IBPluginsError, ValueError):
    """A checkpoint file is missing, corrupt, truncated, or belongs to a different model.

    Example:
        >>> issubclass(CheckpointError, ValueError)
        True
    """
def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` through a temporary file: ``write(binary_file)``, fsync, rename, fsync the folder.

    A crash, a SIGKILL or a power loss leaves either the old file or the new one at ``path``, never
    a half-written one; the temporary file is removed when ``write`` fails.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _atomic_save(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically and durably: a crash, a SIGKILL or a power loss never leaves a half-written file.

    The checkpoint goes to ``path.tmp``, which is fsynced and renamed over ``path``; the folder is then
    fsynced too (where the OS allows it), so the rename itself survives a power loss.

    Args:
        path: destination.
        payload: the checkpoint dict (tensors, numbers, strings, lists and dicts only).

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> save_checkpoint(os.path.join(d, "c.pt"), {"format": 1, "model": {}})
        >>> sorted(os.listdir(d))
        ['c.pt']
    """
    _atomic_save(payload, Path(path))


_REFUSED_BY_SAFE_LOADING = re.compile(
    r"GLOBAL |Unsupported global|Can only (create new object|build)|Trying to call reduce|must be imported to load"
)


def _load_error_reason(err: BaseException) -> str:
    """A one-line reason from torch's (often multi-paragraph) load error."""
    text = str(err)
    match = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if match:
        text = match.group(1)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("Weights only load failed"):
            text = line
            break
    text = text.split(". ")[0].strip().rstrip(".")
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _safe_torch_load(
    path: Path,
    *,
    map_location: Any,
    error: Callable[[str], Exception],
    subject: str,
    refused_advice: str,
    not_torch: str,
    corrupt: str,
) -> Any:
    """``torch.load(path, weights_only=True)``; a failure raises ``error`` with a one-line reason.

    The message starts with ``subject``; an object that safe loading refuses is named with
    ``refused_advice`` appended, another unpickling error is ``not_torch``, anything else torch raises
    on a damaged file (RuntimeError, EOFError, KeyError, ...) is ``corrupt``.
    """
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of non-torch files before refusing them; the error says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if _REFUSED_BY_SAFE_LOADING.search(str(err)):
            raise error(
                f"{subject} holds objects that safe loading (torch.load with weights_only=True) refuses "
                f"({_load_error_reason(err)}); ib-plugins never unpickles arbitrary objects (that would run code "
                f"from the file){refused_advice}"
            ) from err
        raise error(f"{subject} {not_torch} ({_load_error_reason(err)})") from err
    except Exception as err:
        raise error(f"{subject} {corrupt} ({_load_error_reason(err)})") from err


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``, with clear errors.

    Only tensors, numbers, strings and containers are read: a file that holds other pickled
    objects (a class, a function, a lambda) is refused, and the message says so; ib-plugins never
    unpickles arbitrary objects (that would run code from the file).

    Args:
        path: checkpoint file.
        map_location: where tensors go (a device that exists on this machine).

    Returns:
        The checkpoint dict (``model``, ``config``, ``epoch``...).

    Raises:
        CheckpointError: missing, a folder, unreadable, truncated or corrupt, holding objects that safe
            loading refuses, or not an ib-plugins checkpoint.
        ValueError: ``map_location`` is not a device of this machine.

    Example:
        >>> try:
        ...     load_checkpoint("/nonexistent/ckpt.pt")
        ... except CheckpointError as err:
        ...     print(str(err).split(":")[0])
        checkpoint not found
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"checkpoint: expected a checkpoint file, got the folder {p}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    if isinstance(map_location, (str, torch.device)):
        _device(map_location, arg="map_location")
    try:
        with open(p, "rb") as f:
            head = f.read(1)
    except OSError as err:
        raise CheckpointError(f"checkpoint {p} cannot be read ({err.strerror or err})") from err
    if not head:
        raise CheckpointError(f"checkpoint {p} is empty (0 bytes): corrupt or truncated")
    ckpt = _safe_torch_load(
        p, map_location=map_location, error=CheckpointError, subject=f"checkpoint {p}",
        refused_advice=(", so it does not load this file: its own checkpoints hold only tensors, numbers, "
                        "strings, lists and dicts"),
        not_torch="is corrupt or truncated, or not a torch checkpoint, and cannot be read",
        corrupt="is corrupt or truncated and cannot be read",
    )
    if (
        not isinstance(ckpt, dict)
        or not isinstance(ckpt.get("model"), Mapping)
        or not isinstance(ckpt.get("config"), Mapping)
    ):
        raise CheckpointError(
            f"{p} is not an ib-plugins checkpoint (expected a dict with 'model' (a state dict) and 'config' (a dict))"
        )
    return ckpt


_WEIGHTS = ("raw", "ema")


def load_model_from_checkpoint(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    expect_model: str | None = None,
    weights: str = "raw",
) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """Rebuild the trained network of a checkpoint (plain network; VIB models keep their head).

    The global torch RNGs are left as they were: building the network draws initial weights (which
    the stored ones replace) from a forked generator, so a seeded script behaves the same whether
    or not it loads a model.

    Args:
        path: checkpoint file (``checkpoint.pt``, or ``checkpoint_best.pt`` of a run with
            ``robust_val_every``).
        map_location: device for the tensors.
        expect_model: if given, the model name the checkpoint must hold.
        weights: ``"raw"`` (default): the trained weights (checkpoint key ``model``); ``"ema"``: their
            exponential moving average (key ``model_ema``, written by runs with ``ema_decay``).

    Returns:
        ``(model, config, checkpoint)`` with the model in eval mode.

    Raises:
        CheckpointError: unreadable file, a different model than expected, weights that do not fit,
            or ``weights="ema"`` for a checkpoint without EMA weights.
        ValueError: ``weights`` is neither ``"raw"`` nor ``"ema"``.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "checkpoint.pt")
        >>> from ib_plugins.training import TrainConfig, build_model, resolve_config
        >>> config = resolve_config(TrainConfig())
        >>> save_checkpoint(path, {"model": build_model(config)[1].state_dict(), "config": config.to_dict()})
        >>> state = torch.get_rng_state()
        >>> model, cfg, ckpt = load_model_from_checkpoint(path)
        >>> type(model).__name__, model.training, torch.equal(state, torch.get_rng_state())
        ('DigitsCNN', False, True)
        >>> try:
        ...     load_model_from_checkpoint(path, weights="ema")
        ... except CheckpointError as err:
        ...     print(str(err).split(" (")[0].split(": ", 1)[1])
        weights='ema' was asked for, but the checkpoint holds no EMA weights
        >>> try:
        ...     load_model_from_checkpoint("/nonexistent.pt")
        ... except CheckpointError:
        ...     print("error")
        error
    """
    if not isinstance(weights, str) or weights not in _WEIGHTS:
        raise ValueError(f"weights: expected one of {', '.join(map(repr, _WEIGHTS))}, got {_short_repr(weights)}")
    ckpt = load_checkpoint(path, map_location=map_location)
    try:
        config = TrainConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: the stored config is invalid ({err})") from err
    if expect_model is not None and config.model != expect_model:
        raise CheckpointError(f"{path} holds a {config.model!r} model, not {expect_model!r}")
    state = ckpt["model"]
    if weights == "ema":
        state = ckpt.get("model_ema")
        if not isinstance(state, Mapping):
            raise CheckpointError(
                f"{path}: weights='ema' was asked for, but the checkpoint holds no EMA weights (train with "
                "ema_decay=D, --ema-decay D, to keep them; weights='raw' loads the trained weights)"
            )
    model = _plain_network(config)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, AttributeError) as err:
        reason = " ".join(str(err).split())
        raise CheckpointError(f"{path}: the weights do not fit a {config.model!r} model ({reason[:300]})") from err
    return model.to(map_location).eval(), config, ckpt
