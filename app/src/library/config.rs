// SPDX-License-Identifier: Apache-2.0
//! The per-VM settings file `vms/<id>/vm.toml`: its serde model
//! ([`VmFile`]), loading with errors that name the file, line and column
//! ([`ConfigError`]), atomic saving, and the translation into what the
//! engine starts ([`VmFile::to_engine`]).
//!
//! The file is versioned by its `schema` field. A file with a newer schema
//! than this build understands is refused, never rewritten; unknown fields
//! are refused too, so settings written by a newer Nestbox are never lost
//! by an older one saving over them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use engine::audio::SinkConfig;
use engine::boot::linux::LinuxBoot;
use engine::devices::virtio::net::stable_mac;
use engine::vm::VirtioInputConfig;
use engine::{BootSource, DisplayConfig, NetConfig, SoundConfig, VmConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use super::caps::{CapError, Caps};

/// The schema version this build reads and writes.
pub const SCHEMA: u32 = 1;

/// The settings file's name inside a VM directory.
pub const VM_FILE: &str = "vm.toml";

/// Where Debian's `seabios` package puts SeaBIOS.
pub const SEABIOS_PATH: &str = "/usr/share/seabios/bios.bin";
/// Where Debian's `seabios` package puts the VGA BIOS of the standard VGA.
pub const VGA_BIOS_PATH: &str = "/usr/share/seabios/vgabios-stdvga.bin";
/// Debian's SeaVGABIOS for virtio-vga.
pub const VIRTIO_VGA_BIOS_PATH: &str = "/usr/share/seabios/vgabios-virtio.bin";
/// Where Debian's `ipxe-qemu` package puts iPXE's boot ROM for virtio-net.
pub const IPXE_ROM_PATH: &str = "/usr/lib/ipxe/qemu/pxe-virtio.rom";

/// One VM's settings, as stored in `vm.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmFile {
    /// Schema version of the file; [`SCHEMA`] for files this build writes.
    pub schema: u32,
    /// The name the user gave the VM (not unique).
    pub name: String,
    /// Id of the profile the VM was created from (see `profiles/`).
    pub profile: String,
    /// Guest RAM in MiB (`memory` in the file).
    #[serde(rename = "memory")]
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Free-form OS label shown in the library ("Debian 12", "MS-DOS 6.22").
    #[serde(default)]
    pub os: String,
    /// Guest networking.
    #[serde(default)]
    pub network: Network,
    /// Guest sound: `sound = "host"|"none"`, or a `[sound]` table with
    /// `output`, `volume` and `mute` ([`SoundSettings`]).
    #[serde(default)]
    pub sound: SoundSettings,
    /// Whether this VM may use more than half of the host's RAM.
    #[serde(default)]
    pub allow_overcommit: bool,
    /// Whether the VM is suspended, not shut down, when the computer shuts
    /// down (or its worker is told to end by SIGTERM, SIGINT or SIGHUP).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend_on_host_shutdown: bool,
    /// When the VM was created.
    pub created: Created,
    /// What the VM boots.
    pub boot: Boot,
    /// How the console shows the guest screen.
    #[serde(default)]
    pub display: Display,
    /// Attached disks and CD-ROMs, in boot order.
    #[serde(default)]
    pub disks: Vec<Disk>,
}

/// What a VM boots: in the file, a `[boot]` table with exactly one of
/// `firmware = "seabios"`, `bios = PATH` or `kernel = PATH` (with optional
/// `initrd = PATH` and `cmdline = "..."`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BootTable", into = "BootTable")]
pub enum Boot {
    /// Firmware Nestbox knows by name.
    Firmware(Firmware),
    /// A firmware image file.
    Bios(PathBuf),
    /// A Linux kernel started directly.
    Kernel {
        /// bzImage or ELF vmlinux.
        kernel: PathBuf,
        /// Optional initial ramdisk.
        initrd: Option<PathBuf>,
        /// Kernel command line.
        cmdline: String,
    },
}

/// Firmware Nestbox knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS from the `seabios` package, at [`SEABIOS_PATH`].
    Seabios,
}

/// The `[boot]` table as written in the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    firmware: Option<Firmware>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bios: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kernel: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    initrd: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmdline: Option<String>,
}

impl TryFrom<BootTable> for Boot {
    type Error = String;

    fn try_from(table: BootTable) -> Result<Self, String> {
        let kernel_only = table.initrd.is_some() || table.cmdline.is_some();
        match (table.firmware, table.bios, table.kernel) {
            (Some(firmware), None, None) if !kernel_only => Ok(Boot::Firmware(firmware)),
            (None, Some(bios), None) if !kernel_only => Ok(Boot::Bios(bios)),
            (None, None, Some(kernel)) => Ok(Boot::Kernel {
                kernel,
                initrd: table.initrd,
                cmdline: table.cmdline.unwrap_or_default(),
            }),
            (None, None, None) if kernel_only => {
                Err("boot: initrd and cmdline need kernel = PATH".to_string())
            }
            (firmware, bios, kernel)
                if usize::from(firmware.is_some())
                    + usize::from(bios.is_some())
                    + usize::from(kernel.is_some())
                    == 1 =>
            {
                Err("boot: initrd and cmdline go only with kernel = PATH".to_string())
            }
            _ => Err(
                "boot: give exactly one of firmware = \"seabios\", bios = PATH or kernel = PATH"
                    .to_string(),
            ),
        }
    }
}

