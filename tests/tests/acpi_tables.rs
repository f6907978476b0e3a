// SPDX-License-Identifier: Apache-2.0
//! The ACPI tables Nestbox gives firmware-booted VMs, checked by ACPICA's
//! disassembler (Debian's `acpica-tools`): the tables as the firmware's
//! loader links them (the engine's unit tests prove that linking gives
//! exactly the tables built in place) are split by their headers and each
//! one goes through `iasl -d`, which must find no checksum or length
//! problem and must decode the DSDT's `_S5` and `_PRT`.

use std::path::Path;
use std::process::Command;

use engine::boot::acpi::{AcpiConfig, build};
use engine::devices::acpi_pm::{PM_BASE, SCI_IRQ};
use nestbox_tests::require_file;

const IASL: &str = "/usr/bin/iasl";

#[test]
fn test_acpi_tables_for_firmware_pass_iasl() {
    let test = "test_acpi_tables_for_firmware_pass_iasl";
    if require_file(test, Path::new(IASL), "install Debian's acpica-tools").is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("nestbox-acpi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Where SeaBIOS put them in a 512 MiB VM.
    let base = 0x1ffd_0000;
    let config = AcpiConfig {
        vcpus: 2,
        pm_base: PM_BASE,
        sci_irq: SCI_IRQ,
    };
    let built = build(&config, base).unwrap();

    // Follow the pointers as an OS does: the RSDP's XSDT, its entries,
    // the RSDT, the FADT's DSDT and FACS.
    let blob = &built.tables;
    let u32_at =
        |bytes: &[u8], at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let u64_at =
        |bytes: &[u8], at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let offset = |addr: u64| usize::try_from(addr - base).unwrap();
    let xsdt = offset(u64_at(&built.rsdp, 24));
    let mut starts = vec![xsdt];
    let xsdt_len = u32_at(blob, xsdt + 4) as usize;
    for entry in (xsdt + 36..xsdt + xsdt_len).step_by(8) {
        starts.push(offset(u64_at(blob, entry)));
    }
    // ACPI 1.0 guests take the RSDT instead: 32-bit pointers to the same
    // tables.
    let rsdt = offset(u64::from(u32_at(&built.rsdp, 16)));
    let rsdt_len = u32_at(blob, rsdt + 4) as usize;
    let rsdt_entries: Vec<usize> = (rsdt + 36..rsdt + rsdt_len)
        .step_by(4)
        .map(|entry| offset(u64::from(u32_at(blob, entry))))
        .collect();
    assert_eq!(rsdt_entries, starts[1..], "the RSDT and XSDT disagree");
    starts.push(rsdt);
    let fadt = *starts
        .iter()
        .find(|&&at| &blob[at..at + 4] == b"FACP")
        .expect("no FADT in the XSDT");
    starts.push(offset(u64::from(u32_at(blob, fadt + 40))));
    starts.push(offset(u64::from(u32_at(blob, fadt + 36))));
    let mut names = Vec::new();
    for at in starts {
        let signature = String::from_utf8_lossy(&blob[at..at + 4]).into_owned();
        let len = u32_at(blob, at + 4) as usize;
        assert!(len >= 36 || signature == "FACS", "{signature}: {len} bytes");
        let name = format!("{}.dat", signature.to_lowercase());
        std::fs::write(dir.join(&name), &blob[at..at + len]).unwrap();
        names.push(name);
    }
    for name in [
        "xsdt.dat", "rsdt.dat", "facp.dat", "apic.dat", "dsdt.dat", "facs.dat",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }

    let mut problems = Vec::new();
    // (iasl takes no bare RSDP: its checksums are checked under SeaBIOS by
    // app/tests/acpi_power.rs and by the engine's unit tests.)
    for name in &names {
        let out = Command::new(IASL)
            .arg("-d")
            .arg(name)
            .current_dir(&dir)
            .output()
            .expect("iasl");
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let lower = said.to_lowercase();
        if !out.status.success()
            || lower.contains("checksum")
                && (lower.contains("invalid") || lower.contains("incorrect"))
            || lower.contains("error")
        {
            problems.push(format!("{name}: {said}"));
        }
    }
    let dsdt = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);

    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for needle in ["_S5", "_PRT"] {
        assert!(dsdt.contains(needle), "{needle} not in the DSDT:\n{dsdt}");
    }
}
