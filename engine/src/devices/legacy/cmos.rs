// SPDX-License-Identifier: Apache-2.0
//! The MC146818 CMOS RTC at ports 0x70 (index, bit 7 masks NMI) and 0x71
//! (data): the wall-clock registers read from the host clock, in BCD or
//! binary and 12- or 24-hour form as register B asks, and the 128-byte
//! NVRAM with the memory-size and CPU-count bytes PC firmware reads.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::{BusDevice, DeviceState};
use crate::layout::{ONE_MIB, RamLayout};
use crate::snapshot::{self, Persist, StateError};

/// The index port; data follows at +1.
pub const CMOS_PORT: u64 = 0x70;
/// The RTC's ISA interrupt.
pub const RTC_IRQ: u32 = 8;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

const REG_B_24H: u8 = 0x02;
const REG_B_BINARY: u8 = 0x04;
const REG_D_VALID_RAM: u8 = 0x80;

/// A calendar time, broken down as the RTC shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcTime {
    /// Full year, e.g. 2026.
    pub year: u32,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=59.
    pub second: u32,
    /// 1 (Sunday) ..= 7.
    pub weekday: u32,
}

impl RtcTime {
    /// Breaks seconds since the Unix epoch into a UTC calendar time.
    pub fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
            // 1970-01-01 was a Thursday (weekday 5 when Sunday is 1).
            weekday: ((days + 4) % 7) as u32 + 1,
        }
    }
}

/// Converts days since 1970-01-01 to (year, month, day) in the proleptic
/// Gregorian calendar, counting in 400-year eras.
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

/// The RTC and NVRAM.
pub struct Cmos {
    index: u8,
    nvram: [u8; 128],
    clock: fn() -> u64,
}

fn host_unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Cmos {
    /// A CMOS for a VM with this RAM and vCPU count, using the host clock.
    pub fn new(ram: RamLayout, vcpus: u32) -> Self {
        Self::with_clock(ram, vcpus, host_unix_time)
    }

    /// As [`Cmos::new`], reading the time from `clock` (for tests).
    pub fn with_clock(ram: RamLayout, vcpus: u32, clock: fn() -> u64) -> Self {
        let mut nvram = [0u8; 128];
        let mut set = |reg: usize, value: u8| {
            if let Some(slot) = nvram.get_mut(reg) {
                *slot = value;
            }
        };
        // 32.768 kHz time base, 1024 Hz periodic rate; 24-hour BCD mode.
        set(REG_A as usize, 0x26);
        set(REG_B as usize, REG_B_24H);
        set(REG_D as usize, REG_D_VALID_RAM);
        // Base memory: 640 KiB.
        set(0x15, 0x80);
        set(0x16, 0x02);
        // Extended memory between 1 MiB and 64 MiB, in KiB (capped).
        let ext_kib = (ram.below_4g.saturating_sub(ONE_MIB) >> 10).min(0xffff);
        for reg in [0x17, 0x30] {
            set(reg, ext_kib as u8);
            set(reg + 1, (ext_kib >> 8) as u8);
        }
        // Memory between 16 MiB and the PCI hole, in 64 KiB units.
        let above_16m = (ram.below_4g.saturating_sub(16 << 20) >> 16).min(0xffff);
        set(0x34, above_16m as u8);
        set(0x35, (above_16m >> 8) as u8);
        // Memory above 4 GiB, in 64 KiB units (three bytes).
        let high = ram.above_4g >> 16;
        set(0x5b, high as u8);
        set(0x5c, (high >> 8) as u8);
        set(0x5d, (high >> 16) as u8);
        // vCPUs minus one, where SeaBIOS looks for the CPU count.
        set(0x5f, vcpus.saturating_sub(1).min(255) as u8);
        // Equipment byte: FPU present, no floppy.
        set(0x14, 0x02);
        Self {
            index: 0,
            nvram,
            clock,
        }
    }

    fn encode(&self, value: u32) -> u8 {
        let value = (value % 100) as u8;
        if self.reg_b() & REG_B_BINARY != 0 {
            value
        } else {
            ((value / 10) << 4) | (value % 10)
        }
    }

    fn reg_b(&self) -> u8 {
        self.nvram.get(REG_B as usize).copied().unwrap_or(REG_B_24H)
    }

    fn read_register(&mut self, reg: u8) -> u8 {
        let time = RtcTime::from_unix((self.clock)());
        match reg {
            REG_SECONDS => self.encode(time.second),
            REG_MINUTES => self.encode(time.minute),
            REG_HOURS => self.hours(time.hour),
            REG_WEEKDAY => self.encode(time.weekday),
            REG_DAY => self.encode(time.day),
            REG_MONTH => self.encode(time.month),
            REG_YEAR => self.encode(time.year % 100),
            REG_CENTURY => self.encode(time.year / 100),
            // Never mid-update: the clock is read from the host atomically.
            REG_A => self.nvram.get(REG_A as usize).copied().unwrap_or(0) & 0x7f,
            REG_C => {
                // Reading C acknowledges pending interrupt flags.
                let value = self.nvram.get(REG_C as usize).copied().unwrap_or(0);
                if let Some(c) = self.nvram.get_mut(REG_C as usize) {
                    *c = 0;
                }
                value
            }
            _ => self.nvram.get(reg as usize).copied().unwrap_or(0xff),
        }
    }

    fn hours(&self, hour: u32) -> u8 {
        if self.reg_b() & REG_B_24H != 0 {
            return self.encode(hour);
        }
        let pm = hour >= 12;
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if pm { 0x80 } else { 0 }
    }

    fn write_register(&mut self, reg: u8, value: u8) {
        match reg {
            // The clock follows the host; writes to it are ignored.
            REG_SECONDS..=REG_YEAR | REG_CENTURY | REG_C | REG_D => {}
            _ => {
                if let Some(slot) = self.nvram.get_mut(reg as usize) {
                    *slot = value;
                }
            }
        }
    }
}

