#!/usr/bin/env bash
# Debian packages: build the amd64 .deb (and the arm64 one from the cross build), check their
# contents, then (as root) really install the amd64 one on this machine and check install,
# conffile-preserving reinstall/upgrade, remove and purge. The service is never started here.
#
# Env: SGBD_SKIP_DEB=1 skips everything; SGBD_SKIP_AARCH64=1 skips the arm64 package;
#      SGBD_DEB_NO_INSTALL=1 skips the dpkg -i/--purge cycle (it also skips when not root).
# Idempotent: installs cargo-deb if missing, purges a previously installed sgbd-edge first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${SGBD_SKIP_DEB:-}" ]; then
    echo "[deb] SGBD_SKIP_DEB set: skipping"
    exit 0
fi

T0=$(date +%s)
TS=$T0
step() { local now; now=$(date +%s); echo "[deb] ($((now - TS)) s) done; [$((now - T0)) s total] ==> $*"; TS=$now; }
fail() { echo "[deb] FAIL: $*" >&2; exit 1; }
ok() { echo "[deb]   ok: $*"; }
PASS=0
check() { # check "description" command...
    local what=$1; shift
    if "$@"; then PASS=$((PASS + 1)); ok "$what"; else fail "$what"; fi
}

PKG=sgbd-edge
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$TARGET_DIR" ] || TARGET_DIR=target
OUTDIR=$TARGET_DIR/debian

step "inputs"
missing=0
for f in firmware-config/jetson-orin.toml firmware-config/default.toml firmware-config/dev.toml \
         models/manifest.toml systemd/sgbd-edge.service systemd/sgbd-edge.sysusers systemd/sgbd-edge.tmpfiles \
         debian/postinst debian/prerm debian/postrm docs/deploy.md; do
    [ -f "$f" ] || { echo "[deb] missing package input: $f" >&2; missing=1; }
done
[ "$missing" = 0 ] || fail "package inputs missing (see above)"

step "tools: cargo-deb, dpkg-deb"
if ! cargo deb --version >/dev/null 2>&1; then
    echo "[deb] installing cargo-deb (cargo install cargo-deb --locked)"
    t=$(date +%s)
    nice -n 10 cargo install cargo-deb --locked
    echo "[deb] cargo-deb installed in $(($(date +%s) - t)) s"
fi
cargo deb --version
command -v dpkg-deb >/dev/null || fail "dpkg-deb not found (not a Debian-based machine?)"
if ! command -v file >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends file
fi

# Packages ship the `dist` profile (LTO, one codegen unit, no incremental, stripped), never `release`.
step "amd64: cargo build --profile dist"
t=$(date +%s)
nice -n 10 cargo build --profile dist --locked --bin sgbd-edge
echo "[deb] amd64 dist build took $(($(date +%s) - t)) s"

step "amd64: cargo deb --profile dist --no-build"
t=$(date +%s)
cargo deb --profile dist --no-build --output "$OUTDIR/" 2>&1 | tail -3
DEB_AMD64=$(ls -t "$OUTDIR"/${PKG}_*_amd64.deb | head -1)
echo "[deb] $DEB_AMD64: $(du -h "$DEB_AMD64" | cut -f1) ($(stat -c %s "$DEB_AMD64") bytes), built in $(($(date +%s) - t)) s"

DEB_ARM64=""
if [ -z "${SGBD_SKIP_AARCH64:-}" ]; then
    step "arm64: cross build --profile dist (no-op when .ci/aarch64.sh already built it) + cargo deb --target aarch64-unknown-linux-gnu --profile dist --no-build"
    cross/build-aarch64.sh --profile dist
    t=$(date +%s)
    cargo deb --target aarch64-unknown-linux-gnu --profile dist --no-build --output "$OUTDIR/" 2>&1 | tail -3
    DEB_ARM64=$(ls -t "$OUTDIR"/${PKG}_*_arm64.deb | head -1)
    echo "[deb] $DEB_ARM64: $(du -h "$DEB_ARM64" | cut -f1) ($(stat -c %s "$DEB_ARM64") bytes), built in $(($(date +%s) - t)) s"
else
    echo "[deb] SGBD_SKIP_AARCH64 set: no arm64 package"
fi

EXPECTED_PATHS=(
    ./usr/bin/sgbd-edge
    ./etc/sgbd-edge/config.toml
    ./lib/systemd/system/sgbd-edge.service
    ./usr/lib/sysusers.d/sgbd-edge.conf
    ./usr/lib/tmpfiles.d/sgbd-edge.conf
    ./usr/share/sgbd-edge/default.toml
    ./usr/share/sgbd-edge/dev.toml
    ./usr/share/sgbd-edge/models/manifest.toml
    ./usr/share/doc/sgbd-edge/deploy.md
    ./usr/share/doc/sgbd-edge/copyright
)
[ -f README.md ] && EXPECTED_PATHS+=(./usr/share/doc/sgbd-edge/README.md)

