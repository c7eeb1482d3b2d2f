#!/usr/bin/env bash
# bench/remedis_mini.py at its defaults, its work shared between two processes (one per core).
# The supervised CIFAR stage is the long pole (about 22 min per seed at 12,800 steps), so its
# seeds are split: A runs the CIFAR curve (seed 0), supervised and REMEDIS for SEEDS_A, then
# fine-tunes those; B runs SimCLR from random, fine-tunes random and SimCLR (every seed), then
# supervised and REMEDIS for SEEDS_B (waiting for A's curve if it is still running) and their
# fine-tuning. A last call reuses every finished piece and writes the report. Each piece resumes,
# so the script can be run again after an interruption. Extra arguments go to every call (e.g.
# --ood-modes linear full); OUT sets the results folder; SEEDS_A and SEEDS_B (default 0,1 and 2)
# are the seeds of the two supervised halves (together, the study's --seeds).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/remedis_mini}
SEEDS_A=${SEEDS_A:-0,1}
SEEDS_B=${SEEDS_B:-2}
R=(nice -n 10 python bench/remedis_mini.py --out "$OUT" "$@")
pieces() {  # pretrain, then OOD and ID fine-tuning, of some inits and seeds
  "${R[@]}" --only pretrain --inits "$1" --seeds "$2" \
    && "${R[@]}" --only ood --inits "$1" --seeds "$2" \
    && "${R[@]}" --only id --inits "$1" --seeds "$2"
}
mkdir -p "$OUT"
date -u +"start %T" > "$OUT/launch.log"
( pieces random,simclr "$SEEDS_A,$SEEDS_B" && pieces supervised,remedis "$SEEDS_B" ) \
  > "$OUT/proc_b.log" 2>&1 &
B=$!
pieces supervised,remedis "$SEEDS_A" > "$OUT/proc_a.log" 2>&1
A_RC=$?
echo "A rc $A_RC" >> "$OUT/launch.log"
wait $B; B_RC=$?
echo "B rc $B_RC" >> "$OUT/launch.log"
date -u +"sweeps done %T" >> "$OUT/launch.log"
if [ "$A_RC" -ne 0 ] || [ "$B_RC" -ne 0 ]; then
  echo "a sweep process failed: see $OUT/proc_a.log, $OUT/proc_b.log" >&2; exit 1
fi
"${R[@]}" --only report --seeds "$SEEDS_A,$SEEDS_B" > "$OUT/final.log" 2>&1; RC=$?
echo "final rc $RC" >> "$OUT/launch.log"
date -u +"end %T" >> "$OUT/launch.log"
[ "$RC" -eq 0 ] && tail -5 "$OUT/final.log"
exit $RC
