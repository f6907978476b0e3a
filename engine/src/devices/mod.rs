// SPDX-License-Identifier: Apache-2.0
//! Emulated devices: the PC platform (`legacy`), the PCI bus and the
//! firmware configuration interface.

pub mod acpi_pm;
pub mod fw_cfg;
pub mod irq;
pub mod legacy;
pub mod pci;
// The VGA adapter (std VGA with the Bochs DISPI extension) and its renderer.
pub mod vga;
pub mod virtio;
