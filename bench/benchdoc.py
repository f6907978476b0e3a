# SPDX-License-Identifier: Apache-2.0
"""Helpers the benchmark scripts share: replacing their section of
docs/BENCHMARKS.md, a private home's environment, finding a free X display number, assembling a
payload from bench/payloads, naming the QEMU that ran and the facts of the
host a run measured on."""
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "docs", "BENCHMARKS.md")


def write_section(name, section):
    """Replaces the text from `<!-- name:start -->` to `<!-- name:end -->`
    in docs/BENCHMARKS.md with `section` (which carries both markers), or
    appends it; written atomically (temp file and rename)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = open(BENCHMARKS).read() if os.path.exists(BENCHMARKS) else "# Nestbox benchmarks\n"
    if start in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp_path = BENCHMARKS + ".tmp"
    with open(tmp_path, "w") as f:
        f.write(text)
    os.replace(tmp_path, BENCHMARKS)


def env_for(home, display):
    """The environment of a Nestbox run in a private home: temp XDG data,
    config and runtime folders under `home`, the X display `display`."""
    env = dict(os.environ, HOME=home, DISPLAY=display, XDG_DATA_HOME=f"{home}/data",
               XDG_CONFIG_HOME=f"{home}/config", XDG_RUNTIME_DIR=f"{home}/run")
    env.pop("WAYLAND_DISPLAY", None)
    for sub in ("data", "config", "run"):
        os.makedirs(f"{home}/{sub}", exist_ok=True)
    os.chmod(f"{home}/run", 0o700)
    return env


def wait_for_text(path, needle, timeout, poll=0.02):
    """Whether the file at `path` came to hold the text `needle` within
    `timeout` seconds (looked at every `poll` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and needle in open(path, errors="replace").read():
            return True
        time.sleep(poll)
    return False


def free_display():
    """A display number with no X server socket or lock file yet."""
    for number in range(300 + os.getpid() % 200, 1000):
        if not os.path.exists(f"/tmp/.X11-unix/X{number}") and not os.path.exists(f"/tmp/.X{number}-lock"):
            return number
    sys.exit("no free X display number")


def build_payload(name, out_dir):
    """Assembles bench/payloads/NAME.S (with tests/payloads/payload.h) into
    a flat 64 KiB firmware image in out_dir; returns its path."""
    obj = os.path.join(out_dir, f"{name}.o")
    image = os.path.join(out_dir, f"{name}.bin")
    subprocess.run(["gcc", "-m32", "-nostdlib", "-c", "-I", os.path.join(ROOT, "tests/payloads"),
                    os.path.join(ROOT, f"bench/payloads/{name}.S"), "-o", obj], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0", "-e", "0", "--oformat", "binary",
                    "-o", image, obj], check=True)
    return image


def cpu_model():
    """The CPU's model name as /proc/cpuinfo gives it."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def software_kvm():
    """Whether /dev/kvm has no hardware virtualization behind it: the
    kvm_pvm module is loaded, or the CPU has neither vmx nor svm."""
    if os.path.exists("/sys/module/kvm_pvm"):
        return True
    try:
        flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
    except OSError:
        return False
    return not ({"vmx", "svm"} & set(flags.split()))


def kvm_kind():
    """What /dev/kvm is here, in words for the results."""
    if not os.path.exists("/dev/kvm"):
        return "no `/dev/kvm`"
    if os.path.exists("/sys/module/kvm_pvm"):
        return "`/dev/kvm` from software-only KVM (`kvm_pvm`: guest kernel mode emulated)"
    if software_kvm():
        return "`/dev/kvm` without hardware virtualization (no vmx/svm)"
    return "`/dev/kvm` with hardware virtualization"


def _load_average():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


# Read when a script imports this module, that is as its run begins.
LOAD_AT_START = _load_average()


def host_facts(qemu=None):
    """One sentence of the facts of this host, measured (not assumed):
    architecture, CPU model, CPUs, what /dev/kvm is, the load average when
    the run began, the kernel and, given its binary, the QEMU that ran."""
    facts = (f"Host: {platform.machine()}, {cpu_model()}, {os.cpu_count()} CPUs, "
             f"{kvm_kind()}, load average {LOAD_AT_START} as the run began, "
             f"Linux {platform.release()}")
    if qemu:
        facts += f"; {qemu_version(qemu)}"
    return facts + "."


def qemu_version(qemu="qemu-system-x86_64"):
    """The first line of `qemu --version`, for the results table."""
    return subprocess.run([qemu, "--version"], capture_output=True,
                          text=True).stdout.splitlines()[0]