check_deb() { # check_deb FILE ARCH ELF-MACHINE
    local deb=$1 arch=$2 machine=$3 listing tmp
    step "contents of $(basename "$deb")"
    listing=$(dpkg-deb -c "$deb")
    echo "$listing" | awk '{print "[deb]     " $1, $2, $NF}'
    for p in "${EXPECTED_PATHS[@]}"; do
        check "$arch package has $p" grep -qE " $p\$" <<<"$listing"
    done
    check "$arch: /usr/bin/sgbd-edge is mode 755" grep -qE '^-rwxr-xr-x .* ./usr/bin/sgbd-edge$' <<<"$listing"
    check "$arch: Architecture is $arch" test "$(dpkg-deb -f "$deb" Architecture)" = "$arch"
    check "$arch: Depends names libc6 and a user-creation tool" \
        grep -q 'libc6 (>= .*systemd | adduser' <<<"$(dpkg-deb -f "$deb" Depends)"
    tmp=$(mktemp -d)
    dpkg-deb -e "$deb" "$tmp/control"
    check "$arch: /etc/sgbd-edge/config.toml is the only conffile" \
        test "$(cat "$tmp/control/conffiles")" = "/etc/sgbd-edge/config.toml"
    for s in postinst prerm postrm; do
        check "$arch: maintainer script $s present and executable" test -x "$tmp/control/$s"
        check "$arch: $s passes sh -n" sh -n "$tmp/control/$s"
    done
    dpkg-deb -x "$deb" "$tmp/root"
    check "$arch: binary is an ELF for $machine" grep -q "$machine" <<<"$(file -b "$tmp/root/usr/bin/sgbd-edge")"
    check "$arch: binary is stripped" grep -q ', stripped' <<<"$(file -b "$tmp/root/usr/bin/sgbd-edge")"
    check "$arch: shipped config is the jetson-orin one" cmp -s "$tmp/root/etc/sgbd-edge/config.toml" firmware-config/jetson-orin.toml
    rm -rf "$tmp"
}

check_deb "$DEB_AMD64" amd64 x86-64
[ -z "$DEB_ARM64" ] || check_deb "$DEB_ARM64" arm64 aarch64

if [ -n "${SGBD_DEB_NO_INSTALL:-}" ] || [ "$(id -u)" -ne 0 ]; then
    echo "[deb] install test skipped (SGBD_DEB_NO_INSTALL set or not root)"
    echo "[deb] $PASS passed, 0 failed (package build and contents) in $(($(date +%s) - T0)) s"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
DPKG=(dpkg --force-confold)
CONF=/etc/sgbd-edge/config.toml
STATE=/var/lib/sgbd-edge

reset_machine() {
    if dpkg -s "$PKG" >/dev/null 2>&1; then "${DPKG[@]}" --purge "$PKG" </dev/null >/dev/null; fi
    # The user outlives a purge by design; drop it so that creating it is tested every time.
    if getent passwd "$PKG" >/dev/null; then userdel "$PKG"; fi
    if getent group "$PKG" >/dev/null; then groupdel "$PKG"; fi
    rm -rf "$STATE" /etc/sgbd-edge
}

check_installed() { # check_installed LABEL
    local l=$1
    for p in /usr/bin/sgbd-edge $CONF /lib/systemd/system/sgbd-edge.service /usr/lib/sysusers.d/sgbd-edge.conf \
             /usr/lib/tmpfiles.d/sgbd-edge.conf /usr/share/sgbd-edge/models/manifest.toml /usr/share/sgbd-edge/default.toml; do
        check "$l: $p installed" test -f "$p"
    done
    check "$l: user sgbd-edge exists with a nologin shell" grep -q ':/usr/sbin/nologin$' <<<"$(getent passwd "$PKG")"
    check "$l: user home is $STATE" test "$(getent passwd "$PKG" | cut -d: -f6)" = "$STATE"
    has_group() { getent group "$1" >/dev/null; }
    check "$l: group sgbd-edge exists" has_group "$PKG"
    for g in dialout video; do
        if getent group "$g" >/dev/null; then
            check "$l: sgbd-edge is in group $g" grep -qw "$g" <<<"$(id -nG "$PKG")"
        fi
    done
    check "$l: $STATE is sgbd-edge:sgbd-edge 750" test "$(stat -c '%U:%G %a' "$STATE")" = "sgbd-edge:sgbd-edge 750"
    check "$l: $STATE/incoming is 770" test "$(stat -c '%U %a' "$STATE/incoming")" = "sgbd-edge 770"
    check "$l: dpkg lists $CONF as a conffile" grep -q "$CONF" <<<"$(dpkg-query -W -f='${Conffiles}' "$PKG")"
    check "$l: sgbd-edge validate --config $CONF (as root)" /usr/bin/sgbd-edge validate --config "$CONF"
    check "$l: sgbd-edge validate --config $CONF (as user sgbd-edge)" \
        runuser -u "$PKG" -- /usr/bin/sgbd-edge validate --config "$CONF"
}

