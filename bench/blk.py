#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Guest block benchmark: Nestbox's vhost-user-blk vs QEMU's own virtio-blk.

The same guest (the test guest of tests/guest, booted by QEMU under TCG)
runs the same workload on its first virtio disk, a 256 MiB raw image of
known contents read as the raw device (/dev/vda, O_DIRECT, no file
system): SEQ MiB of sequential 1 MiB reads (passes over the whole disk),
then RANDOM 4 KiB reads at spread offsets (tests/guest/blkbench.c). Several passes per
boot, the first discarded as a warm-up; boots alternate between

  - nestbox: `-device vhost-user-blk-pci` served by the engine's
    vhost-user-blk back-end (engine/examples/vhost_user_blk.rs: the same
    code as `nestbox vhost-user-blk`, without building the GUI);
  - qemu: `-drive if=none,format=raw,cache=writeback,aio=threads` +
    `-device virtio-blk-pci` (the host page cache, like Nestbox's back-end).

Both read an image the host has in its page cache. Under TCG the guest CPU
is emulated, so the guest's driver costs both sides the same (and much
more than on hardware); the difference is the device path.

Prints medians and the Nestbox/QEMU ratios; with --write, replaces the
blk-guest section of docs/BENCHMARKS.md.

Run from the repository root:  python3 bench/blk.py --runs 3 --write"""

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time

import benchdoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QEMU = "qemu-system-x86_64"
IMAGE_MIB = 256
MEMORY_MIB = 512
QUEUE_SIZE = 256
START = "<!-- blk-guest:start -->"
END = "<!-- blk-guest:end -->"


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def make_image(path):
    """A raw image of pseudo-random bytes (a fixed seed): not sparse, so
    nothing is served as zeros without reading."""
    rng = random.Random(1)
    chunk = rng.randbytes(1 << 20)
    with open(path, "wb") as f:
        for i in range(IMAGE_MIB):
            # Each MiB differs: its index in its first bytes.
            f.write(i.to_bytes(8, "little") + chunk[8:])


def boot(guest, device_args, spec, serial, timeout=600):
    """Boots the test guest under TCG with device_args; returns the fields
    of every NESTBOX-RESULT blkbench line."""
    if os.path.exists(serial):
        os.unlink(serial)
    memory = f"memory-backend-memfd,id=mem,size={MEMORY_MIB}M,share=on"
    cmd = [QEMU, "-accel", "tcg", "-M", "pc", "-cpu", "max", "-smp", "1",
           "-m", f"{MEMORY_MIB}M", "-object", memory, "-machine", "memory-backend=mem",
           "-kernel", os.path.join(guest, "vmlinux"),
           "-initrd", os.path.join(guest, "initramfs.cpio.gz"),
           "-append", f"console=ttyS0 nestbox.test=blkbench nestbox.blkbench={spec}",
           *device_args,
           "-nodefaults", "-display", "none", "-no-reboot", "-serial", "file:" + serial]
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True,
                   timeout=timeout)
    text = open(serial, errors="replace").read()
    for line in text.splitlines():
        if line.startswith("NESTBOX-INFO blkbench "):
            print("  guest queue limits: " + line.split(" ", 2)[2], flush=True)
    results = []
    for line in text.splitlines():
        if line.startswith("NESTBOX-RESULT blkbench "):
            fields = dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
            if "error" in fields:
                sys.exit(f"guest benchmark failed: {line}")
            results.append(fields)
    if not results:
        sys.exit("no NESTBOX-RESULT blkbench line in the guest's output:\n" + text[-2000:])
    return results


def run_vhost_user(server_cmd, guest, spec, tmp):
    """Boots with a vhost-user-blk-pci device whose back-end is
    server_cmd(socket), started first and ended by QEMU's disconnect."""
    socket = os.path.join(tmp, "blk.sock")
    if os.path.exists(socket):
        os.unlink(socket)
    proc = subprocess.Popen(server_cmd(socket), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(socket):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the vhost-user-blk back-end {server_cmd(socket)[0]} did not start")
            time.sleep(0.01)
        args = ["-chardev", f"socket,id=vu,path={socket}",
                "-device", f"vhost-user-blk-pci,chardev=vu,num-queues=1,queue-size={QUEUE_SIZE}"]
        return boot(guest, args, spec, os.path.join(tmp, "serial.txt"))
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()


def storage_daemon(image):
    """qemu-storage-daemon exporting the image over vhost-user-blk: QEMU's
    own block layer behind the same transport as Nestbox's back-end."""
    def cmd(socket):
        return ["qemu-storage-daemon",
                "--blockdev", f"driver=file,node-name=file,filename={image},cache.direct=off,aio=threads",
                "--blockdev", "driver=raw,node-name=disk,file=file",
                "--export", "type=vhost-user-blk,id=exp,node-name=disk,writable=on,"
                f"addr.type=unix,addr.path={socket}"]
    return cmd


def run_qemu(guest, image, spec, tmp):
    args = ["-drive", f"if=none,id=d0,file={image},format=raw,cache=writeback,aio=threads",
            "-device", f"virtio-blk-pci,drive=d0,num-queues=1,queue-size={QUEUE_SIZE}"]
    return boot(guest, args, spec, os.path.join(tmp, "serial.txt"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="boots per VMM")
    parser.add_argument("--seq-mib", type=int, default=128)
    parser.add_argument("--random", type=int, default=4000)
    parser.add_argument("--storage-daemon", action="store_true",
                        help="also measure qemu-storage-daemon's vhost-user-blk export")
    parser.add_argument("--server", help="a vhost-user-blk back-end binary to use instead of "
                        "the engine example (SOCKET IMAGE arguments)")
    parser.add_argument("--passes", type=int, default=3,
                        help="workload passes per boot; the first is a warm-up")
    parser.add_argument("--poll-us", type=int,
                        help="the back-end's polling budget (default: the engine's)")
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "engine", "--example",
                    "vhost_user_blk"], cwd=ROOT, check=True)
    server = args.server or os.path.join(target_dir(), "release/examples/vhost_user_blk")
    subprocess.run(["bash", os.path.join(ROOT, "tests/guest/build.sh")], check=True,
                   stdout=subprocess.DEVNULL)
    guest = os.environ.get("NESTBOX_GUEST_DIR", os.path.join(ROOT, ".cache/guest"))
    # The first pass of each boot warms up and is dropped.
    spec = f"{max(args.passes, 2)},{args.seq_mib},{args.random}"
    poll = [] if args.poll_us is None else [str(args.poll_us)]
    names = ["nestbox", "qemu"] + (["qsd"] if args.storage_daemon else [])
    results = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "disk.img")
        make_image(image)
        for run in range(args.runs):
            for name in names:
                if name == "nestbox":
                    lines = run_vhost_user(lambda sock: [server, sock, image, *poll], guest, spec, tmp)
                elif name == "qsd":
                    lines = run_vhost_user(storage_daemon(image), guest, spec, tmp)
                else:
                    lines = run_qemu(guest, image, spec, tmp)
                measured = lines[1:] or lines
                print(f"run {run + 1} {name}: " + "; ".join(
                    f"{r['seq_mbps']} MB/s, {r['iops']} IOPS" for r in measured), flush=True)
                results[name].extend(measured)

    sums = {r["sum"] for rs in results.values() for r in rs}
    if len(sums) != 1:
        sys.exit(f"the VMMs read different bytes: checksums {sums}")
    med = {name: (statistics.median(float(r["seq_mbps"]) for r in rs),
                  statistics.median(float(r["iops"]) for r in rs))
           for name, rs in results.items()}
    ranges = {name: (min(float(r["seq_mbps"]) for r in rs), max(float(r["seq_mbps"]) for r in rs),
                     min(float(r["iops"]) for r in rs), max(float(r["iops"]) for r in rs))
              for name, rs in results.items()}
    qemu_version = benchdoc.qemu_version(QEMU)
    nb, q = med["nestbox"], med["qemu"]

    def row(label, name):
        m, r = med[name], ranges[name]
        return (f"| {label} | {m[0]:.1f} MB/s ({r[0]:.1f}–{r[1]:.1f}) "
                f"| {m[1]:.0f} ({r[2]:.0f}–{r[3]:.0f}) |")

    table = [
        f"| device | sequential 1 MiB reads, {args.seq_mib} MiB | random 4 KiB reads, IOPS |",
        "|---|---|---|",
        row("Nestbox `vhost-user-blk-pci` (engine back-end)", "nestbox"),
        row("QEMU `virtio-blk-pci`, `cache=writeback,aio=threads`", "qemu"),
        *([row("qemu-storage-daemon `vhost-user-blk` export (same transport as Nestbox)",
               "qsd")] if "qsd" in med else []),
        f"| ratio Nestbox/QEMU | {nb[0] / q[0]:.2f} | {nb[1] / q[1]:.2f} |",
    ]
    print("\n".join(table))
    if args.write:
        command = "python3 bench/blk.py --runs %d --passes %d --seq-mib %d --random %d%s --write" % (
            args.runs, args.passes, args.seq_mib, args.random,
            " --storage-daemon" if args.storage_daemon else "")
        section = "\n".join([
            START,
            "## virtio-blk from inside a guest: Nestbox vs QEMU",
            "",
            f"`{command}`",
            "",
            f"The test guest (Debian's 6.1 kernel, busybox) under {qemu_version},",
            f"`-accel tcg`, 1 vCPU, {MEMORY_MIB} MiB; its first virtio disk is a {IMAGE_MIB} MiB raw",
            "image of known pseudo-random bytes in the host's page cache, read as the raw",
            "device (`/dev/vda`, `O_DIRECT`, no file system) by `tests/guest/blkbench.c`:",
            f"{args.seq_mib} MiB of sequential 1 MiB reads (passes over the whole disk), then",
            f"{args.random} random 4 KiB reads. Nestbox: `vhost-user-blk-pci` served by",
            "`engine/examples/vhost_user_blk.rs` (the code behind `nestbox vhost-user-blk`);",
            "QEMU: its own `virtio-blk-pci` on `-drive format=raw,cache=writeback,aio=threads`.",
            f"Both queues hold {QUEUE_SIZE} entries. {args.runs} boots each, alternating, each",
            f"running the workload {max(args.passes, 2)} times and dropping the first (a warm-up);",
            "medians (min–max) of the rest.",
            benchdoc.host_facts(QEMU),
            "The guests read the same bytes (equal checksums).",
            "",
            *table,
            "",
            "Caveat: under TCG the guest CPU is emulated, so the guest's own driver and",
            "syscalls dominate each request and cost both sides alike; on hardware",
            "virtualization the device's share, and so any difference, is larger. Nestbox",
            "and QEMU's virtio-blk-pci offer `seg_max` 254 and indirect descriptors (the",
            "guest's `max_segments`, printed per boot); qemu-storage-daemon offers 126.",
            END,
        ])
        benchdoc.write_section("blk-guest", section)


if __name__ == "__main__":
    main()
