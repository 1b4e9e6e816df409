#!/usr/bin/env bash
# What was run on the lent GPU machine (x86-64, CUDA 13, Python 3.12, no network) for issue 4:
# build pycuda from the sdist carried in .whl/, then the GPU tests and the preprocessing benchmark.
# Prepare on a machine with network, in the repo root:
#   pip download --no-deps pycuda==2026.1 -d .whl
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pytools platformdirs mako siphash24
# Output goes to $OUT (or ./out).
set -o pipefail
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
REPO=$PWD
export PYTHONUNBUFFERED=1
CUDA_ROOT=$(ls -d /usr/local/cuda-1* /usr/local/cuda 2>/dev/null | head -1)
export PATH=$CUDA_ROOT/bin:$PATH
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
if ! python3 -c 'import pycuda.driver' 2>/dev/null; then
  start=$(date +%s)
  rm -rf /tmp/pycuda-build && mkdir -p /tmp/pycuda-build && tar xzf .whl/pycuda-*.tar.gz -C /tmp/pycuda-build
  (cd /tmp/pycuda-build/pycuda-* && python3 configure.py --cuda-root="$CUDA_ROOT" >/dev/null &&
   python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . ) 2>&1 | tail -5
  echo "pycuda build: $(( $(date +%s) - start )) s"
fi
export PYTHONPATH=/tmp/site:$REPO
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -2
  python3 -c 'import sys, cv2, numpy, pycuda; print(sys.version.split()[0], "cv2", cv2.__version__, "numpy", numpy.__version__, "pycuda", pycuda.VERSION_TEXT)'
} 2>&1 | tee "$OUT/env.txt"
python3 -m pytest -q -p no:cacheprovider -rs -s tests/gpu tests/test_cuda_tables.py 2>&1 | tee "$OUT/gpu_tests.log"
python3 -m edgedet.preprocess.bench 2>&1 | tee "$OUT/bench.txt"
python3 -m edgedet.preprocess.bench --dtype float32 2>&1 | tee -a "$OUT/bench.txt"
python3 -m edgedet.preprocess.bench --source 1280x720 --input 416x416 --dtype float32 2>&1 | tee -a "$OUT/bench.txt"
python3 -m edgedet.preprocess.bench --cpu-threads 1 2>&1 | tee -a "$OUT/bench.txt"
python3 -m edgedet.preprocess.bench --dtype float32 --cpu-threads 1 2>&1 | tee -a "$OUT/bench.txt"
# no TensorRT on this machine: the self-test prints the environment and a clear error for each build
python3 tools/jetson_selftest.py --precisions fp16 --skip-daemon 2>&1 | tail -15 | tee "$OUT/selftest.txt"
