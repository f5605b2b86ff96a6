#!/bin/sh
# run.sh - the file-driven tests, run by ctest (one file per test):
#
#   run.sh golden NNC FILE.nn [--update]   IR after shape, autodiff and optimizer
#                                         == FILE.shape.ir, FILE.autodiff.ir, FILE.optimizer.ir
#   run.sh error  NNC FILE.nn [--update]   diagnostics of FILE.nn == FILE.err
#   run.sh fails  NNC FILE.nn COMMAND ARGS...
#                                         `nnc COMMAND ARGS FILE.nn` reports a failure (status 1)
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
trap 'rm -f "$out"' EXIT

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
    for pass in shape autodiff optimizer; do
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
train)
    min=$1
    shift
    "$nnc" train "$file" "$@" >"$out" 2>&1
    status=$?
    cat "$out"
    [ $status -eq 0 ] || { echo "FAIL: nnc train exited with $status"; exit 1; }
    acc=$(sed -n 's/^test loss [0-9.]*  test acc \([0-9.]*\).*/\1/p' "$out")
    [ -n "$acc" ] || { echo "FAIL: no test accuracy in the output"; exit 1; }
    if awk "BEGIN { exit !($acc >= $min) }"; then echo "test accuracy $acc >= $min"; exit 0; fi
    echo "FAIL: test accuracy $acc < $min"
    exit 1
    ;;
*)
    echo "run.sh: unknown test kind $kind" >&2
    exit 2
    ;;
esac
