#!/usr/bin/env bash
# aarch64 (Jetson) cross build and smoke test under qemu-user:
#   1. cross/build-aarch64.sh --profile dist, the build the arm64 .deb ships (installs the cross toolchain and the rust target if missing)
#   2. ELF checks: aarch64, glibc symbol versions <= 2.35 (JetPack 6 = Ubuntu 22.04), shared libraries
#   3. under qemu-aarch64-static: --version, validate on the shipped configs (and a bad one: exit 78),
#      print-default-config == firmware-config/default.toml
#   4. daemon: `run` on the embedded-broker defaults with a temp data dir, one `kiosk --recommend`
#      request answered, SIGTERM, exit 0.
# Env: SGBD_SKIP_AARCH64=1 skips everything; SGBD_AARCH64_READY_S (default 90) bounds step 4's wait.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${SGBD_SKIP_AARCH64:-}" ]; then
    echo "[aarch64] SGBD_SKIP_AARCH64 set: skipping"
    exit 0
fi

TARGET=aarch64-unknown-linux-gnu
export RUST_LOG_STYLE=never NO_COLOR=1
T0=$(date +%s)
TS=$T0
step() { local now; now=$(date +%s); echo "[aarch64] ($((now - TS)) s) done; [$((now - T0)) s total] ==> $*"; TS=$now; }
fail() { echo "[aarch64] FAIL: $*" >&2; exit 1; }
PASS=0
check() { # check "description" command...
    local what=$1; shift
    if "$@"; then PASS=$((PASS + 1)); echo "[aarch64]   ok: $what"; else fail "$what"; fi
}

step "tools: qemu-user-static, file"
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v file >/dev/null || need+=(file)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}"
fi

step "cross build: cross/build-aarch64.sh --profile dist (the shipped build, packaged by .ci/deb.sh)"
cross/build-aarch64.sh --profile dist
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=${TARGET_DIR:-target}/$TARGET/dist/sgbd-edge

step "ELF checks"
check "binary is an aarch64 ELF" grep -q 'ARM aarch64' <<<"$(file -b "$BIN")"
glibc_max=$(aarch64-linux-gnu-objdump -T "$BIN" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
echo "[aarch64] highest glibc symbol version needed: $glibc_max"
check "needs glibc <= 2.35 (JetPack 6 / Ubuntu 22.04)" test "$(printf '%s\n2.35\n' "$glibc_max" | sort -V | tail -1)" = "2.35"
needed=$(aarch64-linux-gnu-readelf -d "$BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
echo "[aarch64] shared libraries: $needed"
for lib in $needed; do
    case "$lib" in
        libc.so.6|libm.so.6|libgcc_s.so.1|ld-linux-aarch64.so.1|libpthread.so.0|libdl.so.2|librt.so.1) ;;
        *) fail "unexpected shared library $lib (the .deb Depends only covers libc6 and libgcc-s1)" ;;
    esac
done
PASS=$((PASS + 1)); echo "[aarch64]   ok: only libc6/libgcc-s1 libraries needed"
echo "[aarch64] size: $(du -h "$BIN" | cut -f1) ($(stat -c %s "$BIN") bytes)"

# Runs the binary directly under qemu (no binfmt needed); -L finds the aarch64 ld.so and libc.
Q=(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$BIN")
WORK=$(mktemp -d)
DAEMON_PID=""
cleanup() {
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then kill -KILL "$DAEMON_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

qemu-aarch64-static --version | head -1
step "smoke: --version, validate, print-default-config (under qemu)"
t=$(date +%s)
check "sgbd-edge --version" "${Q[@]}" --version
for cfg in firmware-config/dev.toml firmware-config/jetson-orin.toml firmware-config/default.toml; do
    [ -f "$cfg" ] || fail "$cfg is missing (the shipped configs are dev.toml and jetson-orin.toml)"
    check "validate --config $cfg" "${Q[@]}" validate --config "$cfg"
done
printf '[node]\nstore_id = 42\nno_such_key = true\n' >"$WORK/bad.toml"
set +e; "${Q[@]}" validate --config "$WORK/bad.toml" 2>"$WORK/bad.err"; rc=$?; set -e
sed 's/^/[aarch64]     /' "$WORK/bad.err"
check "validate on a bad config exits 78 (EX_CONFIG)" test "$rc" = 78
"${Q[@]}" print-default-config >"$WORK/default.toml"
check "print-default-config == firmware-config/default.toml" cmp -s "$WORK/default.toml" firmware-config/default.toml
echo "[aarch64] qemu smoke (version, validate x4, print-default-config) took $(($(date +%s) - t)) s"

step "daemon under qemu: run + one kiosk recommendation + SIGTERM"
t=$(date +%s)
# A port of our own: other test suites on this machine may use 1883.
PORT=$((20000 + RANDOM % 20000))
cat >"$WORK/smoke.toml" <<EOF
# Embedded defaults, a temp data dir and a private port.
[node]
data_dir = "$WORK/var"
[mqtt]
broker = "embedded"
host = "127.0.0.1"
port = $PORT
[denoise]
models_dir = "$WORK/models"
EOF
check "smoke config validates" "${Q[@]}" validate --config "$WORK/smoke.toml"
"${Q[@]}" run --config "$WORK/smoke.toml" >"$WORK/run.log" 2>&1 &
DAEMON_PID=$!
READY_S=${SGBD_AARCH64_READY_S:-90}
reply=""
deadline=$(($(date +%s) + READY_S))
while [ "$(date +%s)" -lt "$deadline" ]; do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        sed 's/^/[aarch64] run: /' "$WORK/run.log" | tail -30
        fail "sgbd-edge run exited before answering a kiosk request"
    fi
    if reply=$(timeout 30 "${Q[@]}" kiosk --config "$WORK/smoke.toml" --kiosk smoke --user smoke-user --recommend 2>"$WORK/kiosk.err"); then
        break
    fi
    reply=""
    sleep 2
done
if [ -z "$reply" ]; then
    sed 's/^/[aarch64] kiosk: /' "$WORK/kiosk.err" | tail -10
    sed 's/^/[aarch64] run: /' "$WORK/run.log" | tail -30
    fail "no kiosk reply within $READY_S s"
fi
echo "[aarch64] first reply after $(($(date +%s) - t)) s: $(head -c 400 <<<"$reply")"
# The reply contract (docs/mqtt.md): JSON with items, model_version, generated_at.
reply_ok() {
    if command -v python3 >/dev/null; then
        python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if all(k in d for k in ("items","model_version","generated_at")) else 1)'
    else
        jq -e 'has("items") and has("model_version") and has("generated_at")' >/dev/null
    fi
}
check "kiosk reply is JSON with items, model_version, generated_at" reply_ok <<<"$reply"
kill -TERM "$DAEMON_PID"
set +e; wait "$DAEMON_PID"; rc=$?; set -e
DAEMON_PID=""
tail -5 "$WORK/run.log" | sed 's/^/[aarch64] run: /'
check "run exits 0 on SIGTERM" test "$rc" = 0
echo "[aarch64] daemon smoke under qemu took $(($(date +%s) - t)) s"

step "finished"
echo "[aarch64] $PASS passed, 0 failed in $(($(date +%s) - T0)) s"
