"""The one CSV reader and the one CSV image-path rule of medfound, for labeled and unlabeled data.

CSV files are read as UTF-8 (a byte-order mark is accepted, as Excel writes it; ``.gz`` is
gunzipped), with Python's csv dialect (comma, double quotes, quoted newlines); header names and
cells have surrounding white space removed; blank lines are skipped; a duplicate column name,
a missing required column and a row with more or fewer cells than the header are refused.

Image paths in a CSV are relative to a data root (the loader says which folder):
- ``\\`` counts as a folder separator, ``.`` parts are dropped and ``a/../b.png`` is read as
  ``b.png``: a ``..`` is accepted while the path stays inside the root;
- a path that climbs out of the root (``../x.png``, ``a/../../x.png``), an absolute path
  (``/x.png``, ``\\\\server\\x.png``, ``C:\\x.png``, ``C:x.png``) and a home path (``~/x.png``,
  ``~user/x.png``: ``~`` is never expanded) are refused, as is an empty cell.
Every refusal is a ``CSVFormatError`` naming the file, the line and the problem.
"""
from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath

import numpy as np

npstr = getattr(np, "strings", np.char)  # vectorised string ops (np.char on NumPy < 2)


class DatasetFormatError(ValueError):
    """A data file is not what its loader expects; the message names the file and the problem."""


