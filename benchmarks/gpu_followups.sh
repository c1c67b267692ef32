#!/usr/bin/env bash
# The GPU measurements still open, in one command for a lent GPU machine (about 10 minutes on an
# H100). Each step writes OUT_DIR/<step>.log; the tables go into the results_*.md files named.
#
#   bash benchmarks/gpu_followups.sh [OUT_DIR] [STEP ...]     steps: ops predict flow train extract
#
#   ops      the boundary-max-pooling tests on CUDA (last CUDA edit not yet run on a GPU)
#            -> results_ops.md
#   predict  issue #3: frames/s fp32/bf16/fp16, per-stage split, batch 1 vs 3 on cuDNN
#            -> results_infer.md (goal: > 10 x 3259 frames/s)
#   extract  issue #15: `afsd extract` clips/s at 16x224x224, fp32/bf16/fp16, batches 8/32/128, and
#            the features' distance to CPU float32 -> results_extract.md
#   flow     issue #5: tvl1 at OpenCV's defaults, compiled, batches 4096 and 8192
#            -> results_flow.md (goal: > 1000 pairs/s)
#   train    fp16 vs bf16 vs fp32 over 40 steps; amp_skipped_steps shows the GradScaler's
#            calibration -> results_train.md
set -u
OUT=${1:-${OUT:-gpu_followups}}
shift || true
STEPS=${*:-ops predict flow train}
mkdir -p "$OUT"
export PYTHONPATH=.
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/machine.log" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$OUT/machine.log" 2>&1

step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "   exit $? - $(tail -n 1 "$OUT/$name.log")"
}

for s in $STEPS; do
    case $s in
        ops) step ops 300 python3 -m pytest -q -p no:cacheprovider tests/test_boundary_max_pool.py ;;
        predict) step predict 420 python3 benchmarks/bench_predict.py --device cuda --check --videos 16 \
                     --frames 1800 --batch-sizes 1,8,32 --dtypes fp32,bf16,fp16 --workers 12 ;;
        flow) step flow 420 python3 benchmarks/bench_flow.py --device cuda --methods tvl1 --presets opencv \
                  --compile-only --pairs 8192 --batch-sizes 4096 8192 ;;
        train) step train 300 python3 benchmarks/bench_train.py --device cuda --presets thumos14 \
                   --amp off,bf16,fp16 --steps 40 ;;
        extract) step extract 420 python3 benchmarks/bench_extract.py --device cuda --check --amp off bf16 fp16 \
                     --sizes 224 --batch-sizes 8 32 128 --threads 4 --layout-rounds 0 --video-seconds 20 ;;
        *) echo "unknown step $s (ops predict flow train extract)"; exit 2 ;;
    esac
done
