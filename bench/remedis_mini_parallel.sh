#!/usr/bin/env bash
# bench/remedis_mini.py at its defaults, its work shared between two processes (one per core):
# A pretrains supervised (the CIFAR curve, then every seed) and REMEDIS, then fine-tunes those
# two inits (OOD, then ID); B pretrains SimCLR from random, then fine-tunes random and SimCLR.
# A last call reuses every finished piece and writes the report. Each piece resumes, so the
# script can be run again after an interruption. Extra arguments go to every call (e.g.
# --ood-modes linear full); OUT sets the results folder.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/remedis_mini}
R=(nice -n 10 python bench/remedis_mini.py --out "$OUT" "$@")
mkdir -p "$OUT"
date -u +"start %T" > "$OUT/launch.log"
( "${R[@]}" --only pretrain --inits simclr && "${R[@]}" --only ood --inits random,simclr \
  && "${R[@]}" --only id --inits random,simclr ) > "$OUT/proc_b.log" 2>&1 &
B=$!
( "${R[@]}" --only pretrain --inits supervised,remedis \
  && "${R[@]}" --only ood --inits supervised,remedis \
  && "${R[@]}" --only id --inits supervised,remedis ) > "$OUT/proc_a.log" 2>&1
A_RC=$?
echo "A rc $A_RC" >> "$OUT/launch.log"
wait $B; B_RC=$?
echo "B rc $B_RC" >> "$OUT/launch.log"
date -u +"sweeps done %T" >> "$OUT/launch.log"
if [ "$A_RC" -ne 0 ] || [ "$B_RC" -ne 0 ]; then
  echo "a sweep process failed: see $OUT/proc_a.log, $OUT/proc_b.log" >&2; exit 1
fi
"${R[@]}" --only report > "$OUT/final.log" 2>&1; RC=$?
echo "final rc $RC" >> "$OUT/launch.log"
date -u +"end %T" >> "$OUT/launch.log"
[ "$RC" -eq 0 ] && tail -5 "$OUT/final.log"
exit $RC
