#!/usr/bin/env bash
# One prepared GPU check of ib-plugins (at most 8 minutes: every step has its own limit, 480 s in all):
#   1. the gpu-marked tests,
#   2. benchmarks/run.py --device cuda (sections a-d: training-step overheads, PGD-AT step, mask
#      selection, peak memory) at full sizes with 3 timed rounds,
#   3. benchmarks/gpu_step.py: VGG-16 at batch 128, CE vs CE+IB(all)+mask every step, float32 vs bf16,
#      eager vs torch.compile,
#   4. a short CIFAR-shaped training (`ib-plugins train`, VGG-16, PGD-AT + IB-RAR, --amp bf16) on a
#      synthetic CIFAR-10 folder the script writes (the machine has no internet and no CIFAR files).
# Everything lands in one folder: $OUT (the device tool's output folder) or benchmarks/out/device_check.
#
# It runs as is on a fresh GPU machine that has torch (and pytest, numpy, tqdm, matplotlib) but none
# of our other packages and no internet: the library runs from this checkout (PYTHONPATH, no install),
# and pure-Python wheels carried in .whl/ (pyautoattack, for FAB/Square; see benchmarks/README.md) are
# installed into a private folder first. Without CUDA it says so and exits with status 2.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/out/device_check}"
mkdir -p "$out"
py="${PYTHON:-python3}"

if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "device_check: no CUDA device here (torch.cuda.is_available() is False or torch is missing): nothing to check;" \
       "run this script on a machine with an NVIDIA GPU" >&2
  exit 2
fi

if ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ibp-site .whl/*.whl \
    && export PYTHONPATH="/tmp/ibp-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
step() {  # step NAME LIMIT_S COMMAND...: run one part under its own limit, log it, remember a failure
  local name=$1 limit=$2
  shift 2
  echo "== device_check: $name (limit ${limit}s)" | tee -a "$out/device_check.log"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.log"
  echo "== device_check: $name: exit $rc after $((SECONDS - t0))s" | tee -a "$out/device_check.log"
  [ $rc -eq 0 ] || status=1
}

"$py" - <<'EOF' | tee "$out/machine.txt"
import platform, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, python {platform.python_version()}")
EOF

step gpu_tests 90 "$py" -m pytest -q -m gpu -p no:cacheprovider tests
step benchmark 180 "$py" benchmarks/run.py --device cuda --sections abcd --repeats 3 --out "$out/benchmark"
step gpu_step 120 "$py" benchmarks/gpu_step.py --device cuda --batch 128 --rounds 5 --out "$out"

# a synthetic CIFAR-10 folder (the loader's real format: pickled batches of uint8 rows)
"$py" - "$out/cifar" <<'EOF'
import pickle, sys
from pathlib import Path
import numpy as np
folder = Path(sys.argv[1]) / "cifar-10-batches-py"
folder.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for name, n in [(f"data_batch_{i}", 1000) for i in range(1, 6)] + [("test_batch", 1000)]:
    labels = (np.arange(n) % 10).tolist()
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    (folder / name).write_bytes(pickle.dumps({"batch_label": "synthetic", "data": data, "labels": labels}))
(folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
EOF
step cifar_train_bf16 90 "$py" -m ib_plugins.cli train --dataset cifar10 --data-dir "$out/cifar" --model vgg16 \
  --method pgd-at --ib --mask code --amp bf16 --epochs 1 --batch-size 128 --train-limit 5000 --test-limit 1000 \
  --device cuda --out "$out/cifar_train_bf16" --overwrite --no-progress

echo "device_check: finished with status $status; everything is in $out" | tee -a "$out/device_check.log"
exit $status
