"""BENCHMARKS.md shows only numbers that trace to a committed report.

Each section (a ``##`` or ``###`` heading) whose tables hold numbers, unless its heading says
"withdrawn", must name its raw reports and its command in two fixed lines::

    Report: `bench/reports/NAME.json` [`bench/reports/OTHER.json` ...]
    Command: `the exact command` [...]

Every report must be committed, and every number in the section's table rows must be a number of
those reports at the precision shown (a percentage may show a fraction times 100).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A number standing alone: not part of a word or name (r50x1, ckpt-6, 2x2), optionally with
# thousands commas, decimals, an exponent, and a ratio 'x' or '%' right after it.
NUMBER = re.compile(r"(?<![\w.\-@/])(\d[\d,]*(?:\.\d+)?(?:e-?\d+)?)(?=x\b|%|[^\w.]|$)")


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of every ``##`` / ``###`` section."""
    parts = re.split(r"^(#{2,3} .*)$", text, flags=re.M)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def table_rows(body: str) -> list[str]:
    """The data rows of the section's tables (not the header or the |---| line)."""
    rows, lines = [], body.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i >= 2 and lines[i - 1].startswith("|") and (
                set(lines[i - 1].replace("|", "").strip()) <= set("-: ")
                or rows and rows[-1] == lines[i - 1]):
            rows.append(line)
    return rows


def numbers_in(row: str) -> list[str]:
    text = re.sub(r"`[^`]*`", "", row)  # code (names, commands) is not a measurement
    return NUMBER.findall(text)


def report_values(paths: list[Path]) -> list[float]:
    values: list[float] = []

    def walk(item):
        if isinstance(item, bool):
            return
        if isinstance(item, (int, float)):
            if math.isfinite(item):
                values.append(float(item))
        elif isinstance(item, dict):
            for v in item.values():
                walk(v)
        elif isinstance(item, list):
            for v in item:
                walk(v)
    for path in paths:
        walk(json.loads(path.read_text()))
    return values


def shown(token: str) -> tuple[float, float]:
    """The value a table shows and half a unit of its last digit (the rounding it allows)."""
    plain = token.replace(",", "")
    value = float(plain)
    if "e" in plain:
        mantissa, exponent = plain.split("e")
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return value, 0.5 * 10 ** (int(exponent) - decimals)
    decimals = len(plain.split(".")[1]) if "." in plain else 0
    return value, 0.5 * 10 ** -decimals


def traced(token: str, values: list[float]) -> bool:
    value, half = shown(token)
    return any(abs(v - value) <= half * (1 + 1e-9) or abs(100 * v - value) <= half * (1 + 1e-9)
               for v in values)


def checked_sections(text: str):
    for heading, body in sections(text):
        rows = [r for r in table_rows(body) if numbers_in(r)]
        if rows and "withdrawn" not in heading.lower():
            yield heading, body, rows


def problems_of(text: str, root: Path = ROOT) -> list[str]:
    problems = []
    for heading, body, rows in checked_sections(text):
        reports = [m for line in body.splitlines() if line.startswith("Report: ")
                   for m in re.findall(r"`([^`]+)`", line)]
        commands = [line for line in body.splitlines()
                    if line.startswith("Command: `") and line.rstrip().endswith("`")]
        if not reports or not commands:
            problems.append(f"{heading}: tables with numbers but no 'Report: ' and 'Command: ' line")
            continue
        paths = [root / r for r in reports]
        missing = [r for r, p in zip(reports, paths) if not r.startswith("bench/reports/")
                   or not p.is_file()]
        if missing:
            problems.append(f"{heading}: report(s) not committed in bench/reports/: {missing}")
            continue
        values = report_values(paths)
        for row in rows:
            for token in numbers_in(row):
                if not traced(token, values):
                    problems.append(f"{heading}: {token} is in no report ({row[:80]}...)")
    return problems


def test_every_number_of_benchmarks_md_traces_to_a_committed_report():
    text = (ROOT / "BENCHMARKS.md").read_text()
    assert list(checked_sections(text)), "no checked section: the parser found no tables"
    problems = problems_of(text)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace("| 35.6 % |", "| 36.6 % |"), "36.6 is in no report"),
    (lambda t: t.replace("Report: `bench/reports/tissue_agreement.json`", ""),
     "no 'Report: ' and 'Command: ' line"),
    (lambda t: t.replace("bench/reports/tissue_agreement.json`\nCommand",
                         "bench/reports/nowhere.json`\nCommand"), "not committed"),
    (lambda t: t.replace(": withdrawn, no raw report committed", "", 1), "no 'Report: '"),
])
def test_the_check_fails_on_a_number_or_report_that_does_not_trace(edit, expected):
    """The check itself can fail: a changed number, a missing Report line, a report that is not
    committed, a withdrawn section's heading no longer saying so (section 1 keeps no table, so
    this one edits a fixture table into it)."""
    text = (ROOT / "BENCHMARKS.md").read_text()
    if "withdrawn" in expected or expected == "no 'Report: '":
        text = text.replace("## 1. Inference (`bench/inference.py`): withdrawn, no raw report "
                            "committed\n", "## 1. Inference (`bench/inference.py`): withdrawn, "
                            "no raw report committed\n\n| a | b |\n|---|---|\n| x | 12.5 |\n", 1)
    edited = edit(text)
    assert edited != text
    assert any(expected in p for p in problems_of(edited)), problems_of(edited)
