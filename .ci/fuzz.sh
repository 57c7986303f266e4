#!/usr/bin/env bash
# Coverage-guided fuzzing (docs/fuzzing.md): builds the cargo-fuzz targets of fuzz/ and runs each
# for a short time from its seed corpus (fuzz/corpus/<target>); fails on any crash, panic, leak of
# memory past the limit or timeout. New inputs found go to a temporary folder, not the checkout;
# a crashing input is kept under fuzz/artifacts/<target>/ (git-ignored) and printed.
#
# Env: SGBD_CI_FUZZ=0 skips everything; SGBD_FUZZ_SECONDS (default 20) per target;
#      SGBD_FUZZ_TARGETS="a b" runs only those targets.
# Installs a minimal nightly toolchain and cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SGBD_CI_FUZZ:-1}" = "0" ]; then
    echo "[fuzz] SGBD_CI_FUZZ=0: skipping the fuzz targets (nothing built, nothing run)"
    exit 0
fi

T0=$(date +%s)
step() { echo "[fuzz] [$(( $(date +%s) - T0 )) s] ==> $*"; }
fail() { echo "[fuzz] FAIL: $*" >&2; exit 1; }
SECS=${SGBD_FUZZ_SECONDS:-20}

step "nightly toolchain"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
rustup run nightly rustc --version

step "cargo-fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

# No sanitizer: the targets exercise safe Rust (panics, overflow checks and debug assertions are
# on, which is what finds bugs here); an ASan build of candle and SQLite costs much more time.
FLAGS=(-O --sanitizer none)
step "build (cargo +nightly fuzz build ${FLAGS[*]})"
cargo +nightly fuzz build "${FLAGS[@]}"

max_len() {
    case "$1" in
        event_roundtrip) echo 1024 ;;
        npy | model_header | vc0706) echo 4096 ;;
        *) echo 16384 ;;
    esac
}

targets=${SGBD_FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in $targets; do
    step "run $t for ${SECS}s"
    mkdir -p "$work/$t" "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="$work/$t.log"
    # First corpus folder: where new inputs are written (temporary); the second: the seeds.
    if ! cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECS" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        ls -1 "fuzz/artifacts/$t" >&2 || true
        fail "$t crashed; the input is under fuzz/artifacts/$t/ (reproduce: cargo +nightly fuzz run ${FLAGS[*]} $t <file>)"
    fi
    grep -E '^stat::number_of_executed_units|^stat::average_exec_per_sec' "$log" | tr -s ' ' | paste -sd' ' || true
done
step "done: every target ran ${SECS}s without a crash"
