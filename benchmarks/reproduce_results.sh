#!/usr/bin/env bash
# Regenerates benchmarks/RESULTS.md and its plots from a fresh clone, on the CPU: the default CPU MAE recipe
# is pretrained on each data set (cached in runs/evaluate), pixel PCA is the control embedding, then every
# queue is simulated (budgets to 1,000 labels where the pool allows; the k-means methods to 200, see
# --slow-limit), two processes side by side. Needs `make setup` first (Fashion-MNIST comes from Debian's
# dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/examine evaluate --datasets fashion-mnist,digits,medical-tiles,shirts --embedders mae,pixel-pca --seeds 3 --out benchmarks "$@"
