// SPDX-License-Identifier: Apache-2.0
//! The 512-byte IDENTIFY DEVICE and IDENTIFY PACKET DEVICE answers (ATA/
//! ATAPI-7 word layout): what a driver learns of a drive before it uses it.

/// Sectors a READ/WRITE MULTIPLE block may hold at most.
pub const MAX_MULTIPLE: u8 = 16;
/// Heads in the geometry a disk reports for CHS addressing.
pub const HEADS: u64 = 16;
/// Sectors per track in that geometry.
pub const SECTORS_PER_TRACK: u64 = 63;
/// The most cylinders CHS addressing can name.
const MAX_CYLINDERS: u64 = 16383;
/// The largest sector count LBA28 can address.
pub const LBA28_SECTORS: u64 = 0x0fff_ffff;

/// Which device of its channel a drive is: bits of word 93.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// Device 0, with no device 1 on the channel.
    MasterAlone,
    /// Device 0, with a device 1.
    MasterWithSlave,
    /// Device 1.
    Slave,
}

/// What sets one drive apart from another.
pub struct DriveInfo<'a> {
    /// Serial number (at most 20 characters).
    pub serial: &'a str,
    /// Model (at most 40 characters).
    pub model: &'a str,
    /// Its place on the channel.
    pub position: Position,
}

const FIRMWARE: &str = "1.0";

/// The geometry (cylinders, heads, sectors per track) a disk of `sectors`
/// reports: 16 heads and 63 sectors a track, cylinders capped at 16383.
pub fn geometry(sectors: u64) -> (u64, u64, u64) {
    let cylinders = (sectors / (HEADS * SECTORS_PER_TRACK)).clamp(1, MAX_CYLINDERS);
    (cylinders, HEADS, SECTORS_PER_TRACK)
}

/// IDENTIFY DEVICE for a hard disk of `sectors` 512-byte sectors whose
/// READ/WRITE MULTIPLE block is `multiple` sectors (0: disabled).
pub fn disk(info: &DriveInfo<'_>, sectors: u64, multiple: u8) -> [u16; 256] {
    let mut words = [0u16; 256];
    let (cylinders, heads, per_track) = geometry(sectors);
    let chs_sectors = (cylinders * heads * per_track).min(sectors);
    words[0] = 0x0040; // fixed disk
    words[1] = cylinders as u16;
    words[3] = heads as u16;
    words[6] = per_track as u16;
    common_strings(&mut words, info);
    words[47] = 0x8000 | u16::from(MAX_MULTIPLE);
    words[49] = 1 << 9; // LBA (no DMA: PIO only)
    words[50] = 0x4000;
    words[53] = 0x0007; // words 54-58, 64-70 and 88 are valid
    words[54] = cylinders as u16;
    words[55] = heads as u16;
    words[56] = per_track as u16;
    words[57] = chs_sectors as u16;
    words[58] = (chs_sectors >> 16) as u16;
    words[59] = if multiple > 0 {
        0x0100 | u16::from(multiple)
    } else {
        0
    };
    let lba28 = sectors.min(LBA28_SECTORS);
    words[60] = lba28 as u16;
    words[61] = (lba28 >> 16) as u16;
    pio_timing(&mut words);
    // Supported and enabled: NOP (14), LBA48 (83.10), FLUSH CACHE (83.12)
    // and FLUSH CACHE EXT (83.13).
    words[82] = 0x4000;
    words[83] = 0x4000 | (1 << 10) | (1 << 12) | (1 << 13);
    words[84] = 0x4000;
    words[85] = 0x4000;
    words[86] = (1 << 10) | (1 << 12) | (1 << 13);
    words[87] = 0x4000;
    words[93] = reset_result(info.position);
    for (i, word) in words[100..104].iter_mut().enumerate() {
        *word = (sectors >> (16 * i)) as u16;
    }
    words[106] = 0x4000; // one 512-byte logical sector per physical one
    words
}

/// IDENTIFY PACKET DEVICE for a CD-ROM drive.
pub fn cdrom(info: &DriveInfo<'_>) -> [u16; 256] {
    let mut words = [0u16; 256];
    // ATAPI, CD-ROM (type 5), removable, DRQ within 50 µs, 12-byte packets.
    words[0] = 0x8000 | (0x05 << 8) | 0x80 | (0b10 << 5);
    common_strings(&mut words, info);
    words[49] = 1 << 9;
    words[53] = 0x0006; // words 64-70 and 88 are valid
    pio_timing(&mut words);
    words[82] = 0x4000 | (1 << 4); // PACKET feature set
    words[83] = 0x4000;
    words[84] = 0x4000;
    words[85] = 1 << 4;
    words[87] = 0x4000;
    words[93] = reset_result(info.position);
    words
}

