#!/usr/bin/env bash
# What runs on the lent GPU machine (x86-64, CUDA 13, Python 3.12, no network, no TensorRT): build pycuda
# from the sdist carried in $WHL, then the GPU tests (CUDA preprocessing, slots, and the real TensorRT
# backend through the TensorRT double computing from device memory), the preprocessing benchmark, and the
# daemon end to end for 60 s (two cameras, max_batch 2, CUDA preprocessing, TensorRT double) with its
# agreement with the CPU path, which upload path its frames took (pinned frame buffers the sources decode
# into, or pageable) with the time per frame, then again for $SECONDS_PAGEABLE s without the frame
# buffers (the pageable path every frame took before defect 6 was fixed). Prepare on a machine with network, in the repo root:
#   pip download --no-deps pycuda==2026.1 -d .whl
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pytools platformdirs mako siphash24
#   pip download --only-binary=:all: (same platform flags) -d .whl/extra onnx   # used only if missing there
#   pip download --only-binary=:all: (same platform flags) -d .whl/deps pydantic pyyaml paho-mqtt   # likewise
# Output goes to $OUT (or ./out).
set -o pipefail
OUT=${OUT:-$PWD/out}
WHL=${WHL:-.whl}
SECONDS_DAEMON=${SECONDS_DAEMON:-60}
SECONDS_PAGEABLE=${SECONDS_PAGEABLE:-30}
mkdir -p "$OUT"
REPO=$PWD
export PYTHONUNBUFFERED=1
CUDA_ROOT=$(ls -d /usr/local/cuda-1* /usr/local/cuda 2>/dev/null | head -1)
export PATH=$CUDA_ROOT/bin:$PATH
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHL"/*.whl || exit 1
export PYTHONPATH=/tmp/site
if ! python3 -c 'import onnx' 2>/dev/null && ls "$WHL"/extra/onnx-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    "$WHL"/extra/onnx-*.whl "$WHL"/extra/protobuf-*.whl "$WHL"/extra/ml_dtypes-*.whl
fi
if ! python3 -c 'import pydantic, yaml, paho.mqtt' 2>/dev/null && ls "$WHL"/deps/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHL"/deps/*.whl
fi
if ! python3 -c 'import pycuda.driver' 2>/dev/null; then
  start=$(date +%s)
  rm -rf /tmp/pycuda-build && mkdir -p /tmp/pycuda-build && tar xzf "$WHL"/pycuda-*.tar.gz -C /tmp/pycuda-build
  (cd /tmp/pycuda-build/pycuda-* && python3 configure.py --cuda-root="$CUDA_ROOT" >/dev/null &&
   python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . ) 2>&1 | tail -5
  echo "pycuda build: $(( $(date +%s) - start )) s"
fi
export PYTHONPATH=/tmp/site:$REPO
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  nvcc --version | tail -2
  python3 -c 'import sys, cv2, numpy, pycuda, onnx, onnxruntime; print(sys.version.split()[0], "cv2", cv2.__version__, "numpy", numpy.__version__, "pycuda", pycuda.VERSION_TEXT, "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__)'
} 2>&1 | tee "$OUT/env.txt"
python3 -m pytest -q -p no:cacheprovider -rs -s tests/gpu tests/test_cuda_tables.py \
  tests/test_sources_frame_buffers.py 2>&1 | tee "$OUT/gpu_tests.log"
if [ -z "${ONLY_DAEMON:-}" ]; then
  python3 -m edgedet.preprocess.bench 2>&1 | tee "$OUT/bench.txt"
  python3 -m edgedet.preprocess.bench --source 1280x720 --input 416x416 --dtype float32 2>&1 | tee -a "$OUT/bench.txt"
  python3 -m edgedet.preprocess.bench --source 640x480 --input 416x416 --dtype float32 2>&1 | tee -a "$OUT/bench.txt"
fi
# the daemon end to end through the TensorRT double on this GPU, and its agreement with the CPU path
python3 tests/gpu/daemon_agreement.py --seconds "$SECONDS_DAEMON" --pageable-seconds "$SECONDS_PAGEABLE" \
  --json "$OUT/agreement.json" 2>&1 | tail -120 | tee "$OUT/agreement.txt"
# no TensorRT on this machine: the self-test prints the environment and the install hint
python3 tools/jetson_selftest.py --precisions fp16 --skip-daemon 2>&1 | tail -15 | tee "$OUT/selftest.txt"