class CSVFormatError(DatasetFormatError):
    """A CSV row or header is invalid; the message names the file, the line and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


def open_text(path: str | os.PathLike):
    """Opens a CSV or text file for reading as UTF-8 (BOM accepted), gunzipping ``.gz`` files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def find_file(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` (each also tried with ``.gz``) that exists in ``folder``."""
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


class CSVTable:
    """A CSV read column-wise: each column a NumPy string array (made on first use), with line numbers."""

    def __init__(self, path: Path, header: list[str], raw: dict[str, Sequence[str]], lines: np.ndarray):
        self.path = path
        self.header = header
        self._raw = raw
        self._cache: dict[str, np.ndarray] = {}
        self.lines = lines

    def __len__(self) -> int:
        return int(self.lines.shape[0])

    @property
    def columns(self) -> dict[str, Sequence[str]]:
        """Column name -> values (raw sequences; use ``column`` for a NumPy array)."""
        return self._raw

    def column(self, name: str) -> np.ndarray:
        """One column as a NumPy string array with surrounding whitespace removed."""
        if name not in self._cache:
            values = np.asarray(self._raw[name], dtype=str)
            self._cache[name] = npstr.strip(values) if values.size else values
        return self._cache[name]

    def take(self, keep: np.ndarray) -> CSVTable:
        """The rows where ``keep`` (boolean or indices) holds."""
        return CSVTable(self.path, self.header, {k: self.column(k)[keep] for k in self.header},
                        self.lines[keep])


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], np.ndarray]:
    """Header, rows and each row's last physical line, refusing unreadable files with the line."""
    reader = None
    try:
        with open_text(path) as f:
            reader = csv.reader(f)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise CSVFormatError(path, "empty file, no header row") from None
            rows, lines = [], []
            for row in reader:
                rows.append(row)
                lines.append(reader.line_num)
    except csv.Error as e:
        raise CSVFormatError(path, f"unreadable CSV: {e}", reader.line_num if reader else None) from None
    except UnicodeDecodeError:
        line, byte = _first_non_utf8_line(path)
        raise CSVFormatError(path, f"not UTF-8 text (byte {byte!r}); save the CSV as UTF-8", line) from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise CSVFormatError(path, f"cannot read the gzip file ({e})") from None
    return header, rows, np.asarray(lines, dtype=np.int64)


def _first_non_utf8_line(path: Path) -> tuple[int | None, bytes]:
    """The first physical line that is not UTF-8, and its first bad byte."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return number, raw[e.start:e.start + 1]
    return None, b""


def read_csv_table(path: str | os.PathLike, required: Sequence[str] = ()) -> CSVTable:
    """Reads a whole CSV column-wise, refusing missing columns and rows of the wrong length."""
    path = Path(path)
    header, rows, lines = _read_rows(path)
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    if np.any(lengths == 0):  # drop blank lines
        keep = np.flatnonzero(lengths > 0)
        rows = [rows[i] for i in keep]
        lines, lengths = lines[keep], lengths[keep]
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise CSVFormatError(path, f"duplicate column names {dupes}", 1)
    missing = [c for c in required if c not in header]
    if missing:
        raise CSVFormatError(path, f"missing required column(s) {missing}; the header has {header}", 1)
    width = len(header)
    bad = np.flatnonzero(lengths != width)
    if bad.size:
        i = int(bad[0])
        raise CSVFormatError(path, f"row has {int(lengths[i])} fields, the header has {width}", int(lines[i]))
    if rows:
        raw = dict(zip(header, zip(*rows)))
    else:
        raw = {name: () for name in header}
    return CSVTable(path, header, raw, lines)


# --- The image-path rule ---

def normalize_relative(relative: str, csv_path: str | os.PathLike, line: int | None) -> str:
    """A CSV image path as a clean relative POSIX path (see the module docstring for the rule).

    Raises CSVFormatError, naming the file and line, for an empty, absolute, home (``~``) or
    root-escaping path.
    """
    text = relative.strip()
    if not text:
        raise CSVFormatError(csv_path, "empty image path", line)
    windows = PureWindowsPath(text)
    if text.startswith(("/", "\\")) or windows.drive or os.path.isabs(text):
        raise CSVFormatError(csv_path, f"absolute image path {text!r} is not allowed; paths must be "
                             "relative to the data root", line)
    parts = text.replace("\\", "/").split("/")
    if parts[0].startswith("~"):
        raise CSVFormatError(csv_path, f"home image path {text!r} is not allowed ('~' is not expanded); "
                             "paths must be relative to the data root", line)
    kept: list[str] = []
    for part in parts:
        if part == "..":
            if not kept:
                raise CSVFormatError(csv_path, f"image path {text!r} escapes the data root ('..')", line)
            kept.pop()
        elif part not in ("", "."):
            kept.append(part)
    if not kept:
        raise CSVFormatError(csv_path, f"image path {text!r} names the data root itself, not a file", line)
    return "/".join(kept)


def relative_paths(table: CSVTable, column: str) -> np.ndarray:
    """The column's image paths, each checked and normalized by ``normalize_relative``.

    Only cells that need it (empty, ``..``, ``.``, ``~``, ``\\``, ``:``, leading or doubled
    ``/``) go through Python, so a CSV of a million clean paths is checked at NumPy speed.
    """
    paths = table.column(column)
    if paths.size == 0:
        return paths
    suspect = ((npstr.str_len(paths) == 0) | npstr.startswith(paths, "/") | npstr.startswith(paths, "~")
               | npstr.startswith(paths, "./") | (npstr.find(paths, "/.") >= 0)
               | (npstr.find(paths, "..") >= 0) | (npstr.find(paths, ":") >= 0)
               | (npstr.find(paths, "\\") >= 0) | (npstr.find(paths, "//") >= 0)
               | npstr.endswith(paths, "/") | (paths == "."))
    if not suspect.any():
        return paths
    fixed = paths.tolist()
    for i in np.flatnonzero(suspect).tolist():
        fixed[i] = normalize_relative(fixed[i], table.path, int(table.lines[i]))
    return np.asarray(fixed, dtype=str)


def under(root: str | os.PathLike, relative: np.ndarray) -> np.ndarray:
    """``root/relative`` for an array of paths from ``relative_paths`` (in the OS's spelling)."""
    rel = relative if os.sep == "/" else npstr.replace(relative, "/", os.sep)
    return npstr.add(str(root) + os.sep, rel)
