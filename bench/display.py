#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Guest screen and input latency benchmark.

Display: `app/examples/display_latency.rs` in a real eframe window (glow on
Mesa llvmpipe) under a private Xvfb, at 1024x768 and 1920x1080: guest flush
-> texture updated in the UI pass (p50, p99), the paint CPU time eframe
reports for that frame, frames shown per second when the guest flushes as
fast as the window takes them, and one frame's memcpy as the limit.

Input: `engine/examples/input_latency.rs`: a key pushed through the
virtio-input device's sender until the device signals the used queue (the
device thread woken by its event fd, as the event loop does), and a PS/2
key into the i8042 until IRQ 1.

Usage: python3 bench/display.py [--seconds 5] [--write]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import benchdoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ["1024x768", "1920x1080"]


def cargo(*args):
    subprocess.run(["cargo", *args], cwd=ROOT, check=True)


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def run_display(display, size, seconds):
    exe = os.path.join(ROOT, "target", "release", "examples", "display_latency")
    env = dict(os.environ, DISPLAY=display, XDG_RUNTIME_DIR=tempfile.mkdtemp())
    env.pop("WAYLAND_DISPLAY", None)
    out = subprocess.run([exe, size, str(seconds)], env=env, capture_output=True,
                         text=True, timeout=120 + 4 * seconds)
    result = {}
    for line in out.stdout.splitlines():
        result.update(fields(line))
    if "fps" not in result:
        sys.exit(f"display_latency {size} failed:\n{out.stdout}\n{out.stderr}")
    return result


def run_input():
    exe = os.path.join(ROOT, "target", "release", "examples", "input_latency")
    out = subprocess.run([exe, "20000"], capture_output=True, text=True, check=True)
    rows = []
    for line in out.stdout.splitlines():
        name, rest = line.split(":", 1)
        f = dict(re.findall(r"(\w+)=([\d.]+)", rest))
        rows.append((name.strip(), f))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    cargo("build", "--release", "-p", "nestbox", "--example", "display_latency")
    cargo("build", "--release", "-p", "engine", "--example", "input_latency")

    number = benchdoc.free_display()
    display = f":{number}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "2560x1600x24", "-nolisten", "tcp", "-noreset"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(f"/tmp/.X11-unix/X{number}"):
                break
            time.sleep(0.05)
        shown = {size: run_display(display, size, args.seconds) for size in SIZES}
    finally:
        xvfb.kill()
    inputs = run_input()

    lines = [
        "<!-- display:start -->",
        "## Guest screen and input latency",
        "",
        f"`python3 bench/display.py --seconds {args.seconds:g} --write`",
        "",
        "Display: a writer thread plays the guest, writing whole BGRX frames into",
        "the shared framebuffer and publishing them (what the virtio-gpu sink does",
        "on RESOURCE_FLUSH); an eframe window (glow, Mesa llvmpipe, Xvfb) shows them",
        "through `GuestView` as the VM window does. Latency: one flush every",
        "16.7 ms, from publish to the end of the UI pass that uploaded the frame,",
        "plus the paint CPU time eframe reports for that frame. Throughput: a new",
        "frame as soon as the window took the last.",
        benchdoc.host_facts(),
        "Targets: at most one frame (16.7 ms) added latency.",
        "",
        "| size | flush → upload p50 | p99 | paint p50 | frames/s | memcpy of a frame |",
        "|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        r = shown[size]
        lines.append(
            f"| {size} | {float(r['flush_to_upload_p50_ms']):.2f} ms | {float(r['flush_to_upload_p99_ms']):.2f} ms"
            f" | {float(r['paint_p50_ms']):.2f} ms | {float(r['fps']):.1f} | {float(r['memcpy_frame_ms']):.3f} ms |")
    lines += [
        "",
        "Input: 20,000 key events each; target p99 ≤ 2 ms.",
        "",
        "| path | p50 | p99 | max |",
        "|---|---|---|---|",
    ]
    for name, f in inputs:
        lines.append(f"| {name} | {float(f['p50']):.1f} µs | {float(f['p99']):.1f} µs | {float(f['max']):.1f} µs |")
    lines.append("<!-- display:end -->")
    section = "\n".join(lines)
    print(section)
    if args.write:
        benchdoc.write_section("display", section)


if __name__ == "__main__":
    main()
