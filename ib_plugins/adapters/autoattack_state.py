"""What an AutoAttack run returns and keeps: :class:`AutoAttackResult`, :func:`model_fingerprint`, chunk files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

logger = logging.getLogger("ib_plugins.adapters.autoattack_eval")  # the name its records had before the split


_STATE_FORMAT = 1

# --------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoAttackResult:
    """The outcome of :func:`run_autoattack`.

    Attributes:
        clean_accuracy: share of examples classified correctly without attack.
        robust_accuracy: share classified correctly after AutoAttack (RobustBench's metric).
        robust_flags: bool ``[n]`` (CPU), True where the example survived every attack.
        clean_flags: bool ``[n]`` (CPU), True where the clean example is classified correctly.
        n: number of examples.
        eps: the perturbation radius.
        norm: ``"Linf"``, ``"L2"`` or ``"L1"``.
        version: the AutoAttack version.
        seed: the attacks' seed.
        attacks: the attacks that were run, in order.
        batch_size: examples per chunk.
        backend: ``"pyautoattack"`` or ``"autoattack"`` (the original package).
        wall_time_s: seconds the call took (reused chunks included, at their reading cost).
        chunks_run: chunks attacked in this call.
        chunks_reused: chunks read back from ``state_dir``.
        checks: AutoAttack's warnings (randomised/dynamic defence, probabilities as outputs...),
            de-duplicated.
        attack_options: the sub-attack settings that were applied (``attack_options`` argument).

    Example:
        >>> r = AutoAttackResult(0.5, 0.25, torch.tensor([True, False, False, False]),
        ...                      torch.tensor([True, True, False, False]), 4, 0.03, "Linf", "standard", 0)
        >>> r.to_dict()["robust_accuracy"], r.to_dict()["robust_flags"]
        (0.25, [True, False, False, False])
    """

    clean_accuracy: float
    robust_accuracy: float
    robust_flags: Tensor = field(repr=False)
    clean_flags: Tensor = field(repr=False)
    n: int
    eps: float
    norm: str
    version: str
    seed: int
    attacks: tuple[str, ...] = ()
    batch_size: int = 0
    backend: str = "pyautoattack"
    wall_time_s: float = 0.0
    chunks_run: int = 0
    chunks_reused: int = 0
    checks: tuple[str, ...] = ()
    attack_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (flags as lists of bools).

        Returns:
            A dict of plain Python values.

        Example:
            >>> import json
            >>> r = AutoAttackResult(1.0, 1.0, torch.ones(1, dtype=torch.bool), torch.ones(1, dtype=torch.bool),
            ...                      1, 0.1, "L2", "custom", 3, ("apgd-ce",))
            >>> sorted(json.loads(json.dumps(r.to_dict())))[:4]
            ['attack_options', 'attacks', 'backend', 'batch_size']
        """
        return {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "n": self.n,
            "eps": self.eps,
            "norm": self.norm,
            "version": self.version,
            "seed": self.seed,
            "attacks": list(self.attacks),
            "batch_size": self.batch_size,
            "backend": self.backend,
            "wall_time_s": self.wall_time_s,
            "chunks_run": self.chunks_run,
            "chunks_reused": self.chunks_reused,
            "checks": list(self.checks),
            "attack_options": {k: dict(v) for k, v in self.attack_options.items()},
            "robust_flags": [bool(v) for v in self.robust_flags.tolist()],
            "clean_flags": [bool(v) for v in self.clean_flags.tolist()],
        }


# --------------------------------------------------------------------------------------------------
# Fingerprints and the per-chunk state files
# --------------------------------------------------------------------------------------------------


def _tensor_bytes(t: Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    if t.numel() == 0:
        return b""
    return t.view(torch.uint8).numpy().tobytes()


def _hash_tensors(h: Any, *tensors: Tensor) -> None:
    for t in tensors:
        h.update(f"{t.dtype}|{list(t.shape)}|".encode())
        h.update(_tensor_bytes(t))


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's ``state_dict`` (names, dtypes, shapes and values).

    Args:
        model: any module.

    Returns:
        A hex digest; equal for models with equal weights and buffers.

    Example:
        >>> import torch.nn as nn
        >>> a = nn.Linear(2, 2); b = nn.Linear(2, 2); b.load_state_dict(a.state_dict())
        <All keys matched successfully>
        >>> model_fingerprint(a) == model_fingerprint(b), len(model_fingerprint(a))
        (True, 64)
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        if isinstance(t, Tensor):
            _hash_tensors(h, t)
        else:
            h.update(repr(t).encode())
    return h.hexdigest()


def _chunk_fingerprint(base: Mapping[str, Any], index: int, start: int, stop: int, xb: Tensor, yb: Tensor) -> str:
    h = hashlib.sha256()
    _hash_tensors(h, xb, yb)
    payload = {**base, "chunk": index, "start": start, "stop": stop, "data": h.hexdigest()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _chunk_path(state_dir: Path, index: int) -> Path:
    return state_dir / f"chunk_{index:06d}.json"


def _read_chunk(path: Path, fingerprint: str, size: int) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("ignoring unreadable AutoAttack chunk file %s", path)
        return None
    if not isinstance(data, dict):
        logger.warning(
            "ignoring AutoAttack chunk file %s: expected a JSON object, got %s; attacking the chunk again",
            path, "null" if data is None else type(data).__name__,
        )
        return None
    flags = data.get("robust")
    if data.get("fingerprint") != fingerprint:
        logger.info("chunk file %s belongs to another evaluation; attacking the chunk again", path)
        return None
    if not isinstance(flags, list) or len(flags) != size or not all(
        isinstance(v, (bool, int)) and v in (0, 1) for v in flags
    ):
        logger.warning(
            "ignoring AutoAttack chunk file %s: expected 'robust' to be a list of %d flags (0/1), got %s; "
            "attacking the chunk again", path, size, _describe(flags),
        )
        return None
    return torch.tensor([bool(v) for v in flags], dtype=torch.bool)


def _describe(value: object) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return "null" if value is None else type(value).__name__


def _write_chunk(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)
