"""Results folders (:func:`prepare_results_dir`, :func:`write_json`) and the test inputs the runners share."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ib_plugins.training import (
    RunExistsError,
    _atomic_write_text,
)


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
