#!/bin/sh
# cuda_no_device.sh NNC MODEL: on a machine without a GPU, `--device cuda`
# ends with the one clear message; with a GPU there is nothing to test (77).
nnc=$1 model=$2
out=$("$nnc" bench "$model" --device cuda 2>&1)
rc=$?
case $out in
*"no CUDA device found"*)
    [ $rc -eq 1 ] || { echo "exit status $rc, expected 1"; exit 1; }
    echo "ok: $out"; exit 0 ;;
esac
if [ $rc -eq 0 ]; then echo "skipped: a CUDA device is present"; exit 77; fi
echo "unexpected failure ($rc): $out"
exit 1
