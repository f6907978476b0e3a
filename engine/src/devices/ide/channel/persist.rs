// SPDX-License-Identifier: Apache-2.0
//! An IDE channel in a saved machine state: the task file, device and
//! control registers, each drive's status, error and own state (a disk's
//! multiple-block size and CHS geometry, a CD-ROM drive's sense and media
//! events), the reset signatures, and a PIO transfer in flight with its
//! buffer, position and what comes after it. A command is never half-run
//! between two port accesses, so that is the whole of a command in flight.
//!
//! Everything in a restored state is checked as a guest's command would
//! be: drives match the VM's (a disk of the same size), addresses and
//! counts lie on the medium, buffers and block sizes are within what the
//! commands make. A CD-ROM whose disc was changed while the VM was saved
//! tells the guest so, as a drive does after a swap.

use serde::{Deserialize, Serialize};

use super::super::atapi;
use super::super::identify::MAX_MULTIPLE;
use super::{AfterRead, AfterWrite, Channel, Drive, Kind, PacketData, Transfer};
use crate::snapshot::{self, StateError};

/// The largest data block a command moves at once: a READ/WRITE MULTIPLE
/// block, or an ATAPI block of at most 0xFFFF bytes plus a sector carried.
const MAX_BLOCK_BYTES: usize = 0x1_0000 + atapi::SECTOR as usize;

#[derive(Serialize, Deserialize)]
enum SavedKind {
    Disk {
        sectors: u64,
        multiple: u8,
        heads: u64,
        per_track: u64,
    },
    Cdrom(atapi::Drive),
}

#[derive(Serialize, Deserialize)]
struct SavedDrive {
    kind: SavedKind,
    status: u8,
    error: u8,
}

#[derive(Serialize, Deserialize)]
struct SavedPacket {
    carry: Vec<u8>,
    lba: u64,
    sectors: u64,
    byte_count: u64,
}

#[derive(Serialize, Deserialize)]
enum SavedAfterRead {
    Nothing,
    Sectors { lba: u64, left: u64, block: u64 },
    Packet(SavedPacket),
}

#[derive(Serialize, Deserialize)]
enum SavedAfterWrite {
    Sectors { lba: u64, left: u64, block: u64 },
    Packet { byte_count: u64 },
}

#[derive(Serialize, Deserialize)]
enum SavedTransfer {
    Idle,
    ToGuest {
        drive: u8,
        buf: Vec<u8>,
        pos: u64,
        next: SavedAfterRead,
    },
    FromGuest {
        drive: u8,
        buf: Vec<u8>,
        pos: u64,
        next: SavedAfterWrite,
    },
}

#[derive(Serialize, Deserialize)]
struct SavedChannel {
    drives: [Option<SavedDrive>; 2],
    features: [u8; 2],
    count: [u8; 2],
    lba_low: [u8; 2],
    lba_mid: [u8; 2],
    lba_high: [u8; 2],
    device: u8,
    control: u8,
    signatures: [Option<[u8; 4]>; 2],
    transfer: SavedTransfer,
}

fn packet_of(data: &PacketData) -> SavedPacket {
    SavedPacket {
        carry: data.carry.clone(),
        lba: data.lba,
        sectors: data.sectors,
        byte_count: data.byte_count as u64,
    }
}

