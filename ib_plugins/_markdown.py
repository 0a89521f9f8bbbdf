"""Escaping of user-supplied text for the markdown writers (private).

Every markdown file ib_plugins writes (``leaderboard.md``, ``audit.md``, ``results.md``, the
tables of :mod:`ib_plugins.evaluation`) passes user-supplied fields (model names, links, titles,
paths, class, layer and run names) through these helpers, so such a field can neither break a
table, start a block, nor inject HTML or a link:

* :func:`md_cell`: text for a table cell (``|`` escaped, newlines collapsed, HTML and inline
  markdown made literal);
* :func:`md_text`: the same for prose, headings and list items, plus leading block syntax
  (``#``, ``-``, ``1.``...) made literal;
* :func:`md_link`: a link only for ``http(s)`` URLs, the escaped text otherwise;
* :func:`md_code`: an inline code span when the text is plain, else :func:`md_text`;
* :func:`md_json`: a value as JSON in a code span, with ``< > & ` | ( )`` as ``\\uXXXX`` escapes.

The rules follow CommonMark / GitHub-flavoured markdown: any ASCII punctuation can be escaped with
a backslash, a backslash-escaped ``|`` does not split a table cell (also inside code spans and
links), and a table cell holds inline content only (no blocks). ``<``, ``>`` and ``&`` become
HTML entities, so no raw tag (``<script``, ``<img``) or autolink (``<javascript:...>``) survives.
Ordinary text (letters, digits, spaces, ``_ - . , : ; ( ) / % = + # ' "``) is returned unchanged.

This module imports only the standard library.

Example:
    >>> md_cell("a | b\\n<script>")
    'a \\\\| b &lt;script&gt;'
    >>> md_link("paper", "javascript:alert(1)"), md_link("paper", "https://example.org/p")
    ('paper', '[paper](https://example.org/p)')
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["md_cell", "md_text", "md_link", "md_code", "md_json", "safe_url"]

# Line breaks of any kind (what str.splitlines splits on) collapse to one space.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]+")
# Other control characters (tab included) become spaces too.
_CONTROLS = re.compile(r"[\x00-\x08\t\x0e-\x1f\x7f]")
_ESCAPES = str.maketrans({
    "\\": "\\\\",
    "`": "\\`",
    "*": "\\*",
    "[": "\\[",
    "]": "\\]",
    "|": "\\|",
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
})
# Block syntax at the start of a line: ATX heading, list bullet, setext underline / thematic
# break, ordered-list marker, code fence (``~~~``; backtick fences are escaped anyway).
_LEADING = re.compile(r"(#{1,6}(?:\s|$)|[-+](?:\s|$)|=+\s*$|-{3,}\s*$|_{3,}\s*$|~{3,})")
_ORDERED = re.compile(r"(\d{1,9})([.)])(\s|$)")
_URL = re.compile(r"https?://[^\s/?#\\]+", re.IGNORECASE)
# Characters percent-encoded in link destinations (they could end the link, split a table cell or
# open HTML); everything else of a valid http(s) URL is kept as it is.
_URL_ESCAPES = str.maketrans({c: f"%{ord(c):02X}" for c in " ()<>[]|\\`\"'*"})
_PLAIN_CODE = re.compile(r"[^`<>&|\\\x00-\x1f\x7f\x85\u2028\u2029]*")


def _flatten(text: object) -> str:
    s = _LINE_BREAKS.sub(" ", str(text))
    return _CONTROLS.sub(" ", s)


def md_cell(text: object) -> str:
    """Escape ``text`` for a markdown table cell.

    ``|``, backslashes, backticks, ``*``, ``[`` and ``]`` are backslash-escaped; ``<``, ``>`` and
    ``&`` become HTML entities; line breaks and control characters become spaces; the result is
    stripped. Leading block syntax needs no escape here (a cell holds inline content only), so a
    ``-`` placeholder stays ``-``.

    Args:
        text: any value (``str()`` is applied).

    Returns:
        The escaped single-line text.

    Example:
        >>> md_cell("low | pipe"), md_cell("x\\ny"), md_cell("<b>&</b>"), md_cell("digits_cnn-1.0")
        ('low \\\\| pipe', 'x y', '&lt;b&gt;&amp;&lt;/b&gt;', 'digits_cnn-1.0')
    """
    return _flatten(text).translate(_ESCAPES).strip()


def md_text(text: object) -> str:
    """Escape ``text`` for markdown prose, a heading or a list item.

    :func:`md_cell`'s escapes, and block syntax at its start (``#``, ``-``/``+`` bullets,
    ``1.``, ``===``, ``---``, ``___``, ``~~~``) is made literal, so the text cannot open a heading, list or
    code block wherever it is placed.

    Args:
        text: any value (``str()`` is applied).

    Returns:
        The escaped single-line text.

    Example:
        >>> md_text("# not a heading"), md_text("1. item"), md_text("a\\n\\n<script>x</script>")
        ('\\\\# not a heading', '1\\\\. item', 'a &lt;script&gt;x&lt;/script&gt;')
    """
    s = md_cell(text)
    if _LEADING.match(s):
        return "\\" + s
    m = _ORDERED.match(s)
    if m:
        return f"{m.group(1)}\\{s[len(m.group(1)):]}"
    return s


def safe_url(url: object) -> str | None:
    """``url`` ready for a markdown link destination when it is an ``http(s)`` URL, else None.

    The URL is stripped; one holding whitespace or control characters, or of another scheme
    (``javascript:``, ``data:``, ``file:``, relative), gives None. Characters that could end the
    destination or split a table cell (`` ()<>[]|\\`"'* `` and spaces) are percent-encoded.

    Args:
        url: the candidate link.

    Returns:
        The URL to use, or None.

    Example:
        >>> safe_url(" https://example.org/a(b) "), safe_url("JavaScript:alert(1)"), safe_url("https://x/\\ny")
        ('https://example.org/a%28b%29', None, None)
    """
    if not isinstance(url, str):
        return None
    s = url.strip()
    if not s or _LINE_BREAKS.search(s) or _CONTROLS.search(s) or " " in s or not _URL.match(s):
        return None
    return s.translate(_URL_ESCAPES)


def md_link(text: object, url: object) -> str:
    """A markdown link when ``url`` is an ``http(s)`` URL, else just the escaped text.

    Args:
        text: the link text (escaped with :func:`md_cell`, so it works in a table cell).
        url: the target; anything but ``http://`` / ``https://`` is dropped (see :func:`safe_url`).

    Returns:
        ``[text](url)`` or the escaped text.

    Example:
        >>> md_link("A [b]", "https://example.org"), md_link("A", "data:text/html,<script>")
        ('[A \\\\[b\\\\]](https://example.org)', 'A')
    """
    label = md_cell(text)
    target = safe_url(url)
    if target is None:
        return label
    return f"[{label}]({target})"


def md_code(text: object) -> str:
    """An inline code span of ``text`` when it is plain, else :func:`md_text` of it.

    Plain means no backtick, ``< > & |``, backslash or control character: such text is shown in
    a code span as is; anything else is escaped as prose instead (a code span cannot escape).

    Args:
        text: any value (``str()`` is applied).

    Returns:
        ```` `text` ```` or the escaped text.

    Example:
        >>> md_code("ibrar-code"), md_code("a`b<c>")
        ('`ibrar-code`', 'a\\\\`b&lt;c&gt;')
    """
    s = str(text)
    if s and s == s.strip() and _PLAIN_CODE.fullmatch(s):
        return f"`{s}`"
    return md_text(s)


def md_json(value: Any) -> str:
    """``value`` as compact JSON in an inline code span, safe anywhere in markdown.

    ``json.dumps`` (ASCII only, so line breaks are ``\\n``) with ``<``, ``>``, ``&``, backticks,
    ``|``, ``(`` and ``)`` written as ``\\uXXXX`` escapes (they can only occur inside JSON strings, so
    the text is still valid JSON, and no ``](`` of a link survives even outside the code span).
    Values JSON cannot encode are written with ``str()``.

    Args:
        value: a JSON-serialisable value.

    Returns:
        ```` `{...}` ````.

    Example:
        >>> md_json({"layers": ["fc<1>|`x`"], "alpha": 0.1})
        '`{"layers": ["fc\\\\u003c1\\\\u003e\\\\u007c\\\\u0060x\\\\u0060"], "alpha": 0.1}`'
        >>> json.loads(md_json({"a": "<b>"})[1:-1])
        {'a': '<b>'}
    """
    text = json.dumps(value, default=str)
    for char in "<>&`|()":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return f"`{text}`"
