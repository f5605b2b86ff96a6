#!/bin/sh
# cuda-pack.sh - builds the CUDA configuration here and packs what a GPU
# machine without nnc's build dependencies (LLVM 19, libcjson, readline) needs to run
# it: nnc, test_cuda and those shared libraries, in build-cuda/gpu-pack.tar.xz
# (an ignored path, about 35 MB: small enough to carry to the machine).
# scripts/cuda-check.sh uses the pack when it cannot build there.
set -eu
cd "$(dirname "$0")/.."
cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DNNC_CUDA=ON >/dev/null
cmake --build build-cuda -j2 --target nnc test_cuda
rm -rf build-cuda/gpu-pack
mkdir -p build-cuda/gpu-pack/lib
cp build-cuda/nnc build-cuda/tests/test_cuda build-cuda/gpu-pack/
for lib in libLLVM libz3 libcjson libreadline; do
    path=$(ldd build-cuda/nnc | awk -v l="$lib" 'index($1, l) == 1 {print $3}')
    [ -n "$path" ] && cp -L "$path" build-cuda/gpu-pack/lib/
done
tar -C build-cuda -cf - gpu-pack | xz -T2 -6 >build-cuda/gpu-pack.tar.xz
ls -l build-cuda/gpu-pack.tar.xz