impl From<Boot> for BootTable {
    fn from(boot: Boot) -> Self {
        match boot {
            Boot::Firmware(firmware) => BootTable {
                firmware: Some(firmware),
                ..Default::default()
            },
            Boot::Bios(path) => BootTable {
                bios: Some(path),
                ..Default::default()
            },
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => BootTable {
                kernel: Some(kernel),
                initrd,
                cmdline: Some(cmdline),
                ..Default::default()
            },
        }
    }
}

/// How a disk image stores its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Byte for byte.
    #[default]
    Raw,
    /// QEMU's copy-on-write format.
    Qcow2,
}

impl From<DiskFormat> for engine::vm::DiskFormat {
    fn from(format: DiskFormat) -> Self {
        match format {
            DiskFormat::Raw => engine::vm::DiskFormat::Raw,
            DiskFormat::Qcow2 => engine::vm::DiskFormat::Qcow2,
        }
    }
}

/// What kind of drive a disk is shown to the user as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// A hard disk.
    #[default]
    Disk,
    /// A CD-ROM (always attached read-only).
    Cdrom,
}

/// The controller disks and CD-ROMs are attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// virtio-blk: fast; Linux and anything with virtio drivers, and DOS
    /// through SeaBIOS's disk services (but no bootable CD-ROM).
    #[default]
    Virtio,
    /// The IDE controller (ATA disks, ATAPI CD-ROMs): every PC operating
    /// system can use it, and the BIOS boots installer CDs from it.
    Ide,
}

impl From<DiskBus> for engine::vm::DiskBus {
    fn from(bus: DiskBus) -> Self {
        match bus {
            DiskBus::Virtio => engine::vm::DiskBus::Virtio,
            DiskBus::Ide => engine::vm::DiskBus::Ide,
        }
    }
}

/// One attached disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// The image; a relative path is inside the VM's directory.
    pub path: PathBuf,
    /// Its format.
    #[serde(default)]
    pub format: DiskFormat,
    /// Attach read-only.
    #[serde(default)]
    pub readonly: bool,
    /// Hard disk or CD-ROM.
    #[serde(default)]
    pub media: Media,
    /// The controller it is on (`bus = "ide"`; virtio when left out).
    #[serde(default, skip_serializing_if = "is_virtio")]
    pub bus: DiskBus,
    /// A CD-ROM whose disc was taken out: `path` is the last disc, kept
    /// to put back; the drive starts empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ejected: bool,
    /// Files outside the VM's directory that a qcow2 image may open by the
    /// names in its header (backing images, data files); those inside it
    /// need no mention. Relative paths are inside the VM's directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backing: Vec<PathBuf>,
    /// When the guest's writes become durable: `writeback` (at its flush
    /// or when the VM ends; the default) or `writethrough` (before each
    /// write is acknowledged).
    #[serde(default, skip_serializing_if = "is_writeback")]
    pub cache: CacheMode,
}

/// When a disk's writes become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// At the guest's flush or when the VM ends.
    #[default]
    Writeback,
    /// Before each write is acknowledged.
    Writethrough,
}

fn is_writeback(cache: &CacheMode) -> bool {
    *cache == CacheMode::Writeback
}

impl Disk {
    /// An existing image the user picked, as its contents say it is: a
    /// qcow2 image, an ISO 9660 CD (a read-only CD-ROM), or raw. It must
    /// open: a qcow2 image whose header names files outside `backing` is
    /// refused here, with the engine's message, rather than at start.
    pub fn existing(path: PathBuf, backing: Vec<PathBuf>) -> Result<Self, String> {
        let kind = engine::vm::ImageKind::probe(&path)
            .map_err(|e| format!("Cannot read {}: {e}", path.display()))?;
        let cd = kind == engine::vm::ImageKind::Iso9660;
        let format = match kind {
            engine::vm::ImageKind::Qcow2 => DiskFormat::Qcow2,
            engine::vm::ImageKind::Iso9660 | engine::vm::ImageKind::Raw => DiskFormat::Raw,
        };
        let probe = engine::vm::DiskConfig {
            path: path.clone(),
            format: format.into(),
            readonly: true,
            dependencies: engine::vm::Dependencies {
                dirs: Vec::new(),
                files: backing.clone(),
            },
            ..Default::default()
        };
        match probe.open_backend() {
            // In use by a running VM: it opens, just not now.
            Ok(_) | Err(engine::devices::virtio::block::BlockError::Locked(_)) => {}
            Err(e) => {
                return Err(format!("{:#}", anyhow::Error::from(e)));
            }
        }
        Ok(Disk {
            path,
            format,
            readonly: cd,
            media: if cd { Media::Cdrom } else { Media::Disk },
            bus: DiskBus::default(),
            ejected: false,
            backing,
            cache: CacheMode::default(),
        })
    }
}

fn is_virtio(bus: &DiskBus) -> bool {
    *bus == DiskBus::Virtio
}

/// How the guest screen is fitted into the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ScaleMode {
    /// Scale to fit the window, keeping the aspect ratio.
    #[default]
    #[serde(rename = "fit")]
    Fit,
    /// One guest pixel per host pixel.
    #[serde(rename = "1:1")]
    OneToOne,
    /// The largest whole-number scale that fits (crisp retro pixels).
    #[serde(rename = "integer")]
    Integer,
    /// Fill the window, ignoring the aspect ratio.
    #[serde(rename = "stretch")]
    Stretch,
}

