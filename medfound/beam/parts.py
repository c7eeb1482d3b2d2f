"""Which parts a (re)run of the Beam pipeline still has to write; no apache_beam needed here."""
from __future__ import annotations

from pathlib import Path

from medfound.embed import part_files


def pending_parts(parts_dir: Path, total: int, part_size: int) -> list[tuple[int, int]]:
    """(start, end) of the parts missing from ``parts_dir`` for inputs 0..``total``.

    The parts already there are chained from 0 by the rule ``contiguous_parts`` merges with (at
    each point the first part, in name order, that starts there); the gaps between them are cut
    into new parts of ``part_size`` inputs. So a rerun after a kill writes exactly the missing
    rows, and the merge reads every input once, whatever order the workers finished in.
    """
    pending, covered = [], 0
    chained = [(start, end) for start, end, _ in part_files(parts_dir)] + [(total, total)]
    for start, end in chained:
        if start < covered or start > total:
            continue  # overlaps the chain (a part of an earlier, differently cut run)
        pending += [(at, min(at + part_size, start)) for at in range(covered, start, part_size)]
        covered = max(covered, end)
    return pending