/// What a saved state holds: the index register and the NVRAM (the clock
/// follows the host's, as after a real machine's sleep).
impl Persist for Cmos {
    fn save(&mut self) -> Result<Vec<u8>, StateError> {
        snapshot::encode("CMOS", &(self.index, self.nvram.to_vec()))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let (index, nvram): (u8, Vec<u8>) = snapshot::decode("CMOS", bytes)?;
        self.nvram = nvram
            .as_slice()
            .try_into()
            .map_err(|_| snapshot::invalid("CMOS", format!("{} bytes of NVRAM", nvram.len())))?;
        self.index = index;
        Ok(())
    }
}

impl BusDevice for Cmos {
    fn state(&mut self) -> DeviceState<'_> {
        DeviceState::Saved(self)
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0 => 0xff,
            _ => self.read_register(self.index),
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            // Bit 7 is the NMI mask, not part of the index.
            0 => self.index = value & 0x7f,
            _ => self.write_register(self.index, value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-22 13:45:07 UTC, a Sunday.
    fn fixed_clock() -> u64 {
        1_795_355_107
    }

    fn cmos() -> Cmos {
        Cmos::with_clock(RamLayout::new(5 << 30), 4, fixed_clock)
    }

    fn read(cmos: &mut Cmos, reg: u8) -> u8 {
        cmos.write(0, &[reg]);
        let mut data = [0u8];
        cmos.read(1, &mut data);
        data[0]
    }

    #[test]
    fn test_rtc_time_from_unix_is_utc_calendar() {
        let time = RtcTime::from_unix(fixed_clock());
        assert_eq!(
            time,
            RtcTime {
                year: 2026,
                month: 11,
                day: 22,
                hour: 13,
                minute: 45,
                second: 7,
                weekday: 1
            }
        );
    }

    #[test]
    fn test_cmos_time_reads_bcd_by_default() {
        let mut cmos = cmos();
        assert_eq!(
            [
                read(&mut cmos, 4),
                read(&mut cmos, 9),
                read(&mut cmos, 0x32)
            ],
            [0x13, 0x26, 0x20]
        );
    }

    #[test]
    fn test_cmos_time_binary_12h_mode() {
        let mut cmos = cmos();
        cmos.write(0, &[REG_B]);
        cmos.write(1, &[REG_B_BINARY]);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x80 | 1);
    }

    #[test]
    fn test_cmos_memory_bytes_describe_ram() {
        let mut cmos = cmos();
        // 3 GiB below the hole: (3 GiB - 16 MiB) / 64 KiB = 0xBF00.
        assert_eq!([read(&mut cmos, 0x34), read(&mut cmos, 0x35)], [0x00, 0xbf]);
        // 2 GiB above 4 GiB: 0x8000 units of 64 KiB.
        assert_eq!(
            [
                read(&mut cmos, 0x5b),
                read(&mut cmos, 0x5c),
                read(&mut cmos, 0x5d)
            ],
            [0, 0x80, 0]
        );
        assert_eq!(read(&mut cmos, 0x5f), 3);
    }

    #[test]
    fn test_cmos_index_masks_nmi_bit() {
        let mut cmos = cmos();
        cmos.write(0, &[0x80 | 0x5f]);
        let mut data = [0u8];
        cmos.read(1, &mut data);
        assert_eq!(data[0], 3);
    }

    #[test]
    fn test_saved_nvram_of_the_wrong_size_is_refused_unchanged() {
        use crate::snapshot::Persist;
        let mut dev = cmos();
        let saved = dev.save().unwrap();
        let short = crate::snapshot::encode("t", &(3u8, vec![1u8; 64])).unwrap();
        assert!(dev.restore(&short).is_err());
        assert!(dev.restore(&[0xff; 3]).is_err());
        assert_eq!(dev.save().unwrap(), saved);
    }
}
