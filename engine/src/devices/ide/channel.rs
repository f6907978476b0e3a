// SPDX-License-Identifier: Apache-2.0
//! One IDE channel: the task-file registers both of its devices share,
//! and up to two drives — ATA hard disks and ATAPI CD-ROMs — speaking PIO.
//!
//! Commands run at once, on the vCPU thread that writes the command
//! register, so BSY is never seen: a data-in command has its first block
//! ready (DRQ) when the write returns, a data-out command waits for the
//! guest to fill a block, and every block and completion raises the
//! channel's interrupt unless nIEN is set. Everything the guest writes is
//! checked: addresses past the disk end the command with IDNF, unknown
//! commands and features with ABRT, and a CD-ROM packet goes through
//! [`atapi::Drive::execute`]. Failed image reads or writes end the command
//! with UNC (or a MEDIUM ERROR sense on a CD-ROM) and are logged,
//! rate-limited.

mod persist;

use super::atapi::{self, Reply, Sense};
use super::identify::{self, DriveInfo, MAX_MULTIPLE, Position};
use crate::bus::BusDevice;
use crate::devices::irq::InterruptLine;
use crate::devices::virtio::ErrorLog;
use crate::devices::virtio::block::DiskBackend;

/// Bytes in an ATA sector.
pub const SECTOR: u64 = 512;
/// Ports of the command block (data .. status/command).
pub const COMMAND_PORTS: u64 = 8;

// Command block offsets.
const DATA: u64 = 0;
const ERROR_FEATURES: u64 = 1;
const SECTOR_COUNT: u64 = 2;
const LBA_LOW: u64 = 3;
const LBA_MID: u64 = 4;
const LBA_HIGH: u64 = 5;
const DEVICE: u64 = 6;
const STATUS_COMMAND: u64 = 7;

// Status bits.
const BSY: u8 = 0x80;
const DRDY: u8 = 0x40;
const DSC: u8 = 0x10;
const DRQ: u8 = 0x08;
const ERR: u8 = 0x01;
// Error bits.
const ABRT: u8 = 0x04;
const IDNF: u8 = 0x10;
const UNC: u8 = 0x40;
// Device control bits.
const NIEN: u8 = 0x02;
const SRST: u8 = 0x04;
const HOB: u8 = 0x80;
// Device register bits.
const DEV: u8 = 0x10;
const LBA_MODE: u8 = 0x40;
// ATAPI interrupt reason (the sector count register).
const REASON_COMMAND: u8 = 0x01;
const REASON_TO_HOST: u8 = 0x02;
/// The largest byte count an ATAPI data block may have.
const MAX_BYTE_COUNT: usize = 0xfffe;

/// What kind of drive an image is attached as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// An ATA hard disk (512-byte sectors).
    Disk,
    /// An ATAPI CD-ROM drive with the image as its disc (2048-byte
    /// sectors, read-only).
    Cdrom,
}

/// A drive to put on a channel.
pub struct DriveConfig {
    /// The image; None only for a CD-ROM drive with its tray empty.
    pub backend: Option<Box<dyn DiskBackend>>,
    /// Disk or CD-ROM.
    pub medium: Medium,
    /// The serial number it reports (at most 20 characters).
    pub serial: String,
}

enum Kind {
    Disk {
        sectors: u64,
        /// Sectors a READ/WRITE MULTIPLE block holds; 0 until set.
        multiple: u8,
        /// The geometry CHS addresses use (INITIALIZE DEVICE PARAMETERS).
        heads: u64,
        per_track: u64,
    },
    Cdrom(atapi::Drive),
}

struct Drive {
    backend: Option<Box<dyn DiskBackend>>,
    kind: Kind,
    serial: String,
    status: u8,
    error: u8,
}

impl Drive {
    fn new(config: DriveConfig) -> Self {
        let size = config.backend.as_ref().map(|b| b.size());
        let kind = match config.medium {
            Medium::Disk => Kind::Disk {
                sectors: size.unwrap_or(0) / SECTOR,
                multiple: 0,
                heads: identify::HEADS,
                per_track: identify::SECTORS_PER_TRACK,
            },
            Medium::Cdrom => Kind::Cdrom(match size {
                Some(size) => atapi::Drive::with_disc(size / atapi::SECTOR),
                None => atapi::Drive::default(),
            }),
        };
        let mut drive = Self {
            backend: config.backend,
            kind,
            serial: config.serial,
            status: 0,
            error: 0,
        };
        drive.reset();
        drive
    }

