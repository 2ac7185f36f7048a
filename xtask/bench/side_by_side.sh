#!/usr/bin/env bash
# Two charlstm binaries measured at the same time, one thread each, one
# pinned to each core, then the cores swapped: both see the same host load,
# so their ratio holds to about 1% where one run after the other drifts by
# 10% (docs/PERFORMANCE.md). Needs 2 cores and taskset.
#
#   xtask/bench/side_by_side.sh OLD_BINARY NEW_BINARY [ROUNDS] [STEPS]
#   RECIPE=notebook-char xtask/bench/side_by_side.sh ... 2 1000
#   RECIPE=large SET=train.precision=bf16 xtask/bench/side_by_side.sh ... 2 20
#
# Prints per round and core order both chars/s and NEW/OLD.
set -euo pipefail
old=${1:?old binary}
new=${2:?new binary}
rounds=${3:-2}
steps=${4:-150}
recipe=${RECIPE:-mirror}
data=${DATA:-../shared/datasets/wikitext2-valid/text8.zip}
# one recipe override for both binaries (`--set KEY=VALUE`), none if empty
sets=()
if [ -n "${SET:-}" ]; then sets=(--set "$SET"); fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
speed() { python3 -c 'import json,sys; print(round(json.loads(open(sys.argv[1]).read().splitlines()[-1])["chars_per_sec"]))' "$1"; }
run() { # core binary file
  taskset -c "$1" "$2" bench --recipe "$recipe" --threads 1 --steps "$steps" --warmup 10 --data "$data" ${sets[@]+"${sets[@]}"} 2>/dev/null >"$3"
}
for r in $(seq "$rounds"); do
  for cores in "0 1" "1 0"; do
    set -- $cores
    run "$1" "$old" "$out/old" & run "$2" "$new" "$out/new" & wait
    a=$(speed "$out/old"); b=$(speed "$out/new")
    echo "round $r: old (core $1) $a, new (core $2) $b, new/old $(python3 -c "print(round($b/$a, 3))")"
  done
done