impl Channel {
    fn saved(&self) -> SavedChannel {
        let drive = |d: &Drive| SavedDrive {
            kind: match &d.kind {
                Kind::Disk {
                    sectors,
                    multiple,
                    heads,
                    per_track,
                } => SavedKind::Disk {
                    sectors: *sectors,
                    multiple: *multiple,
                    heads: *heads,
                    per_track: *per_track,
                },
                Kind::Cdrom(cd) => SavedKind::Cdrom(cd.clone()),
            },
            status: d.status,
            error: d.error,
        };
        let transfer = match &self.transfer {
            Transfer::Idle => SavedTransfer::Idle,
            Transfer::ToGuest {
                drive,
                buf,
                pos,
                next,
            } => SavedTransfer::ToGuest {
                drive: *drive as u8,
                buf: buf.clone(),
                pos: *pos as u64,
                next: match next {
                    AfterRead::Nothing => SavedAfterRead::Nothing,
                    &AfterRead::Sectors { lba, left, block } => {
                        SavedAfterRead::Sectors { lba, left, block }
                    }
                    AfterRead::Packet(data) => SavedAfterRead::Packet(packet_of(data)),
                },
            },
            Transfer::FromGuest {
                drive,
                buf,
                pos,
                next,
            } => SavedTransfer::FromGuest {
                drive: *drive as u8,
                buf: buf.clone(),
                pos: *pos as u64,
                next: match *next {
                    AfterWrite::Sectors { lba, left, block } => {
                        SavedAfterWrite::Sectors { lba, left, block }
                    }
                    AfterWrite::Packet { byte_count } => SavedAfterWrite::Packet {
                        byte_count: byte_count as u64,
                    },
                },
            },
        };
        SavedChannel {
            drives: [
                self.drives[0].as_ref().map(drive),
                self.drives[1].as_ref().map(drive),
            ],
            features: self.features,
            count: self.count,
            lba_low: self.lba_low,
            lba_mid: self.lba_mid,
            lba_high: self.lba_high,
            device: self.device,
            control: self.control,
            signatures: self.signatures,
            transfer,
        }
    }

    /// Sectors of drive `drive`'s medium (512-byte for a disk, 2048-byte
    /// for a disc), or None without that drive.
    fn medium_sectors(&self, drive: usize) -> Option<u64> {
        let d = self.drives.get(drive)?.as_ref()?;
        Some(match &d.kind {
            Kind::Disk { sectors, .. } => *sectors,
            Kind::Cdrom(cd) => cd.disc.unwrap_or(0),
        })
    }

    /// Checks a saved drive against the one this channel has; returns its
    /// restored kind.
    fn restored_kind(&self, index: usize, saved: &SavedDrive) -> Result<Kind, String> {
        let now = self.drives.get(index).and_then(Option::as_ref);
        match (&saved.kind, now.map(|d| &d.kind)) {
            (
                &SavedKind::Disk {
                    sectors,
                    multiple,
                    heads,
                    per_track,
                },
                Some(Kind::Disk { sectors: now, .. }),
            ) => {
                if sectors != *now {
                    return Err(format!(
                        "its disk {index} had {sectors} sectors when saved and has {now} now"
                    ));
                }
                let multiple_ok =
                    multiple == 0 || (multiple.is_power_of_two() && multiple <= MAX_MULTIPLE);
                if !multiple_ok || !(1..=16).contains(&heads) || !(1..=255).contains(&per_track) {
                    return Err(format!("disk {index} has a bad geometry"));
                }
                Ok(Kind::Disk {
                    sectors,
                    multiple,
                    heads,
                    per_track,
                })
            }
            (SavedKind::Cdrom(saved_cd), Some(Kind::Cdrom(now_cd))) => {
                let mut cd = saved_cd.clone();
                if cd.disc != now_cd.disc {
                    // The disc was changed while the VM was saved.
                    cd.change_disc(now_cd.disc);
                }
                Ok(Kind::Cdrom(cd))
            }
            _ => Err(format!("drive {index} is another kind of drive or absent")),
        }
    }

