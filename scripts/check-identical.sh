#!/usr/bin/env bash
# Compresses the demo model four ways with the current build (dist/) into OUT: Scheme 2 at fixed
# ranks filter-only in float32 and in the default precision, with data reconstruction on 200
# images, and `npm run demo`'s compress command. Given REF (the same script run on another build,
# e.g. before a refactor), compares every model.json and weight shard byte for byte and exits 1 on
# any difference. Seeded throughout: the same code gives the same bytes whatever --threads is.
#
# Usage: npx tsc -p . && scripts/check-identical.sh OUT [REF]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/check-identical.sh OUT [REF]}
ref=${2:-}
mkdir -p "$out"
model=fixtures/charcnn/model.json
fixed=(--scheme 2 --rank conv2=8,conv3=16 --layers conv2,conv3)
run() {
  local name=$1
  shift
  rm -rf "${out:?}/$name"
  node bin/lowrank.js compress "$model" "$@" --out "$out/$name" >"$out/$name.log" 2>&1 || { echo "compress $name failed: see $out/$name.log"; exit 1; }
}
run float32 "${fixed[@]}" --quantize none
run default "${fixed[@]}"
run data "${fixed[@]}" --data fixtures/fashion/train --samples 200 --eval-data fixtures/fashion/test
run demo --scheme 2 --rank conv2=21,conv3=52 --data fixtures/fashion/train --eval-data fixtures/fashion/test
[ -z "$ref" ] && { echo "wrote $out"; exit 0; }
status=0
for name in float32 default data demo; do
  for file in "$out/$name"/*; do
    if cmp -s "$file" "$ref/$name/$(basename "$file")"; then echo "$name/$(basename "$file"): identical"
    else echo "$name/$(basename "$file"): DIFFERS"; status=1; fi
  done
  [ "$(ls "$out/$name" | wc -l)" = "$(ls "$ref/$name" | wc -l)" ] || { echo "$name: different files"; status=1; }
done
exit $status
