#!/bin/sh
# Regenerates every model/image fixture under fixtures/.
#
# Needs:
#   - Debian packages python3-torch (with python3-numpy, python3-pil) and
#     dataset-fashion-mnist (idx files in /usr/share/datasets/fashion-mnist);
#     another directory holding the four Fashion-MNIST *-ubyte.gz files can be
#     given as the first argument.
#   - Node >= 20 with `npm install` done (TypeScript, @tensorflow/tfjs, sharp).
#   - The system Python (/usr/bin/python3) that sees python3-torch; override
#     with PYTHON=... . Training takes roughly 15-25 minutes on 2 CPU cores.
#
# Writes:
#   fixtures/charcnn/{model.json,group1-shard1of1.bin}
#       Jaderberg-style character CNN (24x24x1 -> 10 classes) trained on
#       Fashion-MNIST, tfjs layers-model, weights quantized to float16.
#   fixtures/fashion/labels.txt, fixtures/fashion/{train,test}/<class>/NNNN.png
#       100 images per class from each split, 24x24 8-bit grayscale.
#   fixtures/residual/, fixtures/nested/
#       small seeded random functional / nested tfjs layers-models (float32).
#
# Then checks from Node that the tfjs model reproduces the accuracy on the
# test PNGs that the training script printed.
set -eu

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/usr/bin/python3}"
DATA_DIR="${1:-/usr/share/datasets/fashion-mnist}"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

"$PYTHON" scripts/train_charcnn.py "$DATA_DIR" | tee "$LOG"
ACC16="$(sed -n 's/^float16-weight accuracy on the .* test PNGs: \([0-9.]*\) %$/\1/p' "$LOG")"

npx tsc -p .
node dist/scripts/make-graph-fixtures.js
node dist/scripts/check-fixture-accuracy.js --expect "$ACC16" --tol 0.2

du -sh fixtures/*
