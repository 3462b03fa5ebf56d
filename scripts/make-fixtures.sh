#!/bin/sh
# Regenerates every model/image fixture under fixtures/.
#
# Needs:
#   - Debian packages python3-torch (with python3-numpy, python3-pil) and
#     dataset-fashion-mnist (idx files in /usr/share/datasets/fashion-mnist);
#     another directory holding the four Fashion-MNIST *-ubyte.gz files can be
#     given as the first argument.
#   - CIFAR-10 as JPEG files in class folders, train/<class>/*.jpg and
#     test/<class>/*.jpg (airplane ... truck; public repositories hold them in
#     this layout), in the directory given as the second argument or CIFAR_DIR;
#     without it the CIFAR fixture is left as it is.
#   - Node >= 20 with `npm install` done (TypeScript, @tensorflow/tfjs, sharp).
#   - The system Python (/usr/bin/python3) that sees python3-torch; override
#     with PYTHON=... . Training takes roughly 15-25 minutes on 2 CPU cores
#     (the CIFAR-10 CNN about 10 more).
#
# Writes:
#   fixtures/charcnn/{model.json,group1-shard1of1.bin}
#       Jaderberg-style character CNN (24x24x1 -> 10 classes) trained on
#       Fashion-MNIST, tfjs layers-model, weights quantized to float16.
#   fixtures/fashion/labels.txt, fixtures/fashion/{train,test}/<class>/NNNN.png
#       100 images per class from each split, 24x24 8-bit grayscale.
#   fixtures/cifar/{model.json,group1-shard1of1.bin}
#       CIFAR-10 CNN (32x32x3 -> 10 classes; conv 5x5 32, 32, 64 with max
#       pooling, dense 64, dense 10), tfjs layers-model, float32 weights.
#   fixtures/cifar10/labels.txt, fixtures/cifar10/{train,test}/<class>/NNNN.jpg
#       500 (train) and 100 (test) CIFAR-10 JPEGs per class, copied unchanged.
#   fixtures/residual/, fixtures/nested/
#       small seeded random functional / nested tfjs layers-models (float32).
#
# Then checks from Node that the tfjs model reproduces the accuracy on the
# test PNGs that the training script printed.
set -eu

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-/usr/bin/python3}"
DATA_DIR="${1:-/usr/share/datasets/fashion-mnist}"
CIFAR_DIR="${2:-${CIFAR_DIR:-}}"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

"$PYTHON" scripts/train_charcnn.py "$DATA_DIR" | tee "$LOG"
ACC16="$(sed -n 's/^float16-weight accuracy on the .* test PNGs: \([0-9.]*\) %$/\1/p' "$LOG")"

npx tsc -p .
node dist/scripts/make-graph-fixtures.js
node dist/scripts/check-fixture-accuracy.js --expect "$ACC16" --tol 0.2

if [ -n "$CIFAR_DIR" ]; then
  "$PYTHON" scripts/train_cifar.py "$CIFAR_DIR" | tee "$LOG"
  ACC_CIFAR="$(sed -n 's/^accuracy on the .* test JPEGs: \([0-9.]*\) %$/\1/p' "$LOG")"
  # sharp and PIL decode a few JPEG pixels differently: a looser tolerance.
  node dist/scripts/check-fixture-accuracy.js --model fixtures/cifar/model.json --images fixtures/cifar10/test --expect "$ACC_CIFAR" --tol 1.0
fi

du -sh fixtures/*
