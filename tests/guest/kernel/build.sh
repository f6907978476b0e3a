#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the small test kernel: Debian's linux-source-6.1, `make tinyconfig`
# plus the options in `config` (next to this script), with `nestbox.patch`
# applied, as an uncompressed ELF vmlinux (booted through its PVH note)
# and as an LZ4 bzImage (for bootloaders such as GRUB).
# It boots on hosts whose KVM emulates guest kernel code (kvm_pvm), where
# Debian's own kernel cannot; see docs/TESTING.md.
#
# Output: $NESTBOX_GUEST_DIR/small-vmlinux and small-bzImage (default
# .cache/guest). The
# source package is downloaded (not installed) into the same cache, and
# the build is skipped while the source version, the config, the patch,
# this script and the compiler are unchanged.
# Needs: make gcc bc flex bison libelf-dev (objtool), xz-utils, lz4.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="${NESTBOX_GUEST_DIR:-$repo/.cache/guest}"
debs="$out/debs"
mkdir -p "$debs"

package=linux-source-6.1
(cd "$debs" && { ls "${package}"_*.deb >/dev/null 2>&1 || apt-get download -qq -o APT::Sandbox::User=root "$package"; })
deb=$(ls "$debs/${package}"_*.deb | sort -V | tail -n 1)

key=$( (basename "$deb"; cat "$here/config" "$here/nestbox.patch" "$0"; gcc --version | head -n 1) | sha256sum | cut -c1-16)
stamp="$out/.small-kernel-$key"
if [ -f "$stamp" ] && [ -f "$out/small-vmlinux" ] && [ -f "$out/small-bzImage" ]; then
    echo "small test kernel up to date ($(basename "$deb")) in $out"
    exit 0
fi

work="$out/small-kernel-build"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
dpkg -x "$deb" "$work/pkg"
tar -C "$work" -xf "$work"/pkg/usr/src/linux-source-6.1.tar.xz
rm -rf "$work/pkg"
src="$work/linux-source-6.1"
patch -d "$src" -p1 --quiet < "$here/nestbox.patch"

make -C "$src" -s tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$here/config" >/dev/null
make -C "$src" -s olddefconfig
# Every option of the fragment must have survived its dependencies.
python3 - "$here/config" "$src/.config" <<'PY'
import re, sys
def options(path, unset_too):
    found = {}
    for line in open(path):
        line = line.strip()
        m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
        if m:
            found[m.group(1)] = m.group(2)
        m = re.match(r"^# (CONFIG_\w+) is not set$", line)
        if m and unset_too:
            found[m.group(1)] = None
    return found
want, have = options(sys.argv[1], True), options(sys.argv[2], False)
wrong = [f"{k}: want {v or 'unset'}, got {have.get(k) or 'unset'}" for k, v in want.items() if have.get(k) != v]
if wrong:
    sys.exit("kernel config fragment not honoured:\n  " + "\n  ".join(wrong))
PY

jobs=$(nproc)
echo "building the small test kernel with $jobs jobs (about 6 minutes on 2 cores)"
make -C "$src" -s -j"$jobs" vmlinux bzImage
for built in vmlinux:small-vmlinux arch/x86/boot/bzImage:small-bzImage; do
    cp "$src/${built%%:*}" "$out/${built#*:}.tmp"
    mv "$out/${built#*:}.tmp" "$out/${built#*:}"
done
rm -f "$out"/.small-kernel-*
touch "$stamp"
echo "small test kernel built ($(basename "$deb")) in $out"
