#!/bin/sh
# run.sh - the file-driven tests, run by ctest (one file per test):
#
#   run.sh golden NNC FILE.nn [--update]   IR after shape, autodiff, optimizer and simplify
#                                         == FILE.shape.ir, FILE.autodiff.ir, FILE.optimizer.ir,
#                                         FILE.simplify.ir
#   run.sh error  NNC FILE.nn [--update]   diagnostics of FILE.nn == FILE.err
#   run.sh fails  NNC FILE.nn COMMAND ARGS...
#                                         `nnc COMMAND ARGS FILE.nn` reports a failure (status 1)
#   run.sh resume NNC FILE.nn ARGS...      training 2 epochs, or 1 + save + load + 1,
#                                         gives the same losses and checkpoint
#   run.sh deploy NNC FILE.nn CLASSIFY.c   the emitted C with embedded weights, built with
#                                         cc alone, has the test accuracy of `nnc eval`
#   run.sh metric NNC FILE.nn NAME min|max LIMIT ARGS...
#                                         `nnc train` reports test NAME >= (or <=) LIMIT
#   run.sh transfer NNC FILE.nn LENET.nn  a quick LeNet's checkpoint feeds FILE.nn's
#                                         pretrained layers, which then trains
#   run.sh train  NNC FILE.nn MIN_ACC ARGS...
#                                         `nnc train` reaches test accuracy >= MIN_ACC
#
# With --update, golden and error tests rewrite their expected file.
set -u
kind=$1 nnc=$2 file=$3
shift 3
case $nnc in /*) ;; *) nnc=$(pwd)/$nnc ;; esac
dir=$(dirname "$file")
base=$(basename "$file")
stem=${base%.nn}
out=$(mktemp)
work=$(mktemp -d)
trap 'rm -rf "$out" "$work"' EXIT

compare() { # expected-file
    if [ "${1:-}" = "" ]; then return 1; fi
    if [ "${update:-0}" = 1 ]; then cp "$out" "$expected"; echo "updated $expected"; return 0; fi
    if ! [ -f "$expected" ]; then echo "missing $expected (run with --update to create it)"; cat "$out"; return 1; fi
    if diff -u "$expected" "$out"; then return 0; fi
    echo "FAIL: output differs from $expected"
    return 1
}

update=0
[ "${1:-}" = "--update" ] && update=1

case $kind in
golden)
    # Paths are printed relative to the test folder, so the files do not
    # depend on where the repository lives.
    failed=0
    for pass in shape autodiff optimizer simplify; do
        expected=$dir/$stem.$pass.ir
        (cd "$dir" && "$nnc" "$base" --print-after=$pass) >"$out" 2>&1 || { cat "$out"; exit 1; }
        compare "$expected" || failed=1
    done
    exit $failed
    ;;
error)
    expected=$dir/$stem.err
    (cd "$dir" && NO_COLOR=1 "$nnc" "$base" --emit-ir) >/dev/null 2>"$out"
    status=$?
    if [ $status -ne 1 ]; then echo "FAIL: expected exit status 1, got $status"; cat "$out"; exit 1; fi
    compare "$expected"
    ;;
fails)
    cmd=$1
    shift
    "$nnc" "$cmd" "$@" "$file" >"$out" 2>&1
    status=$?
    cat "$out"
    [ $status -eq 1 ] || { echo "FAIL: expected exit status 1, got $status"; exit 1; }
    grep -q FAIL "$out" || { echo "FAIL: no failure reported"; exit 1; }
    ;;
resume)
    # Timings differ between runs; the losses and accuracies must not.
    strip() { sed -n 's/^\(epoch [0-9]*\/[0-9]*  loss .* val acc [0-9.]*\).*/\1/p' "$1"; }
    "$nnc" train "$file" "$@" --epochs 2 --save "$work/a" >"$work/o1" 2>&1 || { cat "$work/o1"; exit 1; }
    "$nnc" train "$file" "$@" --epochs 1 --save "$work/b" >"$work/o2" 2>&1 || { cat "$work/o2"; exit 1; }
    "$nnc" train "$file" "$@" --epochs 1 --load "$work/b" --save "$work/c" >"$work/o3" 2>&1 || { cat "$work/o3"; exit 1; }
    cat "$work/o1" "$work/o3"
    one=$(strip "$work/o1" | grep '^epoch 2/2')
    two=$(strip "$work/o3" | grep '^epoch 2/2')
    [ -n "$one" ] && [ "$one" = "$two" ] || { echo "FAIL: resumed epoch 2 differs: '$one' vs '$two'"; exit 1; }
    cmp "$work/a" "$work/c" || { echo "FAIL: the checkpoints differ"; exit 1; }
    echo "resumed training matches uninterrupted training"
    ;;