/// The display adapter a VM has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Adapter {
    /// virtio-vga: a standard VGA that a guest's virtio-gpu driver takes
    /// over (any resolution, following the window).
    #[default]
    #[serde(rename = "virtio-vga")]
    VirtioVga,
    /// The standard VGA alone, as an old PC has it.
    #[serde(rename = "vga")]
    Vga,
}

impl Adapter {
    /// The engine's adapter.
    pub fn engine(self) -> engine::vm::DisplayAdapter {
        match self {
            Self::VirtioVga => engine::vm::DisplayAdapter::VirtioVga,
            Self::Vga => engine::vm::DisplayAdapter::StdVga,
        }
    }

    /// Where Debian installs the adapter's VGA BIOS.
    pub fn vga_bios(self) -> &'static str {
        match self {
            Self::VirtioVga => VIRTIO_VGA_BIOS_PATH,
            Self::Vga => VGA_BIOS_PATH,
        }
    }

    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The guest display's size, for a guest that drives virtio-gpu.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Resolution {
    /// The size of the console or window showing the VM, in physical
    /// pixels, following it as it is resized (`"window"`).
    #[default]
    FollowWindow,
    /// Always this size (`"1280x800"`).
    Fixed {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

/// The fixed sizes the settings offer.
pub const FIXED_RESOLUTIONS: [(u32, u32); 6] = [
    (800, 600),
    (1024, 768),
    (1280, 800),
    (1366, 768),
    (1600, 900),
    (1920, 1080),
];

/// The smallest and largest side of a fixed display size.
pub const RESOLUTION_RANGE: std::ops::RangeInclusive<u32> = 320..=8192;

impl Resolution {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The fixed size, if it is one.
    pub fn fixed(self) -> Option<(u32, u32)> {
        match self {
            Self::FollowWindow => None,
            Self::Fixed { width, height } => Some((width, height)),
        }
    }
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FollowWindow => f.write_str("window"),
            Self::Fixed { width, height } => write!(f, "{width}x{height}"),
        }
    }
}

impl From<Resolution> for String {
    fn from(resolution: Resolution) -> Self {
        resolution.to_string()
    }
}

impl TryFrom<String> for Resolution {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if text == "window" {
            return Ok(Self::FollowWindow);
        }
        let size = text.split_once('x').and_then(|(w, h)| {
            Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?))
        });
        match size {
            Some((width, height))
                if RESOLUTION_RANGE.contains(&width) && RESOLUTION_RANGE.contains(&height) =>
            {
                Ok(Self::Fixed { width, height })
            }
            _ => Err(format!(
                "resolution \"{text}\" is neither \"window\" nor a size such as \"1280x800\" \
                 (each side {} to {})",
                RESOLUTION_RANGE.start(),
                RESOLUTION_RANGE.end()
            )),
        }
    }
}

/// The `[display]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Display {
    /// How the guest screen is scaled.
    #[serde(default)]
    pub scale: ScaleMode,
    /// The display adapter (virtio-vga unless the file says otherwise).
    #[serde(default, skip_serializing_if = "Adapter::is_default")]
    pub adapter: Adapter,
    /// The guest display's size (following the window unless the file
    /// says otherwise).
    #[serde(default, skip_serializing_if = "Resolution::is_default")]
    pub resolution: Resolution,
}

/// Guest networking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// User-mode NAT to the host's network.
    #[default]
    Nat,
    /// No network card.
    None,
}

/// Guest sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sound {
    /// Play on the host's default output.
    #[default]
    Host,
    /// No sound device.
    None,
}

/// The most a VM's volume can be: its stream at full scale.
pub const MAX_VOLUME: u8 = 100;

/// A VM's sound card and its levels. In `vm.toml`, `sound = "host"` or
/// `sound = "none"` (full volume, not muted), or a table:
///
/// ```toml
/// [sound]
/// output = "host"
/// volume = 80    # percent, 0..=100
/// mute = false
/// ```
///
/// Settings at full volume and unmuted are written in the short form, so
/// files that never changed the levels stay as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SoundFile", into = "SoundFile")]
pub struct SoundSettings {
    /// Whether the VM has a sound card, and where it plays.
    pub output: Sound,
    /// Playback volume in percent (0..=[`MAX_VOLUME`]).
    pub volume: u8,
    /// Whether playback is muted.
    pub mute: bool,
}

impl Default for SoundSettings {
    fn default() -> Self {
        Sound::default().into()
    }
}

impl From<Sound> for SoundSettings {
    fn from(output: Sound) -> Self {
        Self {
            output,
            volume: MAX_VOLUME,
            mute: false,
        }
    }
}

/// [`SoundSettings`] as the file spells it.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SoundFile {
    Output(Sound),
    Table(SoundTable),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SoundTable {
    #[serde(default)]
    output: Sound,
    #[serde(default = "max_volume")]
    volume: u8,
    #[serde(default)]
    mute: bool,
}

fn max_volume() -> u8 {
    MAX_VOLUME
}

impl TryFrom<SoundFile> for SoundSettings {
    type Error = String;

    fn try_from(file: SoundFile) -> Result<Self, Self::Error> {
        match file {
            SoundFile::Output(output) => Ok(output.into()),
            SoundFile::Table(t) if t.volume > MAX_VOLUME => Err(format!(
                "sound volume {} is over {MAX_VOLUME} (percent)",
                t.volume
            )),
            SoundFile::Table(t) => Ok(Self {
                output: t.output,
                volume: t.volume,
                mute: t.mute,
            }),
        }
    }
}