step "install test 1: adduser fallback path (SGBD_EDGE_TEST_NO_SYSTEMD=1 dpkg -i)"
reset_machine
t=$(date +%s)
SGBD_EDGE_TEST_NO_SYSTEMD=1 "${DPKG[@]}" -i "$DEB_AMD64" </dev/null
echo "[deb] dpkg -i took $(($(date +%s) - t)) s"
check_installed fallback
reset_machine

step "install test 2: dpkg -i (systemd-sysusers / systemd-tmpfiles when present)"
t=$(date +%s)
"${DPKG[@]}" -i "$DEB_AMD64" </dev/null
echo "[deb] dpkg -i took $(($(date +%s) - t)) s"
check_installed install

step "systemd-analyze verify / security on the installed unit"
if command -v systemd-analyze >/dev/null && out=$(systemd-analyze verify /lib/systemd/system/sgbd-edge.service 2>&1); then
    [ -z "$out" ] || echo "$out" | sed 's/^/[deb]     /'
    PASS=$((PASS + 1)); ok "systemd-analyze verify sgbd-edge.service"
    systemd-analyze security --offline=true /lib/systemd/system/sgbd-edge.service 2>/dev/null | tail -1 | sed 's/^/[deb]   /' || true
elif command -v systemd-analyze >/dev/null; then
    echo "$out" | sed 's/^/[deb]     /'
    if grep -qiE 'failed to (connect|initialize)|no such file or directory.*bus|not booted|Failed to create' <<<"$out"; then
        echo "[deb] skipping systemd-analyze verify: it does not work in this container"
    else
        fail "systemd-analyze verify sgbd-edge.service"
    fi
else
    echo "[deb] skipping systemd-analyze verify: systemd-analyze not installed (apt-get install systemd)"
fi

step "reinstall and upgrade keep a modified conffile"
echo "# local edit (deb.sh $$)" >>"$CONF"
MARK="# local edit (deb.sh $$)"
"${DPKG[@]}" -i "$DEB_AMD64" </dev/null >/dev/null
check "reinstall of the same version keeps the edited $CONF" grep -qxF "$MARK" "$CONF"
TMPDEB=$(mktemp -d)
# cargo-deb deletes other versions of the package from target/debian: keep ours aside.
cp -p "$DEB_AMD64" "$TMPDEB/keep.deb"
mkdir "$TMPDEB/next"
cargo deb --profile dist --no-build --deb-revision 99 --output "$TMPDEB/next/" >/dev/null 2>&1
mv "$TMPDEB/keep.deb" "$DEB_AMD64"
DEB_NEXT=$(ls "$TMPDEB"/next/*.deb)
"${DPKG[@]}" -i "$DEB_NEXT" </dev/null >/dev/null
check "upgrade to $(dpkg-query -W -f='${Version}' "$PKG") keeps the edited $CONF" grep -qxF "$MARK" "$CONF"
check "upgraded config still validates" /usr/bin/sgbd-edge validate --config "$CONF"
rm -rf "$TMPDEB"

step "remove keeps config and data; purge removes them"
runuser -u "$PKG" -- sh -c "echo data > $STATE/sgbd.db"
"${DPKG[@]}" -r "$PKG" </dev/null >/dev/null
check "remove: binary gone" test ! -e /usr/bin/sgbd-edge
check "remove: unit gone" test ! -e /lib/systemd/system/sgbd-edge.service
check "remove: edited config kept" grep -qxF "$MARK" "$CONF"
check "remove: data kept" test -f "$STATE/sgbd.db"
"${DPKG[@]}" --purge "$PKG" </dev/null >/dev/null
purged() { case "$(dpkg-query -W -f='${db:Status-Abbrev}' "$PKG" 2>/dev/null || true)" in ""|"un "|"pn ") return 0 ;; *) return 1 ;; esac; }
check "purge: dpkg keeps no trace of the package (not ii, not rc)" purged
check "purge: /etc/sgbd-edge removed" test ! -e /etc/sgbd-edge
check "purge: $STATE removed" test ! -e "$STATE"
reset_machine

step "finished"
ls -l "$DEB_AMD64" ${DEB_ARM64:+"$DEB_ARM64"} | sed 's/^/[deb]   /'
echo "[deb] $PASS passed, 0 failed in $(($(date +%s) - T0)) s"
