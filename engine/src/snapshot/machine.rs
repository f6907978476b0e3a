// SPDX-License-Identifier: Apache-2.0
//! Saving a whole paused machine into a state file and reading one back
//! into a VM being built. A file holds, in order: the header (Nestbox's
//! version and the [`MachineShape`]), the firmware flash, guest RAM, the
//! VM-wide KVM state, each vCPU, then each device on the port and MMIO
//! buses (by address). RAM comes before the rest because restoring them
//! may read it (KVM loads PAE page-directory pointers with the system
//! registers; a device looks at its queues again). Every device on a bus must say what it saves (see
//! [`DeviceState`]); one that cannot be saved makes the save fail with
//! its name, before anything is written.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kvm_ioctls::{VcpuFd, VmFd};

use super::file::{SectionKind, StateReader, StateWriter};
use super::kvm_state::{VcpuState, VmState};
use super::ram::{self, RamStats};
use super::{Header, MachineShape, StateError, decode, encode};
use crate::bus::{Bus, DeviceState, SharedDevice};
use crate::control::VmControl;
use crate::event_loop::LoopGate;
use crate::vcpu::VcpuShared;

/// How long a paused vCPU has to hand over its state.
const VCPU_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the event loop has to finish what it is serving.
const EVENT_LOOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The devices a state holds, named by where they sit, in bus order.
pub fn saved_devices(pio: &Bus, mmio: &Bus) -> Result<Vec<(String, SharedDevice)>, StateError> {
    let mut saved = Vec::new();
    for (bus, kind) in [(pio, "port"), (mmio, "mmio")] {
        for (base, _len, device) in bus.devices() {
            let place = format!("{kind} {base:#x}");
            let role = match device.lock().unwrap_or_else(|e| e.into_inner()).state() {
                DeviceState::Saved(_) => Ok(true),
                DeviceState::Stateless => Ok(false),
                DeviceState::Unsupported(what) => Err(format!("{what} (at {place})")),
            };
            match role {
                Ok(true) => saved.push((place, device)),
                Ok(false) => {}
                Err(what) => return Err(StateError::Unsupported(what)),
            }
        }
    }
    Ok(saved)
}

fn quiesce(place: &str, device: &SharedDevice) -> Result<(), StateError> {
    let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
    match device.state() {
        DeviceState::Saved(persist) => persist.quiesce(),
        _ => Err(StateError::Unsupported(place.to_string())),
    }
}

fn device_bytes(place: &str, device: &SharedDevice) -> Result<Vec<u8>, StateError> {
    let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
    match device.state() {
        DeviceState::Saved(persist) => persist.save(),
        _ => Err(StateError::Unsupported(place.to_string())),
    }
}

/// What a running VM offers a save.
pub struct SaveParts<'a> {
    /// The VM.
    pub vm: &'a VmFd,
    /// Its control (pause, pokes).
    pub control: &'a VmControl,
    /// Kicks every vCPU out of the guest.
    pub kick: &'a dyn Fn(),
    /// The gate of the VM's event loop, when it has one.
    pub events: Option<&'a Arc<LoopGate>>,
    /// The vCPUs' shared flags, in vCPU order.
    pub vcpus: &'a [Arc<VcpuShared>],
    /// The MSRs to save.
    pub msrs: Arc<[u32]>,
    /// The port bus.
    pub pio: &'a Bus,
    /// The MMIO bus.
    pub mmio: &'a Bus,
    /// The guest RAM file.
    pub ram: &'a File,
    /// RAM size.
    pub memory_bytes: u64,
    /// The firmware flash, if the VM booted firmware.
    pub firmware: Option<&'a [u8]>,
}

/// What a save wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveReport {
    /// The file's size.
    pub file_bytes: u64,
    /// Guest RAM written.
    pub ram: RamStats,
}

/// Pauses the VM (it stays paused) and writes its whole state to `path`.
/// Nothing is written when a device cannot be saved; a failed save leaves
/// whatever was at `path` before, and the VM running if it was.
pub fn save(parts: &SaveParts<'_>, path: &Path) -> Result<SaveReport, StateError> {
    let devices = saved_devices(parts.pio, parts.mmio)?;
    let was_paused = parts.control.is_paused();
    parts.control.set_paused(true);
    (parts.kick)();
    let result = save_paused(parts, &devices, path);
    if result.is_err() {
        for vcpu in parts.vcpus {
            vcpu.cancel_state_request();
        }
        if !was_paused {
            parts.control.set_paused(false);
        }
    }
    result
}

