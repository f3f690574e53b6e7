#!/bin/bash
# The GPU measurements of one device lease (issue "Honest speed figures"), as one prepared run.
#
# Where a session is lent a GPU machine (the device tool's `run`), from the repository root:
#     bash scripts/gpu_bench.sh            # writes its JSON lines to $OUT (or ./gpu-bench-out)
# It needs torch with CUDA and the project's dependencies there (KINDS.md lists what a machine has;
# missing ones travel as wheels in .whl). The shared CT does not travel by itself: copy it into an
# ignored folder and carry it (`echo /.gpu_data/ >> .git/info/exclude; mkdir -p .gpu_data;
# cp -r ../shared/data/totalseg_ct .gpu_data/`, carry [".gpu_data"], BRAUNET_DATA_DIR=.gpu_data). Budget: about 6 minutes on an H200; each step is capped,
# so one slow step cannot eat the lease. Every line names the card (bench_gpu's first line).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-bench-out}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" 2>&1
# forward over batch sizes, fp32 / bf16 / fp16 autocast, against the in-process reference
timeout 240 python3 bench/bench_gpu.py --device cuda 2>&1 | tee "$out/bench_gpu.jsonl"
# what a user meets end to end: predict of a 512 x 512 x 300 CT (peak memory, time against the network)
BRAUNET_DATA_DIR="${BRAUNET_DATA_DIR:-$PWD/.gpu_data}" \
    timeout 180 python3 bench/bench_infer.py --device cuda --depth 300 2>&1 | tee "$out/bench_infer.jsonl"