fn common_strings(words: &mut [u16; 256], info: &DriveInfo<'_>) {
    put_string(&mut words[10..20], info.serial);
    put_string(&mut words[23..27], FIRMWARE);
    put_string(&mut words[27..47], info.model);
    words[80] = 0x007e; // ATA/ATAPI-1 to -6
}

/// PIO modes 3 and 4, 120 ns cycles; no DMA modes.
fn pio_timing(words: &mut [u16; 256]) {
    words[64] = 0x0003;
    words[65] = 120;
    words[66] = 120;
    words[67] = 120;
    words[68] = 120;
}

/// Word 93, the hardware reset result: bit 14 set, and for device 0
/// "diagnostics passed, device number by jumper", with bit 6 (device 0
/// answers for device 1) when there is no device 1 — firmware reads that
/// to skip probing for one.
fn reset_result(position: Position) -> u16 {
    match position {
        Position::MasterAlone => 0x4000 | (1 << 6) | (1 << 3) | (0b01 << 1) | 1,
        Position::MasterWithSlave => 0x4000 | (1 << 5) | (1 << 3) | (0b01 << 1) | 1,
        Position::Slave => 0x4000 | (1 << 8) | (0b01 << 9),
    }
}

/// ATA strings: space-padded, two characters a word, the first in the
/// high byte.
fn put_string(words: &mut [u16], text: &str) {
    let mut bytes = text.bytes().filter(|b| b.is_ascii_graphic() || *b == b' ');
    for word in words.iter_mut() {
        let high = bytes.next().unwrap_or(b' ');
        let low = bytes.next().unwrap_or(b' ');
        *word = u16::from_be_bytes([high, low]);
    }
}

/// The 512 bytes a driver reads for `words`, little-endian.
pub fn to_bytes(words: &[u16; 256]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn info(position: Position) -> DriveInfo<'static> {
        DriveInfo {
            serial: "NB0001",
            model: "Nestbox IDE disk",
            position,
        }
    }

    fn string(words: &[u16]) -> String {
        words
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .map(char::from)
            .collect::<String>()
            .trim_end()
            .to_string()
    }

    #[test]
    fn a_disk_reports_its_size_geometry_and_strings() {
        let sectors = 2 * 1024 * 1024; // 1 GiB
        let words = disk(&info(Position::MasterAlone), sectors, 0);
        assert_eq!(string(&words[27..47]), "Nestbox IDE disk");
        assert_eq!(string(&words[10..20]), "NB0001");
        assert_eq!((words[1], words[3], words[6]), (2080, 16, 63));
        assert_eq!(
            u32::from(words[60]) | u32::from(words[61]) << 16,
            2 * 1024 * 1024
        );
        let lba48 = (0..4).fold(0u64, |acc, i| acc | u64::from(words[100 + i]) << (16 * i));
        assert_eq!(lba48, sectors);
        assert_ne!(words[83] & (1 << 10), 0, "LBA48");
        assert_eq!(words[59], 0);
    }

    #[test]
    fn a_huge_disk_caps_lba28_and_chs_but_not_lba48() {
        let sectors = 1u64 << 33; // 4 TiB
        let words = disk(&info(Position::MasterAlone), sectors, 8);
        assert_eq!(words[60], 0xffff);
        assert_eq!(words[61], 0x0fff);
        assert_eq!(words[1], 16383);
        assert_eq!(words[103], 0);
        assert_eq!(words[102], 2);
        assert_eq!(words[59], 0x0108);
    }

    #[test]
    fn the_reset_result_tells_firmware_whether_device_1_exists() {
        // SeaBIOS skips probing device 1 when (word 93 & 0xdf61) == 0x4041.
        let alone = disk(&info(Position::MasterAlone), 100, 0)[93];
        let with_slave = disk(&info(Position::MasterWithSlave), 100, 0)[93];
        assert_eq!(alone & 0xdf61, 0x4041);
        assert_ne!(with_slave & 0xdf61, 0x4041);
    }

    #[test]
    fn a_cdrom_is_an_atapi_cd_device() {
        let words = cdrom(&info(Position::Slave));
        assert_eq!(words[0] >> 14, 0b10, "ATAPI");
        assert_eq!((words[0] >> 8) & 0x1f, 5, "CD-ROM");
        assert_ne!(words[0] & 0x80, 0, "removable");
        assert_eq!(words[0] & 0x3, 0, "12-byte packets");
    }

    #[test]
    fn odd_characters_are_left_out_and_long_strings_cut() {
        let mut words = [0u16; 4];
        put_string(&mut words, "ab\ncdefghijk");
        assert_eq!(string(&words), "abcdefgh");
    }
}
