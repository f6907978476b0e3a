// SPDX-License-Identifier: Apache-2.0
//! Emulated devices: the PC platform (`legacy`), the PCI bus, the
//! firmware configuration interface, the VGA adapters (`vga` is the model,
//! `std_vga` puts it on the buses, `virtio_vga` adds a virtio-gpu to it)
//! and virtio.

pub mod acpi_pm;
pub mod fw_cfg;
pub mod ide;
pub mod irq;
pub mod legacy;
pub mod pci;
pub mod std_vga;
pub mod vga;
pub mod virtio;
pub mod virtio_vga;
