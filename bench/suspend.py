#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Suspend/resume benchmark: Nestbox vs QEMU on the same guest, a 2 GiB VM
whose payload (bench/payloads/touch.S) fills 300 MiB of RAM with a pattern
at CPL3 and then spins.

Nestbox: a library VM (the payload as its firmware, standard VGA, no
disks, network or sound) started with `nestbox start --headless`; timed:
`nestbox suspend ID` (save and end) and `nestbox start ID --headless`
(a new worker restores the state and runs it; the command returns once the
VM runs). QEMU: the same payload, its state saved with the QMP command
`migrate` to a `file:` URI (until query-migrate says completed and the
file is synced, as Nestbox syncs its state file) and
restored by a new QEMU with `-incoming file:...` (from its start until
query-status says running), with QEMU's migration bandwidth cap (128 MiB/s
by default) lifted. Also the size of each saved file.

On a software-only KVM (kvm_pvm) QEMU with -accel kvm stalls at the
payload's first far jump into protected mode, so QEMU runs the guest under
TCG there (said in the results); its save and load code are the same.

Run from the repository root:  python3 bench/suspend.py --runs 3 --write
(builds `nestbox` in release mode first)."""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import benchdoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_MIB = 2048
TOUCH_MIB = 300
TIMEOUT = 120


def wait_for_text(path, needle):
    if not benchdoc.wait_for_text(path, needle, TIMEOUT):
        sys.exit(f"{needle!r} never appeared in {path}")


class Qmp:
    """A QMP connection: one command at a time, events skipped."""

    def __init__(self, path, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        self.file = self.sock.makefile("rw")
        self.file.readline()
        self.command("qmp_capabilities")

    def command(self, name, **arguments):
        message = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        self.file.write(json.dumps(message) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                sys.exit(f"QMP {name}: {reply['error']}")


def qemu_command(image, accel, serial, qmp, incoming=None):
    cmd = ["qemu-system-x86_64", "-accel", accel, "-M", "pc", "-m", str(MEMORY_MIB),
           "-bios", image, "-display", "none", "-nodefaults", "-serial", f"file:{serial}",
           "-qmp", f"unix:{qmp},server=on,wait=off"]
    if incoming:
        cmd += ["-incoming", f"file:{incoming}"]
    return cmd


def run_qemu(image, accel, tmp):
    serial, qmp, state = f"{tmp}/q-serial.log", f"{tmp}/q.qmp", f"{tmp}/q.state"
    for path in (serial, qmp, state):
        if os.path.exists(path):
            os.unlink(path)
    vm = subprocess.Popen(qemu_command(image, accel, serial, qmp), stderr=subprocess.DEVNULL)
    try:
        wait_for_text(serial, "TOUCHED")
        monitor = Qmp(qmp)
        # QEMU caps migration at 128 MiB/s by default; a save to a file
        # should not be.
        monitor.command("migrate-set-parameters", **{"max-bandwidth": 100 << 30})
        start = time.perf_counter()
        monitor.command("migrate", uri=f"file:{state}")
        while monitor.command("query-migrate").get("status") != "completed":
            time.sleep(0.002)
        # Durable, as Nestbox's state file is before `suspend` returns.
        fd = os.open(state, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        save = time.perf_counter() - start
    finally:
        vm.kill()
        vm.wait()
    size = os.path.getsize(state)
    os.unlink(qmp)
    start = time.perf_counter()
    vm = subprocess.Popen(qemu_command(image, accel, f"{tmp}/q-serial2.log", qmp, state),
                          stderr=subprocess.DEVNULL)
    try:
        monitor = Qmp(qmp)
        while monitor.command("query-status").get("status") != "running":
            time.sleep(0.002)
        resume = time.perf_counter() - start
    finally:
        vm.kill()
        vm.wait()
    return save, resume, size


def make_nestbox_vm(nestbox, env, image, home):
    blank = f"{home}/blank.img"
    with open(blank, "wb") as f:
        f.truncate(1 << 20)
    vm_id = subprocess.run([nestbox, "create", "--name", "bench", "--profile", "generic-bios",
                            "--memory", f"{MEMORY_MIB}M", "--disk", blank], env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
    config = f"{home}/data/nestbox/vms/{vm_id}/vm.toml"
    text = open(config).read().split("[[disks]]")[0]
    text = (text.replace('network = "nat"', 'network = "none"')
            .replace('sound = "host"', 'sound = "none"')
            .replace("[display]\n", '[display]\nadapter = "vga"\n')
            .replace('firmware = "seabios"', f'bios = "{image}"'))
    with open(config, "w") as f:
        f.write(text)
    return vm_id


def run_nestbox(nestbox, env, vm_id, home):
    vm_dir = f"{home}/data/nestbox/vms/{vm_id}"
    serial = f"{vm_dir}/serial.log"
    if os.path.exists(serial):
        os.unlink(serial)
    subprocess.run([nestbox, "start", vm_id, "--headless"], env=env, check=True,
                   capture_output=True)
    wait_for_text(serial, "TOUCHED")
    start = time.perf_counter()
    subprocess.run([nestbox, "suspend", vm_id], env=env, check=True, capture_output=True)
    save = time.perf_counter() - start
    size = os.path.getsize(f"{vm_dir}/suspended.state")
    start = time.perf_counter()
    subprocess.run([nestbox, "start", vm_id, "--headless"], env=env, check=True,
                   capture_output=True)
    resume = time.perf_counter() - start
    listed = subprocess.run([nestbox, "list"], env=env, check=True, capture_output=True,
                            text=True).stdout
    if "running" not in listed:
        sys.exit(f"the resumed VM is not running:\n{listed}")
    subprocess.run([nestbox, "kill", vm_id], env=env, check=True, capture_output=True)
    return save, resume, size


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "nestbox"], cwd=ROOT, check=True)
    nestbox = os.path.join(ROOT, "target/release/nestbox")
    accel = "tcg" if benchdoc.software_kvm() else "kvm"
    with tempfile.TemporaryDirectory() as tmp:
        image = benchdoc.build_payload("touch", tmp)
        home = f"{tmp}/home"
        env = benchdoc.env_for(home, os.environ.get("DISPLAY", ":0"))
        vm_id = make_nestbox_vm(nestbox, env, image, home)
        ours, theirs = [], []
        try:
            for _ in range(args.runs):
                ours.append(run_nestbox(nestbox, env, vm_id, home))
                theirs.append(run_qemu(image, accel, tmp))
        finally:
            subprocess.run([nestbox, "kill", vm_id], env=env, capture_output=True)
            shutil.rmtree(home, ignore_errors=True)

    def median(results, index):
        return statistics.median(r[index] for r in results)

    rows = []
    for label, index, unit, scale in [("suspend (save and end)", 0, "s", 1),
                                      ("resume (start from the file)", 1, "s", 1),
                                      ("state file", 2, "MiB", 1 / (1 << 20))]:
        n, q = median(ours, index) * scale, median(theirs, index) * scale
        rows.append(f"| {label} | {n:.3f} {unit} | {q:.3f} {unit} | {n / q:.2f} |")
    for row in rows:
        print(row)
    kvm = ("software-only KVM (`kvm_pvm`); QEMU's guest under TCG, as QEMU with KVM stalls "
           "at the payload's entry to protected mode here" if accel == "tcg"
           else "hardware KVM, both VMMs on it")
    section = "\n".join([
        "<!-- suspend:start -->",
        "## Suspend and resume",
        "",
        f"A {MEMORY_MIB} MiB VM whose guest (`bench/payloads/touch.S`) filled {TOUCH_MIB} MiB",
        "of RAM at CPL3 and spins: Nestbox's `nestbox suspend` / `nestbox start` of a",
        "library VM (standard VGA, no disks) against QEMU's `migrate` to a `file:` URI /",
        "`-incoming file:` of the same payload (QEMU's migration bandwidth cap lifted). Medians of "
        f"{args.runs} runs; {kvm}. {benchdoc.host_facts('qemu-system-x86_64')}",
        "Suspend ends when the state is durable on disk: Nestbox's `suspend` returns",
        "once its state file is written, synced and renamed and its worker has gone;",
        "QEMU's time runs until query-migrate says completed and its file is synced",
        "(QEMU's process is still there then). Resume runs from the command's start until the VM",
        "runs (Nestbox: `start` returned with the VM running; QEMU: query-status",
        "running).",
        "",
        "| | Nestbox | QEMU | Nestbox / QEMU |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Command: `python3 bench/suspend.py --runs {args.runs} --write`",
        "<!-- suspend:end -->",
    ])
    if args.write:
        benchdoc.write_section("suspend", section)
        print("docs/BENCHMARKS.md updated")


if __name__ == "__main__":
    main()