deploy)
    classify=$1
    shift
    data=/usr/share/datasets/fashion-mnist
    "$nnc" train "$file" --limit 12000 --epochs 1 --save "$work/model.safetensors" >"$out" 2>&1 || { cat "$out"; exit 1; }
    "$nnc" "$file" --emit-c --weights "$work/model.safetensors" -o "$work/mnist_mlp.c" || exit 1
    for compiler in cc clang; do
        command -v $compiler >/dev/null || { echo "($compiler not installed: skipped)"; continue; }
        $compiler -std=c99 -O2 -Wall -Wextra -Werror -I"$work" "$classify" "$work/mnist_mlp.c" -lm \
            -o "$work/classify-$compiler" || { echo "FAIL: $compiler rejected the emitted C"; exit 1; }
    done
    gzip -dc $data/t10k-images-idx3-ubyte.gz >"$work/images"
    gzip -dc $data/t10k-labels-idx1-ubyte.gz >"$work/labels"
    deployed=$("$work/classify-cc" "$work/images" "$work/labels") || exit 1
    evaluated=$("$nnc" eval "$file" --load "$work/model.safetensors") || exit 1
    echo "deployed:  $deployed"
    echo "nnc eval:  $evaluated"
    a=$(echo "$deployed" | sed -n 's/.*accuracy \([0-9.]*\).*/\1/p')
    b=$(echo "$evaluated" | sed -n 's/.*accuracy \([0-9.]*\).*/\1/p')
    [ -n "$a" ] && [ "$a" = "$b" ] || { echo "FAIL: accuracies differ"; exit 1; }
    ;;
metric)
    name=$1 how=$2 limit=$3
    shift 3
    "$nnc" train "$file" "$@" >"$out" 2>&1
    status=$?
    cat "$out"
    [ $status -eq 0 ] || { echo "FAIL: nnc train exited with $status"; exit 1; }
    value=$(sed -n "s/^test loss .*  test $name \([0-9.]*\).*/\1/p" "$out")
    [ -n "$value" ] || { echo "FAIL: no test $name in the output"; exit 1; }
    if [ "$how" = min ]; then test=">="; else test="<="; fi
    if awk "BEGIN { exit !($value $test $limit) }"; then echo "test $name $value $test $limit"; exit 0; fi
    echo "FAIL: test $name $value is not $test $limit"
    exit 1
    ;;
transfer)
    lenet=$1
    "$nnc" train "$lenet" --limit 2000 --epochs 1 --save "$work/lenet.safetensors" >"$out" 2>&1 || { cat "$out"; exit 1; }
    cp "$file" "$work/model.nn"
    "$nnc" train "$work/model.nn" --limit 3000 --epochs 1 >"$out" 2>&1
    status=$?
    cat "$out"
    [ $status -eq 0 ] || { echo "FAIL: nnc train exited with $status"; exit 1; }
    grep -q "^loaded 4 pretrained parameter tensors" "$out" || { echo "FAIL: the pretrained layers were not loaded"; exit 1; }
    grep -q "(2572 frozen)" "$out" || { echo "FAIL: the convolutions are not frozen"; exit 1; }
    ;;
train)
    # the accuracy, as a metric named acc
    exec "$0" metric "$nnc" "$file" acc min "$@"
    ;;
*)
    echo "run.sh: unknown test kind $kind" >&2
    exit 2
    ;;
esac
