#!/usr/bin/env bash
# Second GPU run: PixArt at the search's default batch (8) and on the bit-exact path, and the
# families with no GPU figure yet (SD3.5-medium, Sana, Wan), each under its own time limit.
source "$(dirname "$0")/gpu_env.sh"
bench() {  # bench_apply.py with a time limit, its output (less float32 warnings) appended to more.log
    local limit=$1; shift
    timeout "$limit" python3 benchmarks/bench_apply.py "$@" 2>&1 | grep -v float32 | tee -a "$OUT/more.log"
}
bench 60 --batch 8 --schedules every-2,every-3,every-5 --out "$OUT/apply_pixart_256_b8_h200.json"
bench 80 --exact --out "$OUT/apply_pixart_256_b100_exact_h200.json"
bench 80 --family sd3 --batch 2 --repeats 2 --schedules every-2,every-3 --out "$OUT/apply_sd3_1024_b2_h200.json"
bench 60 --family sana --batch 4 --repeats 2 --schedules every-2,every-3 --out "$OUT/apply_sana_1024_b4_h200.json"
bench 70 --family wan --batch 1 --steps 10 --repeats 1 --schedules every-2 --out "$OUT/apply_wan_480p_b1_s10_h200.json"
ls -la "$OUT"
