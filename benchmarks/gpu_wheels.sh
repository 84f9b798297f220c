#!/usr/bin/env bash
# Download, here, the wheels that the lent GPU machines lack, into .whl/ (ignored by git), for
# benchmarks/gpu_check.sh to install there offline (pip --no-index --prefix). Those machines have no internet and
# run Python 3.12 on x86-64 with CUDA 13, cupy-cuda13x 14.2, NumPy 2.5, SciPy, torch, transformers, matplotlib,
# tqdm, safetensors, threadpoolctl, click, typing-extensions, pytest and mpi4py (the device tool's KINDS.md lists
# them); they lack soundfile (and its cffi, pycparser), jiwer (and its rapidfuzz) and an MPI library: the mpich
# wheel is one (mpiexec and libmpi), and the mpi4py here is the version tested with it. 19 MB in all, well under
# the 64 MiB that the device tool carries (the working tree, about 10 MB, counts too).
set -eu
cd "$(dirname "$0")/.."
mkdir -p .whl
for spec in soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 jiwer==4.0.0 rapidfuzz==3.14.6 mpi4py==4.1.2 mpich==5.0.2; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$spec"
done
ls -la .whl
# one version of each (two would stop the install), and the size against the device tool's limit
dups=$(ls .whl/*.whl | sed 's#.*/##; s/-[0-9].*//' | tr 'A-Z_' 'a-z-' | sort | uniq -d)
[ -z "$dups" ] || { echo "more than one version of: $dups; remove the older from .whl/" >&2; exit 1; }
size=$(du -sm .whl | cut -f1)
echo "$size MB in .whl/ (the device tool carries 64 MiB with the working tree)"
[ "$size" -lt 48 ] || { echo ".whl/ is too large to carry" >&2; exit 1; }
