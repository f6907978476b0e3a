#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Guest flush to the app's texture upload, through the real worker and
GUI processes, at 1920x1080.

A library VM boots the small test kernel (tests/guest/build.sh) with a
virtio-vga fixed at 1920x1080; its `/bin/gpuflush` shows a DRM dumb
buffer of the display's preferred size and, one frame every 16.7 ms,
repaints all of it and flushes it (DIRTYFB: virtio_gpu's
TRANSFER_TO_HOST_2D and RESOURCE_FLUSH). The VM runs in its worker
(`nestbox start ID --headless`); the app (`nestbox`, release, Mesa
llvmpipe under a private Xvfb) shows it in its console with
`NESTBOX_TIMING=latency`, printing for every UI pass that uploaded a
flushed picture the time from the device's RESOURCE_FLUSH (stamped by the
worker on the host's monotonic clock) to the end of that pass. Only full
1920x1080 uploads count.

Beside it, the guest's own view: the DIRTYFB round trip (p50/p99) and the
frames it flushed per second. The peer: QEMU (KVM, `-device virtio-vga`
at 1920x1080, no display) on the same guest and command line; its guest
numbers, and the ratio.

Usage: python3 bench/gpu_flush.py [--seconds 30] [--write]
"""
import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import benchdoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.join(ROOT, "target", "release", "nestbox")
GUEST = os.environ.get("NESTBOX_GUEST_DIR", os.path.join(ROOT, ".cache", "guest"))
QEMU = "qemu-system-x86_64"
QEMU_CPU = "host,-arch-capabilities,kvm-pv-ipi=off,kvm-pv-sched-yield=off,kvm-pv-unhalt=off"
WIDTH, HEIGHT = 1920, 1080
MEMORY_MIB = 256
BOOT_TIMEOUT = 600
CMDLINE = ("console=ttyS0 no_timer_check tsc=reliable mitigations=off print-fatal-signals=1 "
           "reboot=k initramfs_async=0 rodata=off noxsave nofsgsbase "
           "clearcpuid=cx16,smap,popcnt,serialize,rdrand,rdseed,pcid,invpcid,erms,fsrm "
           "nestbox.test=gpuflush nestbox.end=shell")


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def guest_result(text):
    """The gpuflush result line's fields, or None."""
    for line in text.splitlines():
        if "NESTBOX-RESULT gpuflush" in line:
            return dict(re.findall(r"(\w+)=([\w.]+)", line))
    return None


