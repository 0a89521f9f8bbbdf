"""Progress display: a tqdm bar on a terminal, occasional plain lines elsewhere, nothing when switched off.

Every long phase of the library (each attack of a suite, AutoAttack, the audit's checks, the runs
of a layer selection, the demo's phases) reports through :func:`progress_bar`:

* when ``stream`` (default ``sys.stderr``) is a terminal, or inside a Jupyter kernel, it is a
  ``tqdm`` bar (``tqdm.auto`` in a notebook) named by ``desc``;
* otherwise (output piped into a file, ``| cat``, a CI log) it is a :class:`LineProgress`, which
  writes whole lines ``"desc: i/n unit (p%, t s)"`` when it starts, every ~10 % or ~10 s, and when
  it ends, and never a carriage return, so that logs stay readable;
* with ``enabled=False`` (the CLI's ``--no-progress``) it is a no-op.

All three answer tqdm's ``update``, ``set_postfix``, ``set_postfix_str``, ``close``, the ``n``
attribute and the context-manager protocol. :class:`PhaseProgress` counts named phases
(``with phases.phase("PGD"):``) and :func:`progress_iter` wraps an iterable.

The line writer is the stand-in for tqdm's own output when there is no terminal: like tqdm it
writes to the stream directly (not through :mod:`logging`), so it shows without ``-v``.

Example:
    >>> import io
    >>> stream = io.StringIO()  # not a terminal: plain lines
    >>> with progress_bar(total=4, desc="pgd", unit="batch", stream=stream) as bar:
    ...     for _ in range(4):
    ...         bar.update(1)
    >>> lines = stream.getvalue().splitlines()
    >>> lines[0], lines[-1].split(" in ")[0], "\\r" in stream.getvalue()
    ('pgd: 0/4 batch', 'pgd: done, 4/4 batch', False)
    >>> progress_bar(total=4, desc="pgd", enabled=False).update(1)  # switched off: nothing at all
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any, TypeVar

__all__ = ["LineProgress", "PhaseProgress", "progress_bar", "progress_iter", "is_interactive"]

T = TypeVar("T")

#: A line at least every this many seconds while items finish (when an update arrives).
LINE_INTERVAL_S = 10.0
#: ... and at least at every this fraction of the total.
LINE_FRACTION = 0.1


def is_interactive(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is a terminal, where tqdm's ``\\r`` redraws belong.

    Args:
        stream: the stream progress would be written to.

    Returns:
        True for a terminal; False for pipes, files, closed streams and streams without ``isatty``.

    Example:
        >>> import io
        >>> is_interactive(io.StringIO())
        False
    """
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def _in_notebook(stream: IO[str] | None) -> bool:
    """A Jupyter kernel's stderr: not a terminal, but tqdm.auto draws a widget there."""
    target = sys.stderr if stream is None else stream
    return type(target).__module__.startswith("ipykernel")