impl From<SoundSettings> for SoundFile {
    fn from(s: SoundSettings) -> Self {
        if s.volume == MAX_VOLUME && !s.mute {
            Self::Output(s.output)
        } else {
            Self::Table(SoundTable {
                output: s.output,
                volume: s.volume,
                mute: s.mute,
            })
        }
    }
}

/// When a VM was created: an RFC 3339 date (what Nestbox writes) or unix
/// seconds (accepted for hand-written files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Created {
    /// Unix seconds.
    UnixSeconds(i64),
    /// An RFC 3339 date, e.g. `2024-05-01T12:00:00Z`.
    Rfc3339(String),
}

impl Created {
    /// Now, as an RFC 3339 UTC date.
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Created::Rfc3339(rfc3339_utc(secs))
    }

    /// Unix seconds, if the date can be read (`YYYY-MM-DDTHH:MM:SS`, optional
    /// fraction, then `Z` or `±HH:MM`).
    pub fn unix_seconds(&self) -> Option<i64> {
        match self {
            Created::UnixSeconds(secs) => Some(*secs),
            Created::Rfc3339(text) => parse_rfc3339(text),
        }
    }
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    let num = |s: Option<&str>| s?.parse::<i64>().ok();
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.split('-');
    let (y, mo, d) = (
        num(date_parts.next())?,
        num(date_parts.next())?,
        num(date_parts.next())?,
    );
    let (clock, offset_secs) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, offset) = time.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (oh, om) = offset.get(1..)?.split_once(':')?;
        (clock, sign * (num(Some(oh))? * 3600 + num(Some(om))? * 60))
    };
    let clock = clock.split('.').next()?;
    let mut clock_parts = clock.split(':');
    let (h, mi, s) = (
        num(clock_parts.next())?,
        num(clock_parts.next())?,
        num(clock_parts.next())?,
    );
    let valid = (1..=12).contains(&mo)
        && (1..=31).contains(&d)
        && (0..24).contains(&h)
        && (0..60).contains(&mi)
        && (0..=60).contains(&s);
    valid.then(|| days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_secs)
}

/// A place in a text file, both counted from 1 (columns in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line number.
    pub line: usize,
    /// Column number.
    pub column: usize,
}

impl Location {
    /// The line and column of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = text.get(..offset).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before.get(line_start..).unwrap_or_default().chars().count() + 1,
        }
    }
}

/// A settings file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a settings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// It could not be read.
    Read {
        /// The kind of I/O error (`NotFound` for a missing file).
        kind: io::ErrorKind,
        /// The OS's message.
        message: String,
    },
    /// It is not valid TOML or does not fit the expected shape.
    Parse {
        /// Where, when the parser knows.
        location: Option<Location>,
        /// The parser's message.
        message: String,
    },
    /// It was written by a newer Nestbox.
    NewerSchema {
        /// The file's schema.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
}

impl ConfigError {
    fn read(file: &Path, err: &io::Error) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            problem: Problem::Read {
                kind: err.kind(),
                message: err.to_string(),
            },
        }
    }

    fn parse(file: &Path, text: &str, err: &toml::de::Error) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            problem: Problem::Parse {
                location: err.span().map(|span| Location::of_offset(text, span.start)),
                message: err.message().trim_end().to_string(),
            },
        }
    }

    /// The line and column of the problem, if known.
    pub fn location(&self) -> Option<Location> {
        match self.problem {
            Problem::Parse { location, .. } => location,
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match &self.problem {
            Problem::Read { message, .. } => write!(f, "Cannot read {file}: {message}"),
            Problem::Parse {
                location: Some(at),
                message,
            } => write!(
                f,
                "{file} line {}, column {}: {message}",
                at.line, at.column
            ),
            Problem::Parse {
                location: None,
                message,
            } => write!(f, "{file}: {message}"),
            Problem::NewerSchema { found, supported } => write!(
                f,
                "{file} has schema {found}, but this Nestbox reads only schema {supported} or \
                 older: it was written by a newer Nestbox; upgrade Nestbox to use it \
                 (the file is left as it is)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and parses a versioned TOML file. A `schema` above [`SCHEMA`] is
/// refused before anything else is looked at.
pub(crate) fn load_versioned<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::read(file, &e))?;
    parse_versioned(file, &text)
}

/// Parses `text`, the contents of `file`, as for [`load_versioned`].
pub(crate) fn parse_versioned<T: DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| ConfigError::parse(file, text, &e))?;
    if let Some(found) = table.get("schema").and_then(toml::Value::as_integer)
        && found > i64::from(SCHEMA)
    {
        return Err(ConfigError {
            file: file.to_path_buf(),
            problem: Problem::NewerSchema {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: SCHEMA,
            },
        });
    }
    toml::from_str(text).map_err(|e| ConfigError::parse(file, text, &e))
}