    fn is_cdrom(&self) -> bool {
        matches!(self.kind, Kind::Cdrom(_))
    }

    fn reset(&mut self) {
        self.error = 0x01; // diagnostics passed
        self.status = if self.is_cdrom() { 0 } else { DRDY | DSC };
    }

    /// The signature a reset leaves in sector count and LBA registers.
    fn signature(&self) -> [u8; 4] {
        if self.is_cdrom() {
            [0x01, 0x01, 0x14, 0xeb]
        } else {
            [0x01, 0x01, 0x00, 0x00]
        }
    }
}

/// What comes after the guest has read a data block.
enum AfterRead {
    Nothing,
    Sectors { lba: u64, left: u64, block: u64 },
    Packet(PacketData),
}

/// What comes after the guest has written a data block.
enum AfterWrite {
    Sectors { lba: u64, left: u64, block: u64 },
    Packet { byte_count: usize },
}

/// An ATAPI reply on its way to the guest, in blocks of at most
/// `byte_count` bytes: `carry` first, then `sectors` from `lba`.
struct PacketData {
    carry: Vec<u8>,
    lba: u64,
    sectors: u64,
    byte_count: usize,
}

enum Transfer {
    Idle,
    ToGuest {
        drive: usize,
        buf: Vec<u8>,
        pos: usize,
        next: AfterRead,
    },
    FromGuest {
        drive: usize,
        buf: Vec<u8>,
        pos: usize,
        next: AfterWrite,
    },
}

