#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the test guest from Debian packages, without installing them:
#   vmlinuz    - Debian's kernel (bzImage), as packaged
#   vmlinux    - the same kernel uncompressed (ELF with a PVH entry), for
#                direct boots on hosts where decompression is too slow
#   initramfs.cpio.gz - busybox (static) + /init, the test agent
# Output goes to $NESTBOX_GUEST_DIR (default: .cache/guest in the repo).
# Downloaded .debs are cached there, so a rebuild needs no network.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="${NESTBOX_GUEST_DIR:-$repo/.cache/guest}"
debs="$out/debs"
mkdir -p "$debs"

kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$kernel_pkg" ]; then
    echo "build.sh: cannot resolve the kernel package behind linux-image-amd64" >&2
    exit 1
fi
abi=${kernel_pkg#linux-image-}

stamp="$out/.built-$abi-$(cat "$0" "$(dirname "$0")/init" "$(dirname "$0")/udhcpc.script" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ -f "$out/vmlinux" ] && [ -f "$out/initramfs.cpio.gz" ]; then
    echo "test guest up to date ($abi) in $out"
    exit 0
fi

(cd "$debs" && for pkg in "$kernel_pkg" busybox-static; do
    ls "${pkg}"_*.deb >/dev/null 2>&1 || apt-get download -qq -o APT::Sandbox::User=root "$pkg"
done)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg -x "$debs/${kernel_pkg}"_*.deb "$work/kernel"
dpkg -x "$debs"/busybox-static_*.deb "$work/busybox"
cp "$work/kernel/boot/vmlinuz-$abi" "$out/vmlinuz"

# The bzImage's payload is an xz stream: find its magic and unpack it.
python3 - "$out/vmlinuz" "$out/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
magic = b"\xfd7zXZ\x00"
start = data.find(magic)
while start >= 0:
    try:
        elf = lzma.LZMADecompressor().decompress(data[start:])
        if elf.startswith(b"\x7fELF"):
            open(sys.argv[2], "wb").write(elf)
            sys.exit(0)
    except lzma.LZMAError:
        pass
    start = data.find(magic, start + 1)
sys.exit("no xz-compressed ELF kernel inside " + sys.argv[1])
PY

root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,etc,lib/modules}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
for applet in sh mount echo cat poweroff reboot sleep uname ls dmesg insmod dd md5sum cut head ip udhcpc nc yes sync hexdump grep tr wc kill printf cp mv rm; do
    ln -s busybox "$root/bin/$applet"
done
# The virtio drivers (all modules in Debian's kernel) and what they need,
# in load order: a module's dependencies come from its .modinfo section.
python3 - "$work/kernel/lib/modules/$abi" "$root" <<'PY'
import os, re, shutil, sys
tree, root = sys.argv[1], sys.argv[2]
wanted = ["virtio_pci", "virtio_blk", "virtio_net", "virtio-rng", "virtio_input", "evdev", "virtio_console", "virtio_gpu"]
files = {}
for dirpath, _, names in os.walk(tree):
    for name in names:
        if name.endswith(".ko"):
            files[name[:-3].replace("-", "_")] = os.path.join(dirpath, name)
order, seen = [], set()
def add(name):
    key = name.replace("-", "_")
    if key in seen:
        return
    seen.add(key)
    if key not in files:
        sys.exit(f"module {name} not found in the kernel package")
    data = open(files[key], "rb").read()
    deps = re.search(rb"depends=([^\x00]*)", data)
    for dep in filter(None, (deps.group(1).decode().split(",") if deps else [])):
        add(dep)
    order.append(key)
for name in wanted:
    add(name)
os.makedirs(os.path.join(root, "lib/modules"), exist_ok=True)
with open(os.path.join(root, "etc/modules.order"), "w") as listing:
    for key in order:
        shutil.copy(files[key], os.path.join(root, "lib/modules", key + ".ko"))
        listing.write(key + "\n")
PY
cp "$(dirname "$0")/init" "$root/init"
cp "$(dirname "$0")/udhcpc.script" "$root/etc/udhcpc.script"
chmod +x "$root/etc/udhcpc.script"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initramfs.cpio.gz"

rm -f "$out"/.built-*
touch "$stamp"
echo "test guest built ($abi) in $out"
