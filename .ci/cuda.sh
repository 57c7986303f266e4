#!/usr/bin/env bash
# The CUDA build without a GPU (issue 14), kept out of `.ci/run` because it does not fit CI's
# 90 minutes next to the tests (timings in cross/README.md). It:
#   1. installs Debian's CUDA 11.8 toolkit and libcuda1 (cross/install-cuda.sh; Debian bookworm),
#   2. builds `--features cuda` for the Jetson Orin (sm_87) and the H100 (sm_90) into one target
#      dir (target/cuda; the second build recompiles only candle's kernels and what depends on them),
#   3. runs each binary where no GPU answers: `train --device cuda` must train on the CPU, exit 0
#      and log the fallback line at WARN; `doctor` must run; the dynamic CUDA libraries must resolve.
# With a GPU present, step 3 says so and cross/gpu-check.sh is the check to run instead.
#
# Env: SGBD_CUDA_CAPS (default "87 90"), CARGO_TARGET_DIR (default target/cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
step() { echo "[cuda] [$(( $(date +%s) - T0 )) s] ==> $*"; }
fail() { echo "[cuda] FAIL: $*" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}

step "CUDA toolkit"
cross/install-cuda.sh

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# a tiny .inter (40 users x 30 items; the last item of a user is test, the one before valid)
python3 - "$work/tiny.inter" <<'EOF'
import sys
with open(sys.argv[1], "w") as f:
    f.write("userID\titemID\tx_label\n")
    for u in range(40):
        its = sorted({(u * 7 + k * 5) % 30 for k in range(6)})
        for k, i in enumerate(its):
            f.write(f"{u}\t{i}\t{2 if k == len(its) - 1 else 1 if k == len(its) - 2 else 0}\n")
EOF

gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi

for cap in ${SGBD_CUDA_CAPS:-87 90}; do
    step "build --features cuda for sm_$cap"
    t=$(date +%s)
    CUDA_COMPUTE_CAP=$cap cross/build-cuda.sh --release
    bin="$CARGO_TARGET_DIR/sgbd-edge-sm$cap"
    cp "$CARGO_TARGET_DIR/release/sgbd-edge" "$bin"
    echo "[cuda] sm_$cap built in $(( $(date +%s) - t )) s: $bin ($(du -m "$bin" | cut -f1) MiB)"

    step "sm_$cap: shared libraries"
    ldd "$bin" | grep -E 'libcuda|libcudart|libcublas|libcurand|libnvrtc' || true
    if ldd "$bin" | grep -q 'not found'; then
        ldd "$bin" | grep 'not found' >&2
        fail "sm_$cap: a shared library is missing"
    fi

    step "sm_$cap: --version and doctor"
    "$bin" --version
    # doctor's exit code reflects the demo configuration's optional parts; it must not crash
    set +e
    "$bin" doctor --config firmware-config/dev.toml >"$work/doctor.log" 2>&1
    rc=$?
    set -e
    [ "$rc" -le 1 ] || { cat "$work/doctor.log" >&2; fail "sm_$cap: doctor exited $rc"; }

    if [ "$gpu" = 1 ]; then
        echo "[cuda] a GPU answers here: the CPU-fallback check does not apply; run cross/gpu-check.sh"
        continue
    fi
    step "sm_$cap: train --device cuda without a GPU falls back to the CPU"
    if ! RUST_LOG=warn "$bin" train --data "$work/tiny.inter" --device cuda --epochs 1 --batch 64 --dim 8 \
        --report "$work/r.json" >"$work/train.log" 2>&1; then
        cat "$work/train.log" >&2
        fail "sm_$cap: train --device cuda failed without a GPU"
    fi
    grep -E 'WARN.*falling back to the CPU' "$work/train.log" || { cat "$work/train.log" >&2; fail "sm_$cap: no fallback line"; }
    grep -q '"device": *"cpu"' "$work/r.json" || fail "sm_$cap: the report does not say it trained on the CPU"
done
step "done: every binary built, loads its CUDA libraries and falls back to the CPU without a GPU"
