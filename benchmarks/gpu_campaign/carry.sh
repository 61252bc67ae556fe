#!/usr/bin/env bash
# What a lent GPU machine lacks, packed here and unpacked there (it reaches no package index).
#
#   bash benchmarks/gpu_campaign/carry.sh pack      # here: fills .carry/ (ignored, about 50 MB)
#   source benchmarks/gpu_campaign/carry.sh unpack  # there, in the call: installs into /tmp/carry
#                                                   # and puts it on PYTHONPATH
#
# The device's command then carries .carry (the `run` tool's carry=[".carry"]). Packed: the
# persistence engines the tests compare against (giotto-ph, ripser, gudhi) as wheels, and the
# sparse convolution (spconv-cu126 2.3.8 with cumm-cu126 0.7.11, and pccm, ccimport, lark, fire,
# termcolor, which they import) unpacked into one xz tar: its wheels are 97 MB, over what a call
# carries (64 MiB), the tar 45 MB. POT does not fit beside them. Python 3.12, Linux x86-64: the
# lent machines' (torch 2.11, CUDA 13).
set -euo pipefail
mode=${1:?"pack or unpack"}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
carry=$repo/.carry
case $mode in
pack)
    rm -rf "$carry" && mkdir -p "$carry/spconv" && stage=$(mktemp -d)
    fetch() { python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
                --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$1" "${@:2}"; }
    fetch "$carry" giotto-ph ripser gudhi
    fetch "$stage" spconv-cu126==2.3.8 cumm-cu126==0.7.11 pccm ccimport lark fire termcolor
    for wheel in "$stage"/*.whl; do python -m zipfile -e "$wheel" "$carry/spconv"; done
    tar -cJf "$carry/spconv.tar.xz" -C "$carry/spconv" . && rm -rf "$carry/spconv" "$stage"
    du -sh "$carry"
    ;;
unpack)
    site=/tmp/carry && mkdir -p "$site"
    python -m pip install --quiet --no-index --no-deps --target "$site" "$carry"/*.whl
    tar -xJf "$carry/spconv.tar.xz" -C "$site"
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
    ;;
*)
    echo "carry.sh: pack or unpack, not $mode" >&2
    exit 2
    ;;
esac
