// SPDX-License-Identifier: Apache-2.0
//! ATAPI packet commands for a CD-ROM drive: the MMC subset BIOSes, DOS CD
//! drivers and the Linux and Windows CD drivers use on a data disc (TEST
//! UNIT READY, REQUEST SENSE, INQUIRY, READ CAPACITY, READ(10)/(12), READ
//! TOC, MODE SENSE(10), GET CONFIGURATION, GET EVENT STATUS NOTIFICATION,
//! and the ones a read-only drive just accepts). Anything else, or a field
//! out of range, is CHECK CONDITION with ILLEGAL REQUEST sense.
//!
//! The 12-byte packet comes from the guest: every length and address in it
//! is checked against the disc and the reply is cut to the allocation
//! length the guest gave.

/// Bytes in a CD-ROM data sector.
pub const SECTOR: u64 = 2048;

/// SCSI sense data: key, additional sense code and qualifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Its qualifier.
    pub ascq: u8,
}

const NOT_READY: u8 = 0x02;
const MEDIUM_ERROR: u8 = 0x03;
const ILLEGAL_REQUEST: u8 = 0x05;
const UNIT_ATTENTION: u8 = 0x06;

impl Sense {
    /// ILLEGAL REQUEST: invalid command operation code.
    pub const INVALID_COMMAND: Self = Self::illegal(0x20);
    /// ILLEGAL REQUEST: logical block address out of range.
    pub const OUT_OF_RANGE: Self = Self::illegal(0x21);
    /// ILLEGAL REQUEST: invalid field in the command packet.
    pub const INVALID_FIELD: Self = Self::illegal(0x24);
    /// MEDIUM ERROR: unrecovered read error (the image could not be read).
    pub const READ_ERROR: Self = Self {
        key: MEDIUM_ERROR,
        asc: 0x11,
        ascq: 0,
    };
    /// NOT READY: medium not present (the tray is empty).
    pub const NO_MEDIUM: Self = Self {
        key: NOT_READY,
        asc: 0x3a,
        ascq: 0,
    };
    /// UNIT ATTENTION: not ready to ready change, medium may have changed.
    pub const MEDIUM_CHANGED: Self = Self {
        key: UNIT_ATTENTION,
        asc: 0x28,
        ascq: 0,
    };

    const fn illegal(asc: u8) -> Self {
        Self {
            key: ILLEGAL_REQUEST,
            asc,
            ascq: 0,
        }
    }
}

/// What a packet command asks of the drive.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Good status, no data.
    Done,
    /// Good status after the guest reads these bytes.
    Data(Vec<u8>),
    /// Good status after the guest reads `count` sectors from `lba`.
    Read {
        /// First sector.
        lba: u64,
        /// Sectors (at least one).
        count: u64,
    },
    /// CHECK CONDITION; the sense goes to the next REQUEST SENSE.
    Check(Sense),
}

/// A media event GET EVENT STATUS NOTIFICATION reports once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum MediaEvent {
    #[default]
    None,
    NewMedia,
    Removed,
}

/// The drive: its disc (if any), pending media change and the sense left
/// by the last command.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Drive {
    /// 2048-byte sectors on the disc; None with the tray empty.
    pub disc: Option<u64>,
    /// Sense data for REQUEST SENSE.
    pub sense: Sense,
    /// The disc changed since the guest last looked: the next command
    /// that needs the disc gets UNIT ATTENTION first.
    changed: bool,
    event: MediaEvent,
}

impl Drive {
    /// A drive holding a disc of `sectors` sectors.
    pub fn with_disc(sectors: u64) -> Self {
        Self {
            disc: Some(sectors),
            ..Self::default()
        }
    }

    /// The user put in a disc of `sectors` sectors, or took it out (None).
    pub fn change_disc(&mut self, disc: Option<u64>) {
        self.event = if disc.is_some() {
            MediaEvent::NewMedia
        } else {
            MediaEvent::Removed
        };
        self.disc = disc;
        self.changed = true;
    }

