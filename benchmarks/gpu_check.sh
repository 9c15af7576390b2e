#!/usr/bin/env bash
# Every GPU check of examine in one run, on one GPU machine with a standard PyTorch stack
# (torch, torchvision, timm, numpy, pillow, scikit-image, safetensors, tqdm, pytest), no network,
# nothing installed: the embedding and pretraining benchmarks (bare rate beside end to end) and
# the CUDA tests of the library. Figures go to one JSON file: $OUT/gpu_check.json when OUT is
# set, else benchmarks/out/gpu_check.json; the log beside it. About 6 minutes on an H100/H200.
#
#   bash benchmarks/gpu_check.sh            # QUICK=1: tiny sizes (to try the script on a CPU)
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-$PWD/benchmarks/out}"
mkdir -p "$OUT_DIR"
JSON="$OUT_DIR/gpu_check.json"
LOG="$OUT_DIR/gpu_check.log"
PY="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS="ignore"
DEVICE="${DEVICE:-cuda}"
if [ "${QUICK:-0}" = 1 ]; then
  N_EMBED=64; N_PRE=64; EPOCHS=2; EMBED_MODELS="vit_tiny_patch16_224@96"; STEPS=2; DEVICE="${DEVICE_QUICK:-cpu}"
else
  N_EMBED=8192; N_PRE=8192; EPOCHS=5; EMBED_MODELS="vit_base_patch16_224@224"; STEPS=30
fi
TILES="$(mktemp -d)/tiles"
rm -f "$JSON"
: > "$LOG"
declare -A RC
step() {  # step NAME TIMEOUT_S COMMAND...: run, log, remember the exit status
  local name="$1" limit="$2"; shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  RC[$name]=${PIPESTATUS[0]}
  echo "=== $name: exit ${RC[$name]} after $((SECONDS - t0)) s" | tee -a "$LOG"
}
T0=$SECONDS
{ git log -1 --oneline 2>/dev/null || echo "(no git)"; nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"; } | tee -a "$LOG"
step environment 60 "$PY" -c "import torch, torchvision, timm, PIL, skimage; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), '| torchvision', torchvision.__version__, '| timm', timm.__version__, '| pillow', PIL.__version__, '| skimage', skimage.__version__)"
step bench_embed 120 "$PY" benchmarks/bench_embed.py --device "$DEVICE" --images "$N_EMBED" --models "$EMBED_MODELS" --tiles-dir "$TILES" --json "$JSON"
step bench_pretrain 120 "$PY" benchmarks/bench_pretrain.py --device "$DEVICE" --images "$N_PRE" --epochs "$EPOCHS" --steps "$STEPS" --tiles-dir "$TILES" --json "$JSON"
# The whole CLI as a user runs it: `examine embed` on the same JPEG files, first run, re-run (the file index answers),
# re-run without the index (issue 19).
# With --rank, first `examine rank` from nothing (pretraining reads JPEGs through nvJPEG) with its phase table.
step cli_rerun 240 "$PY" benchmarks/bench_rerun.py --device "$DEVICE" --images "$N_EMBED" --tiles-dir "$TILES" \
  --model "${EMBED_MODELS%@*}" --img-size "${EMBED_MODELS#*@}" --json "$JSON" --rank $([ "${QUICK:-0}" = 1 ] && echo --rank-epochs 2)
step cuda_tests 120 "$PY" -m pytest -q --noconftest -p no:cacheprovider -rs tests/test_embed_cuda.py tests/test_mae_cuda.py tests/test_training_images.py
if [ "${COMPILE:-1}" = 1 ] && [ $((SECONDS - T0)) -lt 150 ]; then  # torch.compile last: it may take minutes
  step bench_pretrain_compiled $((270 - (SECONDS - T0))) "$PY" benchmarks/bench_pretrain.py --device "$DEVICE" --images "$N_PRE" --epochs "$EPOCHS" --steps "$STEPS" --tiles-dir "$TILES" --json "$JSON" --only-compiled
fi
# RECIPE=1: also compare MAE recipes for CUDA by linear probe (issue 9; ~6 more minutes, figures in
# cuda_recipe.json). RECIPE_SETS: data sets, e.g. medical-tiles,path/to/fashion-mnist.npz.
if [ "${RECIPE:-0}" = 1 ]; then
  RECIPE_LIMIT="${RECIPE_LIMIT:-420}"
  if [ -z "${RECIPE_SETS:-}" ]; then
    RECIPE_SETS=medical-tiles; [ -d /usr/share/datasets/fashion-mnist ] && RECIPE_SETS="fashion-mnist,$RECIPE_SETS"
  fi
  step bench_cuda_recipe "$RECIPE_LIMIT" "$PY" benchmarks/bench_cuda_recipe.py --device "$DEVICE" --datasets "$RECIPE_SETS" \
    --deadline-s $((RECIPE_LIMIT - 100)) --json "$OUT_DIR/cuda_recipe.json" $([ "${QUICK:-0}" = 1 ] && echo --quick)
fi
SUMMARY=""
for k in "${!RC[@]}"; do SUMMARY="$SUMMARY\"$k\": ${RC[$k]}, "; done
"$PY" - "$JSON" "{${SUMMARY%, }}" "$((SECONDS - T0))" <<'PYEOF'
import json, sys, pathlib
p = pathlib.Path(sys.argv[1])
data = json.loads(p.read_text()) if p.is_file() else {}
data["exit_status"] = json.loads(sys.argv[2])
data["seconds"] = int(sys.argv[3])
p.write_text(json.dumps(data, indent=2))
print(json.dumps(data, indent=2))
PYEOF
rm -rf "$(dirname "$TILES")"
echo "figures: $JSON; log: $LOG"
for k in "${!RC[@]}"; do [ "${RC[$k]}" = 0 ] || exit 1; done