/// Why a command failed, for the log.
#[derive(Debug, thiserror::Error)]
enum IdeError {
    #[error("{name}: reading the image failed")]
    Read {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: writing the image failed")]
    Write {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: flushing the image failed")]
    Flush {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// An IDE channel (primary or secondary) with its drives.
pub struct Channel {
    name: &'static str,
    drives: [Option<Drive>; 2],
    /// Task file, current and previous value (the HOB bytes of LBA48).
    features: [u8; 2],
    count: [u8; 2],
    lba_low: [u8; 2],
    lba_mid: [u8; 2],
    lba_high: [u8; 2],
    device: u8,
    control: u8,
    /// The signature each drive put in its own task file at the last
    /// reset, until the guest writes the task file (a write reaches both
    /// drives' registers). Each drive of a real channel has its own
    /// registers; this model keeps one set and shows the selected drive's
    /// signature when the guest selects it, which is when they differ:
    /// Linux's libata selects each drive after a reset and classifies it
    /// by the signature it reads.
    signatures: [Option<[u8; 4]>; 2],
    transfer: Transfer,
    irq: Box<dyn InterruptLine>,
    errors: ErrorLog,
}

impl Channel {
    /// A channel called `name` (for logs) raising `irq`, with drives at
    /// device 0 and 1.
    pub fn new(
        name: &'static str,
        irq: Box<dyn InterruptLine>,
        master: Option<DriveConfig>,
        slave: Option<DriveConfig>,
    ) -> Self {
        let mut channel = Self {
            name,
            drives: [master.map(Drive::new), slave.map(Drive::new)],
            features: [0; 2],
            count: [0; 2],
            lba_low: [0; 2],
            lba_mid: [0; 2],
            lba_high: [0; 2],
            device: 0,
            control: 0,
            signatures: [None; 2],
            transfer: Transfer::Idle,
            irq,
            errors: ErrorLog::default(),
        };
        channel.reset();
        channel
    }

    fn selected(&self) -> usize {
        usize::from(self.device & DEV != 0)
    }

    fn drive(&mut self) -> Option<&mut Drive> {
        let index = self.selected();
        self.drives.get_mut(index).and_then(Option::as_mut)
    }

    fn reset(&mut self) {
        self.transfer = Transfer::Idle;
        self.device = 0;
        for (drive, signature) in self.drives.iter_mut().zip(self.signatures.iter_mut()) {
            *signature = drive.as_mut().map(|drive| {
                drive.reset();
                drive.signature()
            });
        }
        if let Some(signature) = self.signatures.iter().flatten().next().copied() {
            self.load_signature(signature);
        }
    }

    /// Puts a drive's reset signature in the task file registers.
    fn load_signature(&mut self, [count, low, mid, high]: [u8; 4]) {
        self.count = [count; 2];
        self.lba_low = [low; 2];
        self.lba_mid = [mid; 2];
        self.lba_high = [high; 2];
    }

    fn raise(&self) {
        if self.control & NIEN == 0 {
            self.irq.pulse();
        }
    }

    /// Status of the selected drive: 0 for an absent device 1 (device 0
    /// answers for it), all ones on a channel with no drives.
    fn status(&self) -> u8 {
        if self.control & SRST != 0 && self.drives.iter().any(Option::is_some) {
            return BSY;
        }
        match self.drives.get(self.selected()).and_then(Option::as_ref) {
            Some(drive) => drive.status,
            None if self.drives.iter().any(Option::is_some) => 0,
            None => 0xff,
        }
    }

    fn read_register(&mut self, offset: u64) -> u8 {
        if self.drives.iter().all(Option::is_none) {
            return 0xff;
        }
        // With HOB set, the previous values (LBA48's high bytes).
        let pick = |reg: [u8; 2]| {
            if self.control & HOB != 0 {
                reg[1]
            } else {
                reg[0]
            }
        };
        match offset {
            ERROR_FEATURES => self.drive().map_or(0, |d| d.error),
            SECTOR_COUNT => pick(self.count),
            LBA_LOW => pick(self.lba_low),
            LBA_MID => pick(self.lba_mid),
            LBA_HIGH => pick(self.lba_high),
            DEVICE => self.device,
            STATUS_COMMAND => self.status(),
            _ => 0xff,
        }
    }

    fn write_register(&mut self, offset: u64, value: u8) {
        let shift = |reg: &mut [u8; 2]| *reg = [value, reg[0]];
        if offset != DEVICE {
            // Both drives latch it: their registers agree from now on.
            self.signatures = [None; 2];
        }
        match offset {
            ERROR_FEATURES => shift(&mut self.features),
            SECTOR_COUNT => shift(&mut self.count),
            LBA_LOW => shift(&mut self.lba_low),
            LBA_MID => shift(&mut self.lba_mid),
            LBA_HIGH => shift(&mut self.lba_high),
            DEVICE => {
                self.device = value;
                if let Some(signature) = self.signatures.get(self.selected()).copied().flatten() {
                    self.load_signature(signature);
                }
            }
            STATUS_COMMAND => self.command(value),
            _ => {}
        }
        // A write to the command block ends reads of the HOB bytes.
        self.control &= !HOB;
    }

    /// The device control register: nIEN, SRST (a reset when it is
    /// cleared again) and HOB.
    pub fn write_control(&mut self, value: u8) {
        let was_resetting = self.control & SRST != 0;
        self.control = value;
        if was_resetting && value & SRST == 0 {
            self.reset();
        }
    }

    /// The alternate status register (status without side effects).
    pub fn alternate_status(&self) -> u8 {
        self.status()
    }

    fn command(&mut self, command: u8) {
        let selected = self.selected();
        let Some(drive) = self.drives.get(selected).and_then(Option::as_ref) else {
            // Nobody is there to take it.
            return;
        };
        self.transfer = Transfer::Idle;
        if drive.is_cdrom() {
            self.packet_device_command(selected, command);
        } else {
            self.disk_command(selected, command);
        }
    }

    fn finish(&mut self, drive: usize, status: u8, error: u8) {
        self.transfer = Transfer::Idle;
        if let Some(d) = self.drives.get_mut(drive).and_then(Option::as_mut) {
            d.status = status;
            d.error = error;
        }
        self.raise();
    }

    fn abort(&mut self, drive: usize) {
        self.finish(drive, DRDY | DSC | ERR, ABRT);
    }

    fn set_status(&mut self, drive: usize, status: u8) {
        if let Some(d) = self.drives.get_mut(drive).and_then(Option::as_mut) {
            d.status = status;
            d.error = 0;
        }
    }

    fn position(&self, drive: usize) -> Position {
        match (drive, self.drives[1].is_some()) {
            (0, false) => Position::MasterAlone,
            (0, true) => Position::MasterWithSlave,
            _ => Position::Slave,
        }
    }

    fn identify(&mut self, drive: usize) {
        let position = self.position(drive);
        let Some(d) = self.drives.get(drive).and_then(Option::as_ref) else {
            return;
        };
        let model = if d.is_cdrom() {
            "Nestbox CD-ROM"
        } else {
            "Nestbox hard disk"
        };
        let info = DriveInfo {
            serial: &d.serial,
            model,
            position,
        };
        let words = match d.kind {
            Kind::Disk {
                sectors, multiple, ..
            } => identify::disk(&info, sectors, multiple),
            Kind::Cdrom(_) => identify::cdrom(&info),
        };
        let status = if d.is_cdrom() {
            DRDY | DRQ
        } else {
            DRDY | DSC | DRQ
        };
        self.start_to_guest(
            drive,
            identify::to_bytes(&words),
            AfterRead::Nothing,
            status,
        );
    }

    fn start_to_guest(&mut self, drive: usize, buf: Vec<u8>, next: AfterRead, status: u8) {
        self.set_status(drive, status);
        self.transfer = Transfer::ToGuest {
            drive,
            buf,
            pos: 0,
            next,
        };
        self.raise();
    }

    fn disk_command(&mut self, drive: usize, command: u8) {
        match command {
            0xec => self.identify(drive),
            0x20 | 0x21 => self.start_read(drive, false, false),
            0x24 => self.start_read(drive, true, false),
            0xc4 => self.start_read(drive, false, true),
            0x29 => self.start_read(drive, true, true),
            0x30 | 0x31 => self.start_write(drive, false, false),
            0x34 => self.start_write(drive, true, false),
            0xc5 => self.start_write(drive, false, true),
            0x39 => self.start_write(drive, true, true),
            0x40 | 0x41 => self.verify(drive, false),
            0x42 => self.verify(drive, true),
            0xc6 => self.set_multiple(drive),
            0x91 => self.set_geometry(drive),
            0xef => self.set_features(drive),
            0xe7 | 0xea => self.flush(drive),
            0x90 => self.diagnose(),
            // RECALIBRATE, SEEK, power management: nothing to do.
            0x10..=0x1f | 0x70..=0x7f | 0xe0..=0xe3 | 0xe6 | 0x94..=0x99 => {
                self.finish(drive, DRDY | DSC, 0)
            }
            0xe5 => {
                // CHECK POWER MODE: active.
                self.count[0] = 0xff;
                self.finish(drive, DRDY | DSC, 0);
            }
            _ => self.abort(drive),
        }
    }

    fn packet_device_command(&mut self, drive: usize, command: u8) {
        match command {
            0xa1 => self.identify(drive),
            0xa0 => {
                if self.features[0] & 0x01 != 0 {
                    // DMA: this controller has no bus master.
                    self.abort(drive);
                    return;
                }
                let byte_count = usize::from(self.lba_mid[0]) | usize::from(self.lba_high[0]) << 8;
                self.count[0] = REASON_COMMAND;
                self.set_status(drive, DRDY | DRQ);
                self.transfer = Transfer::FromGuest {
                    drive,
                    buf: vec![0; 12],
                    pos: 0,
                    next: AfterWrite::Packet { byte_count },
                };
            }
            // IDENTIFY DEVICE: a packet device aborts it and shows its
            // signature, so drivers know to use IDENTIFY PACKET DEVICE.
            0xec => {
                self.show_signature(drive);
                self.finish(drive, DRDY | ERR, ABRT);
            }
            0x08 => {
                // DEVICE RESET.
                if let Some(d) = self.drives.get_mut(drive).and_then(Option::as_mut) {
                    d.reset();
                }
                self.show_signature(drive);
            }
            0x90 => self.diagnose(),
            0xef | 0xe0..=0xe3 | 0xe5 | 0xe6 => self.finish(drive, DRDY, 0),
            _ => self.abort(drive),
        }
    }

    /// Puts `drive`'s signature in sector count and the LBA registers.
    fn show_signature(&mut self, drive: usize) {
        let signature = self.drives.get(drive).and_then(Option::as_ref);
        if let Some([count, low, mid, high]) = signature.map(Drive::signature) {
            self.count[0] = count;
            self.lba_low[0] = low;
            self.lba_mid[0] = mid;
            self.lba_high[0] = high;
        }
    }

    /// EXECUTE DEVICE DIAGNOSTIC: both drives show their signatures.
    fn diagnose(&mut self) {
        self.reset();
        self.raise();
    }

    /// The sector count of an LBA28 or LBA48 command (0 meaning 256 or
    /// 65536).
    fn sector_count(&self, lba48: bool) -> u64 {
        let count = if lba48 {
            u64::from(self.count[1]) << 8 | u64::from(self.count[0])
        } else {
            u64::from(self.count[0])
        };
        match (count, lba48) {
            (0, false) => 256,
            (0, true) => 65536,
            (n, _) => n,
        }
    }

    /// The start address the task file names, or None for a CHS address
    /// outside the geometry.
    fn address(&self, lba48: bool, heads: u64, per_track: u64) -> Option<u64> {
        let low = u64::from(self.lba_low[0]);
        let mid = u64::from(self.lba_mid[0]);
        let high = u64::from(self.lba_high[0]);
        if lba48 {
            let hob = u64::from(self.lba_low[1]) << 24
                | u64::from(self.lba_mid[1]) << 32
                | u64::from(self.lba_high[1]) << 40;
            Some(hob | high << 16 | mid << 8 | low)
        } else if self.device & LBA_MODE != 0 {
            Some(u64::from(self.device & 0x0f) << 24 | high << 16 | mid << 8 | low)
        } else {
            let cylinder = high << 8 | mid;
            let head = u64::from(self.device & 0x0f);
            if low == 0 || head >= heads || low > per_track {
                return None;
            }
            Some((cylinder * heads + head) * per_track + low - 1)
        }
    }

    /// Checks a disk command's range: (first sector, sectors, block size).
    fn disk_range(&self, drive: usize, lba48: bool, multiple: bool) -> Result<(u64, u64, u64), u8> {
        let Some(Drive {
            kind:
                Kind::Disk {
                    sectors,
                    multiple: block,
                    heads,
                    per_track,
                },
            ..
        }) = self.drives.get(drive).and_then(Option::as_ref)
        else {
            return Err(ABRT);
        };
        if multiple && *block == 0 {
            return Err(ABRT);
        }
        let count = self.sector_count(lba48);
        let lba = self.address(lba48, *heads, *per_track).ok_or(IDNF)?;
        match lba.checked_add(count) {
            Some(end) if end <= *sectors => {}
            _ => return Err(IDNF),
        }
        let block = if multiple { u64::from(*block) } else { 1 };
        Ok((lba, count, block))
    }

    fn start_read(&mut self, drive: usize, lba48: bool, multiple: bool) {
        match self.disk_range(drive, lba48, multiple) {
            Ok((lba, left, block)) => self.read_block(drive, lba, left, block),
            Err(error) => self.finish(drive, DRDY | DSC | ERR, error),
        }
    }

    /// Reads the next block of a READ command and offers it.
    fn read_block(&mut self, drive: usize, lba: u64, left: u64, block: u64) {
        let sectors = left.min(block);
        let mut buf = vec![0u8; (sectors * SECTOR) as usize];
        let name = self.name;
        let Some(d) = self.drives.get_mut(drive).and_then(Option::as_mut) else {
            return;
        };
        if let Err(source) = read(&mut d.backend, &mut buf, lba * SECTOR) {
            self.errors
                .report(name, &IdeError::Read { name, source }, false);
            self.finish(drive, DRDY | DSC | ERR, UNC);
            return;
        }
        let next = AfterRead::Sectors {
            lba: lba + sectors,
            left: left - sectors,
            block,
        };
        self.start_to_guest(drive, buf, next, DRDY | DSC | DRQ);
    }

    fn start_write(&mut self, drive: usize, lba48: bool, multiple: bool) {
        let read_only = self
            .drives
            .get(drive)
            .and_then(Option::as_ref)
            .is_some_and(|d| d.backend.as_ref().is_none_or(|b| b.read_only()));
        if read_only {
            self.abort(drive);
            return;
        }
        match self.disk_range(drive, lba48, multiple) {
            Ok((lba, left, block)) => {
                self.await_block(drive, lba, left, block);
            }
            Err(error) => self.finish(drive, DRDY | DSC | ERR, error),
        }
    }

    /// Asks the guest for the next block of a WRITE command.
    fn await_block(&mut self, drive: usize, lba: u64, left: u64, block: u64) {
        let sectors = left.min(block);
        self.set_status(drive, DRDY | DSC | DRQ);
        self.transfer = Transfer::FromGuest {
            drive,
            buf: vec![0; (sectors * SECTOR) as usize],
            pos: 0,
            next: AfterWrite::Sectors { lba, left, block },
        };
    }

    fn write_block(&mut self, drive: usize, buf: &[u8], lba: u64, left: u64, block: u64) {
        let name = self.name;
        let Some(d) = self.drives.get_mut(drive).and_then(Option::as_mut) else {
            return;
        };
        let result = match d.backend.as_mut() {
            Some(backend) => backend.write_at(buf, lba * SECTOR),
            None => Err(std::io::Error::other("no image")),
        };
        if let Err(source) = result {
            self.errors
                .report(name, &IdeError::Write { name, source }, false);
            self.finish(drive, DRDY | DSC | ERR, UNC);
            return;
        }
        let written = buf.len() as u64 / SECTOR;
        let left = left.saturating_sub(written);
        if left == 0 {
            self.finish(drive, DRDY | DSC, 0);
        } else {
            self.await_block(drive, lba + written, left, block);
            self.raise();
        }
    }

    fn verify(&mut self, drive: usize, lba48: bool) {
        match self.disk_range(drive, lba48, false) {
            Ok(_) => self.finish(drive, DRDY | DSC, 0),
            Err(error) => self.finish(drive, DRDY | DSC | ERR, error),
        }
    }

    /// SET MULTIPLE MODE: 0 turns it off; otherwise a power of two up to
    /// the drive's maximum.
    fn set_multiple(&mut self, drive: usize) {
        let wanted = self.count[0];
        let ok = wanted == 0 || (wanted.is_power_of_two() && wanted <= MAX_MULTIPLE);
        if let (
            true,
            Some(Drive {
                kind: Kind::Disk { multiple, .. },
                ..
            }),
        ) = (ok, self.drives.get_mut(drive).and_then(Option::as_mut))
        {
            *multiple = wanted;
            self.finish(drive, DRDY | DSC, 0);
        } else {
            self.abort(drive);
        }
    }

    /// INITIALIZE DEVICE PARAMETERS: the geometry CHS addresses use.
    fn set_geometry(&mut self, drive: usize) {
        let new_heads = u64::from(self.device & 0x0f) + 1;
        let new_per_track = u64::from(self.count[0]);
        if let (
            true,
            Some(Drive {
                kind: Kind::Disk {
                    heads, per_track, ..
                },
                ..
            }),
        ) = (
            new_per_track > 0,
            self.drives.get_mut(drive).and_then(Option::as_mut),
        ) {
            *heads = new_heads;
            *per_track = new_per_track;
            self.finish(drive, DRDY | DSC, 0);
        } else {
            self.abort(drive);
        }
    }

    /// SET FEATURES: transfer modes must be PIO (no DMA here); cache and
    /// look-ahead switches are accepted.
    fn set_features(&mut self, drive: usize) {
        let ok = match self.features[0] {
            // Set transfer mode: PIO default (0x00/0x01) or flow-control
            // PIO modes (0x08-0x0f).
            0x03 => self.count[0] < 0x02 || (0x08..=0x0f).contains(&self.count[0]),
            0x02 | 0x82 | 0x55 | 0xaa | 0x66 | 0xcc => true,
            _ => false,
        };
        if ok {
            self.finish(drive, DRDY | DSC, 0);
        } else {
            self.abort(drive);
        }
    }

    fn flush(&mut self, drive: usize) {
        let name = self.name;
        let Some(d) = self.drives.get_mut(drive).and_then(Option::as_mut) else {
            return;
        };
        match d.backend.as_mut().map_or(Ok(()), |b| b.flush()) {
            Ok(()) => self.finish(drive, DRDY | DSC, 0),
            Err(source) => {
                self.errors
                    .report(name, &IdeError::Flush { name, source }, false);
                self.finish(drive, DRDY | DSC | ERR, ABRT);
            }
        }
    }

    /// Runs the packet the guest wrote.
    fn run_packet(&mut self, drive: usize, cdb: &[u8], byte_count: usize) {
        let Ok(cdb) = <[u8; 12]>::try_from(cdb) else {
            return;
        };
        let Some(Drive {
            kind: Kind::Cdrom(cd),
            ..
        }) = self.drives.get_mut(drive).and_then(Option::as_mut)
        else {
            return;
        };
        let byte_count = match byte_count {
            0 => MAX_BYTE_COUNT,
            1 => 1,
            n => (n & !1).min(MAX_BYTE_COUNT),
        };
        let data = match cd.execute(&cdb) {
            Reply::Done => return self.packet_done(drive, None),
            Reply::Check(sense) => return self.packet_done(drive, Some(sense)),
            Reply::Data(data) if data.is_empty() => return self.packet_done(drive, None),
            Reply::Data(carry) => PacketData {
                carry,
                lba: 0,
                sectors: 0,
                byte_count,
            },
            Reply::Read { lba, count } => PacketData {
                carry: Vec::new(),
                lba,
                sectors: count,
                byte_count,
            },
        };
        self.packet_block(drive, data);
    }

    /// Offers the next block of a packet's reply, or completes it.
    fn packet_block(&mut self, drive: usize, mut data: PacketData) {
        let available =
            (data.carry.len() as u64).saturating_add(data.sectors.saturating_mul(atapi::SECTOR));
        if available == 0 {
            return self.packet_done(drive, None);
        }
        let want = available.min(data.byte_count as u64) as usize;
        let name = self.name;
        while data.carry.len() < want {
            let Some(d) = self.drives.get_mut(drive).and_then(Option::as_mut) else {
                return;
            };
            let mut sector = vec![0u8; atapi::SECTOR as usize];
            if let Err(source) = read(&mut d.backend, &mut sector, data.lba * atapi::SECTOR) {
                self.errors
                    .report(name, &IdeError::Read { name, source }, false);
                if let Kind::Cdrom(cd) = &mut d.kind {
                    cd.sense = Sense::READ_ERROR;
                }
                return self.packet_done(drive, Some(Sense::READ_ERROR));
            }
            data.carry.extend_from_slice(&sector);
            data.lba += 1;
            data.sectors -= 1;
        }
        let rest = data.carry.split_off(want);
        let block = std::mem::replace(&mut data.carry, rest);
        let [mid, high] = (block.len() as u16).to_le_bytes();
        self.lba_mid[0] = mid;
        self.lba_high[0] = high;
        self.count[0] = REASON_TO_HOST;
        self.start_to_guest(drive, block, AfterRead::Packet(data), DRDY | DRQ);
    }

    /// Ends a packet command: good status, or CHECK CONDITION with `sense`.
    fn packet_done(&mut self, drive: usize, sense: Option<Sense>) {
        self.count[0] = REASON_TO_HOST | REASON_COMMAND;
        match sense {
            None => self.finish(drive, DRDY, 0),
            Some(sense) => self.finish(drive, DRDY | ERR, sense.key << 4 | ABRT),
        }
    }

    fn read_data(&mut self, data: &mut [u8]) {
        let selected = self.selected();
        let Transfer::ToGuest {
            drive, buf, pos, ..
        } = &mut self.transfer
        else {
            data.fill(0xff);
            return;
        };
        if *drive != selected {
            data.fill(0xff);
            return;
        }
        let available = buf.get(*pos..).unwrap_or(&[]);
        let n = available.len().min(data.len());
        for (i, out) in data.iter_mut().enumerate() {
            *out = available.get(i).copied().unwrap_or(0xff);
        }
        *pos += n;
        if *pos >= buf.len() {
            self.read_block_done();
        }
    }

    fn read_block_done(&mut self) {
        let Transfer::ToGuest { drive, next, .. } =
            std::mem::replace(&mut self.transfer, Transfer::Idle)
        else {
            return;
        };
        match next {
            AfterRead::Nothing => self.set_status(drive, self.idle_status(drive)),
            AfterRead::Sectors { left: 0, .. } => self.set_status(drive, DRDY | DSC),
            AfterRead::Sectors { lba, left, block } => self.read_block(drive, lba, left, block),
            AfterRead::Packet(data) => self.packet_block(drive, data),
        }
    }

    fn idle_status(&self, drive: usize) -> u8 {
        match self.drives.get(drive).and_then(Option::as_ref) {
            Some(d) if d.is_cdrom() => DRDY,
            _ => DRDY | DSC,
        }
    }

    fn write_data(&mut self, data: &[u8]) {
        let selected = self.selected();
        let Transfer::FromGuest {
            drive, buf, pos, ..
        } = &mut self.transfer
        else {
            return;
        };
        if *drive != selected {
            return;
        }
        let room = buf.get_mut(*pos..).unwrap_or(&mut []);
        let n = room.len().min(data.len());
        for (slot, &byte) in room.iter_mut().zip(data) {
            *slot = byte;
        }
        *pos += n;
        if *pos >= buf.len() {
            self.write_block_done();
        }
    }

    fn write_block_done(&mut self) {
        let Transfer::FromGuest {
            drive, buf, next, ..
        } = std::mem::replace(&mut self.transfer, Transfer::Idle)
        else {
            return;
        };
        match next {
            AfterWrite::Sectors { lba, left, block } => {
                self.write_block(drive, &buf, lba, left, block)
            }
            AfterWrite::Packet { byte_count } => self.run_packet(drive, &buf, byte_count),
        }
    }
}

fn read(
    backend: &mut Option<Box<dyn DiskBackend>>,
    buf: &mut [u8],
    offset: u64,
) -> std::io::Result<()> {
    match backend.as_mut() {
        Some(backend) => backend.read_at(buf, offset),
        None => Err(std::io::Error::other("no disc")),
    }
}

impl Channel {
    /// Puts a new disc (`Some`) into the CD-ROM drive at device `drive`
    /// (0 or 1), or takes the disc out (`None`); the guest is told as a
    /// real drive tells it (UNIT ATTENTION, a media event).
    pub fn change_disc(
        &mut self,
        drive: usize,
        disc: Option<Box<dyn DiskBackend>>,
    ) -> Result<(), NotACdrom> {
        let Some(Drive {
            kind: Kind::Cdrom(cd),
            backend,
            ..
        }) = self.drives.get_mut(drive).and_then(Option::as_mut)
        else {
            return Err(NotACdrom);
        };
        cd.change_disc(disc.as_ref().map(|b| b.size() / atapi::SECTOR));
        *backend = disc;
        // A transfer from the old disc ends here.
        if matches!(self.transfer, Transfer::ToGuest { drive: d, .. } if d == drive) {
            self.transfer = Transfer::Idle;
            self.packet_done(drive, Some(Sense::MEDIUM_CHANGED));
        }
        Ok(())
    }
}

/// The drive asked to change discs is not a CD-ROM drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("That drive is not a CD-ROM drive")]
pub struct NotACdrom;

impl BusDevice for Channel {
    fn state(&mut self) -> crate::bus::DeviceState<'_> {
        crate::bus::DeviceState::Saved(self)
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == DATA {
            self.read_data(data);
        } else if let Some(first) = data.first_mut() {
            *first = self.read_register(offset);
            if let Some(rest) = data.get_mut(1..) {
                rest.fill(0xff);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == DATA {
            self.write_data(data);
        } else if let Some(&value) = data.first() {
            self.write_register(offset, value);
        }
    }
}
