// SPDX-License-Identifier: Apache-2.0
//! Assembles the test payloads in `payloads/` into flat 64 KiB firmware
//! images with the host's gcc and ld.

use std::path::PathBuf;
use std::process::Command;

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed with {status}");
}

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let dir = PathBuf::from("payloads");
    println!("cargo:rerun-if-changed=payloads");
    for entry in std::fs::read_dir(&dir).expect("payloads directory") {
        let path = entry.expect("payload entry").path();
        if path.extension().is_none_or(|e| e != "S") {
            continue;
        }
        let stem = path
            .file_stem()
            .expect("payload name")
            .to_string_lossy()
            .to_string();
        let object = out.join(format!("{stem}.o"));
        let image = out.join(format!("{stem}.bin"));
        run(Command::new("gcc")
            .args(["-m32", "-nostdlib", "-c", "-I"])
            .arg(&dir)
            .arg(&path)
            .arg("-o")
            .arg(&object));
        run(Command::new("ld")
            .args([
                "-m",
                "elf_i386",
                "-Ttext=0",
                "-e",
                "0",
                "--oformat",
                "binary",
                "-o",
            ])
            .arg(&image)
            .arg(&object));
    }
}
