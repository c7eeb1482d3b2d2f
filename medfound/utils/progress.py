"""Progress display: Keras' bar on a terminal, one plain line per update anywhere else.

Keras' ``Progbar`` redraws itself with ``\\b`` and ``\\r``; in a file or a CI log that becomes
one unreadable line. ``make_progress`` returns the bar when stdout is a terminal and otherwise
a ``PlainProgress`` with the same ``update(current, values)`` call, printing lines such as
``step 40/100 (40%)  loss 4.2113  img/s 312.5  ETA 1m12s``. (Keras' bar prints every value
with four decimals, so rates go to the plain lines only: the bar shows its own time per step.)
"""
from __future__ import annotations

import sys
import time
from typing import Sequence


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _number(value: float, name: str = "") -> str:
    """A loss to 4 decimals, a rate (a name ending in '/s', e.g. img/s) to 1, tiny or huge
    values to 4 significant digits."""
    value = float(value)
    if name.endswith("/s") and 0.1 <= abs(value) < 1e6:
        return f"{value:.1f}"
    return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4f}"


class PlainProgress:
    """One line per update that moves forward: position, the values given, and the ETA."""

    def __init__(self, target: int, *, unit_name: str = "step", stream=None):
        self.target, self.unit_name = int(target), unit_name
        self.stream = stream if stream is not None else sys.stdout
        self._start: tuple[float, int] | None = None
        self._last = -1

    def update(self, current: int, values: Sequence[tuple[str, float]] | None = None) -> None:
        current = int(current)
        now = time.perf_counter()
        if self._start is None:  # the first call sets where this run started (a resume)
            self._start, self._last = (now, current), current
            return
        if current <= self._last:
            return
        self._last = current
        parts = [f"{self.unit_name} {current}/{self.target}"
                 + (f" ({100 * current / self.target:.0f}%)" if self.target else "")]
        parts += [f"{name} {_number(value, name)}" for name, value in (values or [])]
        began, first = self._start
        done = current - first
        if current < self.target and done > 0:
            parts.append(f"ETA {_duration((now - began) / done * (self.target - current))}")
        elif current >= self.target:
            parts.append(f"took {_duration(now - began)}")
        print("  ".join(parts), file=self.stream, flush=True)


def make_progress(target: int, *, verbose: bool, unit_name: str = "step",
                  stateful_metrics: Sequence[str] = ()):
    """Keras' ``Progbar`` on a terminal; a ``PlainProgress`` when stdout is a file or a pipe."""
    import keras

    if not verbose:
        return keras.utils.Progbar(target, verbose=0)
    isatty = getattr(sys.stdout, "isatty", None)
    if isatty is not None and isatty():
        return keras.utils.Progbar(target, stateful_metrics=list(stateful_metrics),
                                   unit_name=unit_name)
    return PlainProgress(target, unit_name=unit_name)


class StatusLine:
    """A status line for long loops that also report events (a failed slide): on a terminal each
    ``update`` redraws one line with ``\\r``; in a file or pipe each update is a line of its own,
    so a log never holds updates run together."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty is not None and isatty())
        self._open = False  # a redrawn line is waiting for its newline

    def update(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + text)
            self._open = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """A line of its own (after ending a redrawn status line)."""
        self.end()
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
