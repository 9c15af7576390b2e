#!/usr/bin/env bash
# Regenerates benchmarks/RESULTS.md (and its plots) from a fresh clone on the CPU, MAE included.
# About 6 min of MAE pretraining + 12 min of evaluation on a 2-core VM. Needs `make setup` first.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python benchmarks/bench_probe.py --pretrain 3000 --epochs 8 --save runs/fmnist-mae
.venv/bin/examine evaluate --dataset fashion-mnist --model-dir runs/fmnist-mae --out benchmarks \
    --seeds 5 --preprocess center,none,center-l2