class _NullProgress:
    """Progress switched off: every call does nothing."""

    n = 0
    total = None

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        del ordered_dict, refresh, kwargs

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        del s, refresh

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        del desc, refresh

    def close(self) -> None:
        return None

    def __enter__(self) -> _NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LineProgress:
    """tqdm's interface, written as occasional whole lines (for logs and pipes: no ``\\r``).

    A line ``"desc: i/n unit (p%, t s) [postfix]"`` is written when the bar starts, after an
    update that completes another ``fraction`` of the total or comes ``interval`` seconds after
    the previous line, when :meth:`set_postfix_str` names a new phase, and on :meth:`close`
    (``"desc: done, n/n unit in t s"``, or ``"desc: stopped at i/n ..."`` when unfinished).

    Args:
        total: the number of items (None: unknown).
        desc: the name shown at the start of each line.
        unit: the items' name.
        stream: where to write (default: ``sys.stderr`` at the time of each write).
        interval: seconds between lines while items finish.
        fraction: the share of ``total`` between lines.

    Example:
        >>> import io
        >>> s = io.StringIO()
        >>> bar = LineProgress(total=3, desc="AutoAttack", unit="batch", stream=s)
        >>> bar.set_postfix(robust="50.0%")
        >>> bar.update(1); bar.update(2); bar.close()
        >>> lines = s.getvalue().splitlines()
        >>> lines[1].startswith("AutoAttack: 1/3 batch (33%"), lines[2].endswith("[robust=50.0%]")
        (True, True)
    """

    def __init__(
        self, *, total: int | None, desc: str, unit: str = "it", stream: IO[str] | None = None,
        interval: float = LINE_INTERVAL_S, fraction: float = LINE_FRACTION,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self._stream = stream
        self._interval = interval
        self._step = max(1, int(total * fraction)) if total else None
        self._start = time.monotonic()
        self._last_time = self._start
        self._last_n = 0
        self._postfix = ""
        self._closed = False
        self._write(self._status(elapsed=False))

    # -- output --------------------------------------------------------------------------------
    def _write(self, line: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (ValueError, OSError):  # a closed stream: progress is not worth an exception
            pass
        self._last_time = time.monotonic()
        self._last_n = self.n

    def _count(self) -> str:
        return f"{self.n}/{self.total} {self.unit}" if self.total is not None else f"{self.n} {self.unit}"

    def _status(self, *, elapsed: bool = True) -> str:
        text = f"{self.desc}: {self._count()}"
        if elapsed:
            parts = []
            if self.total:
                parts.append(f"{100 * self.n // self.total}%")
            parts.append(f"{time.monotonic() - self._start:.1f} s")
            text += f" ({', '.join(parts)})"
        if self._postfix:
            text += f" [{self._postfix}]"
        return text

    # -- tqdm's interface ----------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        """Count ``n`` more finished items; write a line when due."""
        self.n += n
        if self._closed:
            return
        due_by_count = self._step is not None and self.n - self._last_n >= self._step
        if due_by_count or time.monotonic() - self._last_time >= self._interval:
            if self.total is None or self.n < self.total:  # the last one is reported by close()
                self._write(self._status())

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Keep ``key=value`` pairs for the next line (no line of its own)."""
        del refresh
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Show ``s`` after the count; a new text (a new phase) writes a line at once."""
        del refresh
        if s != self._postfix:
            self._postfix = s
            if not self._closed:
                self._write(self._status())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Rename the bar (for the following lines)."""
        del refresh
        self.desc = desc or ""

    def close(self) -> None:
        """Write the final line (once)."""
        if self._closed:
            return
        self._closed = True
        seconds = time.monotonic() - self._start
        finished = self.total is None or self.n >= self.total
        head = "done," if finished else "stopped at"
        tail = f" [{self._postfix}]" if self._postfix else ""
        self._write(f"{self.desc}: {head} {self._count()} in {seconds:.1f} s{tail}")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    *, total: int | None, desc: str, enabled: bool = True, unit: str = "it", leave: bool = False,
    stream: IO[str] | None = None,
) -> Any:
    """A progress display named ``desc``: tqdm on a terminal, :class:`LineProgress` elsewhere, or nothing.

    Args:
        total: the number of items (None: unknown).
        desc: the phase's name, shown on the bar / at the start of each line.
        enabled: False (``--no-progress``) returns a no-op object.
        unit: the items' name.
        leave: keep the finished tqdm bar on screen.
        stream: where to write (default ``sys.stderr``).

    Returns:
        An object with tqdm's ``update``/``set_postfix``/``set_postfix_str``/``close`` and ``n``
        (a context manager).

    Example:
        >>> import io
        >>> type(progress_bar(total=2, desc="x", stream=io.StringIO())).__name__
        'LineProgress'
        >>> type(progress_bar(total=2, desc="x", enabled=False)).__name__
        '_NullProgress'
    """
    if not enabled:
        return _NullProgress()
    if is_interactive(stream) or _in_notebook(stream):
        from ib_plugins._optional import is_available

        if is_available("tqdm"):
            if _in_notebook(stream) and stream is None:
                from tqdm.auto import tqdm
            else:
                from tqdm import tqdm
            return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=stream, dynamic_ncols=True)
    return LineProgress(total=total, desc=desc, unit=unit, stream=stream)


def progress_iter(
    iterable: Iterable[T], *, desc: str, total: int | None = None, enabled: bool = True, unit: str = "it",
    stream: IO[str] | None = None,
) -> Iterator[T]:
    """Iterate over ``iterable`` with a :func:`progress_bar` (closed also when the loop stops early).

    Args:
        iterable: the items.
        desc: the bar's name.
        total: the number of items (default ``len(iterable)`` when it has one).
        enabled: False: iterate without any display.
        unit: the items' name.
        stream: where to write (default ``sys.stderr``).

    Yields:
        The items of ``iterable``.

    Example:
        >>> import io
        >>> s = io.StringIO()
        >>> sum(progress_iter(range(5), desc="sum", stream=s)), s.getvalue().splitlines()[0]
        (10, 'sum: 0/5 it')
    """
    if not enabled:
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = progress_bar(total=total, desc=desc, unit=unit, stream=stream)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()


class PhaseProgress:
    """A bar over named phases: ``with phases.phase("PGD eps=0.1"): ...`` shows the name, then counts it.

    On a terminal the phase's name is tqdm's postfix; in line mode each phase writes a line
    ``"desc: i/n unit [name]"`` when it starts. Each phase is also logged at INFO level.

    Args:
        total: the number of phases.
        desc: the bar's name (e.g. ``"audit"``).
        enabled: False: no display (phases are still logged).
        unit: the phases' name.
        logger: where to log each phase (None: not logged).
        stream: where to write (default ``sys.stderr``).

    Example:
        >>> import io
        >>> s = io.StringIO()
        >>> phases = PhaseProgress(total=2, desc="demo", unit="phase", stream=s)
        >>> with phases.phase("train CE"):
        ...     pass
        >>> phases.close()
        >>> s.getvalue().splitlines()[1]
        'demo: 0/2 phase (0%, 0.0 s) [train CE]'
    """

    def __init__(
        self, *, total: int, desc: str, enabled: bool = True, unit: str = "phase", logger: Any = None,
        stream: IO[str] | None = None,
    ) -> None:
        self.desc = desc
        self.bar = progress_bar(total=total, desc=desc, enabled=enabled, unit=unit, leave=False, stream=stream)
        self._logger = logger

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Show ``name`` while the block runs, then count one phase (not when the block raises)."""
        self.bar.set_postfix_str(name)
        if self._logger is not None:
            self._logger.info("%s: %s", self.desc, name)
        yield
        if isinstance(self.bar, LineProgress):
            self.bar.n += 1  # no line of its own: the next phase's line (or the final one) shows the count
        else:
            self.bar.update(1)

    def close(self) -> None:
        """Close the bar (writes the final line in line mode, without the last phase's name)."""
        if isinstance(self.bar, LineProgress):
            self.bar._postfix = ""
        self.bar.close()

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
