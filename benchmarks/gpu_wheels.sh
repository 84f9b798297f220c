#!/usr/bin/env bash
# Download, here, the wheels that the lent GPU machines lack (they have no internet; Python 3.12, x86-64, CuPy,
# torch, transformers, NumPy, SciPy, matplotlib, tqdm, safetensors and threadpoolctl already there), into .whl/
# (ignored by git), with mpi4py and the mpich wheel for two ranks on the GPU. benchmarks/gpu_check.sh installs them
# there. About 20 MB.
set -eu
cd "$(dirname "$0")/.."
mkdir -p .whl
for spec in soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 jiwer==4.0.0 rapidfuzz==3.14.6 mpi4py==4.1.2 mpich==5.0.2; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$spec"
done
ls -la .whl
