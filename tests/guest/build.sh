#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the test guest from Debian packages, without installing them:
#   vmlinuz    - Debian's kernel (bzImage), as packaged
#   vmlinux    - the same kernel uncompressed (ELF with a PVH entry), for
#                direct boots on hosts where decompression is too slow
#   initramfs.cpio.gz - busybox (static) + /init, the test agent
#   small-vmlinux + initramfs-agent.cpio - the small test kernel
#                (tests/guest/kernel/build.sh: boots where Debian's
#                cannot, on software-only KVM) and the same agent,
#                uncompressed and without modules (they are built in)
#   vmlinuz-6.12 + initramfs-snd.cpio.gz - the sound guest: Linux 6.12 from
#                bookworm-backports (the first with virtio-snd enabled),
#                its sound modules, aplay/arecord with their libraries, and
#                a 2 s 440 Hz tone (48 kHz stereo S16) as /tone440.wav
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
snd_kernel_pkg=$(apt-cache depends -t bookworm-backports linux-image-amd64 | awk '/Depends: linux-image-6\.1[2-9]/ {print $2; exit}')
if [ -z "$snd_kernel_pkg" ]; then
    echo "build.sh: cannot resolve Linux 6.12 from bookworm-backports (are backports in the apt sources?)" >&2
    exit 1
fi
snd_abi=${snd_kernel_pkg#linux-image-}

"$(dirname "$0")/kernel/build.sh"

stamp="$out/.built-$abi-$snd_abi-$(cat "$0" "$(dirname "$0")/init" "$(dirname "$0")/udhcpc.script" "$(dirname "$0")/blkbench.c" "$(dirname "$0")/gpuflush.c" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ -f "$out/vmlinux" ] && [ -f "$out/initramfs.cpio.gz" ] \
    && [ -f "$out/vmlinuz-6.12" ] && [ -f "$out/initramfs-snd.cpio.gz" ] \
    && [ -f "$out/initramfs-agent.cpio" ]; then
    echo "test guest up to date ($abi) in $out"
    exit 0
fi

(cd "$debs" && for pkg in "$kernel_pkg" "$snd_kernel_pkg" busybox-static alsa-utils libasound2 libasound2-data; do
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
for applet in sh mount umount mkdir date echo cat poweroff reboot sleep uname ls dmesg insmod dd md5sum cut head ip udhcpc nc yes sync hexdump grep tr wc kill printf cp mv rm timeout stty; do
    ln -s busybox "$root/bin/$applet"
done
# Copies kernel modules and what they need, in load order, into an
# initramfs root: a module's dependencies come from its .modinfo section.
# Compressed modules (.ko.xz, as 6.12 ships them) are unpacked, since
# busybox's insmod loads plain ELF.
copy_modules() {
    python3 - "$@" <<'PY'
import lzma, os, re, sys
tree, root, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
files = {}
for dirpath, _, names in os.walk(tree):
    for name in names:
        for ext in (".ko", ".ko.xz"):
            if name.endswith(ext):
                files[name[: -len(ext)].replace("-", "_")] = os.path.join(dirpath, name)
def load(path):
    data = open(path, "rb").read()
    return lzma.decompress(data) if path.endswith(".xz") else data
order, seen = [], set()
def add(name):
    key = name.replace("-", "_")
    if key in seen:
        return
    seen.add(key)
    if key not in files:
        sys.exit(f"module {name} not found in the kernel package")
    deps = re.search(rb"depends=([^\x00]*)", load(files[key]))
    for dep in filter(None, (deps.group(1).decode().split(",") if deps else [])):
        add(dep)
    order.append(key)
for name in wanted:
    add(name)
os.makedirs(os.path.join(root, "lib/modules"), exist_ok=True)
with open(os.path.join(root, "etc/modules.order"), "w") as listing:
    for key in order:
        open(os.path.join(root, "lib/modules", key + ".ko"), "wb").write(load(files[key]))
        listing.write(key + "\n")
PY
}
# The virtio drivers (all modules in Debian's 6.1 kernel).
copy_modules "$work/kernel/lib/modules/$abi" "$root" \
    virtio_pci virtio_blk virtio_net virtio-rng virtio_input evdev virtio_console virtio_gpu
# The block benchmark's reader (bench/blk.py), static against the host's libc.
gcc -static -O2 -o "$root/bin/blkbench" "$(dirname "$0")/blkbench.c"
# The screen benchmark's flusher (bench/gpu_flush.py), the same way.
gcc -static -O2 -o "$root/bin/gpuflush" "$(dirname "$0")/gpuflush.c"
cp "$(dirname "$0")/init" "$root/init"
cp "$(dirname "$0")/udhcpc.script" "$root/etc/udhcpc.script"
chmod +x "$root/etc/udhcpc.script"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initramfs.cpio.gz"

# The small kernel's initramfs: the same agent without modules, not
# compressed (unpacking gzip costs ~37 s of emulated kernel code there).
agent_root="$work/agent-root"
cp -a "$root" "$agent_root"
rm -rf "$agent_root/lib/modules" "$agent_root/etc/modules.order"
(cd "$agent_root" && find . | cpio -o -H newc --quiet) > "$out/initramfs-agent.cpio"

# The sound guest: the same agent on Linux 6.12 (virtio-pci is built in
# there), with snd-virtio, aplay/arecord and a test tone. QEMU's TCG
# unpacks the bzImage quickly, so it boots as packaged.
dpkg -x "$debs/${snd_kernel_pkg}"_*.deb "$work/snd-kernel"
for pkg in alsa-utils libasound2 libasound2-data; do
    dpkg -x "$debs/${pkg}"_*.deb "$work/alsa"
done
cp "$work/snd-kernel/boot/vmlinuz-$snd_abi" "$out/vmlinuz-6.12"
snd_root="$work/snd-root"
cp -a "$root" "$snd_root"
rm -rf "$snd_root/lib/modules"
for applet in awk; do
    ln -s busybox "$snd_root/bin/$applet"
done
copy_modules "$work/snd-kernel/lib/modules/$snd_abi" "$snd_root" virtio_snd
mkdir -p "$snd_root/usr/bin" "$snd_root/usr/share" "$snd_root/lib64" "$snd_root/lib/x86_64-linux-gnu"
cp "$work/alsa/usr/bin/aplay" "$snd_root/usr/bin/aplay"
ln -s aplay "$snd_root/usr/bin/arecord"
cp -r "$work/alsa/usr/share/alsa" "$snd_root/usr/share/alsa"
# aplay's shared libraries: libasound from the package, the C library
# (same Debian release) and its loader from the host.
LD_LIBRARY_PATH="$work/alsa/usr/lib/x86_64-linux-gnu" ldd "$work/alsa/usr/bin/aplay" \
    | awk '$3 ~ /^\// {print $3} $1 ~ /^\/lib64\// {print $1}' | while read -r lib; do
    case "$lib" in
        /lib64/*) cp -L "$lib" "$snd_root/lib64/" ;;
        *) cp -L "$lib" "$snd_root/lib/x86_64-linux-gnu/" ;;
    esac
done
sox -n -r 48000 -c 2 -b 16 -e signed-integer "$snd_root/tone440.wav" synth 2 sine 440 vol 0.5
(cd "$snd_root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out/initramfs-snd.cpio.gz"

rm -f "$out"/.built-*
touch "$stamp"
echo "test guest built ($abi; sound guest $snd_abi) in $out"
