"""The self-contained HTML leaderboard (:func:`render_html`) and :func:`render_leaderboard`, which writes both."""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

from ib_plugins._types import PathLike
from ib_plugins.leaderboard.entry import LeaderboardEntry, _format_eps, _interval_text
from ib_plugins.leaderboard.markdown_table import (
    _coerce,
    _group_eps,
    _groups,
    _mixed_groups_note,
    _mixed_notes,
    _n_text,
    _venue,
    render_markdown,
)

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
