#!/bin/bash
# The SAE trainer's GPU check, for a machine with an NVIDIA GPU and PyTorch (no Rust needed):
#   1. the GPU step agrees with the CPU trainer (same SAE, same batch, five steps: the last
#      step's losses), plain TopK and with Multi-TopK and AuxK on;
#   2. bench/sae_gpu_speed.py: tokens/s of `lantern sae bench --device cuda` (f32 and TF32)
#      against sparsify's SparseCoder and the minimal PyTorch TopK SAE on the same GPU.
#
# Usage: bash bench/sae_gpu_check.sh LANTERN OUT_DIR [WHEEL_DIR]
#   LANTERN    a lantern built with `--features cuda` (README.md, "GPU")
#   OUT_DIR    where the results go (nvidia-smi.txt, agree.jsonl, speed.json)
#   WHEEL_DIR  wheels to install first when sparsify is missing there (eai-sparsify and what it
#              imports: datasets, dill, multiprocess, natsort, schedulefree, simple_parsing,
#              docstring_parser)
set -u
bin=$1
out=$2
whl=${3:-}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/nvidia-smi.txt"

# The CUDA 13 libraries the binary links: the toolkit's or PyTorch's wheels', wherever they are.
dirs=""
for f in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
    p=$(find -H /usr/local/cuda /usr/local/cuda-13* /opt /usr/lib/x86_64-linux-gnu -name "$f" 2>/dev/null | head -1)
    [ -n "$p" ] && dirs="$dirs:$(dirname "$p")"
done
export LD_LIBRARY_PATH="${dirs#:}:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd "$bin" | grep -E 'libcuda|cublas|curand|nvrtc|cudart|not found'

echo "== 1. the GPU step against the CPU trainer (plain TopK; with Multi-TopK and AuxK)"
# k 4 of 2304 latents over 1024 rows leaves latents unfired in a step: dead after 1024 tokens.
for extra in "--k 32" "--k 4 --multi-topk --dead-tokens 1024"; do
    for dev in cpu cuda; do
        # shellcheck disable=SC2086
        "$bin" sae bench --device "$dev" --d-in 576 --latents 2304 --batch 1024 \
            --steps 5 --warmup 0 $extra --json
    done
done | tee "$out/agree.jsonl"

echo "== 2. speed against PyTorch"
if [ -n "$whl" ] && ! python3 -c "import sparsify" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        "$whl"/*.whl && export PYTHONPATH=/tmp/site
fi
python3 "$(dirname "$0")/sae_gpu_speed.py" --lantern "$bin" --json | tee "$out/speed.json"
