#!/bin/bash
# A CUDA 13.0 toolkit from PyPI's NVIDIA wheels, for building `--features cuda` on a machine that
# has no CUDA install (and no GPU): nvcc, cicc, the headers, the libraries the build links, and a
# stub libcuda.so (the driver's library is only needed when the program runs, on the GPU machine).
# Needs python3 -m pip, unzip, gcc. Prints the environment to build with.
#
# Usage: bash bench/cuda_toolkit_from_pypi.sh DIR
#        then: eval "$(bash bench/cuda_toolkit_from_pypi.sh DIR)"; cargo build --release --features cuda
set -eu
dir=$(realpath -m "${1:?usage: cuda_toolkit_from_pypi.sh DIR}")
home=$dir/root/nvidia/cu13
if [ ! -x "$home/bin/nvcc" ]; then
    mkdir -p "$dir/whl" "$dir/root"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dir/whl" \
        "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" \
        "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
        "nvidia-cublas==13.0.*" "nvidia-curand==10.4.*" >&2
    for w in "$dir"/whl/*.whl; do unzip -q -o "$w" -d "$dir/root"; done
fi
# The unversioned names the linker looks for.
cd "$home/lib"
for l in cudart nvrtc cublas cublasLt; do ln -sf "lib$l.so.13" "lib$l.so"; done
ln -sf libcurand.so.10 libcurand.so
# A stub driver library: every cu* entry point cudarc declares, under the driver's soname, so
# the program asks for the real libcuda.so.1 when it starts.
mkdir -p stubs
cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | tail -1)
if [ -n "$cudarc" ] && [ ! -f stubs/libcuda.so ]; then
    grep -ho '^ *fn cu[A-Za-z0-9_]*(' "$cudarc/src/driver/sys/mod.rs" | sed 's/ *fn //; s/(//' |
        sort -u | sed 's/.*/int &(void){return 999;}/' >stubs/cuda_stub.c
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o stubs/libcuda.so stubs/cuda_stub.c
fi
[ -f stubs/libcuda.so ] || echo "no cudarc sources yet: run cargo fetch, then this again" >&2
echo "export CUDA_HOME=$home PATH=$home/bin:\$PATH CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}"