    /// 2048-byte sectors on the disc (0 without one).
    fn sectors(&self) -> u64 {
        self.disc.unwrap_or(0)
    }

    /// Runs `cdb`, recording its sense (none on success).
    pub fn execute(&mut self, cdb: &[u8; 12]) -> Reply {
        if cdb[0] == 0x03 {
            let reply = request_sense(self.sense, cdb);
            self.sense = Sense::default();
            return reply;
        }
        // Commands about the drive itself never see the change; the first
        // one that touches the disc does, once.
        let about_the_drive = matches!(cdb[0], 0x12 | 0x46 | 0x4a);
        let reply = if self.changed && !about_the_drive {
            self.changed = false;
            Reply::Check(Sense::MEDIUM_CHANGED)
        } else if self.disc.is_none() && needs_disc(cdb[0]) {
            Reply::Check(Sense::NO_MEDIUM)
        } else {
            self.run(cdb)
        };
        self.sense = match reply {
            Reply::Check(sense) => sense,
            _ => Sense::default(),
        };
        reply
    }

    fn run(&mut self, cdb: &[u8; 12]) -> Reply {
        match cdb[0] {
            // TEST UNIT READY, START STOP UNIT, PREVENT ALLOW MEDIUM
            // REMOVAL, SYNCHRONIZE CACHE: the disc is always there.
            0x00 | 0x1b | 0x1e | 0x35 => Reply::Done,
            0x12 => inquiry(cdb),
            0x25 => self.read_capacity(),
            0x28 => self.read(be32(&cdb[2..6]), u64::from(be16(&cdb[7..9]))),
            0xa8 => self.read(be32(&cdb[2..6]), be32(&cdb[6..10])),
            0x2b => self.seek(be32(&cdb[2..6])),
            0x43 => self.read_toc(cdb),
            0x46 => get_configuration(cdb),
            0x4a => self.event_status(cdb),
            0x5a => mode_sense(cdb),
            _ => Reply::Check(Sense::INVALID_COMMAND),
        }
    }

    fn read_capacity(&self) -> Reply {
        let last = self.sectors().saturating_sub(1).min(u64::from(u32::MAX)) as u32;
        let mut data = last.to_be_bytes().to_vec();
        data.extend_from_slice(&(SECTOR as u32).to_be_bytes());
        Reply::Data(data)
    }

    fn read(&self, lba: u64, count: u64) -> Reply {
        match lba.checked_add(count) {
            Some(end) if end <= self.sectors() => {
                if count == 0 {
                    Reply::Done
                } else {
                    Reply::Read { lba, count }
                }
            }
            _ => Reply::Check(Sense::OUT_OF_RANGE),
        }
    }

    fn seek(&self, lba: u64) -> Reply {
        if lba < self.sectors() {
            Reply::Done
        } else {
            Reply::Check(Sense::OUT_OF_RANGE)
        }
    }

    /// READ TOC/PMA/ATIP formats 0 (the TOC: one data track and the lead-
    /// out) and 1 (the first session).
    fn read_toc(&self, cdb: &[u8; 12]) -> Reply {
        let msf = cdb[1] & 0x02 != 0;
        let mut format = cdb[2] & 0x0f;
        if format == 0 {
            // Older drivers put the format in the top bits of byte 9.
            format = cdb[9] >> 6;
        }
        let track = cdb[6];
        let address = |lba: u64| -> [u8; 4] {
            if msf {
                let frames = lba.saturating_add(150);
                let minute = (frames / (75 * 60)).min(255) as u8;
                [0, minute, ((frames / 75) % 60) as u8, (frames % 75) as u8]
            } else {
                (lba.min(u64::from(u32::MAX)) as u32).to_be_bytes()
            }
        };
        // After the two length bytes: first and last track, descriptors.
        let mut data = vec![1, 1];
        match format {
            0 => {
                if track > 1 && track != 0xaa {
                    return Reply::Check(Sense::INVALID_FIELD);
                }
                if track <= 1 {
                    data.extend_from_slice(&[0, 0x14, 1, 0]);
                    data.extend_from_slice(&address(0));
                }
                data.extend_from_slice(&[0, 0x14, 0xaa, 0]);
                data.extend_from_slice(&address(self.sectors()));
            }
            1 => {
                data.extend_from_slice(&[0, 0x14, 1, 0]);
                data.extend_from_slice(&address(0));
            }
            _ => return Reply::Check(Sense::INVALID_FIELD),
        }
        let mut reply = (data.len() as u16).to_be_bytes().to_vec();
        reply.extend_from_slice(&data);
        Reply::Data(cut(reply, usize::from(be16(&cdb[7..9]))))
    }
}

