#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Linux boot benchmark: Nestbox vs QEMU (-accel kvm -M pc) on the same
small test kernel and agent initramfs (tests/guest/build.sh), the same
command line, paravirtual features, memory and vCPU count, in one run.

For each VMM and run: the time from process start to the agent's ready
line on the serial console, the median round trip of a shell command
typed on the serial console (`sh echo`, answered by the guest's busybox),
and the time from `poweroff` to the process's exit. Prints medians and the
Nestbox/QEMU ratios; with --write, replaces the linux-boot section of
docs/BENCHMARKS.md.

Run from the repository root:  python3 bench/linux.py --runs 3 --write
(builds `nestbox` in release mode first)."""

import argparse
import os
import platform
import queue
import statistics
import subprocess
import sys
import threading
import time

import benchdoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST = os.environ.get("NESTBOX_GUEST_DIR", os.path.join(ROOT, ".cache", "guest"))
MEMORY_MIB = 256
VCPUS = 2
ROUND_TRIPS = 20
# Both VMMs get the same command line, with the features this host cannot
# emulate in guest kernel mode turned off on it (what Nestbox's engine
# appends by itself on software-only KVM, engine/src/cpu_quirks.rs), and
# the same paravirtual features: QEMU's `-cpu host` less those Nestbox
# hides there (their vmcall hangs). (Leaves 1 and 7 of CPUID are the
# host's on such a host whatever either VMM sets, see docs/TESTING.md.)
CMDLINE = ("console=ttyS0 no_timer_check tsc=reliable mitigations=off print-fatal-signals=1 "
           "reboot=k initramfs_async=0 rodata=off nestbox.test=agent noxsave nofsgsbase "
           "clearcpuid=cx16,smap,popcnt,serialize,rdrand,rdseed,pcid,invpcid,erms,fsrm")
QEMU_CPU = "host,-arch-capabilities,kvm-pv-ipi=off,kvm-pv-sched-yield=off,kvm-pv-unhalt=off"
BOOT_TIMEOUT = 600


class Guest:
    """A VMM process whose stdout is the guest's serial console."""

    def __init__(self, cmd):
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.put((time.perf_counter(), raw.decode(errors="replace")))
        self.lines.put((time.perf_counter(), None))

    def wait_for(self, needle, timeout):
        """The time the first line containing needle arrived."""
        deadline = time.perf_counter() + timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(needle)
            at, line = self.lines.get(timeout=left)
            if line is None:
                raise EOFError(needle)
            if needle in line:
                return at

    def type(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_once(cmd):
    """(seconds to the ready line, median shell round trip, seconds from
    poweroff to exit)."""
    guest = Guest(cmd)
    try:
        ready = guest.wait_for("NESTBOX-AGENT-READY", BOOT_TIMEOUT) - guest.start
        trips = []
        for n in range(ROUND_TRIPS):
            sent = time.perf_counter()
            guest.type(f"sh echo round-trip-$(({n} + 1000))")
            trips.append(guest.wait_for(f"round-trip-{n + 1000}", 60) - sent)
        sent = time.perf_counter()
        guest.type("poweroff")
        guest.proc.wait(timeout=120)
        off = time.perf_counter() - sent
        return ready, statistics.median(trips), off
    finally:
        guest.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args()

    kernel = os.path.join(GUEST, "small-vmlinux")
    initrd = os.path.join(GUEST, "initramfs-agent.cpio")
    for path in (kernel, initrd):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run tests/guest/build.sh")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "nestbox"], cwd=ROOT, check=True)
    nestbox = os.path.join(ROOT, "target/release/nestbox")
    vmms = {
        "nestbox": [nestbox, "run", "--memory", f"{MEMORY_MIB}M", "--cpus", str(VCPUS),
                    "--kernel", kernel, "--initrd", initrd, "--cmdline", CMDLINE],
        "qemu": ["qemu-system-x86_64", "-accel", "kvm", "-M", "pc", "-cpu", QEMU_CPU,
                 "-m", str(MEMORY_MIB), "-smp", str(VCPUS), "-nodefaults", "-no-user-config",
                 "-display", "none", "-serial", "stdio", "-no-reboot",
                 "-kernel", kernel, "-initrd", initrd, "-append", CMDLINE],
    }
    results = {name: [] for name in vmms}
    # Alternate the VMMs so that load changes on the host hit both alike.
    for run in range(args.runs):
        for name, cmd in vmms.items():
            result = run_once(cmd)
            print(f"run {run + 1} {name}: ready {result[0]:.1f} s, shell round trip "
                  f"{result[1] * 1000:.0f} ms, poweroff {result[2]:.2f} s", flush=True)
            results[name].append(result)

    def median(name, i):
        return statistics.median(r[i] for r in results[name])

    nb = [median("nestbox", i) for i in range(3)]
    q = [median("qemu", i) for i in range(3)]
    qemu_version = benchdoc.qemu_version()
    table = [
        "| VMM | start → agent ready | shell round trip | poweroff → exit |",
        "|---|---|---|---|",
        f"| Nestbox | {nb[0]:.1f} s | {nb[1] * 1000:.0f} ms | {nb[2]:.2f} s |",
        f"| {qemu_version} | {q[0]:.1f} s | {q[1] * 1000:.0f} ms | {q[2]:.2f} s |",
        f"| ratio Nestbox/QEMU | {nb[0] / q[0]:.2f} | {nb[1] / q[1]:.2f} | {nb[2] / q[2]:.2f} |",
    ]
    print("\n".join(table))
    if args.write:
        section = "\n".join([
            "<!-- linux-boot:start -->",
            "## Linux boot: the small test kernel to its agent, and a shell round trip",
            "",
            "`python3 bench/linux.py --runs %d --write`" % args.runs,
            "",
            "Guest: the small test kernel and agent initramfs (`tests/guest/build.sh`),",
            f"{MEMORY_MIB} MiB, {VCPUS} vCPUs, the same command line for both (with the CPU",
            "features this host cannot emulate turned off) and the same paravirtual",
            f"features (QEMU: `-cpu {QEMU_CPU}`, what Nestbox hides on this host);",
            "QEMU as `-M pc` (SeaBIOS runs first,",
            "then its PVH loader). Medians of %d runs each, alternating." % args.runs,
            benchdoc.host_facts("qemu-system-x86_64"),
            f"Round trip: `sh echo` typed on the serial console until its output comes back,",
            f"median of {ROUND_TRIPS} per run. Target: Nestbox ≤ QEMU.",
            "",
            *table,
            "<!-- linux-boot:end -->",
        ])
        benchdoc.write_section("linux-boot", section)


if __name__ == "__main__":
    main()
