#!/usr/bin/env bash
# The one prepared check for a machine with an NVIDIA GPU: builds the `cuda` binary (or takes
# $SGBD_BIN), checks the device, then times on the GPU and on the CPU in the same run:
#   - BLIP-large captioning with full-size random weights (`bench caption`, Q4K GGUF),
#   - one LightGCN and one FREEDOM training epoch (SGBD-S1) on TikTok (`bench train`),
# and prints one table (cpu, cuda, speed-up), also written to $OUT/gpu-check.md with the JSON.
#
# Data: $SGBD_DATA/tiktok_mmssl when present (the real TikTok interactions and features); otherwise
# a TikTok-shaped synthetic set (9,308 users x 6,710 items, 68,722 interactions, two 128-d
# modalities) is written first, so the check needs nothing from outside the machine.
#
# Usage: cross/gpu-check.sh                 # build (CUDA_COMPUTE_CAP=90 on x86_64) and run
#        SGBD_BIN=path/to/sgbd-edge cross/gpu-check.sh
#        OUT=/some/dir GPU_CHECK_QUICK=1 cross/gpu-check.sh   # 1 image / 4 tokens / 1 epoch: a smoke run
# Exit: 0 when every row ran on both devices; 1 when a step failed; 2 without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
step() { echo "[gpu-check] [$(( $(date +%s) - T0 )) s] $*"; }

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "[gpu-check] no NVIDIA GPU answers (nvidia-smi -L failed): nothing to compare." >&2
    echo "  Without a GPU, .ci/cuda.sh checks the build and the CPU fallback instead." >&2
    exit 2
fi
step "device"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

BIN=${SGBD_BIN:-}
if [ -z "$BIN" ]; then
    if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
        CUDA_COMPUTE_CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d '. ')
        export CUDA_COMPUTE_CAP
    fi
    step "build (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
    [ -x cross/install-cuda.sh ] && ! command -v nvcc >/dev/null 2>&1 && cross/install-cuda.sh
    cross/build-cuda.sh --release
    BIN="${CARGO_TARGET_DIR:-target}/release/sgbd-edge"
fi
"$BIN" --version

DATA=${SGBD_DATA:+$SGBD_DATA/tiktok_mmssl}
if [ -z "$DATA" ] || [ ! -f "$DATA/tiktok.inter" ]; then
    DATA="$OUT/synthetic-tiktok"
    step "writing a TikTok-shaped synthetic data set to $DATA"
    python3 - "$DATA" <<'EOF'
import os, random, struct, sys
d = sys.argv[1]; os.makedirs(d, exist_ok=True)
rng = random.Random(7)
users, items, n = 9308, 6710, 68722
pairs = set()
while len(pairs) < n:
    pairs.add((rng.randrange(users), min(items - 1, int(rng.paretovariate(1.2)) - 1 + rng.randrange(items) // 8)))
by_user = {}
for u, i in sorted(pairs):
    by_user.setdefault(u, []).append(i)
with open(os.path.join(d, "tiktok.inter"), "w") as f:
    f.write("userID\titemID\tx_label\n")
    for u, its in by_user.items():
        for k, i in enumerate(its):
            label = 2 if k == len(its) - 1 and len(its) > 2 else 1 if k == len(its) - 2 and len(its) > 3 else 0
            f.write(f"{u}\t{i}\t{label}\n")
for name in ("image_feat.npy", "audio_feat.npy"):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, 128), }" % items
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    with open(os.path.join(d, name), "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%df" % (items * 128), *(rng.gauss(0, 1) for _ in range(items * 128))))
EOF
fi

if [ "${GPU_CHECK_QUICK:-0}" = "1" ]; then CAP=(--images 1 --tokens 4 --repeat 1); EPOCHS=1; else CAP=(--images 4 --tokens 20 --repeat 3); EPOCHS=2; fi
failed=0
for dev in cpu cuda; do
    step "BLIP-large captioning on $dev"
    "$BIN" bench caption --device "$dev" "${CAP[@]}" --skip-upstream --json "$OUT/caption-$dev.json" \
        >"$OUT/caption-$dev.log" 2>&1 || { failed=1; tail -n 20 "$OUT/caption-$dev.log" >&2; }
    for model in lightgcn freedom; do
        step "$model, $EPOCHS epoch(s) of SGBD-S1 on $dev"
        "$BIN" bench train --data "$DATA" --model "$model" --optims sgbd --seeds 1 --epochs "$EPOCHS" --patience 0 \
            --device "$dev" --json "$OUT/train-$model-$dev.json" >"$OUT/train-$model-$dev.log" 2>&1 \
            || { failed=1; tail -n 20 "$OUT/train-$model-$dev.log" >&2; }
    done
done

step "table"
python3 - "$OUT" "$(head -n1 "$OUT/gpu.txt")" <<'EOF' | tee "$OUT/gpu-check.md"
import json, os, sys
out, gpu = sys.argv[1], sys.argv[2]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
rows = []
def row(label, cpu, cuda, lower_is_better=True):
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    if cpu is not None and cuda is not None and cpu > 0 and cuda > 0:
        ratio = f"x{(cpu / cuda if lower_is_better else cuda / cpu):.1f}"
    else:
        ratio = "-"
    rows.append(f"| {label} | {fmt(cpu)} | {fmt(cuda)} | {ratio} |")
c = {d: load(f"caption-{d}.json") for d in ("cpu", "cuda")}
ran = {d: (c[d] or {}).get("device") for d in c}
g = lambda d, k: (c[d] or {}).get(k)
row("BLIP vision encoder, batched (s/image)", g("cpu", "vision_s_per_image_batched"), g("cuda", "vision_s_per_image_batched"))
row("BLIP decoding, batched (ms/token/image)", g("cpu", "decode_ms_per_token_per_image_cached_batched"),
    g("cuda", "decode_ms_per_token_per_image_cached_batched"))
row("BLIP captioning (images/s)", g("cpu", "images_per_s_cached_batched"), g("cuda", "images_per_s_cached_batched"), False)
for model in ("lightgcn", "freedom"):
    t = {}
    for d in ("cpu", "cuda"):
        r = load(f"train-{model}-{d}.json")
        try:
            rep = r["runs"][0]["reports"][0]
            t[d] = (rep["train_s_per_epoch"], rep["eval_s_per_pass"], rep.get("device"))
        except (TypeError, KeyError, IndexError):
            t[d] = (None, None, None)
    ran[model] = t["cuda"][2]
    row(f"{model} SGBD-S1 epoch (s)", t["cpu"][0], t["cuda"][0])
    row(f"{model} full evaluation (s)", t["cpu"][1], t["cuda"][1])
print(f"GPU: {gpu}")
print("| metric | cpu | cuda | speed-up |\n|---|---|---|---|")
print("\n".join(rows))
wrong = [k for k, v in ran.items() if v not in (None, "cuda")]
if wrong:
    print(f"\nWARNING: these ran on the CPU although cuda was asked for (see the logs): {', '.join(wrong)}")
EOF
step "done: results in $OUT"
exit "$failed"