fn request_sense(sense: Sense, cdb: &[u8; 12]) -> Reply {
    let mut data = [0u8; 18];
    data[0] = 0x70; // current error, fixed format
    data[2] = sense.key;
    data[7] = 10; // additional length
    data[12] = sense.asc;
    data[13] = sense.ascq;
    Reply::Data(cut(data.to_vec(), usize::from(cdb[4])))
}

fn inquiry(cdb: &[u8; 12]) -> Reply {
    if cdb[1] & 0x01 != 0 {
        // No vital product data pages.
        return Reply::Check(Sense::INVALID_FIELD);
    }
    let mut data = vec![0x05, 0x80, 0x00, 0x21, 31, 0, 0, 0];
    data.extend_from_slice(b"NESTBOX ");
    data.extend_from_slice(b"CD-ROM          ");
    data.extend_from_slice(b"1.0 ");
    Reply::Data(cut(data, usize::from(be16(&cdb[3..5]))))
}

/// The profile list (CD-ROM, current) and nothing more.
fn get_configuration(cdb: &[u8; 12]) -> Reply {
    let mut data = vec![0, 0, 0, 12, 0, 0, 0x00, 0x08];
    data.extend_from_slice(&[0x00, 0x00, 0x03, 4, 0x00, 0x08, 0x01, 0x00]);
    Reply::Data(cut(data, usize::from(be16(&cdb[7..9]))))
}

/// Commands that need a disc in the tray.
fn needs_disc(opcode: u8) -> bool {
    matches!(opcode, 0x00 | 0x25 | 0x28 | 0xa8 | 0x2b | 0x43)
}

impl Drive {
    /// Polled GET EVENT STATUS NOTIFICATION, media class: a new disc or
    /// its removal (reported once), and whether a disc is there.
    fn event_status(&mut self, cdb: &[u8; 12]) -> Reply {
        if cdb[1] & 0x01 == 0 {
            // Asynchronous notification is not supported.
            return Reply::Check(Sense::INVALID_FIELD);
        }
        const MEDIA: u8 = 1 << 4;
        let data = if cdb[4] & MEDIA != 0 {
            let event = match std::mem::take(&mut self.event) {
                MediaEvent::None => 0,
                MediaEvent::NewMedia => 2,
                MediaEvent::Removed => 3,
            };
            let present = if self.disc.is_some() { 0x02 } else { 0 };
            vec![0, 6, 0x04, MEDIA, event, present, 0, 0]
        } else {
            vec![0, 2, 0x80, MEDIA]
        };
        Reply::Data(cut(data, usize::from(be16(&cdb[7..9]))))
    }
}

