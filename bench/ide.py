#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""IDE benchmark: Nestbox vs QEMU (-accel kvm) reading a disk through the
PIIX IDE controller's PIO path, on the same payload
(bench/payloads/ide_read.S: 65536 sectors, 32 MiB, READ SECTORS 128 at a
time, a status read and a `rep insw` per sector, from the reset vector).

For each VMM: wall time from process start to exit over N runs, the
median, and the throughput that gives (process start included); prints the
ratio and, with --write, replaces the ide section of docs/BENCHMARKS.md.

Run from the repository root:  python3 bench/ide.py --runs 5 --write"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import benchdoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTORS = 65536
MIB = SECTORS * 512 / (1 << 20)


def measure(cmd):
    """Runs cmd once; returns (seconds, exit status)."""
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, done.returncode


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "nestbox"], cwd=ROOT, check=True)
    nestbox = os.path.join(ROOT, "target/release/nestbox")
    with tempfile.TemporaryDirectory() as tmp:
        image = benchdoc.build_payload("ide_read", tmp)
        disk = os.path.join(tmp, "disk.img")
        with open(disk, "wb") as f:
            f.write(os.urandom(SECTORS * 512))
        serial = os.path.join(tmp, "serial.txt")
        vmms = {
            "nestbox": [nestbox, "run", "--bios", image, "--memory", "64", "--disk", disk + ",ide",
                        "--serial", serial, "--no-reboot"],
            "qemu": ["qemu-system-x86_64", "-accel", "kvm", "-M", "pc", "-m", "64", "-bios", image,
                     "-nodefaults", "-display", "none", "-no-reboot",
                     "-drive", f"file={disk},format=raw,if=ide,index=0",
                     "-device", "isa-debug-exit,iobase=0x501,iosize=2"],
        }
        results = {}
        for name, cmd in vmms.items():
            measure(cmd)  # warm the page cache
            runs = [measure(cmd) for _ in range(args.runs)]
            codes = {code for _, code in runs}
            if codes != {1}:
                sys.exit(f"{name}: unexpected exit statuses {codes} (expected 1: debug exit 0; "
                         "0x31 reports a failed read)")
            results[name] = statistics.median(t for t, _ in runs)

    nb, q = results["nestbox"], results["qemu"]
    qemu_version = benchdoc.qemu_version()
    table = [
        "| VMM | 32 MiB by PIO, start → exit (median) | throughput |",
        "|---|---|---|",
        f"| Nestbox | {nb:.2f} s | {MIB / nb:.1f} MiB/s |",
        f"| {qemu_version} | {q:.2f} s | {MIB / q:.1f} MiB/s |",
        f"| ratio Nestbox/QEMU (throughput) | | {q / nb:.2f} |",
    ]
    print("\n".join(table))
    if args.write:
        section = "\n".join([
            "<!-- ide:start -->",
            "## IDE: reading a disk by PIO",
            "",
            "`python3 bench/ide.py --runs %d --write`" % args.runs,
            "",
            "Guest: `bench/payloads/ide_read.S` as the firmware image (real mode, no BIOS):",
            "READ SECTORS on the primary master, 128 sectors a command, a status read",
            "and a `rep insw` per sector, 65536 sectors of a 32 MiB raw image in the",
            f"page cache; {args.runs} runs each after one warm-up.",
            benchdoc.host_facts("qemu-system-x86_64") + " Both",
            "VMMs' process start and exit are inside the time.",
            "",
            *table,
            "<!-- ide:end -->",
        ])
        benchdoc.write_section("ide", section)


if __name__ == "__main__":
    main()
