#!/usr/bin/env bash
# Every GPU check of the training stage in one run: about 5 minutes on one H200 (its parts took 3 and 3.5 minutes
# there on 2026-12-04), so it fits the device tool's 15 minutes a session with room for a rerun. Logs and JSON go
# to $OUT (the device tool's) or ./device-check; docs/training.md holds the figures of the last run.
#
#   1. benchmarks/device_check.py: correctness and precision (fp32, TF32, bf16, compiled training with CUDA
#      graphs, host waits within a step, DDP over NCCL)
#   2. benchmarks/gpu_step_profile.py: kernel launches, host and GPU time of the eager step
#   3. benchmarks/train_throughput.py on the GPU: float32 and TF32 at batch 1024, float32 at batch 16384, compiled
#   4. the training stage as the pipeline runs it: `amcore prepare`, then `torchrun ... amcore train` on the GPU,
#      eager and with `compile: true`
#
# The device image has torch, numpy, scipy, pandas and xarray, but not zarr, dask or POT, and no package index.
# On a machine with PyPI, `bash benchmarks/device_check.sh --fetch-wheels` puts them into .whl (ignored by git);
# then run, with the device tool: command `bash benchmarks/device_check.sh`, carry [".whl"], timeout_s 540.
set -euo pipefail

# The versions this project's environment resolves to here, as wheels for the device image's CPython 3.12.
WHEELS=(zarr==3.1.6 numcodecs==0.16.6 google-crc32c==1.9.0 donfig==0.8.1.post1 dask==2026.8.0 partd==1.4.2
        locket==1.0.0 importlib_metadata==9.1.0 POT==0.9.7.post1 xarray==2026.9.0)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    exit 0
fi

out=${OUT:-device-check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt" || true

# A failing check must not cost the others their share of a 15-minute lease: each runs, failures are counted.
set +e
failed=()
check() {  # check NAME LOG COMMAND...: run COMMAND, append its output to $out/LOG
    local name=$1 log=$2
    shift 2
    echo "== $name"
    "$@" 2>&1 | tee -a "$out/$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("$name")
}

check "correctness and precision" precision.log python3 benchmarks/device_check.py --json "$out/precision.json"
check "profile of the eager step" profile.log python3 benchmarks/gpu_step_profile.py
check "throughput, float32" throughput.log python3 benchmarks/train_throughput.py --device cuda --steps 20
check "throughput, TF32" throughput.log python3 benchmarks/train_throughput.py --device cuda --steps 20 --tf32
check "throughput, batch 16384" throughput.log \
    python3 benchmarks/train_throughput.py --device cuda --steps 20 --batch 16384
check "throughput, compiled (CUDA graphs)" throughput.log \
    python3 benchmarks/train_throughput.py --device cuda --steps 20 --compile

work=$(mktemp -d)
check "prepare (CLI)" train.log python3 -m amcore prepare --out "$work/store.zarr" --summary "$work/summary.json" \
    --dataset '{"source": "simulate", "simulator": "gaussian_path", "params": {"dim": 2},
                "times": [0.0, 0.25, 0.5, 0.75, 1.0], "n_per_time": 2000, "seed": 0}'
for compile in false true; do
    check "train (torchrun, one process on the GPU, compile: $compile)" train.log \
        torchrun --standalone --nproc_per_node=1 -m amcore train --store "$work/store.zarr" \
        --params "{\"objective\": \"am\", \"steps\": 2000, \"batch_size\": 4096, \"width\": 256, \"depth\": 4,
                   \"log_every\": 500, \"compile\": $compile}" \
        --checkpoint "$work/model-$compile.pt" --loss-csv "$work/loss-$compile.csv"
    cp "$work/loss-$compile.csv" "$out/train_loss_compile_$compile.csv" 2>/dev/null
done

if [ ${#failed[@]} -gt 0 ]; then
    printf 'device_check: FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "device_check: every check ran"