/// MODE SENSE(10) for the read error recovery (0x01) and capabilities
/// (0x2A) pages, or all of them (0x3F); changeable values are all zero.
fn mode_sense(cdb: &[u8; 12]) -> Reply {
    let page = cdb[2] & 0x3f;
    let changeable = cdb[2] >> 6 == 1;
    let error_recovery: [u8; 12] = [0x01, 10, 0, 5, 0, 0, 0, 0, 5, 0, 0, 0];
    let capabilities: [u8; 22] = [
        0x2a, 20, 0x00, 0x00, // reads CD-ROM only, writes nothing
        0x71, 0x00, // audio play, mode 2 forms 1 and 2, multi-session
        0x29, 0x00, // lock, eject, tray loading
        0x1b, 0x90, // 7056 KB/s (40x)
        0x01, 0x00, // 256 volume levels
        0x02, 0x00, // 512 KB buffer
        0x1b, 0x90, // current speed
        0, 0, 0, 0, 0, 0,
    ];
    let mut pages = Vec::new();
    let mut push = |body: &[u8]| {
        if changeable {
            // The page code and length, then no changeable bits.
            pages.extend(body.iter().take(2));
            pages.extend(std::iter::repeat_n(0, body.len().saturating_sub(2)));
        } else {
            pages.extend_from_slice(body);
        }
    };
    match page {
        0x01 => push(&error_recovery),
        0x2a => push(&capabilities),
        0x3f => {
            push(&error_recovery);
            push(&capabilities);
        }
        _ => return Reply::Check(Sense::INVALID_FIELD),
    }
    let len = (6 + pages.len()) as u16;
    let mut data = len.to_be_bytes().to_vec();
    data.extend_from_slice(&[0x01, 0, 0, 0, 0, 0]); // 120 mm data disc
    data.extend_from_slice(&pages);
    Reply::Data(cut(data, usize::from(be16(&cdb[7..9]))))
}

fn cut(mut data: Vec<u8>, allocation: usize) -> Vec<u8> {
    data.truncate(allocation);
    data
}

fn be16(bytes: &[u8]) -> u16 {
    bytes
        .iter()
        .take(2)
        .fold(0, |acc, &b| (acc << 8) | u16::from(b))
}

