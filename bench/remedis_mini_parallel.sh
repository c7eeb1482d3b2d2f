#!/usr/bin/env bash
# bench/remedis_mini.py at its defaults, its work shared between two processes (one per core):
# the run BENCHMARKS.md reports. Each process trains its own inits (A: supervised and REMEDIS,
# B: SimCLR from random, then random init's sweeps); a last call reuses every finished run and
# writes the report. Extra arguments go to every call; OUT sets the results folder.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/remedis_mini}
R=(nice -n 10 python bench/remedis_mini.py --out "$OUT" "$@")
mkdir -p "$OUT"
date -u +"start %T" > "$OUT/launch.log"
( "${R[@]}" --parts simclr && "${R[@]}" --parts ood --inits random,simclr \
  && "${R[@]}" --parts id --inits random,simclr ) > "$OUT/proc_b.log" 2>&1 &
B=$!
( "${R[@]}" --parts supervised,remedis && "${R[@]}" --parts ood --inits supervised,remedis \
  && "${R[@]}" --parts id --inits supervised,remedis ) > "$OUT/proc_a.log" 2>&1
A_RC=$?
echo "A rc $A_RC" >> "$OUT/launch.log"
wait $B; B_RC=$?
echo "B rc $B_RC" >> "$OUT/launch.log"
date -u +"sweeps done %T" >> "$OUT/launch.log"
if [ "$A_RC" -ne 0 ] || [ "$B_RC" -ne 0 ]; then
  echo "a sweep process failed: see $OUT/proc_a.log, $OUT/proc_b.log" >&2; exit 1
fi
"${R[@]}" > "$OUT/final.log" 2>&1; RC=$?
echo "final rc $RC" >> "$OUT/launch.log"
date -u +"end %T" >> "$OUT/launch.log"
[ "$RC" -eq 0 ] && tail -5 "$OUT/final.log"
exit $RC