/// Why a VM's settings cannot be turned into a VM the engine can start.
/// Nothing on disk is changed when this happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// A disk image named in the settings is gone.
    MissingDisk {
        /// The VM's name.
        vm: String,
        /// The resolved image path.
        path: PathBuf,
    },
    /// A kernel, initrd or firmware file named in the settings is gone.
    MissingBootFile {
        /// The VM's name.
        vm: String,
        /// "kernel", "initrd" or "firmware image".
        what: &'static str,
        /// The resolved path.
        path: PathBuf,
    },
    /// SeaBIOS is not installed.
    NoSeabios,
    /// The VGA BIOS is not installed.
    NoVgaBios(&'static str),
    /// The memory size does not fit in bytes.
    MemoryTooLarge(u64),
    /// Over the host's caps (the same check and message as `create`).
    OverCap(CapError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::MissingDisk { vm, path } => write!(
                f,
                "The disk image {} of VM \"{vm}\" is missing: restore the file, \
                 or remove the disk from the VM's settings",
                path.display()
            ),
            StartError::MissingBootFile { vm, what, path } => write!(
                f,
                "The {what} {} of VM \"{vm}\" is missing: restore the file, \
                 or change what the VM boots in its settings",
                path.display()
            ),
            StartError::NoSeabios => write!(
                f,
                "SeaBIOS is not installed at {SEABIOS_PATH}: install Debian's 'seabios' package"
            ),
            StartError::NoVgaBios(path) => write!(
                f,
                "The VGA BIOS is not installed at {path}: install Debian's 'seabios' package"
            ),
            StartError::MemoryTooLarge(mib) => write!(f, "{mib} MiB of memory is too large"),
            StartError::OverCap(cap) => write!(f, "VM settings: {cap}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The library id of the VM living in `vm_dir` (the directory's name).
fn vm_id(vm_dir: &Path) -> String {
    vm_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `path` as is if absolute, else inside `vm_dir`.
pub fn resolve(vm_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        vm_dir.join(path)
    }
}

impl VmFile {
    /// Loads `path` (a `vm.toml`).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_versioned(path)
    }

    /// The file's text as [`VmFile::save`] writes it.
    /// The entries of `disks` that are IDE CD-ROM drives, in order: drive
    /// `n` of [`VmFile::change_cd`] (and of the engine) is the n-th.
    pub fn cd_drives(&self) -> Vec<usize> {
        self.disks
            .iter()
            .enumerate()
            .filter(|(_, d)| d.bus == DiskBus::Ide && d.media == Media::Cdrom)
            .map(|(index, _)| index)
            .collect()
    }

    /// Puts `image` into CD-ROM drive `cd` (see [`VmFile::cd_drives`]),
    /// or takes its disc out (None, keeping the path to put back).
    pub fn change_cd(&mut self, cd: usize, image: Option<PathBuf>) -> Result<(), String> {
        let drives = self.cd_drives();
        let Some(disk) = drives.get(cd).and_then(|&i| self.disks.get_mut(i)) else {
            return Err(match drives.len() {
                0 => format!(
                    "VM {} has no IDE CD-ROM drive (its CD-ROMs, if any, are on virtio)",
                    self.name
                ),
                n => format!(
                    "VM {} has {n} CD-ROM drive(s); there is no drive {cd}",
                    self.name
                ),
            });
        };
        match image {
            Some(path) => {
                disk.path = path;
                disk.ejected = false;
            }
            None => disk.ejected = true,
        }
        Ok(())
    }

    pub fn to_toml(&self) -> io::Result<String> {
        toml::to_string_pretty(self).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes `dir/vm.toml` atomically.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        write_atomic(&dir.join(VM_FILE), self.to_toml()?.as_bytes())
    }

    /// What the engine starts for this VM living in `vm_dir`: relative paths
    /// resolved inside it, every file it needs checked to exist. Resource
    /// caps are checked separately ([`super::caps::Caps::check`]).
    pub fn to_engine(&self, vm_dir: &Path) -> Result<VmConfig, StartError> {
        let memory_bytes = self
            .memory_mib
            .checked_mul(1 << 20)
            .ok_or(StartError::MemoryTooLarge(self.memory_mib))?;
        Caps::check_start(self.memory_mib, self.vcpus, self.allow_overcommit)
            .map_err(StartError::OverCap)?;
        let boot_file = |what: &'static str, path: &Path| {
            let path = resolve(vm_dir, path);
            if path.is_file() {
                Ok(path)
            } else {
                Err(StartError::MissingBootFile {
                    vm: self.name.clone(),
                    what,
                    path,
                })
            }
        };
        let boot = match &self.boot {
            Boot::Firmware(Firmware::Seabios) => {
                let path = PathBuf::from(SEABIOS_PATH);
                if !path.is_file() {
                    return Err(StartError::NoSeabios);
                }
                BootSource::Firmware {
                    path,
                    serial_console: true,
                }
            }
            Boot::Bios(path) => BootSource::Firmware {
                path: boot_file("firmware image", path)?,
                serial_console: true,
            },
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => BootSource::Linux(LinuxBoot {
                kernel: boot_file("kernel", kernel)?,
                initrd: initrd
                    .as_deref()
                    .map(|p| boot_file("initrd", p))
                    .transpose()?,
                cmdline: cmdline.clone(),
            }),
        };
        let disks = self
            .disks
            .iter()
            // An ejected CD on virtio has no drive to stay in.
            .filter(|disk| !(disk.ejected && disk.bus == DiskBus::Virtio))
            .map(|disk| {
                let path = resolve(vm_dir, &disk.path);
                let ejected = disk.ejected && disk.media == Media::Cdrom;
                if !ejected && !path.is_file() {
                    return Err(StartError::MissingDisk {
                        vm: self.name.clone(),
                        path,
                    });
                }
                Ok(engine::vm::DiskConfig {
                    path,
                    format: disk.format.into(),
                    readonly: disk.readonly || disk.media == Media::Cdrom,
                    bus: disk.bus.into(),
                    cdrom: disk.media == Media::Cdrom,
                    ejected,
                    dependencies: engine::vm::Dependencies {
                        dirs: vec![vm_dir.to_path_buf()],
                        files: disk.backing.iter().map(|f| resolve(vm_dir, f)).collect(),
                    },
                    cache: match disk.cache {
                        CacheMode::Writeback => engine::vm::CacheMode::WriteBack,
                        CacheMode::Writethrough => engine::vm::CacheMode::WriteThrough,
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Every VM of the library has a screen; firmware gets the VGA BIOS
        // so it can set text and VBE modes, a kernel drives the card itself.
        let adapter = self.display.adapter;
        let display = match &boot {
            BootSource::Firmware { .. } => {
                let vga_bios = PathBuf::from(adapter.vga_bios());
                if !vga_bios.is_file() {
                    return Err(StartError::NoVgaBios(adapter.vga_bios()));
                }
                DisplayConfig {
                    adapter: adapter.engine(),
                    vga_bios: Some(vga_bios),
                    size: self.display.resolution.fixed(),
                }
            }
            BootSource::Linux(_) => DisplayConfig {
                adapter: adapter.engine(),
                vga_bios: None,
                size: self.display.resolution.fixed(),
            },
        };
        // The MAC comes from the VM's id (its directory's name), which
        // never changes, so the guest sees the same card on every start.
        let network = match self.network {
            Network::None => None,
            Network::Nat => Some(NetConfig {
                mac: stable_mac(&vm_id(vm_dir)),
                // Network boot when the disks do not boot, as a PC's NIC.
                boot_rom: match &boot {
                    BootSource::Firmware { .. } => {
                        Some(PathBuf::from(IPXE_ROM_PATH)).filter(|path| path.is_file())
                    }
                    BootSource::Linux(_) => None,
                },
            }),
        };
        Ok(VmConfig {
            console: None,
            // An absolute pointer (no grab) and a keyboard for guests with
            // virtio drivers; PS/2 stays for firmware and older systems.
            input: Some(VirtioInputConfig::default()),
            memory_bytes,
            vcpus: self.vcpus,
            boot,
            disks,
            display: Some(display),
            network,
            sound: match self.sound.output {
                Sound::None => None,
                Sound::Host => Some(SoundConfig {
                    output: SinkConfig::Host,
                    volume: self.sound.volume.min(MAX_VOLUME),
                    muted: self.sound.mute,
                }),
            },
            // An entropy source, as virt-manager gives new VMs.
            rng: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::testdir::TestDir;

    fn sample() -> VmFile {
        VmFile {
            schema: SCHEMA,
            name: "Debian".to_string(),
            profile: "linux-iso".to_string(),
            memory_mib: 2048,
            vcpus: 2,
            os: "Debian 12".to_string(),
            network: Network::Nat,
            sound: Sound::None.into(),
            allow_overcommit: false,
            suspend_on_host_shutdown: false,
            created: Created::Rfc3339("2024-05-01T12:00:00Z".to_string()),
            boot: Boot::Kernel {
                kernel: PathBuf::from("vmlinuz"),
                initrd: Some(PathBuf::from("/boot/initrd.img")),
                cmdline: "console=ttyS0".to_string(),
            },
            display: Display {
                scale: ScaleMode::OneToOne,
                adapter: Adapter::Vga,
                resolution: Resolution::Fixed {
                    width: 1280,
                    height: 800,
                },
            },
            disks: vec![
                Disk {
                    path: PathBuf::from("disk.qcow2"),
                    format: DiskFormat::Qcow2,
                    readonly: false,
                    media: Media::Disk,
                    bus: DiskBus::Virtio,
                    ejected: false,
                    backing: Vec::new(),
                    cache: Default::default(),
                },
                Disk {
                    path: PathBuf::from("/isos/debian.iso"),
                    format: DiskFormat::Raw,
                    readonly: false,
                    media: Media::Cdrom,
                    bus: DiskBus::Ide,
                    ejected: false,
                    backing: Vec::new(),
                    cache: Default::default(),
                },
            ],
        }
    }

    fn parse(text: &str) -> Result<VmFile, ConfigError> {
        parse_versioned(Path::new("/vms/x/vm.toml"), text)
    }

    const MINIMAL: &str = "schema = 1\nname = \"a\"\nprofile = \"generic-bios\"\n\
                           memory = 64\nvcpus = 1\ncreated = 0\n[boot]\nfirmware = \"seabios\"\n";

    #[test]
    fn test_round_trip_through_text() {
        let vm = sample();
        let text = vm.to_toml().unwrap();
        assert_eq!(parse(&text).unwrap(), vm);
    }

    #[test]
    fn test_save_then_load() {
        let dir = TestDir::new("config-save");
        let vm = sample();
        vm.save(dir.path()).unwrap();
        assert_eq!(VmFile::load(&dir.path().join(VM_FILE)).unwrap(), vm);
    }

    #[test]
    fn test_minimal_file_takes_defaults() {
        let vm = parse(MINIMAL).unwrap();
        assert_eq!(vm.boot, Boot::Firmware(Firmware::Seabios));
        assert_eq!(vm.display.scale, ScaleMode::Fit);
        assert_eq!((vm.network, vm.sound.output), (Network::Nat, Sound::Host));
        assert_eq!(vm.created, Created::UnixSeconds(0));
        assert!(vm.disks.is_empty());
    }

    #[test]
    fn test_wrong_type_names_line_and_column() {
        let text = MINIMAL.replace("memory = 64", "memory = \"lots\"");
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.location(),
            Some(Location {
                line: 4,
                column: 10
            })
        );
        assert_eq!(
            err.to_string(),
            "/vms/x/vm.toml line 4, column 10: invalid type: string \"lots\", expected u64"
        );
    }

    #[test]
    fn test_syntax_error_names_line() {
        let text = MINIMAL.replace("vcpus = 1", "vcpus = = 1");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.location().map(|l| l.line), Some(5));
    }

    #[test]
    fn test_unknown_field_is_refused() {
        let err = parse(&format!("memroy = 3\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("memroy"), "{err}");
        assert_eq!(err.location().map(|l| l.line), Some(1));
    }

    #[test]
    fn test_newer_schema_is_refused_before_anything_else() {
        let err = parse("schema = 2\nfuture_field = true\n").unwrap_err();
        assert_eq!(
            err.problem,
            Problem::NewerSchema {
                found: 2,
                supported: 1
            }
        );
        assert!(err.to_string().contains("newer Nestbox"));
    }

    #[test]
    fn test_boot_needs_exactly_one_source() {
        let both = MINIMAL.replace("[boot]\n", "[boot]\nbios = \"/x.bin\"\n");
        let err = parse(&both).unwrap_err();
        assert!(err.to_string().contains("exactly one of"), "{err}");
        // The [boot] table's header.
        assert_eq!(err.location().map(|l| l.line), Some(7));
        let stray = MINIMAL.replace("[boot]\n", "[boot]\ncmdline = \"quiet\"\n");
        assert!(
            parse(&stray)
                .unwrap_err()
                .to_string()
                .contains("only with kernel")
        );
    }

    #[test]
    fn test_sound_levels_read_from_a_table_and_short_form_stays_short() {
        // The short form: full volume, not muted.
        let short = parse(&format!("sound = \"none\"\n{MINIMAL}")).unwrap();
        assert_eq!(short.sound, Sound::None.into());
        assert!(short.to_toml().unwrap().contains("sound = \"none\""));
        // The table: levels kept, written back as a table.
        let text = format!("{MINIMAL}[sound]\noutput = \"host\"\nvolume = 40\nmute = true\n");
        let vm = parse(&text).unwrap();
        let levels = SoundSettings {
            output: Sound::Host,
            volume: 40,
            mute: true,
        };
        assert_eq!(vm.sound, levels);
        let written = vm.to_toml().unwrap();
        assert!(written.contains("[sound]"), "{written}");
        assert_eq!(parse(&written).unwrap().sound, levels);
        // A table may leave out what it does not change.
        let partial = parse(&format!("{MINIMAL}[sound]\nvolume = 5\n")).unwrap();
        assert_eq!(
            (partial.sound.output, partial.sound.volume),
            (Sound::Host, 5)
        );
        // Over 100 % is refused.
        let loud = parse(&format!("{MINIMAL}[sound]\nvolume = 101\n")).unwrap_err();
        assert!(loud.to_string().contains("over 100"), "{loud}");
    }

    #[test]
    fn test_sound_settings_reach_the_engine() {
        let dir = TestDir::new("config-sound");
        let mut vm = parse(MINIMAL).unwrap();
        vm.boot = Boot::Kernel {
            kernel: PathBuf::from("vmlinuz"),
            initrd: None,
            cmdline: String::new(),
        };
        std::fs::write(dir.path().join("vmlinuz"), b"").unwrap();
        vm.sound = SoundSettings {
            output: Sound::Host,
            volume: 30,
            mute: true,
        };
        let sound = vm.to_engine(dir.path()).unwrap().sound.unwrap();
        assert_eq!(sound.output, SinkConfig::Host);
        assert_eq!((sound.volume, sound.muted), (30, true));
        vm.sound.output = Sound::None;
        assert_eq!(vm.to_engine(dir.path()).unwrap().sound, None);
    }

    #[test]
    fn test_bad_scale_mode_is_refused() {
        let text = format!("{MINIMAL}[display]\nscale = \"huge\"\n");
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains("huge"), "{err}");
        assert_eq!(err.location().map(|l| l.line), Some(10));
    }

    #[test]
    fn test_missing_file_is_a_read_error() {
        let err = VmFile::load(Path::new("/nonexistent/vm.toml")).unwrap_err();
        assert!(matches!(
            err.problem,
            Problem::Read {
                kind: io::ErrorKind::NotFound,
                ..
            }
        ));
    }

    #[test]
    fn test_location_counts_characters() {
        assert_eq!(
            Location::of_offset("ab\nçd", 5),
            Location { line: 2, column: 2 }
        );
        assert_eq!(
            Location::of_offset("x", 99),
            Location { line: 1, column: 2 }
        );
    }

    #[test]
    fn test_created_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_714_564_800), "2024-05-01T12:00:00Z");
        let parsed = |t: &str| Created::Rfc3339(t.to_string()).unix_seconds();
        assert_eq!(parsed("2024-05-01T12:00:00Z"), Some(1_714_564_800));
        assert_eq!(parsed("2024-05-01T14:00:00.5+02:00"), Some(1_714_564_800));
        assert_eq!(parsed("yesterday"), None);
        let now = Created::now().unix_seconds().unwrap();
        assert!(now > 1_714_564_800);
    }

    #[test]
    fn test_to_engine_resolves_paths_and_cdrom_is_readonly() {
        let dir = TestDir::new("config-engine");
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        std::fs::write(dir.path().join("disk.img"), b"").unwrap();
        std::fs::write(dir.path().join("cd.iso"), b"").unwrap();
        let mut vm = sample();
        vm.boot = Boot::Kernel {
            kernel: PathBuf::from("vmlinuz"),
            initrd: None,
            cmdline: "quiet".to_string(),
        };
        vm.disks[0].path = PathBuf::from("disk.img");
        vm.disks[1].path = dir.path().join("cd.iso");
        let config = vm.to_engine(dir.path()).unwrap();
        assert_eq!(config.memory_bytes, 2048 << 20);
        assert_eq!(config.disks[0].path, dir.path().join("disk.img"));
        assert_eq!(config.disks[0].format, engine::vm::DiskFormat::Qcow2);
        assert!(!config.disks[0].readonly);
        assert!(config.disks[1].readonly);
        assert_eq!(
            (config.disks[0].bus, config.disks[0].cdrom),
            (engine::vm::DiskBus::Virtio, false)
        );
        assert_eq!(
            (config.disks[1].bus, config.disks[1].cdrom),
            (engine::vm::DiskBus::Ide, true)
        );
        assert!(
            matches!(config.boot, BootSource::Linux(ref l) if l.kernel == dir.path().join("vmlinuz"))
        );
    }

    #[test]
    fn test_change_cd_swaps_and_ejects_the_ide_cdrom_and_an_ejected_one_starts_empty() {
        let dir = TestDir::new("config-cd");
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        std::fs::write(dir.path().join("disk.img"), b"").unwrap();
        let mut vm = sample();
        vm.boot = Boot::Kernel {
            kernel: PathBuf::from("vmlinuz"),
            initrd: None,
            cmdline: String::new(),
        };
        vm.disks[0].path = PathBuf::from("disk.img");
        assert_eq!(vm.cd_drives(), vec![1]);
        vm.change_cd(0, Some(PathBuf::from("/isos/drivers.iso")))
            .unwrap();
        assert_eq!(vm.disks[1].path, PathBuf::from("/isos/drivers.iso"));
        assert!(vm.change_cd(1, None).unwrap_err().contains("no drive 1"));
        vm.change_cd(0, None).unwrap();
        assert!(vm.disks[1].ejected);
        assert_eq!(vm.disks[1].path, PathBuf::from("/isos/drivers.iso"), "kept");
        // The disc is gone, and that is fine: the drive starts empty.
        let config = vm.to_engine(dir.path()).unwrap();
        assert!(config.disks[1].ejected && config.disks[1].cdrom);
        let text = vm.to_toml().unwrap();
        assert!(text.contains("ejected = true"), "{text}");
        assert_eq!(parse(&text).unwrap(), vm);
        vm.disks[1].bus = DiskBus::Virtio;
        assert!(vm.change_cd(0, None).unwrap_err().contains("no IDE CD-ROM"));
    }

    #[test]
    fn test_disk_bus_is_written_only_for_ide_and_old_files_mean_virtio() {
        let text = sample().to_toml().unwrap();
        assert_eq!(text.matches("bus = \"ide\"").count(), 1, "{text}");
        assert!(!text.contains("virtio"), "{text}");
        let back = parse(&text).unwrap();
        assert_eq!(back.disks[0].bus, DiskBus::Virtio);
        assert_eq!(back.disks[1].bus, DiskBus::Ide);
        let bad = text.replace("bus = \"ide\"", "bus = \"scsi\"");
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn test_to_engine_nat_gets_stable_mac_from_vm_id_and_none_gets_no_card() {
        let dir = TestDir::new("config-net");
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        let mut vm = sample();
        vm.disks.clear();
        vm.boot = Boot::Kernel {
            kernel: PathBuf::from("vmlinuz"),
            initrd: None,
            cmdline: String::new(),
        };

        let first = vm.to_engine(dir.path()).unwrap().network.unwrap();
        let again = vm.to_engine(dir.path()).unwrap().network.unwrap();
        vm.network = Network::None;
        let none = vm.to_engine(dir.path()).unwrap().network;

        assert_eq!(first.mac, stable_mac(&vm_id(dir.path())));
        assert_eq!(first.mac, again.mac);
        assert_eq!(first.mac[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(first.boot_rom, None, "a kernel needs no boot ROM");
        assert_eq!(none, None);
    }

    #[test]
    fn test_to_engine_missing_disk_says_how_to_fix_and_changes_nothing() {
        let dir = TestDir::new("config-nodisk");
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        let mut vm = sample();
        vm.boot = Boot::Kernel {
            kernel: PathBuf::from("vmlinuz"),
            initrd: None,
            cmdline: String::new(),
        };
        vm.save(dir.path()).unwrap();
        let before = std::fs::read(dir.path().join(VM_FILE)).unwrap();
        let err = vm.to_engine(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&dir.path().join("disk.qcow2").display().to_string()));
        assert!(
            text.contains("restore the file, or remove the disk"),
            "{text}"
        );
        assert_eq!(std::fs::read(dir.path().join(VM_FILE)).unwrap(), before);
    }

    #[test]
    fn test_to_engine_missing_kernel_names_it() {
        let dir = TestDir::new("config-nokernel");
        let err = sample().to_engine(dir.path()).unwrap_err();
        assert!(err.to_string().contains("kernel"));
        assert!(matches!(
            err,
            StartError::MissingBootFile { what: "kernel", .. }
        ));
    }
}