    fn restored_transfer(&self, saved: SavedTransfer) -> Result<Transfer, String> {
        let check_buf = |drive: u8, buf: &Vec<u8>, pos: u64| -> Result<(usize, usize), String> {
            let drive = usize::from(drive);
            if self.medium_sectors(drive).is_none() {
                return Err(format!("a transfer for the absent drive {drive}"));
            }
            if buf.len() > MAX_BLOCK_BYTES || pos > buf.len() as u64 {
                return Err("a transfer buffer out of range".to_string());
            }
            Ok((drive, pos as usize))
        };
        // `count` sectors from `lba` lie on drive `drive`'s medium.
        let on_medium = |drive: usize, lba: u64, count: u64| {
            let end = lba.checked_add(count);
            matches!((end, self.medium_sectors(drive)), (Some(end), Some(n)) if end <= n)
        };
        let sectors_ok = |drive: usize, lba: u64, left: u64, block: u64| {
            on_medium(drive, lba, left)
                && left <= 65536
                && (1..=u64::from(MAX_MULTIPLE)).contains(&block)
        };
        match saved {
            SavedTransfer::Idle => Ok(Transfer::Idle),
            SavedTransfer::ToGuest {
                drive,
                buf,
                pos,
                next,
            } => {
                let (drive, pos) = check_buf(drive, &buf, pos)?;
                let next = match next {
                    SavedAfterRead::Nothing => AfterRead::Nothing,
                    SavedAfterRead::Sectors { lba, left, block } => {
                        if !sectors_ok(drive, lba, left, block) {
                            return Err("a read outside the disk".to_string());
                        }
                        AfterRead::Sectors { lba, left, block }
                    }
                    SavedAfterRead::Packet(p) => {
                        if !on_medium(drive, p.lba, p.sectors)
                            || p.byte_count == 0
                            || p.byte_count > 0xffff
                            || p.carry.len() > MAX_BLOCK_BYTES
                        {
                            return Err("a CD-ROM read outside the disc".to_string());
                        }
                        AfterRead::Packet(PacketData {
                            carry: p.carry,
                            lba: p.lba,
                            sectors: p.sectors,
                            byte_count: p.byte_count as usize,
                        })
                    }
                };
                Ok(Transfer::ToGuest {
                    drive,
                    buf,
                    pos,
                    next,
                })
            }
            SavedTransfer::FromGuest {
                drive,
                buf,
                pos,
                next,
            } => {
                let (drive, pos) = check_buf(drive, &buf, pos)?;
                let next = match next {
                    SavedAfterWrite::Sectors { lba, left, block } => {
                        if !sectors_ok(drive, lba, left, block) {
                            return Err("a write outside the disk".to_string());
                        }
                        AfterWrite::Sectors { lba, left, block }
                    }
                    SavedAfterWrite::Packet { byte_count } => {
                        if byte_count > 0xffff {
                            return Err("a packet longer than a packet".to_string());
                        }
                        AfterWrite::Packet {
                            byte_count: byte_count as usize,
                        }
                    }
                };
                Ok(Transfer::FromGuest {
                    drive,
                    buf,
                    pos,
                    next,
                })
            }
        }
    }
}

impl snapshot::Persist for Channel {
    fn quiesce(&mut self) -> Result<(), StateError> {
        // Writes went to the image as the guest made them; flushing makes
        // them durable before the machine is captured.
        let name = self.name;
        for drive in self.drives.iter_mut().flatten() {
            if let Some(backend) = drive.backend.as_mut().filter(|b| !b.read_only()) {
                backend.flush().map_err(|source| StateError::Quiesce {
                    what: format!("flushing a disk of the {name} failed"),
                    source,
                })?;
            }
        }
        Ok(())
    }

    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        snapshot::encode(self.name, &self.saved())
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let name = self.name;
        let saved: SavedChannel = snapshot::decode(name, bytes)?;
        let invalid = |what: String| snapshot::invalid(name, what);
        let mut kinds = Vec::with_capacity(2);
        for (index, saved_drive) in saved.drives.iter().enumerate() {
            let present = self.drives.get(index).is_some_and(Option::is_some);
            match saved_drive {
                Some(d) => kinds.push(Some((
                    self.restored_kind(index, d).map_err(invalid)?,
                    d.status,
                    d.error,
                ))),
                None if present => {
                    return Err(invalid(format!("drive {index} was absent when saved")));
                }
                None => kinds.push(None),
            }
        }
        let transfer = self.restored_transfer(saved.transfer).map_err(invalid)?;

        for (drive, kind) in self.drives.iter_mut().zip(kinds) {
            if let (Some(drive), Some((kind, status, error))) = (drive.as_mut(), kind) {
                drive.kind = kind;
                drive.status = status;
                drive.error = error;
            }
        }
        self.features = saved.features;
        self.count = saved.count;
        self.lba_low = saved.lba_low;
        self.lba_mid = saved.lba_mid;
        self.lba_high = saved.lba_high;
        self.device = saved.device;
        self.control = saved.control;
        self.signatures = saved.signatures;
        self.transfer = transfer;
        Ok(())
    }
}
