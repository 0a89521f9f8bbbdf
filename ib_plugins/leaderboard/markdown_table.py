"""Leaderboard tables in markdown (:func:`render_markdown`), with the grouping and notes both formats share."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from ib_plugins._markdown import md_cell, md_link, md_text
from ib_plugins._types import PathLike
from ib_plugins.leaderboard.entry import LeaderboardEntry, _format_eps, _interval_text, load_entries

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
