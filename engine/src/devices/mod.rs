// SPDX-License-Identifier: Apache-2.0
//! Emulated devices: the PC platform (`legacy`), the PCI bus, the
//! firmware configuration interface, the VGA adapter (`vga` is the model,
//! `std_vga` puts it on the buses) and virtio.

pub mod acpi_pm;
pub mod fw_cfg;
pub mod ide;
pub mod irq;
pub mod legacy;
pub mod pci;
pub mod std_vga;
pub mod vga;
pub mod virtio;