fn save_paused(
    parts: &SaveParts<'_>,
    devices: &[(String, SharedDevice)],
    path: &Path,
) -> Result<SaveReport, StateError> {
    // No device serves a queue, plays a timer or takes host input from
    // here to the end of the save; requests devices hold are completed
    // before the vCPUs and interrupt controllers are captured, so no
    // interrupt they raise is lost.
    let _held = match parts.events {
        Some(gate) => {
            Some(
                gate.hold(EVENT_LOOP_TIMEOUT)
                    .map_err(|source| StateError::Quiesce {
                        what: "its event loop did not stop".to_string(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    for (place, device) in devices {
        quiesce(place, device)?;
    }
    for vcpu in parts.vcpus {
        vcpu.request_state(parts.msrs.clone());
    }
    parts.control.poke();
    let mut vcpus = Vec::with_capacity(parts.vcpus.len());
    for (index, vcpu) in parts.vcpus.iter().enumerate() {
        if parts.control.is_stopping() {
            return Err(StateError::Stopped);
        }
        match vcpu.take_state(VCPU_ANSWER_TIMEOUT) {
            Some(state) => vcpus.push(state?),
            None => return Err(StateError::VcpuTimeout(index as u32)),
        }
    }
    let vm_state = VmState::capture(parts.vm)?;
    let mut device_states = Vec::with_capacity(devices.len());
    for (place, device) in devices {
        device_states.push((place.clone(), device_bytes(place, device)?));
    }
    let header = Header {
        nestbox: env!("CARGO_PKG_VERSION").to_string(),
        shape: MachineShape {
            memory_bytes: parts.memory_bytes,
            vcpus: parts.vcpus.len() as u32,
            firmware_bytes: parts.firmware.map_or(0, |f| f.len() as u64),
            devices: devices.iter().map(|(place, _)| place.clone()).collect(),
        },
    };

    let mut out = StateWriter::create(path)?;
    out.section(SectionKind::Header, &[&encode("header", &header)?])?;
    if let Some(firmware) = parts.firmware {
        out.section(SectionKind::Firmware, &[firmware])?;
    }
    let ram = ram::save(parts.ram, parts.memory_bytes, &mut out)?;
    out.section(SectionKind::Vm, &[&encode("VM", &vm_state)?])?;
    for vcpu in &vcpus {
        out.section(SectionKind::Vcpu, &[&encode("vCPU", vcpu)?])?;
    }
    for entry in &device_states {
        out.section(SectionKind::Device, &[&encode("device", entry)?])?;
    }
    let file_bytes = out.finish()?;
    Ok(SaveReport { file_bytes, ram })
}

/// A state file being read into a VM under construction, one part at a
/// time in the file's order.
pub struct Restore {
    reader: StateReader,
    header: Header,
    payload: Vec<u8>,
    /// A section read past the RAM, its payload in `payload`.
    held: Option<SectionKind>,
}

impl Restore {
    /// Opens `path` and checks that its machine has `memory_bytes` of RAM,
    /// `vcpus` vCPUs and firmware when `firmware` (the devices are
    /// checked once they are built: [`check_devices`](Self::check_devices)).
    pub fn open(
        path: &Path,
        memory_bytes: u64,
        vcpus: u32,
        firmware: bool,
    ) -> Result<Self, StateError> {
        let mut reader = StateReader::open(path)?;
        let bytes = reader.expect(SectionKind::Header)?;
        let header: Header = decode("header", &bytes).map_err(|_| reader.corrupt("its header"))?;
        let saved = &header.shape;
        let this = MachineShape {
            memory_bytes,
            vcpus,
            firmware_bytes: if firmware && saved.firmware_bytes > 0 {
                saved.firmware_bytes
            } else if firmware {
                // Any size differs from none.
                u64::MAX
            } else {
                0
            },
            devices: saved.devices.clone(),
        };
        this.check_fits(saved)?;
        Ok(Self {
            reader,
            header,
            payload: Vec::new(),
            held: None,
        })
    }

    /// The saved machine's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The firmware flash's bytes, if the saved VM had firmware.
    pub fn firmware(&mut self) -> Result<Option<Vec<u8>>, StateError> {
        if self.header.shape.firmware_bytes == 0 {
            return Ok(None);
        }
        let bytes = self.reader.expect(SectionKind::Firmware)?;
        if bytes.len() as u64 != self.header.shape.firmware_bytes {
            return Err(self
                .reader
                .corrupt("the firmware is not the size its header says"));
        }
        Ok(Some(bytes))
    }

    /// The next section, which must be of `kind`.
    fn expect(&mut self, kind: SectionKind) -> Result<Vec<u8>, StateError> {
        match self.held.take() {
            Some(held) if held == kind => Ok(std::mem::take(&mut self.payload)),
            Some(held) => Err(self
                .reader
                .corrupt(format!("a {kind:?} section was expected, not {held:?}"))),
            None => self.reader.expect(kind),
        }
    }

    /// Fills guest RAM (`size` bytes in `ram`) from the file: every page
    /// it does not hold is zero.
    pub fn ram(&mut self, ram: &Arc<File>, size: u64) -> Result<(), StateError> {
        let write_error = |source| StateError::Write {
            path: "guest RAM".into(),
            source,
        };
        ram::clear(ram, size).map_err(write_error)?;
        // Runs are read straight into the RAM file's pages.
        let mut target = ram::RamTarget::map(ram, size).map_err(write_error)?;
        loop {
            let kind = self
                .reader
                .next_ram_or_into(&mut self.payload, &mut target)?;
            if kind != SectionKind::Ram {
                self.held = Some(kind);
                return Ok(());
            }
        }
    }

    /// Sets the VM-wide KVM state (the irqchip and PIT must exist).
    pub fn vm(&mut self, vm: &VmFd) -> Result<(), StateError> {
        let bytes = self.expect(SectionKind::Vm)?;
        let state: VmState = decode("VM", &bytes)?;
        state.apply(vm)
    }

    /// Checks the built VM's devices against the saved ones.
    pub fn check_devices(&self, devices: &[(String, SharedDevice)]) -> Result<(), StateError> {
        let this = MachineShape {
            devices: devices.iter().map(|(place, _)| place.clone()).collect(),
            ..self.header.shape.clone()
        };
        this.check_fits(&self.header.shape)
    }

    /// Sets the next vCPU's state.
    pub fn vcpu(&mut self, fd: &VcpuFd) -> Result<(), StateError> {
        let bytes = self.expect(SectionKind::Vcpu)?;
        let state: VcpuState = decode("vCPU", &bytes)?;
        state.apply(fd)
    }

    /// Restores every device in `devices` (as [`saved_devices`] lists
    /// them, checked with [`check_devices`](Self::check_devices)).
    pub fn devices(&mut self, devices: &[(String, SharedDevice)]) -> Result<(), StateError> {
        for (place, device) in devices {
            let bytes = self.expect(SectionKind::Device)?;
            let (saved_place, state): (String, Vec<u8>) = decode("device", &bytes)?;
            if &saved_place != place {
                return Err(self.reader.corrupt(format!(
                    "the device at {saved_place} is saved where the one at {place} belongs"
                )));
            }
            let mut device = device.lock().unwrap_or_else(|e| e.into_inner());
            match device.state() {
                DeviceState::Saved(persist) => persist.restore(&state)?,
                _ => return Err(StateError::Unsupported(place.clone())),
            }
        }
        Ok(())
    }

    /// Checks that the file ends here.
    pub fn finish(mut self) -> Result<(), StateError> {
        self.expect(SectionKind::End).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::bus::BusDevice;

    /// A device that says nothing about its state.
    struct Silent;

    impl BusDevice for Silent {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) {}
    }

    /// A device with nothing to save.
    struct Plain;

    impl BusDevice for Plain {
        fn state(&mut self) -> DeviceState<'_> {
            DeviceState::Stateless
        }
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) {}
    }

    #[test]
    fn test_a_device_that_says_nothing_refuses_the_save_with_its_name_and_place() {
        let pio = Bus::new();
        let mmio = Bus::new();
        pio.insert(Arc::new(Mutex::new(Plain)), 0x60, 1).unwrap();
        mmio.insert(Arc::new(Mutex::new(Silent)), 0xfeb0_0000, 0x1000)
            .unwrap();

        let error = saved_devices(&pio, &mmio).err().unwrap();

        let message = error.to_string();
        assert!(matches!(error, StateError::Unsupported(_)), "{message}");
        assert!(
            message.contains("cannot be saved yet")
                && message.contains("Silent")
                && message.contains("mmio 0xfeb00000"),
            "{message}"
        );
    }

    #[test]
    fn test_stateless_devices_are_left_out_of_the_state() {
        let pio = Bus::new();
        let mmio = Bus::new();
        pio.insert(Arc::new(Mutex::new(Plain)), 0x60, 1).unwrap();

        assert!(saved_devices(&pio, &mmio).unwrap().is_empty());
    }
}
