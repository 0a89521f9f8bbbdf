"""One model-info file: :class:`LeaderboardEntry` (RobustBench's fields, validated) and :func:`load_entries`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

from ib_plugins._types import PathLike
from ib_plugins.stats import wilson_interval

#: RobustBench 1.1.1 ``ModelInfo`` fields, in its order (``robustbench/utils.py``).
MODEL_INFO_FIELDS: tuple[str, ...] = (
    "link",
    "name",
    "authors",
    "additional_data",
    "number_forward_passes",
    "dataset",
    "venue",
    "architecture",
    "eps",
    "clean_acc",
    "reported",
    "corruptions_acc",
    "corruptions_acc_3d",
    "corruptions_mce",
    "corruptions_mce_3d",
    "autoattack_acc",
    "footnote",
)
#: RobustBench's threat-model folder names.
THREAT_MODELS: tuple[str, ...] = ("Linf", "L2", "corruptions", "corruptions_3d")

#: RobustBench's leaderboard radii: (dataset, threat model) -> eps. An entry of these datasets and
#: threat models at another eps is marked non-standard (see :attr:`LeaderboardEntry.nonstandard_eps`).
STANDARD_EPS: Mapping[tuple[str, str], float] = {
    ("cifar10", "Linf"): 8 / 255,
    ("cifar10", "L2"): 0.5,
    ("cifar100", "Linf"): 8 / 255,
    ("imagenet", "Linf"): 4 / 255,
}

_TEXT_FIELDS = ("link", "name", "authors", "venue", "architecture", "footnote")
_PERCENT_FIELDS = (
    "clean_acc",
    "corruptions_acc",
    "corruptions_acc_3d",
    "corruptions_mce",
    "corruptions_mce_3d",
    "autoattack_acc",
    "external",
)
_ROBUST_FIELDS = ("autoattack_acc", "corruptions_acc", "corruptions_acc_3d", "external")
_KNOWN_KEYS = frozenset(MODEL_INFO_FIELDS) | {"unreliable", "external", "n", "ib_plugins"}


# --------------------------------------------------------------------------------------------------
# Field validation
# --------------------------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _check_text(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"field {name!r}: expected a string or null, got {_type_name(value)} {value!r}")


def _check_percent(name: str, value: object, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise ValueError(f"field {name!r}: expected a percentage string such as \"72.91\", got null/missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"field {name!r}: expected a percentage string such as \"72.91\", got {_type_name(value)}")
    text = value.strip() if isinstance(value, str) else str(value)
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"field {name!r}: expected a percentage string such as \"72.91\", got {value!r}") from None
    if not math.isfinite(number) or not 0.0 <= number <= 100.0:
        raise ValueError(f"field {name!r}: expected a percentage in [0, 100], got {value!r}")
    return text


def _check_eps(value: object) -> float | str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"field 'eps': expected a number, a string like \"8/255\" or null, got {_type_name(value)}")
    try:
        number = _eps_value(value)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"field 'eps': expected a number or a string like \"8/255\", got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"field 'eps': expected a finite value >= 0, got {value!r}")
    return value if isinstance(value, str) else float(value)


def _eps_value(value: float | str) -> float:
    if isinstance(value, str):
        return float(Fraction(value.strip().replace(" ", "")))
    return float(value)


def _format_eps(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    k = value * 255
    if value > 0 and abs(k - round(k)) < 1e-6 and round(k) >= 1:
        return f"{round(k)}/255"
    return f"{value:.4g}"


def _pct(text: str | None) -> float | None:
    return None if text is None else float(text) / 100.0


def _count(fraction: float, n: int) -> int:
    """The number of successes behind an accuracy rounded to 0.01 % (exact for n <= 10,000)."""
    return min(n, max(0, round(fraction * n)))


def _interval_text(fraction: float | None, n: int | None) -> str:
    if fraction is None or n is None:
        return "-"
    low, high = wilson_interval(_count(fraction, n), n)
    return f"[{low * 100:.1f}, {high * 100:.1f}]"


# --------------------------------------------------------------------------------------------------
# The entry
# --------------------------------------------------------------------------------------------------


@dataclass
class LeaderboardEntry:
    """One model's RobustBench model-info record (see the module docstring for the schema).

    Accuracies are percentage strings, as in RobustBench's files; the float properties
    (:attr:`clean_accuracy`, :attr:`robust_accuracy`, :attr:`best_known_accuracy`) give fractions.

    Attributes:
        model_name: the model ID (the file's stem).
        dataset: e.g. ``"cifar10"``.
        clean_acc: clean accuracy in percent, e.g. ``"91.08"``.
        threat_model: ``"Linf"``, ``"L2"``, ``"corruptions"``, ``"corruptions_3d"`` or None
            (taken from the file's folder when read).
        eps: the radius (float, or a string like ``"8/255"`` as in curated files).
        autoattack_acc: AutoAttack robust accuracy in percent.
        link, name, authors, venue, architecture, footnote: paper and model description.
        additional_data: whether extra training data was used.
        number_forward_passes: forward passes per prediction.
        reported: the accuracy the paper reports, in percent (``"56.30"``; a number in [0, 100]).
        corruptions_acc, corruptions_acc_3d, corruptions_mce, corruptions_mce_3d: corruption
            results (not produced by ib_plugins).
        unreliable: the AutoAttack evaluation is potentially unreliable.
        external: best known robust accuracy (AutoAttack + external evaluations), in percent.
        n: the number of evaluated examples (JSON key ``"n"``); None = unknown (RobustBench's
            files do not record it). When None, ``ib_plugins["n_examples"]`` is used if present.
        ib_plugins: the IB settings and extra results written by ib_plugins.
        extra: unknown keys of the file, kept for round trips.
        path: the file it was read from / written to (not serialised).

    Raises:
        ValueError: a field breaks the schema; the message names the field.

    Example:
        >>> try:
        ...     LeaderboardEntry(model_name="m", dataset="cifar10", clean_acc="abc", autoattack_acc="1")
        ... except ValueError as err:
        ...     print(err)
        field 'clean_acc': expected a percentage string such as "72.91", got 'abc'
    """

    model_name: str
    dataset: str
    clean_acc: str
    threat_model: str | None = None
    eps: float | str | None = None
    autoattack_acc: str | None = None
    link: str | None = None
    name: str | None = None
    authors: str | None = None
    additional_data: bool | None = None
    number_forward_passes: int | None = None
    venue: str | None = None
    architecture: str | None = None
    reported: str | None = None
    corruptions_acc: str | None = None
    corruptions_acc_3d: str | None = None
    corruptions_mce: str | None = None
    corruptions_mce_3d: str | None = None
    footnote: str | None = None
    unreliable: bool = False
    external: str | None = None
    n: int | None = None
    ib_plugins: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name.strip():
            raise ValueError(f"model_name: expected a non-empty string, got {self.model_name!r}")
        if any(c in self.model_name for c in "/\\") or self.model_name in (".", ".."):
            raise ValueError(f"model_name: expected a file name without path separators, got {self.model_name!r}")
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ValueError(f"field 'dataset': expected a non-empty string, got {_type_name(self.dataset)} {self.dataset!r}")
        if self.threat_model is not None and not isinstance(self.threat_model, str):
            raise ValueError(f"threat_model: expected a string or None, got {_type_name(self.threat_model)}")
        for name in _TEXT_FIELDS:
            _check_text(name, getattr(self, name))
        for name in _PERCENT_FIELDS:
            setattr(self, name, _check_percent(name, getattr(self, name), required=name == "clean_acc"))
        if all(getattr(self, name) is None for name in _ROBUST_FIELDS):
            raise ValueError(
                "field 'autoattack_acc': expected a robust accuracy (autoattack_acc, or corruptions_acc / "
                "corruptions_acc_3d / external), got none"
            )
        self.eps = _check_eps(self.eps)
        if self.additional_data is not None and not isinstance(self.additional_data, bool):
            raise ValueError(f"field 'additional_data': expected true, false or null, got {self.additional_data!r}")
        n = self.number_forward_passes
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"field 'number_forward_passes': expected an integer >= 1 or null, got {n!r}")
        # The paper's accuracy: a percentage like the others ("56.30"), not free text (nor NaN).
        self.reported = _check_percent("reported", self.reported)
        if not isinstance(self.unreliable, bool):
            raise ValueError(f"field 'unreliable': expected true or false, got {self.unreliable!r}")
        if self.ib_plugins is not None and not isinstance(self.ib_plugins, dict):
            raise ValueError(f"field 'ib_plugins': expected an object or null, got {_type_name(self.ib_plugins)}")
        if self.n is None and self.ib_plugins is not None:
            recorded = self.ib_plugins.get("n_examples")
            if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1:
                self.n = recorded
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1):
            raise ValueError(f"field 'n': expected the number of evaluated examples (an integer >= 1) or null, "
                             f"got {self.n!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra: expected a dict, got {_type_name(self.extra)}")

    # -- numbers -------------------------------------------------------------------------------
    @property
    def robust_field(self) -> str:
        """The JSON field holding this threat model's robust accuracy (RobustBench's ``ACC_FIELDS``)."""
        if self.threat_model == "corruptions":
            return "corruptions_acc"
        if self.threat_model == "corruptions_3d":
            return "corruptions_acc_3d"
        return "autoattack_acc"

    @property
    def clean_accuracy(self) -> float:
        """Clean accuracy as a fraction."""
        return float(self.clean_acc) / 100.0

    @property
    def robust_accuracy(self) -> float | None:
        """AutoAttack (or corruption) accuracy as a fraction; None when the file has only ``external``."""
        value = getattr(self, self.robust_field)
        if value is None:
            value = self.autoattack_acc or self.corruptions_acc or self.corruptions_acc_3d
        return _pct(value)

    @property
    def best_known_accuracy(self) -> float:
        """``external`` when present, else :attr:`robust_accuracy` (RobustBench's ranking key)."""
        if self.external is not None:
            return float(self.external) / 100.0
        value = self.robust_accuracy
        return 0.0 if value is None else value

    @property
    def eps_value(self) -> float | None:
        """``eps`` as a float (``"8/255"`` → 0.0313...)."""
        return None if self.eps is None else _eps_value(self.eps)

    @property
    def standard_eps(self) -> float | None:
        """RobustBench's radius for this entry's dataset and threat model (:data:`STANDARD_EPS`), or None."""
        return STANDARD_EPS.get((self.dataset.strip().lower().replace("-", ""), self.threat_model or ""))

    @property
    def nonstandard_eps(self) -> bool:
        """Whether ``eps`` differs from RobustBench's radius for the dataset and threat model.

        False when RobustBench has no leaderboard for them (e.g. ``digits``) or ``eps`` is unknown.

        Example:
            >>> LeaderboardEntry(model_name="m", dataset="cifar10", threat_model="Linf", eps=0.03, clean_acc="9",
            ...                  autoattack_acc="1").nonstandard_eps
            True
        """
        standard, value = self.standard_eps, self.eps_value
        return standard is not None and value is not None and not math.isclose(value, standard, rel_tol=1e-6)

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The model-info JSON object.

        Every ModelInfo field (nulls included), ``unreliable``, ``external`` and ``n`` when set,
        unknown keys, then ``ib_plugins`` when set.

        Returns:
            A JSON-serialisable dict.

        Example:
            >>> d = LeaderboardEntry(model_name="m", dataset="cifar10", clean_acc="90.0", autoattack_acc="50.0").to_dict()
            >>> list(d)[:3], d["autoattack_acc"], d["unreliable"]
            (['link', 'name', 'authors'], '50.0', False)
        """
        out: dict[str, Any] = {name: getattr(self, name) for name in MODEL_INFO_FIELDS}
        out["unreliable"] = self.unreliable
        if self.external is not None:
            out["external"] = self.external
        if self.n is not None:
            out["n"] = self.n
        for key, value in self.extra.items():
            if key not in out:
                out[key] = value
        if self.ib_plugins is not None:
            out["ib_plugins"] = self.ib_plugins
        return out

    def to_json(self, path: PathLike | None = None, *, indent: int = 2) -> str:
        """Serialise to JSON text and, with ``path``, write it (parent folders are created).

        Args:
            path: where to write; None = only return the text.
            indent: JSON indentation.

        Returns:
            The JSON text.

        Example:
            >>> e = LeaderboardEntry(model_name="m", dataset="cifar10", clean_acc="90.0", autoattack_acc="50.0")
            >>> LeaderboardEntry.from_dict(json.loads(e.to_json()), model_name="m") == e
            True
        """
        text = json.dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n"
        if path is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
            self.path = target
        return text

    def model_info_path(self, root: PathLike) -> Path:
        """``root/model_info/<dataset>/<threat_model>/<model_name>.json`` (RobustBench's layout).

        Args:
            root: the output folder.

        Returns:
            The path (not created).

        Raises:
            ValueError: ``threat_model`` is not set.

        Example:
            >>> e = LeaderboardEntry(model_name="m", dataset="cifar10", threat_model="L2", clean_acc="9", autoattack_acc="1")
            >>> e.model_info_path("out").as_posix()
            'out/model_info/cifar10/L2/m.json'
        """
        if self.threat_model is None:
            raise ValueError("threat_model: expected 'Linf', 'L2', ... to place the file, got None")
        folder = "corruptions" if self.threat_model == "corruptions_3d" else self.threat_model
        return Path(root) / "model_info" / self.dataset / folder / f"{self.model_name}.json"

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, model_name: str, threat_model: str | None = None
    ) -> LeaderboardEntry:
        """Build an entry from a model-info JSON object, validating it.

        Args:
            data: the parsed JSON object.
            model_name: the model ID.
            threat_model: the threat model; None = ``data["ib_plugins"]["threat_model"]`` if present.

        Returns:
            The entry.

        Raises:
            ValueError: the object breaks the schema; the message names the field.

        Example:
            >>> LeaderboardEntry.from_dict({"dataset": "cifar10", "clean_acc": "94.78", "autoattack_acc": "0.0",
            ...                             "eps": "8/255"}, model_name="Standard").eps_value == 8 / 255
            True
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object with the model-info fields, got {_type_name(data)}")
        if "dataset" not in data or data["dataset"] is None:
            raise ValueError("field 'dataset': missing (a model-info file names its dataset, e.g. \"cifar10\")")
        if "clean_acc" not in data:
            raise ValueError("field 'clean_acc': missing (a model-info file gives the clean accuracy in percent)")
        ib = data.get("ib_plugins")
        if threat_model is None and isinstance(ib, Mapping) and isinstance(ib.get("threat_model"), str):
            threat_model = ib["threat_model"]
        kwargs: dict[str, Any] = {}
        names = {f.name for f in fields(cls)} - {"model_name", "threat_model", "extra", "path"}
        for key in names:
            if key in data:
                kwargs[key] = data[key]
        if "unreliable" in kwargs and kwargs["unreliable"] is None:
            kwargs["unreliable"] = False
        extra = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
        return cls(model_name=model_name, threat_model=threat_model, extra=extra, **kwargs)

    @classmethod
    def from_json(cls, path: PathLike, *, threat_model: str | None = None) -> LeaderboardEntry:
        """Read and validate a model-info file.

        The model ID is the file's stem; the threat model is the name of its folder when that is
        one of :data:`THREAT_MODELS` (RobustBench's layout), else ``threat_model``, else the
        file's ``ib_plugins.threat_model``.

        Args:
            path: a ``.json`` file.
            threat_model: fallback threat model.

        Returns:
            The entry (with :attr:`path` set).

        Raises:
            ValueError: the file is not JSON or breaks the schema; the message names the file and
                the field.
            FileNotFoundError: no such file.

        Example:
            >>> import tempfile
            >>> d = Path(tempfile.mkdtemp()) / "model_info" / "cifar10" / "Linf"
            >>> d.mkdir(parents=True)
            >>> _ = (d / "bad.json").write_text('{"dataset": "cifar10", "clean_acc": "91", "autoattack_acc": 7}')
            >>> LeaderboardEntry.from_json(d / "bad.json").robust_accuracy
            0.07
            >>> _ = (d / "bad.json").write_text('{"dataset": "cifar10", "clean_acc": "91", "autoattack_acc": "x"}')
            >>> try:
            ...     LeaderboardEntry.from_json(d / "bad.json")
            ... except ValueError as err:
            ...     print(str(err).split(": ", 1)[1])
            field 'autoattack_acc': expected a percentage string such as "72.91", got 'x'
        """
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{p}: not a JSON file ({err})") from err
        except UnicodeDecodeError as err:
            raise ValueError(f"{p}: not a UTF-8 JSON file ({err})") from err
        folder = p.parent.name
        if folder in THREAT_MODELS:
            threat_model = folder
        try:
            entry = cls.from_dict(data, model_name=p.stem, threat_model=threat_model)
        except ValueError as err:
            raise ValueError(f"{p}: {err}") from err
        entry.path = p
        return entry


# --------------------------------------------------------------------------------------------------
# Loading many
# --------------------------------------------------------------------------------------------------


def _looks_like_model_info(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return True  # let from_json report it
    return isinstance(data, dict) and ("clean_acc" in data or "autoattack_acc" in data)


def load_entries(paths: PathLike | Iterable[PathLike]) -> list[LeaderboardEntry]:
    """Read model-info files from files and folders.

    Folders are searched recursively for ``*.json``; JSON objects with neither ``clean_acc`` nor
    ``autoattack_acc`` (e.g. resume files) are skipped there. Files given explicitly are always
    validated. The same file is read once.

    Args:
        paths: one path or several.

    Returns:
        The entries, in path order (folders sorted).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a model-info file breaks the schema, is not JSON or not UTF-8 (the message
            names file and field).
        TypeError: ``paths`` is neither a path nor an iterable of paths.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> e = LeaderboardEntry(model_name="a", dataset="cifar10", threat_model="Linf", clean_acc="80", autoattack_acc="40")
        >>> _ = e.to_json(e.model_info_path(root))
        >>> [x.model_name for x in load_entries(root)], load_entries([root])[0].threat_model
        (['a'], 'Linf')
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, Iterable):
        raise TypeError(f"paths: expected a path or an iterable of paths, got {type(paths).__name__}")
    seen: set[Path] = set()
    entries: list[LeaderboardEntry] = []
    for raw in paths:
        if not isinstance(raw, (str, os.PathLike)):
            raise TypeError(f"paths: expected str or os.PathLike items, got {type(raw).__name__} {raw!r}")
        p = Path(raw)
        if not p.exists():
            raise FileNotFoundError(f"paths: {p} does not exist")
        if p.is_dir():
            candidates = [f for f in sorted(p.rglob("*.json")) if f.is_file() and _looks_like_model_info(f)]
        else:
            candidates = [p]
        for f in candidates:
            key = f.resolve()
            if key in seen:
                continue
            seen.add(key)
            entries.append(LeaderboardEntry.from_json(f))
    return entries
