"""RobustBench-style model-info files and leaderboards (markdown and a self-contained HTML page).

A *model-info file* is RobustBench's JSON description of one evaluated model, stored as
``model_info/<dataset>/<threat_model>/<model_id>.json`` (RobustBench 1.1.1 ``ModelInfo``,
``robustbench/utils.py``): the fields ``link, name, authors, additional_data,
number_forward_passes, dataset, venue, architecture, eps, clean_acc, reported, corruptions_acc,
corruptions_acc_3d, corruptions_mce, corruptions_mce_3d, autoattack_acc, footnote``, plus the
curated files' ``unreliable`` (AutoAttack evaluation potentially unreliable) and ``external`` (best
known robust accuracy). Accuracies are **percentage strings** (``"72.91"``), as RobustBench's
``update_json`` writes them. Files written by :mod:`ib_plugins` add ``n`` (the number of evaluated
examples) and an ``ib_plugins`` object (IB settings, attack-suite results); other unknown keys are
kept as they are. Files without ``n`` (RobustBench's own, or written by older versions) still load:
their ``n`` is unknown (None), unless ``ib_plugins.n_examples`` gives it.

:class:`LeaderboardEntry` reads (validating the schema), writes and ranks such files;
:func:`render_markdown` gives the table RobustBench's ``list_available_models`` prints;
:func:`render_html` a standalone page with the columns of RobustBench's leaderboard (no external
resources, click a column header to sort); :func:`render_leaderboard` writes both.

An entry evaluated at another radius than RobustBench's standard one for its dataset and threat
model (:data:`STANDARD_EPS`: CIFAR-10 L∞ 8/255, CIFAR-10 L2 0.5, CIFAR-100 L∞ 8/255, ImageNet L∞
4/255) is marked *non-standard* in both tables, with a note. :func:`robustbench_submission` fills
RobustBench's "New Model(s)" issue template from an entry.

Ranking follows RobustBench: by the best known robust accuracy (``external`` when present, else
the AutoAttack accuracy), descending. Entries of different datasets or threat models are listed
in separate tables. Both tables show each entry's ``n`` and a 95 % Wilson score interval
(:func:`ib_plugins.stats.wilson_interval`, re-exported here) of its clean and robust accuracy; a table whose entries differ in ``n``
or ε, and a leaderboard mixing datasets or threat models, carry a visible note saying so. In the
markdown every user-supplied field is escaped (:mod:`ib_plugins._markdown`) and only ``http(s)``
links are made links.

This module imports only the standard library and torch.

Example:
    >>> e = LeaderboardEntry(model_name="ib_rar_digits", dataset="digits", threat_model="Linf", eps=0.1,
    ...                      clean_acc="97.5", autoattack_acc="61.25", name="IB-RAR", architecture="DigitsCNN")
    >>> e.robust_accuracy, e.clean_accuracy
    (0.6125, 0.975)
    >>> print(render_markdown([e]))
    ### digits, Linf (eps = 0.1)
    <BLANKLINE>
    | # | Model ID | Paper | Clean accuracy | Robust accuracy | n | Clean 95% CI | Robust 95% CI | Architecture | Venue |
    |:---:|---|---|:---:|:---:|:---:|:---:|:---:|:---:|:---:|
    | **1** | **ib_rar_digits** | *IB-RAR* | 97.50% | 61.25% | unknown | - | - | DigitsCNN | Unpublished |
    <BLANKLINE>
    n: number of evaluated examples (unknown: not recorded in the model-info file). 95% CI: Wilson score interval of the accuracy over n examples.
    >>> e.n = 80
    >>> print(render_markdown([e]).splitlines()[-3])
    | **1** | **ib_rar_digits** | *IB-RAR* | 97.50% | 61.25% | 80 | [91.3, 99.3] | [50.3, 71.2] | DigitsCNN | Unpublished |
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

from ib_plugins._markdown import md_cell, md_code, md_link, md_text, safe_url
from ib_plugins._types import PathLike
from ib_plugins.stats import wilson_interval

__all__ = [
    "MODEL_INFO_FIELDS",
    "THREAT_MODELS",
    "STANDARD_EPS",
    "LeaderboardEntry",
    "wilson_interval",
    "load_entries",
    "render_markdown",
    "render_html",
    "render_leaderboard",
    "robustbench_submission",
]

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _coerce(entries: Iterable[LeaderboardEntry | PathLike]) -> list[LeaderboardEntry]:
    out: list[LeaderboardEntry] = []
    for e in entries:
        if isinstance(e, LeaderboardEntry):
            out.append(e)
        elif isinstance(e, (str, os.PathLike)):
            out.extend(load_entries(e))
        else:
            raise TypeError(f"entries: expected LeaderboardEntry objects or paths, got {type(e).__name__}")
    return out


def _sort_key(e: LeaderboardEntry) -> tuple[float, float, str]:
    return (-e.best_known_accuracy, -e.clean_accuracy, e.model_name)


def _groups(entries: Sequence[LeaderboardEntry]) -> list[tuple[tuple[str, str], list[LeaderboardEntry]]]:
    groups: dict[tuple[str, str], list[LeaderboardEntry]] = {}
    for e in entries:
        groups.setdefault((e.dataset, e.threat_model or "unknown"), []).append(e)
    return [(k, sorted(v, key=_sort_key)) for k, v in sorted(groups.items())]


def _group_eps(group: Sequence[LeaderboardEntry]) -> str:
    labels = sorted({_format_eps(e.eps) for e in group if e.eps is not None})
    return ", ".join(labels)


def _n_text(n: int | None) -> str:
    return "unknown" if n is None else str(n)


def _mixed_notes(group: Sequence[LeaderboardEntry]) -> list[str]:
    """Plain-text notes for a table whose entries differ in n or eps (empty when they agree)."""
    notes: list[str] = []
    ns = {e.n for e in group}
    if len(ns) > 1:
        labels = [str(v) for v in sorted(v for v in ns if v is not None)] + (["unknown"] if None in ns else [])
        notes.append(
            f"this table mixes evaluations on different numbers of examples (n = {', '.join(labels)}); "
            "accuracies measured on few examples are uncertain, and ranks whose 95% intervals overlap are not "
            "significant."
        )
    radii: dict[float | None, str] = {}
    for e in group:
        key = None if e.eps is None else round(e.eps_value or 0.0, 12)
        radii.setdefault(key, "unknown" if e.eps is None else _format_eps(e.eps))
    if len(radii) > 1:
        labels = [radii[k] for k in sorted(k for k in radii if k is not None)] + (["unknown"] if None in radii else [])
        notes.append(
            f"this table mixes radii (eps = {', '.join(labels)}); accuracies at different radii are not comparable."
        )
    if any(e.threat_model is None for e in group):
        notes.append("the threat model of these entries is unknown; they may mix norms.")
    odd = [e for e in group if e.nonstandard_eps]
    if odd:
        standard = _format_eps(odd[0].standard_eps)
        radii = ", ".join(sorted({_format_eps(e.eps) for e in odd}))
        notes.append(
            f"entries marked non-standard are evaluated at eps = {radii}, not at RobustBench's {standard} for "
            f"{odd[0].dataset} {odd[0].threat_model}; their accuracies are not comparable with RobustBench's "
            "leaderboard."
        )
    return notes


def _mixed_groups_note(keys: Sequence[tuple[str, str]]) -> str | None:
    """Plain-text note for a leaderboard holding several datasets or threat models (None otherwise)."""
    datasets = sorted({d for d, _ in keys})
    threats = sorted({t for _, t in keys})
    parts = []
    if len(datasets) > 1:
        parts.append(f"datasets ({', '.join(datasets)})")
    if len(threats) > 1:
        parts.append(f"threat models ({', '.join(threats)})")
    if not parts:
        return None
    return (
        f"this leaderboard mixes {' and '.join(parts)}; entries are ranked within each table only and are not "
        "comparable across tables."
    )


_MD_LEGEND = (
    "n: number of evaluated examples (unknown: not recorded in the model-info file). "
    "95% CI: Wilson score interval of the accuracy over n examples."
)


def _venue(e: LeaderboardEntry) -> str:
    return "Unpublished" if not e.venue else e.venue


def render_markdown(entries: Iterable[LeaderboardEntry | PathLike], *, title: str | None = None) -> str:
    """The leaderboard as markdown, in RobustBench's ``list_available_models`` layout plus n.

    Columns ``# | Model ID | Paper | Clean accuracy | Robust accuracy | n | Clean 95% CI | Robust
    95% CI | Architecture | Venue``, one table per (dataset, threat model), rows sorted by robust
    accuracy (best known, i.e. ``external`` when present, as RobustBench) descending. ``n`` is the
    number of evaluated examples ("unknown" when the file does not record it, the intervals then
    read ``-``); the intervals are 95 % Wilson score intervals (:func:`wilson_interval`) in
    percent. Below each table a line explains the columns, and a ``**Note:**`` says so when the
    table mixes different ``n`` or ε; one under the title when the leaderboard mixes datasets or
    threat models. The paper is a link when ``link`` is an ``http(s)`` URL; an empty venue reads
    "Unpublished". Every user-supplied field is escaped (``|``, newlines, HTML, markdown syntax).

    Args:
        entries: entries or model-info paths (files or folders).
        title: an optional ``#`` heading.

    Returns:
        The markdown text (no trailing newline).

    Example:
        >>> a = LeaderboardEntry(model_name="a", dataset="cifar10", threat_model="Linf", clean_acc="80", n=100,
        ...                      autoattack_acc="40", name="Paper A", link="https://example.org/a", venue="ICML 2024")
        >>> b = LeaderboardEntry(model_name="b", dataset="cifar10", threat_model="Linf", clean_acc="90",
        ...                      autoattack_acc="45", n=20)
        >>> for line in render_markdown([a, b]).splitlines()[4:]:
        ...     print(line)
        | **1** | **b** | *b* | 90.00% | 45.00% | 20 | [69.9, 97.2] | [25.8, 65.8] | - | Unpublished |
        | **2** | **a** | *[Paper A](https://example.org/a)* | 80.00% | 40.00% | 100 | [71.1, 86.7] | [30.9, 49.8] | - | ICML 2024 |
        <BLANKLINE>
        n: number of evaluated examples (unknown: not recorded in the model-info file). 95% CI: Wilson score interval of the accuracy over n examples.
        <BLANKLINE>
        **Note:** this table mixes evaluations on different numbers of examples (n = 20, 100); accuracies measured on few examples are uncertain, and ranks whose 95% intervals overlap are not significant.
    """
    items = _coerce(entries)
    lines: list[str] = []
    if title:
        lines += [f"# {md_text(title)}", ""]
    if not items:
        lines.append("_No entries._")
        return "\n".join(lines)
    groups = _groups(items)
    overall = _mixed_groups_note([key for key, _ in groups])
    if overall:
        lines += [f"**Note:** {md_text(overall)}", ""]
    for (dataset, threat), group in groups:
        eps = _group_eps(group)
        lines.append(f"### {md_text(dataset)}, {md_cell(threat)}" + (f" (eps = {md_cell(eps)})" if eps else ""))
        lines.append("")
        lines.append(
            "| # | Model ID | Paper | Clean accuracy | Robust accuracy | n | Clean 95% CI | Robust 95% CI | "
            "Architecture | Venue |"
        )
        lines.append("|:---:|---|---|:---:|:---:|:---:|:---:|:---:|:---:|:---:|")
        for i, e in enumerate(group, start=1):
            paper = f"*{md_link(e.name or e.model_name, e.link)}*"
            architecture = md_cell(e.architecture) if e.architecture else "-"
            marker = " (non-standard eps)" if e.nonstandard_eps else ""
            lines.append(
                f"| **{i}** | **{md_cell(e.model_name)}**{marker} | {paper} | {e.clean_accuracy:.2%} | "
                f"{e.best_known_accuracy:.2%} | {_n_text(e.n)} | {_interval_text(e.clean_accuracy, e.n)} | "
                f"{_interval_text(e.best_known_accuracy, e.n)} | {architecture} | {md_cell(_venue(e))} |"
            )
        lines += ["", _MD_LEGEND, ""]
        for note in _mixed_notes(group):
            lines += [f"**Note:** {md_text(note)}", ""]
    return "\n".join(lines).rstrip("\n")


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; }
p.note { color: #555; font-size: 0.9em; }
p.warning { color: #7a4500; background: #fff4e0; border-left: 4px solid #e0a030; padding: 0.4em 0.8em; }
table.datatable { border-collapse: collapse; width: 100%; font-size: 0.92em; }
table.datatable th, table.datatable td { border-bottom: 1px solid #ddd; padding: 0.45em 0.6em; vertical-align: top; }
table.datatable th { background: #f4f6f8; cursor: pointer; user-select: none; white-space: nowrap; text-align: center; }
table.datatable th:hover, table.datatable th:focus { background: #e4e9ee; outline: none; }
table.datatable th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 0.75em; }
table.datatable th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 0.75em; }
table.datatable tbody tr:nth-child(even) { background: #fafbfc; }
td.ranktd, td.catd, td.aatd, td.aa-extd, td.flagsd, td.datatd, td.ntd { text-align: center; }
span.ci { color: #666; font-size: 0.8em; white-space: nowrap; }
td.methoddt a { color: #1a5fb4; text-decoration: none; } td.methoddt a:hover { text-decoration: underline; }
span.td-footer { color: #666; font-size: 0.85em; }
span.model-id { color: #777; font-size: 0.8em; font-family: monospace; }
span.nonstandard { color: #7a4500; background: #fff4e0; font-size: 0.8em; padding: 0 0.3em; }
"""

_JS = """
(function () {
  "use strict";
  function cellValue(row, index, type) {
    var cell = row.cells[index];
    var raw = cell.getAttribute("data-value");
    if (raw === null) { raw = cell.textContent.trim(); }
    if (type === "number") {
      var v = parseFloat(raw);
      return isNaN(v) ? -Infinity : v;
    }
    return raw.toLowerCase();
  }
  function sortTable(table, index, descending) {
    var header = table.tHead.rows[0];
    var type = header.cells[index].getAttribute("data-type") || "text";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var va = cellValue(a, index, type), vb = cellValue(b, index, type);
      if (va !== vb) {
        var c = va < vb ? -1 : 1;
        return descending ? -c : c;
      }
      return parseInt(a.getAttribute("data-rank"), 10) - parseInt(b.getAttribute("data-rank"), 10);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(header.cells, function (cell, i) {
      cell.setAttribute("aria-sort", i === index ? (descending ? "descending" : "ascending") : "none");
    });
  }
  function columnIndex(table, key) {
    var cells = table.tHead.rows[0].cells;
    for (var i = 0; i < cells.length; i++) {
      if (cells[i].getAttribute("data-key") === key) { return i; }
    }
    return -1;
  }
  var tables = document.querySelectorAll("table.leaderboard");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.addEventListener("click", function () {
        var current = th.getAttribute("aria-sort");
        var descending;
        if (current === "descending") { descending = false; }
        else if (current === "ascending") { descending = true; }
        else { descending = th.getAttribute("data-type") === "number"; }
        sortTable(table, index, descending);
      });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); th.click(); }
      });
    });
    var match = /^#sort=([a-z-]+?)-(asc|desc)$/.exec(window.location.hash);
    var index = match ? columnIndex(table, match[1]) : -1;
    if (index >= 0) {
      sortTable(table, index, match[2] === "desc");
    } else {
      sortTable(table, columnIndex(table, "best"), true);
    }
  });
})();
"""

#: (key, header html, class, type) of the HTML columns, RobustBench's leaderboard layout.
_HTML_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("rank", "Rank", "rank", "number"),
    ("method", "Method", "method", "text"),
    ("clean", "Standard <br>accuracy", "ca", "number"),
    ("autoattack", "AutoAttack <br>robust <br>accuracy", "aa", "number"),
    ("best", "Best known <br>robust <br>accuracy", "aa-ext", "number"),
    ("unreliable", "AA eval. <br>potentially <br>unreliable", "flags", "text"),
    ("extra", "Extra <br>data", "extra-data", "text"),
    ("architecture", "Architecture", "arch", "text"),
    ("venue", "Venue", "venue", "text"),
    ("n", "Evaluated <br>examples <br>(n)", "n", "number"),
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _safe_link(link: str | None) -> str | None:
    if not link:
        return None
    lowered = link.strip().lower()
    if lowered.startswith(("http://", "https://")):
        return link.strip()
    return None


def _html_ci(fraction: float, n: int | None) -> str:
    if n is None:
        return ""
    return f'<br><span class="ci" title="95% Wilson score interval over n = {n}">{_interval_text(fraction, n)}</span>'


def _html_row(rank: int, e: LeaderboardEntry) -> str:
    label = e.name or e.model_name
    link = _safe_link(e.link)
    method = f'<a href="{_e(link)}" target="_blank" rel="noopener noreferrer">{_e(label)}</a>' if link else _e(label)
    if label != e.model_name:
        method += f'<br><span class="model-id">{_e(e.model_name)}</span>'
    if e.footnote:
        method += f'<br><span class="td-footer">{_e(e.footnote)}</span>'
    if e.nonstandard_eps:
        method += (f'<br><span class="nonstandard" title="RobustBench evaluates {_e(e.dataset)} {_e(e.threat_model)} '
                   f'at eps = {_e(_format_eps(e.standard_eps))}">non-standard &epsilon; = {_e(_format_eps(e.eps))} '
                   f'(RobustBench: {_e(_format_eps(e.standard_eps))})</span>')
    robust = e.robust_accuracy
    aa_text = "N/A" if robust is None else f"{robust * 100:.2f}%" + _html_ci(robust, e.n)
    best = e.best_known_accuracy
    extra = "&#9745;" if e.additional_data else "&#215;"
    extra_value = "1" if e.additional_data else "0"
    unreliable = "Unreliable" if e.unreliable else "&#215;"
    cells = [
        f'<td class="ranktd" data-value="{rank}">{rank}</td>',
        f'<td class="methoddt" data-value="{_e(label.lower())}">{method}</td>',
        f'<td class="catd" data-value="{e.clean_accuracy * 100:.4f}">{e.clean_accuracy * 100:.2f}%'
        f"{_html_ci(e.clean_accuracy, e.n)}</td>",
        f'<td class="aatd" data-value="{"" if robust is None else f"{robust * 100:.4f}"}">{aa_text}</td>',
        f'<td class="aa-extd" data-value="{best * 100:.4f}">{best * 100:.2f}%{_html_ci(best, e.n)}</td>',
        f'<td class="flagsd" data-value="{int(e.unreliable)}">{unreliable}</td>',
        f'<td class="datatd" data-value="{extra_value}">{extra}</td>',
        f'<td class="archtd">{_e(e.architecture or "-")}</td>',
        f'<td class="venuetd">{_e(_venue(e))}</td>',
        f'<td class="ntd" data-value="{"" if e.n is None else e.n}">{_n_text(e.n)}</td>',
    ]
    return (
        f'<tr data-rank="{rank}" data-model="{_e(e.model_name)}">\n          ' + "\n          ".join(cells) + "\n        </tr>"
    )


def _table_id(dataset: str, threat: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in f"{dataset}_leaderboard_{threat}")
    return safe


def render_html(entries: Iterable[LeaderboardEntry | PathLike], *, title: str = "Robustness leaderboard") -> str:
    """A self-contained HTML page in RobustBench's leaderboard layout.

    Columns: Rank, Method (paper link + name, model ID, footnote), Standard accuracy, AutoAttack
    robust accuracy, Best known robust accuracy (``external`` or AutoAttack), AA eval. potentially
    unreliable, Extra data, Architecture, Venue, Evaluated examples (n, "unknown" when not
    recorded); one table per (dataset, threat model), sorted by robust accuracy (best known)
    descending. Under each accuracy, when n is known, its 95 % Wilson score interval
    (:func:`wilson_interval`). A highlighted note says so when a table mixes different n or ε, and
    at the top when the page mixes datasets or threat models. Clicking a column header (or Enter
    on it) sorts by that column, again to reverse; a URL fragment ``#sort=<key>-asc|desc`` (keys
    ``rank, method, clean, autoattack, best, unreliable, extra, architecture, venue, n``) picks the
    initial order.
    Inline CSS and JavaScript only, a Content-Security-Policy forbidding external resources, and
    all text HTML-escaped (only ``http(s)`` links are made clickable).

    Args:
        entries: entries or model-info paths (files or folders).
        title: page title and heading.

    Returns:
        The HTML document.

    Example:
        >>> e = LeaderboardEntry(model_name="m<1>", dataset="cifar10", threat_model="Linf", clean_acc="90",
        ...                      autoattack_acc="50", link="javascript:alert(1)")
        >>> page = render_html([e], title="Demo")
        >>> page.startswith("<!DOCTYPE html>"), "m&lt;1&gt;" in page, "javascript:" in page, "<script src" in page
        (True, True, False, False)
    """
    if not isinstance(title, str):
        raise TypeError(f"title: expected a str, got {type(title).__name__}")
    items = _coerce(entries)
    sections: list[str] = []
    for (dataset, threat), group in _groups(items):
        eps = _group_eps(group)
        head = "\n          ".join(
            f'<th class="{cls}" data-key="{key}" data-type="{typ}" tabindex="0" aria-sort="'
            f'{"descending" if key == "best" else "none"}" title="Sort by this column">{label}</th>'
            for key, label, cls, typ in _HTML_COLUMNS
        )
        rows = "\n        ".join(_html_row(i, e) for i, e in enumerate(group, start=1))
        heading = f"{_e(dataset)} &middot; {_e(threat)}" + (f" &middot; &epsilon; = {_e(eps)}" if eps else "")
        notes = "".join(
            f'\n    <p class="note warning" role="note"><strong>Note:</strong> {_e(note)}</p>'
            for note in _mixed_notes(group)
        )
        sections.append(
            f"""  <section>
    <h2>{heading}</h2>{notes}
    <table id="{_e(_table_id(dataset, threat))}" class="datatable leaderboard">
      <thead>
        <tr>
          {head}
        </tr>
      </thead>
      <tbody>
        {rows}
      </tbody>
    </table>
  </section>"""
        )
    if not sections:
        sections.append('  <p class="note">No entries.</p>')
    overall = _mixed_groups_note([key for key, _ in _groups(items)])
    if overall:
        sections.insert(0, f'  <p class="note warning" role="note"><strong>Note:</strong> {_e(overall)}</p>')
    body = "\n".join(sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
  <link rel="icon" href="data:,">
  <title>{_e(title)}</title>
  <style>{_CSS}</style>
</head>
<body>
  <h1>{_e(title)}</h1>
  <p class="note">Ranked by robust accuracy (best known: external evaluations when given, else AutoAttack), as on
  RobustBench. Click a column header to sort. n: number of evaluated examples (unknown: not recorded in the
  model-info file); the bracketed ranges under the accuracies are 95% Wilson score intervals over n examples.</p>
{body}
  <script>{_JS}</script>
</body>
</html>
"""


def render_leaderboard(
    entries: Iterable[LeaderboardEntry | PathLike], out_dir: PathLike, *, title: str = "Robustness leaderboard"
) -> tuple[Path, Path]:
    """Write ``leaderboard.md`` and ``leaderboard.html`` into ``out_dir``.

    Args:
        entries: entries or model-info paths (files or folders).
        out_dir: output folder (created).
        title: heading of both files.

    Returns:
        ``(markdown_path, html_path)``.

    Example:
        >>> import tempfile
        >>> e = LeaderboardEntry(model_name="m", dataset="cifar10", threat_model="Linf", clean_acc="90", autoattack_acc="50")
        >>> md, page = render_leaderboard([e], tempfile.mkdtemp())
        >>> md.name, page.name, "| **1** | **m** |" in md.read_text()
        ('leaderboard.md', 'leaderboard.html', True)
    """
    items = _coerce(entries)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_path = out / "leaderboard.md"
    html_path = out / "leaderboard.html"
    md_path.write_text(render_markdown(items, title=title) + "\n", encoding="utf-8")
    html_path.write_text(render_html(items, title=title), encoding="utf-8")
    return md_path, html_path


# --------------------------------------------------------------------------------------------------
# RobustBench submission
# --------------------------------------------------------------------------------------------------

#: Where :func:`robustbench_submission`'s layout comes from.
_TEMPLATE_SOURCE = "RobustBench/robustbench, .github/ISSUE_TEMPLATE/new-model.md"
#: Test-set sizes of RobustBench's leaderboards (their evaluations use the whole test set).
_ROBUSTBENCH_N = {"cifar10": 10_000, "cifar100": 10_000, "imagenet": 5_000}


def _todo(what: str) -> str:
    return f"TODO: {what}"


def robustbench_submission(entry: LeaderboardEntry | PathLike) -> str:
    """The text of RobustBench's "New Model(s)" issue, filled from a model-info entry.

    The layout is RobustBench's issue template (``.github/ISSUE_TEMPLATE/new-model.md`` of
    RobustBench/robustbench): Paper Information (title, URL, authors), one Leaderboard Claim
    (architecture, threat model, eps, clean and robust accuracy, additional data, evaluation
    method, checkpoint and code) and the Model Zoo checkboxes, left unchecked. Fields the entry
    does not know read ``TODO: ...``. The robust accuracy is the AutoAttack accuracy (the claim
    RobustBench re-checks); a lower ``external`` accuracy (e.g. the worst case of
    ``ib-plugins audit``, see :func:`~ib_plugins.adapters.robustbench_eval.evaluate_for_leaderboard`)
    is given beside it with its source. A note on top, to delete before submitting, lists what
    would keep the claim from RobustBench's leaderboard: fewer examples than the full test set, a
    non-standard eps, a non-standard AutoAttack version, an entry marked unreliable, a dataset
    without a RobustBench leaderboard. Every field from the entry is escaped for markdown.

    Args:
        entry: a :class:`LeaderboardEntry` or the path of a model-info JSON file.

    Returns:
        The issue text (markdown).

    Raises:
        ValueError: the file breaks the model-info schema.
        FileNotFoundError: no such file.

    Example:
        >>> e = LeaderboardEntry(model_name="m", dataset="cifar10", threat_model="Linf", eps=8 / 255,
        ...                      clean_acc="91.2", autoattack_acc="60.1", architecture="WideResNet-28-10", n=10000)
        >>> text = robustbench_submission(e)
        >>> print("\\n".join(line for line in text.splitlines() if line.startswith(("- **eps", "- **Robust"))))
        - **eps**: 8/255
        - **Robust accuracy**: 60.1%
    """
    e = entry if isinstance(entry, LeaderboardEntry) else LeaderboardEntry.from_json(entry)
    ib = e.ib_plugins if isinstance(e.ib_plugins, dict) else {}
    aa = ib.get("autoattack") if isinstance(ib.get("autoattack"), dict) else {}
    external = ib.get("external") if isinstance(ib.get("external"), dict) else {}
    dataset = e.dataset.strip().lower().replace("-", "")
    threat = {"Linf": "Linf", "L2": "L2", "corruptions": "Common Corruptions",
              "corruptions_3d": "Common Corruptions (3D)"}.get(e.threat_model or "", None)
    corruptions = (e.threat_model or "").startswith("corruptions")

    # What would keep the claim off RobustBench's leaderboard.
    notes: list[str] = []
    full_n = _ROBUSTBENCH_N.get(dataset)
    if full_n is None:
        notes.append(f"RobustBench has no leaderboard for the dataset {md_text(e.dataset)} "
                     "(it has cifar10, cifar100 and imagenet).")
    elif e.n is None:
        notes.append(f"the number of evaluated examples is not recorded; RobustBench evaluates the first {full_n:,} "
                     "test points.")
    elif e.n < full_n:
        notes.append(f"evaluated on {e.n:,} examples; RobustBench evaluates the first {full_n:,} test points: rerun "
                     f"on all of them (ib-plugins: n_examples={full_n}) before claiming these accuracies.")
    if e.nonstandard_eps:
        notes.append(f"eps = {md_text(_format_eps(e.eps))} is not RobustBench's {_format_eps(e.standard_eps)} for "
                     f"{md_text(e.dataset)} {md_text(e.threat_model)}.")
    version = aa.get("version")
    if isinstance(version, str) and version != "standard":
        notes.append(f"AutoAttack version {md_text(version)}, not the standard version RobustBench requires.")
    if e.unreliable:
        reasons = ib.get("unreliable_reasons")
        why = f" ({md_text('; '.join(map(str, reasons)))})" if isinstance(reasons, list) and reasons else ""
        notes.append(f"the entry is marked potentially unreliable{why}: check the evaluation before submitting.")
    if e.threat_model is None:
        notes.append("the threat model is unknown: fill it in.")

    # Evaluation method.
    method_parts: list[str] = []
    if corruptions:
        method_parts.append("common corruptions")
    else:
        attacks = aa.get("attacks")
        attack_text = f" ({md_text(', '.join(map(str, attacks)))})" if isinstance(attacks, list) and attacks else ""
        kind = "standard AutoAttack" if version in (None, "standard") else f"AutoAttack {md_text(version)}"
        method_parts.append(f"{kind}{attack_text}")
    if e.n is not None:
        method_parts.append(f"on {e.n:,} test examples")
    if e.external is not None:
        source = external.get("source")
        method_parts.append(f"best known robust accuracy {md_text(e.external)}%"
                            + (f" from {md_text(source)}" if isinstance(source, str) and source else ""))
    producer = ib.get("version")
    if isinstance(producer, str):
        method_parts.append(f"evaluated with ib-plugins {md_text(producer)}")

    robust = e.robust_accuracy
    robust_text = _todo("the robust accuracy") if robust is None else f"{md_text(getattr(e, e.robust_field))}%"
    if e.external is not None and robust is not None and e.best_known_accuracy < robust:
        robust_text += f" (AutoAttack); best known {md_text(e.external)}% (external evaluation)"
    title = e.name if e.name and e.name != e.model_name else None
    url = safe_url(e.link)
    lines = [
        f"> Filled by ib-plugins from the model-info entry {md_code(e.model_name)}, in the layout of RobustBench's "
        f"issue template ({md_text(_TEMPLATE_SOURCE)}). Issue title: {md_code('[New Model] NameYearFirstWordOfTitle')}."
        " Fill in the TODO fields, check the boxes that apply and delete this note before submitting.",
    ]
    if notes:
        lines.append(">")
        lines.append("> Before submitting:")
        lines += [f"> - {note}" for note in notes]
    lines += [
        "",
        "# Paper Information",
        "",
        f"- **Paper Title**: {md_text(title) if title else _todo('the paper title')}",
        f"- **Paper URL**: {url if url else _todo('the paper URL')}",
        f"- **Paper authors**: {md_text(e.authors) if e.authors else _todo('the authors')}",
        "",
        "# Leaderboard Claim(s)",
        "",
        "## Model 1",
        "",
        f"- **Architecture**: {md_text(e.architecture) if e.architecture else _todo('the architecture')}",
        f"- **Threat Model**: {threat if threat else _todo('one of L2, Linf, Common Corruptions')}",
        f"- **eps**: {'N/A' if corruptions else (md_text(_format_eps(e.eps)) if e.eps is not None else _todo('eps'))}",
        f"- **Clean accuracy**: {md_text(e.clean_acc)}%",
        f"- **Robust accuracy**: {robust_text}",
        f"- **Additional data**: {'true' if e.additional_data else 'false' if e.additional_data is False else _todo('true/false')}",
        f"- **Evaluation method**: {', '.join(method_parts)}",
        "- **Checkpoint and code**: " + _todo(
            "the URL of the checkpoint and the code (to share the checkpoint privately instead, email "
            "`adversarial.benchmark@gmail.com`)"),
        "",
        "# Model Zoo:",
        "",
        "- [ ] I want to add my models to the Model Zoo (check if true)",
        "- [ ] I use an architecture that is **not** included among those "
        "[here](https://github.com/RobustBench/robustbench/tree/master/robustbench/model_zoo/architectures) "
        "(check if true).",
        "- [ ] I agree to release my model(s) under MIT license (check if true) **OR**",
        "- [ ] I want my models to be released under a custom license, located here: (custom license URL here)",
    ]
    return "\n".join(lines) + "\n"
