#!/bin/sh
# cuda-check.sh - the CUDA backend on a GPU machine, from a clean tree:
#   1. build build-cuda (-DNNC_CUDA=ON), or, when this machine lacks nnc's
#      build dependencies, unpack build-cuda/gpu-pack.tar.xz made by
#      scripts/cuda-pack.sh on a machine that has them;
#   2. the CUDA tests (ctest -L cuda, or test_cuda directly from the pack);
#   3. train-step throughput of mnist_mlp, deep_mlp and lenet with
#      `nnc bench --device cuda`, and the CPU's for reference;
#   4. if PyTorch imports, bench/cuda_compare.py: the same models in
#      PyTorch eager on the same GPU.
# Logs go to $OUT/ when OUT is set (else build-cuda/cuda-check/). Exit
# status: 0 when every step ran and passed.
set -u
cd "$(dirname "$0")/.."
root=$(pwd)
logs=${OUT:-$root/build-cuda/cuda-check}
mkdir -p "$logs"
status=0
say() { echo "cuda-check: $*" | tee -a "$logs/summary.txt"; }

nvidia-smi -L >"$logs/gpu.txt" 2>&1 && say "GPU: $(head -1 "$logs/gpu.txt")" || say "nvidia-smi: no GPU listed"
[ -x /usr/local/cuda/bin/nvcc ] || say "missing: the CUDA toolkit (/usr/local/cuda/bin/nvcc)"

# ---- 1. build, or the pack --------------------------------------------------
missing=""
command -v cmake >/dev/null || missing="$missing cmake"
command -v flex >/dev/null || missing="$missing flex"
command -v bison >/dev/null || missing="$missing bison"
[ -d /usr/lib/llvm-19/lib/cmake/llvm ] || missing="$missing llvm-19-dev"
for pc in openblas libcjson check zlib readline; do
    pkg-config --exists $pc 2>/dev/null || missing="$missing $pc(pkg-config)"
done
nnc=$root/build-cuda/nnc test_cuda=$root/build-cuda/tests/test_cuda
# NNC_CUDA_CHECK_PACK=1 uses the pack even where a build would work.
[ "${NNC_CUDA_CHECK_PACK:-0}" = 1 ] && [ -f build-cuda/gpu-pack.tar.xz ] && missing="${missing:- (none; NNC_CUDA_CHECK_PACK=1)}"
if [ -z "$missing" ]; then
    say "building build-cuda"
    if cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DNNC_CUDA=ON >"$logs/build.txt" 2>&1 &&
        cmake --build build-cuda -j"$(nproc)" >>"$logs/build.txt" 2>&1; then
        say "build: ok"
    else
        say "build: FAILED (see build.txt)"; tail -20 "$logs/build.txt"; exit 1
    fi
elif [ -f build-cuda/gpu-pack.tar.xz ]; then
    say "missing to build here:$missing; using build-cuda/gpu-pack.tar.xz"
    (cd build-cuda && { xz -dc gpu-pack.tar.xz 2>/dev/null | tar xf - ||
        python3 -c "import tarfile; tarfile.open('gpu-pack.tar.xz').extractall('.')"; }) ||
        { say "cannot unpack the pack"; exit 1; }
    nnc=$root/build-cuda/gpu-pack/nnc test_cuda=$root/build-cuda/gpu-pack/test_cuda
    # the pack was linked where the toolkit sat on the building machine
    export LD_LIBRARY_PATH="$root/build-cuda/gpu-pack/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
    say "missing to build here:$missing"
    say "and no build-cuda/gpu-pack.tar.xz: run scripts/cuda-pack.sh on a machine with them and carry it"
    exit 1
fi
export XDG_CACHE_HOME="$root/build-cuda/cache" # a fresh NVRTC cache: compile times are real

# ---- 2. the CUDA tests ----------------------------------------------------------
if [ -z "$missing" ]; then
    ctest --test-dir build-cuda -L cuda --output-on-failure >"$logs/ctest.txt" 2>&1 && r=0 || r=$?
    grep -E "tests passed|Skipped|Failed|\*\*\*" "$logs/ctest.txt" | tee -a "$logs/summary.txt"
else
    r=0
    run_test() { # NAME ARGS...: 77 is "skipped" (no device), as in ctest
        t=$1; shift
        "$test_cuda" "$t" "$@" >"$logs/test-$t.txt" 2>&1 && rc=0 || rc=$?
        [ $rc -eq 0 ] || [ $rc -eq 77 ] || r=1
        say "test_cuda $t: $(tail -1 "$logs/test-$t.txt")"
    }
    run_test compile examples/*.nn
    run_test ops tests/grad/*.nn
    run_test train examples/mnist_mlp.nn examples/deep_mlp.nn examples/lenet.nn
    grep -h "FAIL" "$logs"/test-*.txt | head -40 | tee -a "$logs/summary.txt"
fi
[ $r -eq 0 ] && say "tests: ok" || { say "tests: FAILED"; status=1; }

# ---- 3. nnc bench on the GPU and the CPU ----------------------------------------------
say "train step, samples/s (nnc bench --json: train_samples_per_s):"
for spec in mnist_mlp:64 deep_mlp:128 lenet:64; do
    model=${spec%%:*} batch=${spec##*:}
    for dev in cuda cpu; do
        if "$nnc" bench "examples/$model.nn" --batch "$batch" --device "$dev" --json \
            >"$logs/bench-$model-$dev.json" 2>"$logs/bench-$model-$dev.err"; then
            rate=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d.get('train_samples_per_s', 0)))" \
                "$logs/bench-$model-$dev.json" 2>/dev/null || echo "?")
            say "  $model batch $batch --device $dev: $rate"
        else
            say "  $model --device $dev: FAILED: $(tail -1 "$logs/bench-$model-$dev.err")"; status=1
        fi
    done
done

# ---- 4. PyTorch on the same GPU --------------------------------------------------
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    python3 bench/cuda_compare.py --nnc "$nnc" --out "$logs" >"$logs/compare.txt" 2>&1 || status=1
    tee -a "$logs/summary.txt" <"$logs/compare.txt"
else
    say "PyTorch with CUDA not importable: no comparison"
fi
say "done (status $status); logs in $logs"
exit $status
