#!/usr/bin/env bash
# The GPU benchmarks in one short run (set-up: gpu_env.sh, see benchmarks/README.md). Each stage
# has its own time limit so that a slow one cannot cost the others' results.
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__)" | tee -a "$OUT/gpu.txt"

# issue 2 / issue 17: PixArt-alpha XL/2, fp16, 256 px, 20 steps, CFG, batch 100 (ms/image of a search worker)
timeout "${PIXART_LIMIT:-200}" python3 benchmarks/bench_apply.py --naive \
    --out "$OUT/apply_pixart_256_b100_h200.json" 2>&1 | tee "$OUT/pixart.log"
# issue 2: FLUX.1-dev size, bf16, 1024 px, 28 steps, batch 1
timeout "${FLUX_LIMIT:-150}" python3 benchmarks/bench_apply.py --family flux --height 1024 --batch 1 --steps 28 \
    --repeats 2 --schedules every-2,every-3,random-20 \
    --out "$OUT/apply_flux_1024_b1_h200.json" 2>&1 | tee "$OUT/flux.log"
ls -la "$OUT"
