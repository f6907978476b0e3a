#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A newcomer's first ten minutes, checked on a fresh Debian 12 (bookworm):
# a root file system made by debootstrap (minbase) that holds nothing but a
# Rust toolchain (this machine's, copied in: Debian 12's own cargo is older
# than Nestbox needs) and a clone of this repository runs the README's two
# commands as a newcomer would:
#
#   ./nestbox run --firmware seabios   (until SeaBIOS's banner shows)
#   .ci/run                            (the test command; skipped with --run-only)
#
# and what they printed goes to docs/FRESH_MACHINE.md (the run command's
# output whole; the test command's summary and its last lines).
#
# Needs: root, debootstrap, git, the network of the package registry this
# machine's apt uses (its first URIs: line, or the first deb line), and
# /dev/kvm. The root is kept in $NESTBOX_FRESH_ROOT (default
# /var/tmp/nestbox-fresh-debian12) and made anew each run. About 25 minutes
# on 2 CPUs for the run command, an hour more for the tests.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
root=${NESTBOX_FRESH_ROOT:-/var/tmp/nestbox-fresh-debian12}
record="$repo/docs/FRESH_MACHINE.md"
run_only=false
if [ "${1:-}" = "--run-only" ]; then run_only=true; fi

say() { echo "fresh-debian12: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "needs root (debootstrap and chroot)"
    exit 2
fi
for tool in debootstrap git; do
    if ! command -v "$tool" >/dev/null; then
        say "needs $tool (apt-get install $tool)"
        exit 2
    fi
done
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
fi
if [ -z "$mirror" ]; then
    say "cannot tell which package registry this machine's apt uses"
    exit 2
fi
sysroot=$(rustc --print sysroot)

cleanup() {
    for mount in dev/pts dev proc sys; do
        umount -l "$root/$mount" 2>/dev/null || true
    done
}
trap cleanup EXIT

say "making a bookworm minbase root in $root"
cleanup
rm -rf "$root"
debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
# The same registry for apt inside, in the deb822 file a Debian 12 install
# has (.ci/run adds bookworm-backports to it).
rm -f "$root/etc/apt/sources.list"
mkdir -p "$root/etc/apt/sources.list.d"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF_SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF_SOURCES
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# Certificate authorities this site adds to Debian's (a TLS-inspecting
# proxy's, say) are trusted inside too: installing ca-certificates there
# picks them up, as it would on a new machine of this site.
if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi

say "copying the Rust toolchain ($sysroot) and a clone of the repository"
mkdir -p "$root/opt/rust"
cp -a "$sysroot/." "$root/opt/rust/"
git clone -q "$repo" "$root/home/newcomer/nestbox"
commit=$(git -C "$repo" rev-parse --short HEAD)

inside() {
    chroot "$root" /usr/bin/env -i HOME=/root PATH=/opt/rust/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        TERM=dumb LANG=C.UTF-8 bash -c "cd /home/newcomer/nestbox && $1"
}

run_log=$(mktemp)
say "the README's run command: ./nestbox run --firmware seabios"
started=$(date +%s)
# The VM's console is the terminal; the banner is the end of the check.
set +e
inside "timeout 1800 ./nestbox run --firmware seabios < /dev/null" >"$run_log" 2>&1 &
runner=$!
set -e
banner=false
while kill -0 "$runner" 2>/dev/null; do
    if grep -q 'SeaBIOS (version' "$run_log"; then
        banner=true
        break
    fi
    sleep 2
done
run_seconds=$(( $(date +%s) - started ))
# Cargo runs it by its path relative to the clone.
pkill -f "target/release/nestbox run --firmware seabios" 2>/dev/null || true
wait "$runner" 2>/dev/null || true
grep -q 'SeaBIOS (version' "$run_log" && banner=true

test_summary="not run (--run-only)"
test_tail=""
if ! $run_only; then
    say "the README's test command: .ci/run"
    test_log=$(mktemp)
    set +e
    inside "CI=true ./.ci/run" >"$test_log" 2>&1
    status=$?
    set -e
    test_summary="exit status $status; $(grep -E '^total:' "$test_log" | tail -1)"
    test_tail=$(tail -n 15 "$test_log")
fi

{
    echo "# A fresh Debian 12 runs the README's commands"
    echo
    echo "Written by \`tests/fresh/debian12.sh$($run_only && echo ' --run-only')\` on $(date -u +%Y-%m-%d), commit $commit:"
    echo "a debootstrap minbase bookworm root holding only this machine's Rust toolchain"
    echo "($(rustc --version)) and a clone of the repository."
    echo
    echo "## \`./nestbox run --firmware seabios\`"
    echo
    if $banner; then
        echo "SeaBIOS's banner came after $run_seconds s (the packages installed, the release build, the boot)."
    else
        echo "**SeaBIOS's banner did not come** (after $run_seconds s)."
    fi
    echo
    echo '```'
    # Cargo's progress lines are many and say nothing here; the serial
    # console's terminal escapes and carriage returns are left out.
    grep -av '^ *Compiling ' "$run_log" \
        | sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' -e 's/\r//g' | tail -n 40
    echo '```'
    echo
    echo "## \`.ci/run\`"
    echo
    echo "$test_summary"
    if [ -n "$test_tail" ]; then
        echo
        echo '```'
        echo "$test_tail"
        echo '```'
    fi
} >"$record"
say "wrote $record"
$banner
