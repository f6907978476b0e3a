// SPDX-License-Identifier: Apache-2.0
//! The IDE channel driven through its ports as a driver would, and as a
//! hostile guest would.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::devices::irq::InterruptLine;
use crate::devices::virtio::block::DiskBackend;

/// An image in memory; `fail` makes every read and write fail.
struct MemImage {
    bytes: Arc<Mutex<Vec<u8>>>,
    read_only: bool,
    fail: bool,
}

impl DiskBackend for MemImage {
    fn size(&self) -> u64 {
        self.bytes.lock().unwrap().len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.fail {
            return Err(io::Error::other("broken image"));
        }
        let bytes = self.bytes.lock().unwrap();
        let start = offset as usize;
        buf.copy_from_slice(&bytes[start..start + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.fail {
            return Err(io::Error::other("broken image"));
        }
        let mut bytes = self.bytes.lock().unwrap();
        let start = offset as usize;
        bytes[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn write_zeroes(&mut self, _offset: u64, _len: u64, _unmap: bool) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Pulses(Arc<AtomicUsize>);

impl InterruptLine for Pulses {
    fn pulse(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Pulses {
    fn take(&self) -> usize {
        self.0.swap(0, Ordering::SeqCst)
    }
}

/// An image whose every byte holds its sector number's low byte, plus the
/// byte's position within the sector in the second half.
fn patterned(sectors: usize, sector: usize) -> Vec<u8> {
    (0..sectors * sector)
        .map(|i| ((i / sector) as u8) ^ ((i % sector) as u8 & 0x80))
        .collect()
}

fn image(bytes: Vec<u8>) -> (Box<dyn DiskBackend>, Arc<Mutex<Vec<u8>>>) {
    let shared = Arc::new(Mutex::new(bytes));
    let backend = MemImage {
        bytes: shared.clone(),
        read_only: false,
        fail: false,
    };
    (Box::new(backend), shared)
}

fn disk(bytes: Vec<u8>) -> (DriveConfig, Arc<Mutex<Vec<u8>>>) {
    let (backend, shared) = image(bytes);
    let config = DriveConfig {
        backend: Some(backend),
        medium: Medium::Disk,
        serial: "NB-DISK".into(),
    };
    (config, shared)
}

fn cdrom(sectors: usize) -> DriveConfig {
    DriveConfig {
        backend: Some(image(patterned(sectors, 2048)).0),
        medium: Medium::Cdrom,
        serial: "NB-CD".into(),
    }
}

struct Rig {
    channel: Channel,
    pulses: Pulses,
}

impl Rig {
    fn new(master: Option<DriveConfig>, slave: Option<DriveConfig>) -> Self {
        let pulses = Pulses::default();
        let channel = Channel::new("ide-test", Box::new(pulses.clone()), master, slave);
        Self { channel, pulses }
    }

    fn out(&mut self, reg: u64, value: u8) {
        self.channel.write(reg, &[value]);
    }

    fn inb(&mut self, reg: u64) -> u8 {
        let mut data = [0u8];
        self.channel.read(reg, &mut data);
        data[0]
    }

    fn status(&mut self) -> u8 {
        self.inb(7)
    }

    fn read_words(&mut self, bytes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..bytes / 2 {
            let mut word = [0u8; 2];
            self.channel.read(0, &mut word);
            out.extend_from_slice(&word);
        }
        out
    }

    fn write_words(&mut self, bytes: &[u8]) {
        for word in bytes.chunks(2) {
            self.channel.write(0, word);
        }
    }

    /// An LBA28 command on device 0.
    fn lba28(&mut self, command: u8, lba: u32, count: u8) {
        self.out(2, count);
        self.out(3, lba as u8);
        self.out(4, (lba >> 8) as u8);
        self.out(5, (lba >> 16) as u8);
        self.out(6, 0xe0 | ((lba >> 24) as u8 & 0x0f));
        self.out(7, command);
    }

    /// A packet command on device `device` with byte count limit `limit`.
    fn packet(&mut self, device: u8, cdb: &[u8], limit: u16) {
        self.out(6, 0xa0 | device << 4);
        self.out(1, 0);
        self.out(4, limit as u8);
        self.out(5, (limit >> 8) as u8);
        self.out(7, 0xa0);
        assert_eq!(self.status() & 0x08, 0x08, "DRQ for the packet");
        assert_eq!(self.inb(2) & 0x03, 0x01, "reason: command");
        let mut packet = [0u8; 12];
        packet[..cdb.len()].copy_from_slice(cdb);
        self.write_words(&packet);
    }

    /// The byte count of the data block on offer.
    fn byte_count(&mut self) -> usize {
        usize::from(self.inb(4)) | usize::from(self.inb(5)) << 8
    }
}

const DRDY: u8 = 0x40;
const DRQ: u8 = 0x08;
const ERR: u8 = 0x01;

fn word_string(bytes: &[u8]) -> String {
    bytes
        .chunks(2)
        .flat_map(|w| [w[1], w[0]])
        .map(char::from)
        .collect::<String>()
        .trim_end()
        .to_string()
}

#[test]
fn identify_device_describes_the_disk_and_interrupts_once() {
    let mut rig = Rig::new(Some(disk(vec![0; 64 * 512]).0), None);
    rig.out(6, 0xa0);
    rig.out(7, 0xec);
    assert_eq!(rig.status(), DRDY | 0x10 | DRQ);
    assert_eq!(rig.pulses.take(), 1);
    let data = rig.read_words(512);
    assert_eq!(word_string(&data[54..94]), "Nestbox hard disk");
    assert_eq!(
        u16::from_le_bytes([data[120], data[121]]),
        64,
        "LBA28 sectors"
    );
    assert_eq!(rig.status(), DRDY | 0x10, "DRQ ends after the last word");
    assert_eq!(rig.pulses.take(), 0);
}

#[test]
fn sectors_written_are_read_back_and_land_in_the_image() {
    let (config, image) = disk(vec![0; 64 * 512]);
    let mut rig = Rig::new(Some(config), None);
    let payload: Vec<u8> = (0..1024).map(|i| (i * 7) as u8).collect();
    rig.lba28(0x30, 5, 2);
    assert_eq!(rig.pulses.take(), 0, "no interrupt before the first block");
    rig.write_words(&payload[..512]);
    assert_eq!(rig.pulses.take(), 1);
    assert_eq!(rig.status() & DRQ, DRQ);
    rig.write_words(&payload[512..]);
    assert_eq!(rig.pulses.take(), 1);
    assert_eq!(rig.status(), DRDY | 0x10);
    assert_eq!(&image.lock().unwrap()[5 * 512..7 * 512], &payload[..]);

    rig.lba28(0x20, 5, 2);
    assert_eq!(rig.read_words(1024), payload);
    assert_eq!(rig.pulses.take(), 2, "one interrupt a block");
    assert_eq!(rig.status(), DRDY | 0x10);
}

#[test]
fn lba48_and_chs_addresses_reach_the_right_sectors() {
    let sectors = 300;
    let mut rig = Rig::new(Some(disk(patterned(sectors, 512)).0), None);
    // READ SECTORS EXT, LBA 0x0000_0000_0123 = 291, one sector: HOB bytes first.
    for (reg, value) in [
        (2, 0),
        (3, 0),
        (4, 0),
        (5, 0),
        (2, 1),
        (3, 0x23),
        (4, 0x01),
        (5, 0),
    ] {
        rig.out(reg, value);
    }
    rig.out(6, 0x40);
    rig.out(7, 0x24);
    assert_eq!(rig.read_words(512)[0], 291u16 as u8);
    // CHS with a 2-head, 10-sector geometry: C1 H1 S3 = (1*2+1)*10+2 = 32.
    rig.out(2, 10);
    rig.out(6, 0xa1);
    rig.out(7, 0x91);
    assert_eq!(rig.status() & ERR, 0);
    rig.out(2, 1);
    rig.out(3, 3);
    rig.out(4, 1);
    rig.out(5, 0);
    rig.out(6, 0xa1);
    rig.out(7, 0x20);
    assert_eq!(rig.read_words(512)[0], 32);
    // Sector 0 does not exist in CHS.
    rig.out(3, 0);
    rig.out(7, 0x20);
    assert_eq!(rig.status() & ERR, ERR);
    assert_eq!(rig.inb(1), 0x10, "IDNF");
}

#[test]
fn bad_commands_and_addresses_fail_cleanly() {
    let read_only = MemImage {
        bytes: Arc::new(Mutex::new(vec![0; 16 * 512])),
        read_only: true,
        fail: false,
    };
    let mut rig = Rig::new(
        Some(DriveConfig {
            backend: Some(Box::new(read_only)),
            medium: Medium::Disk,
            serial: String::new(),
        }),
        None,
    );
    rig.lba28(0x20, 15, 2);
    assert_eq!(
        (rig.status() & ERR, rig.inb(1)),
        (ERR, 0x10),
        "past the end"
    );
    rig.lba28(0x20, 0x0fff_ffff, 255);
    assert_eq!(rig.inb(1), 0x10);
    rig.lba28(0x30, 0, 1);
    assert_eq!((rig.status() & ERR, rig.inb(1)), (ERR, 0x04), "read-only");
    rig.lba28(0xc4, 0, 1);
    assert_eq!(rig.inb(1), 0x04, "READ MULTIPLE before SET MULTIPLE");
    for command in [0x00, 0xa1, 0xa0, 0xc8, 0xff, 0x08] {
        rig.out(7, command);
        assert_eq!(
            (rig.status() & ERR, rig.inb(1)),
            (ERR, 0x04),
            "{command:#x}"
        );
    }
    rig.out(2, 3);
    rig.out(7, 0xc6);
    assert_eq!(rig.inb(1), 0x04, "3 sectors a block is not a power of two");
    // Data port with nothing to transfer.
    assert_eq!(rig.read_words(2), [0xff, 0xff]);
    rig.write_words(&[1, 2]);
    assert_eq!(rig.status() & DRQ, 0);
}

#[test]
fn read_multiple_interrupts_once_a_block() {
    let mut rig = Rig::new(Some(disk(patterned(32, 512)).0), None);
    rig.out(2, 4);
    rig.out(7, 0xc6);
    assert_eq!(rig.status() & ERR, 0);
    rig.pulses.take();
    rig.lba28(0xc4, 8, 8);
    let data = rig.read_words(8 * 512);
    assert_eq!(rig.pulses.take(), 2);
    assert_eq!(data[0], 8);
    assert_eq!(data[7 * 512], 15);
}

#[test]
fn a_failing_image_ends_the_command_with_an_error() {
    let broken = MemImage {
        bytes: Arc::new(Mutex::new(vec![0; 16 * 512])),
        read_only: false,
        fail: true,
    };
    let mut rig = Rig::new(
        Some(DriveConfig {
            backend: Some(Box::new(broken)),
            medium: Medium::Disk,
            serial: String::new(),
        }),
        None,
    );
    rig.lba28(0x20, 0, 1);
    assert_eq!((rig.status() & ERR, rig.inb(1)), (ERR, 0x40), "UNC");
    rig.lba28(0x30, 0, 1);
    rig.write_words(&[0; 512]);
    assert_eq!((rig.status() & ERR, rig.inb(1)), (ERR, 0x40));
}

#[test]
fn registers_read_back_and_absent_devices_stay_quiet() {
    let mut rig = Rig::new(Some(disk(vec![0; 16 * 512]).0), None);
    // What firmware does to find devices: shared registers read back.
    rig.out(6, 0xb0);
    rig.out(2, 0x55);
    rig.out(3, 0xaa);
    assert_eq!((rig.inb(6), rig.inb(2), rig.inb(3)), (0xb0, 0x55, 0xaa));
    assert_eq!(rig.status(), 0, "device 0 answers 0 for a missing device 1");
    rig.out(7, 0xec);
    assert_eq!(rig.pulses.take(), 0, "a missing device takes no command");
    let mut empty = Rig::new(None, None);
    assert_eq!(empty.status(), 0xff, "a channel without drives floats");
    assert_eq!(empty.inb(2), 0xff);
}

#[test]
fn a_reset_leaves_each_drive_its_signature() {
    let mut rig = Rig::new(Some(disk(vec![0; 16 * 512]).0), Some(cdrom(4)));
    rig.channel.write_control(0x04);
    assert_eq!(rig.status(), 0x80, "busy while SRST is held");
    rig.channel.write_control(0x00);
    assert_eq!(
        (rig.inb(2), rig.inb(3), rig.inb(4), rig.inb(5)),
        (1, 1, 0, 0)
    );
    assert_eq!(rig.status(), DRDY | 0x10);
    // The CD-ROM shows its signature when IDENTIFY DEVICE is tried on it.
    rig.out(6, 0xb0);
    rig.out(7, 0xec);
    assert_eq!((rig.inb(4), rig.inb(5)), (0x14, 0xeb));
    assert_eq!(rig.status() & ERR, ERR);
}

#[test]
fn after_a_reset_selecting_each_drive_shows_its_own_signature() {
    // Linux's libata: SRST, then select each device, read its error and
    // signature registers and classify it (ATA disk or ATAPI CD-ROM).
    let mut rig = Rig::new(Some(disk(vec![0; 16 * 512]).0), Some(cdrom(4)));
    rig.channel.write_control(0x04);
    rig.channel.write_control(0x00);
    rig.out(6, 0xb0);
    let slave = (rig.inb(1), rig.inb(2), rig.inb(3), rig.inb(4), rig.inb(5));
    rig.out(6, 0xa0);
    let master = (rig.inb(1), rig.inb(2), rig.inb(3), rig.inb(4), rig.inb(5));
    // A task file write reaches both drives: their registers agree again.
    rig.out(2, 0x55);
    rig.out(6, 0xb0);
    let after_write = (rig.inb(2), rig.inb(4));

    assert_eq!(
        slave,
        (1, 1, 1, 0x14, 0xeb),
        "the CD-ROM's packet signature"
    );
    assert_eq!(master, (1, 1, 1, 0, 0), "the disk's ATA signature");
    assert_eq!(after_write, (0x55, 0));
}

#[test]
fn interrupts_wait_while_nien_is_set() {
    let mut rig = Rig::new(Some(disk(vec![0; 16 * 512]).0), None);
    rig.channel.write_control(0x02);
    rig.lba28(0x20, 0, 1);
    rig.read_words(512);
    assert_eq!(rig.pulses.take(), 0);
}

#[test]
fn a_cdrom_reads_sectors_in_blocks_the_byte_count_allows() {
    let mut rig = Rig::new(None, Some(cdrom(8)));
    rig.out(6, 0xb0);
    rig.out(7, 0xa1);
    let identify = rig.read_words(512);
    assert_eq!(identify[1] >> 6, 0b10, "ATAPI");
    rig.pulses.take();

    // READ(10) of sectors 2 and 3 with 2048-byte blocks.
    rig.packet(1, &[0x28, 0, 0, 0, 0, 2, 0, 0, 2], 2048);
    for sector in [2u8, 3] {
        assert_eq!(rig.pulses.take(), 1);
        assert_eq!(rig.status(), DRDY | DRQ);
        assert_eq!(rig.inb(2) & 0x03, 0x02, "reason: data to the host");
        assert_eq!(rig.byte_count(), 2048);
        let block = rig.read_words(2048);
        assert_eq!((block[0], block[2047]), (sector, sector ^ 0x80));
    }
    assert_eq!(rig.pulses.take(), 1);
    assert_eq!(rig.status(), DRDY);
    assert_eq!(rig.inb(2) & 0x03, 0x03, "reason: completion");

    // An odd limit: blocks of 1000 bytes (rounded down to even), the last
    // one shorter.
    rig.packet(1, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1], 1001);
    let mut got = Vec::new();
    while rig.status() & DRQ != 0 {
        let n = rig.byte_count();
        assert!(n <= 1000);
        got.extend(rig.read_words(n));
    }
    assert_eq!(got, patterned(1, 2048));
}

#[test]
fn a_bad_packet_is_check_condition_with_sense() {
    let mut rig = Rig::new(Some(cdrom(8)), None);
    rig.packet(0, &[0xee], 2048);
    assert_eq!(rig.status(), DRDY | ERR);
    assert_eq!(rig.inb(1), 0x54, "ILLEGAL REQUEST, ABRT");
    rig.packet(0, &[0x03, 0, 0, 0, 18], 2048);
    let n = rig.byte_count();
    let sense = rig.read_words(n);
    assert_eq!((sense[2], sense[12]), (0x05, 0x20));
    // Past the disc's end.
    rig.packet(0, &[0x28, 0, 0, 0, 0, 8, 0, 0, 1], 2048);
    assert_eq!(rig.inb(1), 0x54);
    // TEST UNIT READY: no data phase at all.
    rig.packet(0, &[0x00], 0);
    assert_eq!(rig.status(), DRDY);
    // A DMA packet is refused: there is no bus master.
    rig.out(1, 0x01);
    rig.out(7, 0xa0);
    assert_eq!(rig.status() & ERR, ERR);
}

#[test]
fn a_byte_count_of_zero_means_the_largest_block() {
    let mut rig = Rig::new(Some(cdrom(64)), None);
    rig.packet(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 40], 0);
    assert_eq!(rig.byte_count(), 0xfffe);
}

#[test]
fn random_register_traffic_never_panics_and_keeps_the_images_intact() {
    // A hostile guest: any value to any port, any access size, in any
    // order, on a channel with a read-only CD-ROM and a disk.
    let (config, disk_image) = disk(patterned(64, 512));
    let before = disk_image.lock().unwrap().len();
    let mut rig = Rig::new(Some(config), Some(cdrom(16)));
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200_000 {
        let r = next();
        let port = r % 9;
        let size = [1usize, 2, 4][(r >> 8) as usize % 3];
        let mut data = vec![(r >> 16) as u8; size];
        // Commands and device selects most often, so command paths run.
        let port = match (r >> 24) % 4 {
            0 => 7,
            1 => 6,
            _ => port,
        };
        if (r >> 32) % 2 == 0 {
            if port == 8 {
                rig.channel.write_control((r >> 40) as u8 & !0x04);
            } else {
                if port == 7 {
                    data[0] = [0x20, 0x30, 0xec, 0xa0, 0xa1, 0xc4, 0xc6, 0x24, 0xef, 0x91]
                        [(r >> 40) as usize % 10];
                }
                rig.channel.write(port, &data);
            }
        } else if port == 8 {
            rig.channel.alternate_status();
        } else {
            rig.channel.read(port, &mut data);
        }
    }
    assert_eq!(
        disk_image.lock().unwrap().len(),
        before,
        "no write outside the image"
    );
}

#[test]
fn a_disc_changed_under_the_guest_is_announced_and_read_from_then_on() {
    let mut rig = Rig::new(Some(disk(vec![0; 16 * 512]).0), Some(cdrom(8)));
    assert!(
        rig.channel.change_disc(0, None).is_err(),
        "device 0 is a disk"
    );
    rig.channel.change_disc(1, None).unwrap();
    rig.packet(1, &[0x00], 0);
    assert_eq!(rig.inb(1), 0x64, "UNIT ATTENTION");
    rig.packet(1, &[0x25], 8);
    assert_eq!(rig.inb(1), 0x24, "NOT READY: no disc");
    rig.packet(1, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1], 2048);
    assert_eq!(rig.status() & ERR, ERR);

    let mut other = patterned(4, 2048);
    other.iter_mut().for_each(|b| *b = !*b);
    rig.channel
        .change_disc(1, Some(image(other.clone()).0))
        .unwrap();
    rig.packet(1, &[0x00], 0);
    assert_eq!(rig.inb(1), 0x64, "UNIT ATTENTION for the new disc");
    rig.packet(1, &[0x28, 0, 0, 0, 0, 3, 0, 0, 1], 2048);
    assert_eq!(rig.read_words(2048), other[3 * 2048..]);
}

#[test]
fn an_empty_drive_starts_not_ready() {
    let mut rig = Rig::new(
        Some(DriveConfig {
            backend: None,
            medium: Medium::Cdrom,
            serial: "NB-CD".into(),
        }),
        None,
    );
    rig.packet(0, &[0x00], 0);
    assert_eq!(rig.inb(1), 0x24);
}

/// A channel like `rig`'s with the same drives, fresh: what a restore
/// builds from the VM's configuration.
fn twin(disk_bytes: Vec<u8>, cd_sectors: usize) -> (Rig, Arc<Mutex<Vec<u8>>>) {
    let (config, shared) = disk(disk_bytes);
    (Rig::new(Some(config), Some(cdrom(cd_sectors))), shared)
}

#[test]
fn a_write_and_a_cd_read_in_flight_go_on_in_a_restored_channel() {
    use crate::snapshot::Persist;

    // A WRITE SECTORS of two sectors, half of the first one written.
    let (mut rig, _) = twin(vec![0; 64 * 512], 8);
    let payload: Vec<u8> = (0..1024).map(|i| (i * 13) as u8).collect();
    rig.lba28(0x30, 9, 2);
    rig.write_words(&payload[..256]);
    let saved = rig.channel.save().unwrap();

    let (mut restored, image) = twin(vec![0; 64 * 512], 8);
    restored.channel.restore(&saved).unwrap();
    restored.write_words(&payload[256..]);
    assert_eq!(restored.status(), DRDY | 0x10);
    assert_eq!(&image.lock().unwrap()[9 * 512..11 * 512], &payload[..]);

    // A READ(10) of two CD sectors, the first block read.
    restored.packet(1, &[0x28, 0, 0, 0, 0, 2, 0, 0, 2], 2048);
    let first = restored.read_words(2048);
    assert_eq!(first[0], 2);
    let saved = restored.channel.save().unwrap();
    let (mut again, _) = twin(vec![0; 64 * 512], 8);
    again.channel.restore(&saved).unwrap();
    assert_eq!(again.status(), DRDY | DRQ);
    assert_eq!(again.byte_count(), 2048);
    assert_eq!(
        again.read_words(2048),
        patterned(8, 2048)[3 * 2048..4 * 2048]
    );
    assert_eq!(again.inb(2) & 0x03, 0x03, "reason: completion");
}

#[test]
fn a_disc_changed_while_saved_is_announced_after_the_restore() {
    use crate::snapshot::Persist;
    let (mut rig, _) = twin(vec![0; 16 * 512], 8);
    rig.packet(1, &[0x00], 0);
    let saved = rig.channel.save().unwrap();

    // The VM comes back with a disc of another size in the drive.
    let (mut restored, _) = twin(vec![0; 16 * 512], 4);
    restored.channel.restore(&saved).unwrap();
    restored.packet(1, &[0x00], 0);
    assert_eq!(restored.inb(1), 0x64, "UNIT ATTENTION");
    restored.packet(1, &[0x28, 0, 0, 0, 0, 3, 0, 0, 1], 2048);
    assert_eq!(restored.read_words(2048), patterned(4, 2048)[3 * 2048..]);
}

#[test]
fn hostile_or_foreign_channel_states_are_refused_and_change_nothing() {
    use crate::snapshot::Persist;
    let (mut rig, _) = twin(vec![0; 64 * 512], 8);
    rig.lba28(0x30, 9, 2);
    let mid_write = rig.channel.save().unwrap();

    // Another disk size, no CD-ROM drive, garbage, a state cut short.
    let (mut bigger, _) = twin(vec![0; 128 * 512], 8);
    let (config, _) = disk(vec![0; 64 * 512]);
    let mut no_cd = Rig::new(Some(config), None);
    assert!(bigger.channel.restore(&mid_write).is_err());
    assert!(no_cd.channel.restore(&mid_write).is_err());
    let (mut target, _) = twin(vec![0; 64 * 512], 8);
    let before = target.channel.save().unwrap();
    for bytes in [&[0xff; 9][..], &mid_write[..mid_write.len() - 3]] {
        assert!(target.channel.restore(bytes).is_err());
    }
    // A forged transfer: the same state with its write moved past the
    // disk's end, or with a block larger than any command makes.
    let mut forged_lba = mid_write.clone();
    let mut forged_block = mid_write.clone();
    let tail = mid_write.len();
    // The encoding ends with the write's Sectors { lba, left, block }.
    assert_eq!(&mid_write[tail - 3..], &[9, 2, 1]);
    forged_lba[tail - 3] = 63;
    forged_block[tail - 1] = 0x7f;
    for bytes in [forged_lba, forged_block] {
        assert!(target.channel.restore(&bytes).is_err());
    }
    assert_eq!(target.channel.save().unwrap(), before);
}
