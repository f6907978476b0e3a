// SPDX-License-Identifier: Apache-2.0
//! Firmware boot: the image is mapped under 4 GiB (see `memory`), and the
//! fw_cfg device describes the machine to it the way QEMU does, so Debian's
//! SeaBIOS (and any firmware written for QEMU) runs unchanged.

use crate::devices::fw_cfg::{FwCfg, FwCfgError, e820_file, key};
use crate::layout::{RamLayout, firmware_e820};

/// How long the boot menu prompt waits for a key, in milliseconds.
const BOOT_MENU_WAIT_MS: u16 = 3000;

/// How the firmware should present itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareOptions {
    /// Mirror the firmware's text console to COM1 (SeaBIOS "sercon"), for
    /// VMs without a screen.
    pub serial_console: bool,
    /// Show the boot menu prompt.
    pub boot_menu: bool,
}

/// Fills fw_cfg with what firmware reads about the machine.
pub fn describe_machine(
    fw_cfg: &mut FwCfg,
    ram: RamLayout,
    vcpus: u32,
    options: FirmwareOptions,
) -> Result<(), FwCfgError> {
    let cpus = u16::try_from(vcpus).unwrap_or(u16::MAX);
    fw_cfg.set_item(key::RAM_SIZE, ram.total().to_le_bytes().to_vec());
    fw_cfg.set_item(key::NB_CPUS, cpus.to_le_bytes().to_vec());
    fw_cfg.set_item(key::MAX_CPUS, cpus.to_le_bytes().to_vec());
    fw_cfg.set_item(
        key::NOGRAPHIC,
        u16::from(options.serial_console).to_le_bytes().to_vec(),
    );
    fw_cfg.set_item(
        key::BOOT_MENU,
        u16::from(options.boot_menu).to_le_bytes().to_vec(),
    );
    if options.boot_menu {
        // How long SeaBIOS offers "Press ESC for boot menu", in ms.
        fw_cfg.add_file(
            "etc/boot-menu-wait",
            BOOT_MENU_WAIT_MS.to_le_bytes().to_vec(),
        )?;
    }
    fw_cfg.add_file("etc/e820", e820_file(&firmware_e820(ram)))?;
    if options.serial_console {
        let com1 = crate::devices::legacy::serial::COM1_BASE as u16;
        fw_cfg.add_file("etc/sercon-port", com1.to_le_bytes().to_vec())?;
    }
    Ok(())
}