def run_nestbox(seconds, cmdline):
    kernel = os.path.join(GUEST, "small-vmlinux")
    initrd = os.path.join(GUEST, "initramfs-agent.cpio")
    number = benchdoc.free_display()
    display = f":{number}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "2560x1600x24", "-nolisten", "tcp",
                             "-noreset"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    home = tempfile.mkdtemp(prefix="nestbox-bench-gpu-")
    app = None
    vm_id = None
    try:
        for _ in range(100):
            if os.path.exists(f"/tmp/.X11-unix/X{number}"):
                break
            time.sleep(0.05)
        env = benchdoc.env_for(home, display)
        created = subprocess.run([EXE, "create", "--name", "flush", "--profile", "linux-kernel",
                                  "--memory", f"{MEMORY_MIB}M", "--cpus", "1", "--kernel", kernel,
                                  "--initrd", initrd, "--cmdline", cmdline],
                                 env=env, capture_output=True, text=True, check=True)
        vm_id = created.stdout.split()[-1]
        vm_dir = f"{home}/data/nestbox/vms/{vm_id}"
        text = open(f"{vm_dir}/vm.toml").read()
        text = text.replace('network = "nat"', 'network = "none"').replace('sound = "host"', 'sound = "none"')
        text = re.sub(r"(?m)^resolution = .*$", "", text)
        if "[display]" in text:
            text = text.replace("[display]", f'[display]\nresolution = "{WIDTH}x{HEIGHT}"', 1)
        else:
            text += f'\n[display]\nresolution = "{WIDTH}x{HEIGHT}"\n'
        open(f"{vm_dir}/vm.toml", "w").write(text)
        subprocess.run([EXE, "start", vm_id, "--headless"], env=env, check=True, capture_output=True)
        app = subprocess.Popen([EXE], env=dict(env, NESTBOX_TIMING="latency"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        samples = []
        showing = threading.Event()

        def read_app():
            for line in app.stderr:
                m = re.search(r"flush-to-upload (\d+) us area=(\d+)x(\d+)", line)
                if m and (int(m.group(2)), int(m.group(3))) == (WIDTH, HEIGHT) and showing.is_set():
                    samples.append(int(m.group(1)) / 1000.0)

        reader = threading.Thread(target=read_app, daemon=True)
        reader.start()
        serial = f"{vm_dir}/serial.log"
        if not benchdoc.wait_for_text(serial, "NESTBOX-GPUFLUSH-SHOWING", BOOT_TIMEOUT, 0.5):
            sys.exit(f"the guest never showed its buffer; serial:\n{open(serial).read()[-3000:]}")
        # The first frames touch the buffer's pages for the first time.
        time.sleep(2)
        showing.set()
        if not benchdoc.wait_for_text(serial, "NESTBOX-RESULT gpuflush", seconds + 120, 0.5):
            sys.exit(f"the guest never finished; serial:\n{open(serial).read()[-3000:]}")
        showing.clear()
        guest = guest_result(open(serial).read())
        return samples, guest
    finally:
        if app:
            app.kill()
            app.wait()
        if vm_id:
            subprocess.run([EXE, "kill", vm_id], env=env, capture_output=True)
        xvfb.kill()
        shutil.rmtree(home, ignore_errors=True)


def run_qemu(seconds, cmdline):
    if shutil.which(QEMU) is None:
        return None
    kernel = os.path.join(GUEST, "small-vmlinux")
    initrd = os.path.join(GUEST, "initramfs-agent.cpio")
    cmd = [QEMU, "-accel", "kvm", "-M", "pc", "-cpu", QEMU_CPU, "-m", str(MEMORY_MIB), "-smp", "1",
           "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
           "-device", f"virtio-vga,xres={WIDTH},yres={HEIGHT}",
           "-kernel", kernel, "-initrd", initrd, "-append", cmdline]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    try:
        deadline = time.time() + BOOT_TIMEOUT + seconds
        for line in proc.stdout:
            out.append(line)
            if "NESTBOX-RESULT gpuflush" in line or time.time() > deadline:
                break
    finally:
        proc.kill()
        proc.wait()
    return guest_result("".join(out))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "nestbox"], cwd=ROOT, check=True)
    subprocess.run([os.path.join(ROOT, "tests/guest/build.sh")], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    cmdline = f"{CMDLINE} nestbox.seconds={args.seconds}"

    samples, guest = run_nestbox(args.seconds, cmdline)
    if not samples or not guest or "error" in guest:
        sys.exit(f"no flush-to-upload samples (guest: {guest})")
    peer = run_qemu(args.seconds, cmdline)

    def fps(result):
        return float(result["frames"]) / float(result["seconds"])

    def guest_row(name, result):
        return (f"| {name} | {float(result['flush_p50_us']) / 1000:.1f} ms | "
                f"{float(result['flush_p99_us']) / 1000:.1f} ms | {fps(result):.1f} |")

    rows = [guest_row("Nestbox", guest)]
    if peer and "error" not in peer:
        rows.append(guest_row(benchdoc.qemu_version(), peer))
        rows.append(f"| ratio Nestbox/QEMU | "
                    f"{float(guest['flush_p50_us']) / float(peer['flush_p50_us']):.2f} | "
                    f"{float(guest['flush_p99_us']) / float(peer['flush_p99_us']):.2f} | "
                    f"{fps(guest) / fps(peer):.2f} |")
    else:
        rows.append(f"| QEMU | not run ({'no QEMU' if peer is None else peer}) | | |")
    lines = [
        "<!-- gpu-flush:start -->",
        "## Guest flush to the app's texture, through the worker and GUI",
        "",
        f"`python3 bench/gpu_flush.py --seconds {args.seconds} --write`",
        "",
        f"A library VM (small test kernel, {MEMORY_MIB} MiB, 1 vCPU, virtio-vga fixed at",
        f"{WIDTH}x{HEIGHT}) runs `/bin/gpuflush` (tests/guest/gpuflush.c): a DRM dumb",
        "buffer on the connector's preferred mode, all of it repainted and flushed",
        "(DIRTYFB) every 16.7 ms for the run. The VM runs in its worker; the app,",
        "release build under a private Xvfb on Mesa llvmpipe, shows it in its",
        "console with `NESTBOX_TIMING=latency`. Flush → upload: from the",
        "device's RESOURCE_FLUSH (the worker stamps it on the host's monotonic",
        "clock) to the end of the UI pass that uploaded that picture to the",
        f"texture, full {WIDTH}x{HEIGHT} uploads only. {benchdoc.host_facts()}",
        "Target: p99 ≤ 16.7 ms added latency.",
        "",
        "| measure | p50 | p99 | max | samples |",
        "|---|---|---|---|---|",
        f"| flush → texture upload | {percentile(samples, 50):.1f} ms | {percentile(samples, 99):.1f} ms | "
        f"{max(samples):.1f} ms | {len(samples)} |",
        "",
        "The guest's view of the same run, and the peer on the same guest",
        "(QEMU: `-device virtio-vga,xres=1920,yres=1080 -display none`, so its",
        "frames go nowhere): the DIRTYFB round trip and frames flushed a second.",
        "",
        "| VMM | DIRTYFB p50 | p99 | frames/s |",
        "|---|---|---|---|",
        *rows,
        "<!-- gpu-flush:end -->",
    ]
    section = "\n".join(lines)
    print(section)
    if args.write:
        benchdoc.write_section("gpu-flush", section)


if __name__ == "__main__":
    main()