fn be32(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(4)
        .fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn drive() -> Drive {
        Drive::with_disc(1000)
    }

    fn cdb(bytes: &[u8]) -> [u8; 12] {
        let mut cdb = [0u8; 12];
        cdb[..bytes.len()].copy_from_slice(bytes);
        cdb
    }

    fn data(reply: Reply) -> Vec<u8> {
        match reply {
            Reply::Data(data) => data,
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn read_capacity_names_the_last_sector_and_2048_byte_blocks() {
        let reply = drive().execute(&cdb(&[0x25]));
        assert_eq!(data(reply), [0, 0, 0x03, 0xe7, 0, 0, 0x08, 0]);
    }

    #[test]
    fn reads_inside_the_disc_are_accepted_and_outside_it_refused() {
        let mut drive = drive();
        assert_eq!(
            drive.execute(&cdb(&[0x28, 0, 0, 0, 0x03, 0xe0, 0, 0, 8])),
            Reply::Read { lba: 992, count: 8 }
        );
        assert_eq!(
            drive.execute(&cdb(&[0x28, 0, 0, 0, 0x03, 0xe1, 0, 0, 8])),
            Reply::Check(Sense::OUT_OF_RANGE)
        );
        // READ(12) with a count that would wrap.
        assert_eq!(
            drive.execute(&cdb(&[
                0xa8, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])),
            Reply::Check(Sense::OUT_OF_RANGE)
        );
        assert_eq!(drive.execute(&cdb(&[0x28])), Reply::Done);
    }

    #[test]
    fn the_sense_of_a_failed_command_is_reported_once() {
        let mut drive = drive();
        assert_eq!(
            drive.execute(&cdb(&[0xff])),
            Reply::Check(Sense::INVALID_COMMAND)
        );
        let sense = data(drive.execute(&cdb(&[0x03, 0, 0, 0, 18])));
        assert_eq!((sense[0], sense[2], sense[12]), (0x70, 0x05, 0x20));
        let again = data(drive.execute(&cdb(&[0x03, 0, 0, 0, 18])));
        assert_eq!((again[2], again[12]), (0, 0));
    }

    #[test]
    fn replies_are_cut_to_the_allocation_length() {
        let mut drive = drive();
        assert_eq!(data(drive.execute(&cdb(&[0x12, 0, 0, 0, 5]))).len(), 5);
        let inquiry = data(drive.execute(&cdb(&[0x12, 0, 0, 0, 96])));
        assert_eq!(inquiry.len(), 36);
        assert_eq!(inquiry[0], 0x05, "CD/DVD device");
        assert_eq!(
            data(drive.execute(&cdb(&[0x5a, 0, 0x3f, 0, 0, 0, 0, 0, 4]))).len(),
            4
        );
    }

    #[test]
    fn the_toc_has_one_data_track_and_the_lead_out() {
        let toc = data(drive().execute(&cdb(&[0x43, 0, 0, 0, 0, 0, 0, 0x03, 0x24])));
        assert_eq!(&toc[..4], &[0, 18, 1, 1]);
        assert_eq!(&toc[4..8], &[0, 0x14, 1, 0]);
        assert_eq!(&toc[12..16], &[0, 0x14, 0xaa, 0]);
        assert_eq!(&toc[16..20], &1000u32.to_be_bytes());
        let msf = data(drive().execute(&cdb(&[0x43, 0x02, 0, 0, 0, 0, 0, 0x03, 0x24])));
        // Track 1 at 00:02:00, the lead-out at (1000 + 150) frames = 00:15:25.
        assert_eq!(&msf[8..12], &[0, 0, 2, 0]);
        assert_eq!(&msf[16..20], &[0, 0, 15, 25]);
        assert_eq!(
            drive().execute(&cdb(&[0x43, 0, 0, 0, 0, 0, 5, 0x03, 0x24])),
            Reply::Check(Sense::INVALID_FIELD)
        );
    }

    #[test]
    fn a_changed_disc_is_announced_once_and_an_empty_tray_is_not_ready() {
        let mut drive = drive();
        drive.change_disc(None);
        // INQUIRY is about the drive: no unit attention.
        assert!(matches!(
            drive.execute(&cdb(&[0x12, 0, 0, 0, 36])),
            Reply::Data(_)
        ));
        let event = data(drive.execute(&cdb(&[0x4a, 0x01, 0, 0, 0x10, 0, 0, 0, 8])));
        assert_eq!((event[4], event[5]), (3, 0), "removal, no disc");
        assert_eq!(
            drive.execute(&cdb(&[0x00])),
            Reply::Check(Sense::MEDIUM_CHANGED)
        );
        assert_eq!(drive.execute(&cdb(&[0x00])), Reply::Check(Sense::NO_MEDIUM));
        assert_eq!(drive.execute(&cdb(&[0x25])), Reply::Check(Sense::NO_MEDIUM));
        let sense = data(drive.execute(&cdb(&[0x03, 0, 0, 0, 18])));
        assert_eq!((sense[2], sense[12]), (0x02, 0x3a));

        drive.change_disc(Some(50));
        let event = data(drive.execute(&cdb(&[0x4a, 0x01, 0, 0, 0x10, 0, 0, 0, 8])));
        assert_eq!((event[4], event[5]), (2, 2), "new disc, present");
        let again = data(drive.execute(&cdb(&[0x4a, 0x01, 0, 0, 0x10, 0, 0, 0, 8])));
        assert_eq!(again[4], 0, "reported once");
        assert_eq!(
            drive.execute(&cdb(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1])),
            Reply::Check(Sense::MEDIUM_CHANGED)
        );
        assert_eq!(
            drive.execute(&cdb(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1])),
            Reply::Read { lba: 0, count: 1 }
        );
        assert_eq!(
            drive.execute(&cdb(&[0x28, 0, 0, 0, 0, 50, 0, 0, 1])),
            Reply::Check(Sense::OUT_OF_RANGE),
            "the new disc's size"
        );
    }

    #[test]
    fn unknown_pages_fields_and_asynchronous_events_are_refused() {
        let mut drive = drive();
        for bad in [
            cdb(&[0x5a, 0, 0x05]),
            cdb(&[0x12, 0x01]),
            cdb(&[0x4a, 0x00, 0, 0, 0x10]),
            cdb(&[0x43, 0, 0x05]),
        ] {
            assert_eq!(drive.execute(&bad), Reply::Check(Sense::INVALID_FIELD));
        }
        let event = data(drive.execute(&cdb(&[0x4a, 0x01, 0, 0, 0x10, 0, 0, 0, 8])));
        assert_eq!(event, [0, 6, 0x04, 0x10, 0, 0x02, 0, 0]);
    }
}
