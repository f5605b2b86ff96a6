#!/bin/sh
# setup.sh - prepares a Debian 12 machine for nnc and builds it in build/.
#
# Installs the Debian packages nnc needs (only those missing; apt-get runs
# through sudo when not root), then configures and builds a release build.
# Safe to run again: a prepared machine only rebuilds what changed.
set -eu
cd "$(dirname "$0")/.."

packages="build-essential cmake pkg-config llvm-19-dev flex bison libopenblas-dev check zlib1g-dev
          libcjson-dev libreadline-dev clang dataset-fashion-mnist graphviz python3 man-db groff-base"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
