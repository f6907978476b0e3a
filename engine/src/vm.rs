// SPDX-License-Identifier: Apache-2.0
//! Building and running one VM: KVM setup in the order the kernel prefers
//! (memory slots before the irqchip), the PC platform devices on their
//! ports, the boot path, then one thread per vCPU. [`VmHandle`] waits for
//! the outcome, watches for a guest that hung itself, and can pause,
//! resume and stop it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vmm_sys_util::signal::Killable;

use crate::audio::{SinkConfig, SoundControl, SourceConfig};
use crate::boot::acpi::AcpiConfig;
use crate::boot::firmware::{FirmwareOptions, describe_machine};
use crate::boot::linux::{ACPI_TABLES_ADDR, KernelEntry, LinuxBoot, RSDP_ADDR};
use crate::boot::vcpu_setup::{enter_kernel, prepare_without_firmware};
use crate::bus::{Bus, SharedDevice};
use crate::control::{Outcome, VmControl};
use crate::cpu_quirks::{self, HiddenFeature};
use crate::device_ram::KvmBarMapper;
use crate::devices::acpi_pm::{AcpiPm, PM_BASE, PM_PORTS, SCI_IRQ, SciLine};
use crate::devices::fw_cfg::{FW_CFG_PORT, FW_CFG_PORTS, FwCfg};
use crate::devices::ide;
use crate::devices::irq::{IrqLine, KvmIrqLevels, KvmMsi, LevelIrq, WiredOr};
use crate::devices::legacy::cmos::{CMOS_PORT, Cmos};
use crate::devices::legacy::debug_port::{
    DEBUG_CON_PORT, DEBUG_EXIT_PORT, DebugCon, DebugExit, POST_CODE_PORT, PostCode,
};
use crate::devices::legacy::i8042::{DATA_PORT, I8042, KEYBOARD_IRQ, MOUSE_IRQ};
use crate::devices::legacy::serial::{COM1_BASE, COM1_IRQ, Serial, SerialOut, UART_PORTS};
use crate::devices::legacy::system_control::{PORT_A, SystemControlA};
use crate::devices::pci::host_bridge::{HostBridge, IsaBridge};
use crate::devices::pci::{BarKind, CONFIG_PORT, CONFIG_PORTS, PciRoot, intx_gsi};
use crate::devices::std_vga::{self, GuestScreen, StdVga};
use crate::devices::vga::VRAM_SIZE;
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio::block::{Block, BlockError, DiskBackend, RawFile};
use crate::devices::virtio::console::{Console, ConsoleError, ConsoleSender, SharedConsole};
use crate::devices::virtio::gpu::{Gpu, GpuConfig};
use crate::devices::virtio::input::{Input, InputError, InputKind, InputSender, SharedInput};
use crate::devices::virtio::net::{self as virtio_net, Net, SharedNet};
use crate::devices::virtio::pci::{
    KvmNotifyEvents, NotifyHandler, Placement, SharedVirtioPci, VirtioPciDevice,
};
pub use crate::devices::virtio::qcow2::Dependencies;
use crate::devices::virtio::qcow2::Qcow2Image;
use crate::devices::virtio::rng::{HostRandom, RateLimit, Rng};
use crate::devices::virtio::shared::SharedVirtio;
use crate::devices::virtio::snd::{SharedSnd, Snd, SndConfig};
use crate::devices::virtio::write_through::WriteThrough;
use crate::devices::virtio_vga::{self, GpuOutput, GpuPicture, VirtioVga};
use crate::event_loop::{EventLoop, EventLoopHandle, LoopGate};
use crate::memory::VmMemory;
use crate::net::NetHandler;
use crate::net::passt::Passt;
use crate::snapshot::StateError;
use crate::snapshot::machine::{self as machine_state, Restore, SaveParts, SaveReport};
use crate::vcpu::{ProbeState, Vcpu, VcpuShared, cpuid_for, install_kick_handler, kick_signal};
use crate::{Error, host};

/// How often the VMM checks whether the guest hung itself.
const HANG_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// What to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSource {
    /// A Linux kernel (bzImage or ELF vmlinux with a PVH entry) started
    /// directly, without firmware.
    Linux(LinuxBoot),
    /// A firmware image started at the reset vector.
    Firmware {
        /// The image file (e.g. SeaBIOS's `bios.bin`).
        path: PathBuf,
        /// Mirror the firmware's console to the serial port.
        serial_console: bool,
    },
}

/// How a disk image stores its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskFormat {
    /// Byte for byte.
    #[default]
    Raw,
    /// QEMU's copy-on-write format.
    Qcow2,
}

/// The controller a disk image is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskBus {
    /// A virtio-blk device of its own (fast; needs a virtio driver or the
    /// BIOS's disk services).
    #[default]
    Virtio,
    /// A drive on the PIIX3 IDE controller, in order: primary master,
    /// primary slave, secondary master, secondary slave (any guest,
    /// including ones without virtio drivers).
    Ide,
}

/// A disk image attached to the VM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskConfig {
    /// The image file.
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
    /// Attach read-only (the image is never written).
    pub readonly: bool,
    /// Where it is attached.
    pub bus: DiskBus,
    /// A CD-ROM disc rather than a hard disk: on IDE an ATAPI drive with
    /// 2048-byte sectors (what a BIOS boots an installer ISO from); on
    /// virtio a read-only disk.
    pub cdrom: bool,
    /// An IDE CD-ROM drive that starts with its tray empty (`path` is not
    /// opened); a disc goes in later with [`VmRemote::change_cd`].
    pub ejected: bool,
    /// The files a qcow2 image may open by the names in its header (its
    /// backing image, an external data file); none by default.
    pub dependencies: Dependencies,
    /// When the guest's writes become durable.
    pub cache: CacheMode,
}

/// When a disk's writes become durable (see
/// `devices::virtio::write_through`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Acknowledged once the host holds them; durable at the guest's flush
    /// or when the VM ends (short of SIGKILL or power loss).
    #[default]
    WriteBack,
    /// Durable before they are acknowledged (slower).
    WriteThrough,
}

impl DiskConfig {
    /// Opens the image, read-only when asked, when it is a CD-ROM or when
    /// its contents are an ISO 9660 filesystem (a CD image is never
    /// written, whatever its name or the config say).
    pub fn open_backend(&self) -> Result<Box<dyn DiskBackend>, BlockError> {
        let iso = ImageKind::probe(&self.path).is_ok_and(|kind| kind == ImageKind::Iso9660);
        let readonly = self.readonly || self.cdrom || iso;
        let backend = open_image(&self.path, self.format, readonly, &self.dependencies)?;
        Ok(match self.cache {
            CacheMode::WriteThrough if !readonly => Box::new(WriteThrough::new(backend)),
            _ => backend,
        })
    }

    /// Opens the image as a virtio-blk device reporting `id` as its serial.
    pub fn open_block(&self, id: &str) -> Result<Block, BlockError> {
        Block::new(self.open_backend()?, id)
    }
}

/// A screen for the VM: the standard VGA adapter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisplayConfig {
    /// The display adapter.
    pub adapter: DisplayAdapter,
    /// The VGA option ROM firmware runs (Debian's `vgabios-stdvga.bin` for
    /// the standard VGA, `vgabios-virtio.bin` for virtio-vga); without one
    /// the adapter is there but nothing sets a mode.
    pub vga_bios: Option<PathBuf>,
    /// The display size a virtio-gpu offers first (width, height; 1024x768
    /// when None), until the host asks for another.
    pub size: Option<(u32, u32)>,
}

/// Which display adapter a VM has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DisplayAdapter {
    /// The standard VGA (1234:1111) alone.
    StdVga,
    /// virtio-vga: the standard VGA with a virtio-gpu in the same PCI
    /// function; the guest's virtio-gpu driver takes the screen over.
    #[default]
    VirtioVga,
}

impl DisplayAdapter {
    /// The fw_cfg name SeaBIOS finds the adapter's option ROM under.
    pub fn rom_file_name(self) -> &'static str {
        match self {
            Self::StdVga => std_vga::ROM_FILE_NAME,
            Self::VirtioVga => crate::devices::virtio_vga::ROM_FILE_NAME,
        }
    }
}

/// A network card: virtio-net on user-mode NAT (a private `passt` started
/// with the VM and stopped with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The card's MAC address; keep it stable per VM
    /// ([`stable_mac`](crate::devices::virtio::net::stable_mac) derives
    /// one from a VM's id).
    pub mac: [u8; 6],
    /// The boot ROM firmware runs for the card (Debian's iPXE
    /// `pxe-virtio.rom` from `ipxe-qemu`), given to SeaBIOS through
    /// fw_cfg; without one the card cannot network-boot.
    pub boot_rom: Option<PathBuf>,
}

/// A sound card: virtio-snd (one playback stream) on the VM's PCI bus,
/// paced on the VM's event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoundConfig {
    /// Where playback goes (the host's output falls back to no sound,
    /// with a one-time notice, when the host has none).
    pub output: SinkConfig,
    /// Playback volume in percent (0..=100; more is taken as 100).
    pub volume: u8,
    /// Whether playback starts muted.
    pub muted: bool,
}

impl Default for SoundConfig {
    fn default() -> Self {
        Self {
            output: SinkConfig::Host,
            volume: 100,
            muted: false,
        }
    }
}

/// Where a virtio console's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleOutput {
    /// Appended to this file (created if missing).
    File(PathBuf),
    /// The VMM's standard output.
    Stdout,
}

/// A virtio console (`/dev/hvc0` in a Linux guest): output to a file or
/// stdout, input through [`VmHandle::console_input`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Where the guest's console output goes.
    pub output: ConsoleOutput,
}

/// virtio-input devices on the VM's PCI bus: an absolute pointer (so a
/// guest with virtio drivers follows the host pointer without a grab) and
/// a keyboard, next to the PS/2 devices firmware and older systems use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioInputConfig {
    /// Attach the tablet (absolute pointer, three buttons, a wheel).
    pub tablet: bool,
    /// Attach the keyboard.
    pub keyboard: bool,
}

impl Default for VirtioInputConfig {
    fn default() -> Self {
        Self {
            tablet: true,
            keyboard: true,
        }
    }
}

/// A VM's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// What to boot.
    pub boot: BootSource,
    /// Disks, in boot order.
    pub disks: Vec<DiskConfig>,
    /// The screen, if the VM has one.
    pub display: Option<DisplayConfig>,
    /// The network card, if the VM has one.
    pub network: Option<NetConfig>,
    /// The sound card, if the VM has one.
    pub sound: Option<SoundConfig>,
    /// The virtio console, if the VM has one.
    pub console: Option<ConsoleConfig>,
    /// The virtio tablet and keyboard, if the VM has them.
    pub input: Option<VirtioInputConfig>,
    /// A virtio-rng device serving the host's getrandom(2), capped at
    /// [`DEFAULT_BYTES_PER_SECOND`](crate::devices::virtio::rng::DEFAULT_BYTES_PER_SECOND).
    pub rng: bool,
}

impl VmConfig {
    /// Puts `image` into IDE CD-ROM drive `cd` (the `cd`-th IDE CD-ROM of
    /// `disks`, as [`VmRemote::change_cd`] counts them), or marks it
    /// ejected (None); false when there is no such drive.
    pub fn put_disc(&mut self, cd: usize, image: Option<PathBuf>) -> bool {
        let drive = self
            .disks
            .iter_mut()
            .filter(|d| d.bus == DiskBus::Ide && d.cdrom)
            .nth(cd);
        let Some(disk) = drive else {
            return false;
        };
        match image {
            Some(path) => {
                disk.path = path;
                disk.ejected = false;
            }
            None => disk.ejected = true,
        }
        true
    }
}

/// Where a VM's text output goes.
pub struct VmIo {
    /// COM1 output.
    pub serial: SerialOut,
    /// Debug console (port 0x402) output, if wanted.
    pub debugcon: Option<Box<dyn Write + Send>>,
}

/// Builds a VM, optionally with extra devices (used by tests and tools).
pub struct VmBuilder {
    config: VmConfig,
    io: VmIo,
    extra_pio: Vec<(u64, u64, SharedDevice)>,
    extra_mmio: Vec<(u64, u64, SharedDevice)>,
    restore: Option<PathBuf>,
}

impl VmBuilder {
    /// A builder for `config` with output to `io`.
    pub fn new(config: VmConfig, io: VmIo) -> Self {
        Self {
            config,
            io,
            extra_pio: Vec::new(),
            extra_mmio: Vec::new(),
            restore: None,
        }
    }

    /// Starts the VM from the machine state saved in `path` (by
    /// [`VmHandle::save_state`]) instead of from power-on. The VM must be
    /// built from the same configuration; a state of another shape, or a
    /// damaged one, is refused and the file is left as it is.
    pub fn restore_from(mut self, path: &Path) -> Self {
        self.restore = Some(path.to_path_buf());
        self
    }

    /// Adds a device on the port bus.
    pub fn pio_device(mut self, base: u64, len: u64, device: SharedDevice) -> Self {
        self.extra_pio.push((base, len, device));
        self
    }

    /// Adds a device on the MMIO bus.
    pub fn mmio_device(mut self, base: u64, len: u64, device: SharedDevice) -> Self {
        self.extra_mmio.push((base, len, device));
        self
    }

    /// Creates the VM and starts its vCPUs.
    pub fn start(self) -> Result<VmHandle, Error> {
        let config = &self.config;
        let kvm = host::open_kvm()?;
        let vm = kvm.create_vm().map_err(Error::CreateVm)?;

        let vm = Arc::new(vm);
        let mut memory = VmMemory::new(config.memory_bytes)?;
        let acceleration = host::Acceleration::detect();
        let booting_firmware = matches!(config.boot, BootSource::Firmware { .. });
        let mut restore = match &self.restore {
            Some(path) => Some(Restore::open(
                path,
                config.memory_bytes,
                config.vcpus,
                booting_firmware,
            )?),
            None => None,
        };
        let mut kernel_entry = None;
        let mut firmware_image = None;
        match (&config.boot, &mut restore) {
            (BootSource::Firmware { .. }, Some(restore)) => {
                // The flash the guest ran, as saved (the firmware file may
                // have changed since).
                if let Some(image) = restore.firmware()? {
                    memory.load_firmware(&image)?;
                    firmware_image = Some(Arc::from(image));
                }
                restore.ram(&memory.ram_file, config.memory_bytes)?;
            }
            (BootSource::Linux(_), Some(restore)) => {
                restore.ram(&memory.ram_file, config.memory_bytes)?;
            }
            (BootSource::Firmware { path, .. }, None) => {
                let image = read_file(path)?;
                memory.load_firmware(&image)?;
                firmware_image = Some(Arc::from(image));
            }
            (BootSource::Linux(linux), None) => {
                let mut linux = linux.clone();
                if let Some(extra) = cpu_quirks::linux_cmdline_quirks(acceleration, &linux.cmdline)
                {
                    log::info!("software-only KVM: the kernel command line gets `{extra}`");
                    linux.cmdline = format!("{} {extra}", linux.cmdline).trim().to_string();
                }
                kernel_entry = Some(crate::boot::linux::load(
                    &memory.ram,
                    memory.layout,
                    &linux,
                )?);
                let acpi = AcpiConfig {
                    vcpus: config.vcpus,
                    pm_base: PM_BASE,
                    sci_irq: SCI_IRQ,
                };
                crate::boot::acpi::write(&memory.ram, &acpi, RSDP_ADDR, ACPI_TABLES_ADDR)?;
            }
        }
        let private = memory.kvm_private_pages();
        vm.set_identity_map_address(private).map_err(Error::Setup)?;
        vm.set_tss_address((private + 0x1000) as usize)
            .map_err(Error::Setup)?;
        memory.register(&vm, kvm.check_extension(Cap::ReadonlyMem))?;
        vm.create_irq_chip().map_err(Error::Setup)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(Error::Setup)?;
        if let Some(restore) = &mut restore {
            restore.vm(&vm)?;
        }

        let control = Arc::new(VmControl::new());
        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        let post_code = Arc::new(AtomicU8::new(0));
        let platform = Platform {
            vm: &vm,
            memory: &memory,
            control: &control,
            pio: &pio,
            mmio: &mmio,
        };
        let mut events = EventLoop::new().map_err(Error::Thread)?;
        let handles = platform.add_devices(config, self.io, post_code.clone(), &mut events)?;
        for (base, len, device) in self.extra_pio {
            pio.insert(device, base, len)?;
        }
        for (base, len, device) in self.extra_mmio {
            mmio.insert(device, base, len)?;
        }
        let restored_devices = match &restore {
            Some(restore) => {
                let devices = machine_state::saved_devices(&pio, &mmio)?;
                restore.check_devices(&devices)?;
                devices
            }
            None => Vec::new(),
        };

        install_kick_handler().map_err(|e| Error::Setup(kvm_ioctls::Error::new(e.errno())))?;
        let hidden = cpu_quirks::hidden_features(acceleration);
        let mut vcpus = Vec::new();
        for index in 0..config.vcpus {
            let fd = create_vcpu(&kvm, &vm, index, config.vcpus, hidden)?;
            if let Some(restore) = &mut restore {
                restore.vcpu(&fd)?;
            } else if let Some(entry) = kernel_entry {
                prepare_vcpu_for_kernel(&fd, index, entry)?;
            }
            vcpus.push(fd);
        }
        if let Some(mut restore) = restore {
            restore.devices(&restored_devices)?;
            restore.finish()?;
        }
        // Host-side device events; passt (owned by a handler) stops when
        // this handle is dropped, also if the start fails below.
        let (events, gate) = if events.is_empty() {
            (None, None)
        } else {
            let gate = events.gate();
            (
                Some(events.start(control.clone()).map_err(Error::Thread)?),
                Some(gate),
            )
        };
        let mut threads = Vec::new();
        let mut shared = Vec::new();
        for (index, fd) in vcpus.into_iter().enumerate() {
            let state = Arc::new(VcpuShared::default());
            let vcpu = Vcpu::new(
                index as u32,
                fd,
                pio.clone(),
                mmio.clone(),
                control.clone(),
                state.clone(),
            );
            let thread = crate::threads::spawn_vm_thread(
                format!("vcpu{index}"),
                control.clone(),
                move || vcpu.run(),
            )
            .map_err(Error::Thread)?;
            threads.push(thread);
            shared.push(state);
        }
        let machine = Arc::new(MachineParts {
            vm: Arc::downgrade(&vm),
            pio: Arc::downgrade(&pio),
            mmio: Arc::downgrade(&mmio),
            ram: Arc::downgrade(&memory.ram_file),
            memory_bytes: config.memory_bytes,
            firmware: firmware_image,
            vcpus: shared.clone(),
            gate,
        });
        Ok(VmHandle {
            control,
            threads: Arc::new(Mutex::new(threads)),
            machine,
            shared,
            post_code,
            acpi_pm: handles.acpi_pm,
            cdroms: handles.cdroms.into(),
            i8042: handles.i8042,
            serial: handles.serial,
            screen: handles.screen,
            sound: handles.sound,
            console: handles.console,
            tablet: handles.tablet,
            virtio_keyboard: handles.virtio_keyboard,
            events,
            vm,
            _memory: memory,
        })
    }
}

/// An IDE CD-ROM drive: its channel and device number there.
#[derive(Clone)]
struct CdDrive {
    channel: Arc<Mutex<ide::Channel>>,
    device: usize,
}

fn open_image(
    path: &Path,
    format: DiskFormat,
    readonly: bool,
    dependencies: &Dependencies,
) -> Result<Box<dyn DiskBackend>, BlockError> {
    Ok(match format {
        DiskFormat::Raw => Box::new(RawFile::open(path, readonly)?),
        DiskFormat::Qcow2 => Box::new(Qcow2Image::open_with(path, readonly, dependencies)?),
    })
}

/// What a disk image's contents say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// Starts with qcow2's magic.
    Qcow2,
    /// An ISO 9660 filesystem (a CD image; hybrid ISOs too).
    Iso9660,
    /// Anything else: raw bytes.
    Raw,
}

/// Where ISO 9660's first volume descriptor says "CD001".
const ISO9660_MAGIC_AT: u64 = 0x8001;

impl ImageKind {
    /// Reads the image's first bytes. A raw image that a guest wrote can
    /// look like anything, so a VM's config records the format once and
    /// keeps it; this is for choosing it when the user did not.
    pub fn probe(path: &Path) -> std::io::Result<Self> {
        use std::io::Read;
        use std::os::unix::fs::FileExt;
        let mut file = fs::File::open(path)?;
        let mut magic = [0u8; 4];
        if file.read_exact(&mut magic).is_ok()
            && magic == crate::devices::virtio::qcow2::QCOW2_MAGIC
        {
            return Ok(Self::Qcow2);
        }
        let mut cd = [0u8; 5];
        if file.read_exact_at(&mut cd, ISO9660_MAGIC_AT).is_ok() && &cd == b"CD001" {
            return Ok(Self::Iso9660);
        }
        Ok(Self::Raw)
    }

    /// The format to open it with.
    pub fn format(self) -> DiskFormat {
        match self {
            Self::Qcow2 => DiskFormat::Qcow2,
            Self::Iso9660 | Self::Raw => DiskFormat::Raw,
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

fn prepare_vcpu_for_kernel(
    fd: &kvm_ioctls::VcpuFd,
    index: u32,
    entry: KernelEntry,
) -> Result<(), Error> {
    let vcpu_error = |source| Error::Vcpu { index, source };
    prepare_without_firmware(fd).map_err(vcpu_error)?;
    if index == 0 {
        enter_kernel(fd, entry).map_err(vcpu_error)?;
    }
    Ok(())
}

/// The SCI as a level on the in-kernel irqchip, one source of the
/// wired-OR lines (a guest may route a PCI function to the same IRQ).
struct KvmSci {
    line: Arc<dyn LevelIrq>,
    irq: u32,
}

impl SciLine for KvmSci {
    fn set_level(&self, high: bool) {
        self.line.set_level(self.irq, high);
    }
}

/// vCPU `index` of `count`, with the features in `hidden` kept from its
/// CPUID (see [`cpu_quirks`]).
fn create_vcpu(
    kvm: &Kvm,
    vm: &VmFd,
    index: u32,
    count: u32,
    hidden: &[HiddenFeature],
) -> Result<kvm_ioctls::VcpuFd, Error> {
    let vcpu_error = |source| Error::Vcpu { index, source };
    let fd = vm.create_vcpu(u64::from(index)).map_err(vcpu_error)?;
    let mut cpuid = cpuid_for(kvm, index, count).map_err(vcpu_error)?;
    cpu_quirks::apply(&mut cpuid, hidden);
    fd.set_cpuid2(&cpuid).map_err(vcpu_error)?;
    Ok(fd)
}

/// The PC platform devices, wired to one VM.
struct Platform<'a> {
    vm: &'a Arc<VmFd>,
    memory: &'a VmMemory,
    control: &'a Arc<VmControl>,
    pio: &'a Arc<Bus>,
    mmio: &'a Arc<Bus>,
}

/// The platform devices the VM's owner drives directly.
struct PlatformHandles {
    cdroms: Vec<CdDrive>,
    acpi_pm: Arc<Mutex<AcpiPm>>,
    i8042: Arc<Mutex<I8042>>,
    serial: Arc<Mutex<Serial>>,
    screen: Option<GuestScreen>,
    sound: Option<Arc<SoundControl>>,
    console: Option<ConsoleSender>,
    tablet: Option<InputSender>,
    virtio_keyboard: Option<InputSender>,
}

/// PCI slot of the first add-in device (0 and 1 are the chipset).
const FIRST_DEVICE_SLOT: usize = 2;

impl Platform<'_> {
    fn irq(&self, gsi: u32) -> Result<IrqLine, Error> {
        IrqLine::new(self.vm, gsi).map_err(Error::Irq)
    }

    fn add(&self, base: u64, len: u64, device: SharedDevice) -> Result<(), Error> {
        self.pio.insert(device, base, len).map_err(Error::from)
    }

    fn add_devices(
        &self,
        config: &VmConfig,
        io: VmIo,
        post: Arc<AtomicU8>,
        events: &mut EventLoop,
    ) -> Result<PlatformHandles, Error> {
        let serial = Arc::new(Mutex::new(Serial::new(self.irq(COM1_IRQ)?, io.serial)));
        self.add(COM1_BASE, UART_PORTS, serial.clone())?;
        let i8042 = Arc::new(Mutex::new(I8042::new(
            self.control.clone(),
            Box::new(self.irq(KEYBOARD_IRQ)?),
            Box::new(self.irq(MOUSE_IRQ)?),
        )));
        self.add(DATA_PORT, 5, i8042.clone())?;
        let cmos = Cmos::new(self.memory.layout, config.vcpus);
        self.add(CMOS_PORT, 2, Arc::new(Mutex::new(cmos)))?;
        let port_a = SystemControlA::new(self.control.clone());
        self.add(PORT_A, 1, Arc::new(Mutex::new(port_a)))?;
        self.add(POST_CODE_PORT, 1, Arc::new(Mutex::new(PostCode::new(post))))?;
        // PCI INTx lines are shared (and a guest may put a function on the
        // SCI's): every level source drives them through the OR.
        let levels = WiredOr::new(Arc::new(KvmIrqLevels::new(self.vm.clone())));
        let sci = KvmSci {
            line: levels.source(),
            irq: u32::from(SCI_IRQ),
        };
        let pm = Arc::new(Mutex::new(AcpiPm::new(self.control.clone(), Box::new(sci))));
        self.add(u64::from(PM_BASE), PM_PORTS, pm.clone())?;
        let exit = DebugExit::new(self.control.clone());
        self.add(DEBUG_EXIT_PORT, 2, Arc::new(Mutex::new(exit)))?;
        if let Some(out) = io.debugcon {
            self.add(DEBUG_CON_PORT, 1, Arc::new(Mutex::new(DebugCon::new(out))))?;
        }

        let mut pci = PciRoot::new(self.control.clone(), self.pio.clone(), self.mmio.clone());
        pci.add(0, 0, Arc::new(Mutex::new(HostBridge::default())))?;
        pci.add(1, 0, Arc::new(Mutex::new(IsaBridge::default())))?;
        let cdroms = self.add_ide(&mut pci, &config.disks)?;
        let virtio_disks = config.disks.iter().filter(|d| d.bus == DiskBus::Virtio);
        for (index, disk) in virtio_disks.enumerate() {
            let disk_error = |source| Error::Disk {
                path: disk.path.clone(),
                source,
            };
            let block = disk
                .open_block(&format!("nestbox-disk{index}"))
                .map_err(disk_error)?;
            let slot =
                u8::try_from(FIRST_DEVICE_SLOT + index).map_err(|_| Error::TooManyDevices)?;
            self.add_virtio(
                &mut pci,
                slot,
                intx_gsi(slot),
                Box::new(block),
                &levels,
                events,
            )?;
        }
        let virtio_count = config
            .disks
            .iter()
            .filter(|d| d.bus == DiskBus::Virtio)
            .count();
        let mut next_slot = FIRST_DEVICE_SLOT + virtio_count;
        let screen = match &config.display {
            Some(display) => {
                let slot = u8::try_from(next_slot).map_err(|_| Error::TooManyDevices)?;
                next_slot += 1;
                Some(self.add_display(&mut pci, slot, display, &levels, events)?)
            }
            None => None,
        };
        if let Some(net) = &config.network {
            let slot = u8::try_from(next_slot).map_err(|_| Error::TooManyDevices)?;
            next_slot += 1;
            self.add_net(&mut pci, slot, net, &levels, events)?;
        }
        let sound = match &config.sound {
            Some(sound) => {
                let slot = u8::try_from(next_slot).map_err(|_| Error::TooManyDevices)?;
                next_slot += 1;
                Some(self.add_sound(&mut pci, slot, sound, &levels, events)?)
            }
            None => None,
        };
        let console = match &config.console {
            Some(console) => {
                let slot = u8::try_from(next_slot).map_err(|_| Error::TooManyDevices)?;
                next_slot += 1;
                Some(self.add_console(&mut pci, slot, console, &levels, events)?)
            }
            None => None,
        };
        if config.rng {
            let slot = u8::try_from(next_slot).map_err(|_| Error::TooManyDevices)?;
            next_slot += 1;
            self.add_rng(&mut pci, slot, &levels, events)?;
        }
        let input = config.input.unwrap_or(VirtioInputConfig {
            tablet: false,
            keyboard: false,
        });
        let mut input_device = |wanted: bool, kind: InputKind| -> Result<_, Error> {
            if !wanted {
                return Ok(None);
            }
            let slot = u8::try_from(next_slot).map_err(|_| Error::TooManyDevices)?;
            next_slot += 1;
            self.add_input(&mut pci, slot, kind, &levels, events)
                .map(Some)
        };
        let tablet = input_device(input.tablet, InputKind::Tablet)?;
        let virtio_keyboard = input_device(input.keyboard, InputKind::Keyboard)?;
        self.add(CONFIG_PORT, CONFIG_PORTS, Arc::new(Mutex::new(pci)))?;

        let mut fw_cfg = FwCfg::new(self.memory.ram.clone());
        match &config.boot {
            BootSource::Firmware { serial_console, .. } => {
                let options = FirmwareOptions {
                    serial_console: *serial_console,
                    // With a screen, offer the boot menu as a PC does.
                    boot_menu: config.display.is_some(),
                };
                describe_machine(&mut fw_cfg, self.memory.layout, config.vcpus, options)?;
                // ACPI tables for the firmware to place (power button, S5,
                // PM timer, interrupt routing), as for a direct boot.
                let acpi = crate::boot::acpi::build_for_firmware(&AcpiConfig {
                    vcpus: config.vcpus,
                    pm_base: PM_BASE,
                    sci_irq: SCI_IRQ,
                })?;
                fw_cfg.add_file(crate::boot::acpi::FW_CFG_TABLES, acpi.tables)?;
                fw_cfg.add_file(crate::boot::acpi::FW_CFG_RSDP, acpi.rsdp)?;
                fw_cfg.add_file(crate::boot::acpi::FW_CFG_LOADER, acpi.loader)?;
                if let Some(display) = &config.display
                    && let Some(rom) = &display.vga_bios
                {
                    fw_cfg.add_file(display.adapter.rom_file_name(), read_file(rom)?)?;
                }
                if let Some(rom) = config.network.as_ref().and_then(|n| n.boot_rom.as_ref()) {
                    let image = read_file(rom)?;
                    virtio_net::check_boot_rom(rom, &image);
                    fw_cfg.add_file(virtio_net::ROM_FILE_NAME, image)?;
                }
            }
            BootSource::Linux(_) => {}
        }
        self.add(FW_CFG_PORT, FW_CFG_PORTS, Arc::new(Mutex::new(fw_cfg)))?;
        Ok(PlatformHandles {
            cdroms,
            acpi_pm: pm,
            i8042,
            serial,
            screen,
            sound,
            console,
            tablet,
            virtio_keyboard,
        })
    }

    /// The PIIX3 IDE function (01.1) with the IDE drives among `disks`,
    /// in order on primary master, primary slave, secondary master and
    /// secondary slave; nothing when there are none.
    fn add_ide(&self, pci: &mut PciRoot, disks: &[DiskConfig]) -> Result<Vec<CdDrive>, Error> {
        let ide: Vec<&DiskConfig> = disks.iter().filter(|d| d.bus == DiskBus::Ide).collect();
        if ide.is_empty() {
            return Ok(Vec::new());
        }
        let cd_positions: Vec<usize> = ide
            .iter()
            .enumerate()
            .filter(|(_, d)| d.cdrom)
            .map(|(position, _)| position)
            .collect();
        let mut cdroms = Vec::new();
        if ide.len() > ide::MAX_DRIVES {
            return Err(Error::TooManyIdeDrives(ide.len()));
        }
        let mut drives = Vec::new();
        for (index, disk) in ide.iter().enumerate() {
            let backend = if disk.cdrom && disk.ejected {
                None
            } else {
                Some(disk.open_backend().map_err(|source| Error::Disk {
                    path: disk.path.clone(),
                    source,
                })?)
            };
            drives.push(Some(ide::DriveConfig {
                backend,
                medium: if disk.cdrom {
                    ide::Medium::Cdrom
                } else {
                    ide::Medium::Disk
                },
                serial: format!("NB-IDE{index}"),
            }));
        }
        drives.resize_with(ide::MAX_DRIVES, || None);
        let mut drives = drives.into_iter();
        let channels = [("ide0", ide::PRIMARY), ("ide1", ide::SECONDARY)];
        for (number, (name, ports)) in channels.into_iter().enumerate() {
            let (master, slave) = (drives.next().flatten(), drives.next().flatten());
            if master.is_none() && slave.is_none() {
                continue;
            }
            let irq = Box::new(self.irq(ports.irq)?);
            let channel = Arc::new(Mutex::new(ide::Channel::new(name, irq, master, slave)));
            for device in 0..2 {
                if cd_positions.contains(&(number * 2 + device)) {
                    cdroms.push(CdDrive {
                        channel: channel.clone(),
                        device,
                    });
                }
            }
            self.add(ports.command, ide::COMMAND_PORTS, channel.clone())?;
            let control = ide::ControlPort::new(channel);
            self.add(ports.control, 1, Arc::new(Mutex::new(control)))?;
        }
        pci.add(
            1,
            ide::PCI_FUNCTION,
            Arc::new(Mutex::new(ide::IdeFunction::default())),
        )?;
        Ok(cdroms)
    }

    /// A virtio-pci function at `slot` around `device`: INTx on `line`
    /// until the driver enables MSI-X (sent with `KVM_SIGNAL_MSI`), queue
    /// notifications as ioeventfds served on the event loop (MMIO exits
    /// where KVM refuses them).
    fn add_virtio(
        &self,
        pci: &mut PciRoot,
        slot: u8,
        line: u8,
        device: Box<dyn VirtioDevice>,
        levels: &Arc<WiredOr>,
        events: &mut EventLoop,
    ) -> Result<(), Error> {
        let placement = Placement::for_type(device.device_type());
        let device = self.virtio_function(device, placement, line, levels, events, |_| {})?;
        pci.add(slot, 0, device)?;
        Ok(())
    }

    /// The virtio-pci transport of `device` as `placement` says, with
    /// MSI-X, INTx on `line` and notify ioeventfds served on the event
    /// loop; `prepare` adds to it before it is shared (a BAR of its own).
    fn virtio_function(
        &self,
        device: Box<dyn VirtioDevice>,
        placement: Placement,
        line: u8,
        levels: &Arc<WiredOr>,
        events: &mut EventLoop,
        prepare: impl FnOnce(&mut VirtioPciDevice),
    ) -> Result<SharedVirtioPci, Error> {
        let msi = Arc::new(KvmMsi::new(self.vm.clone()));
        let mut device =
            VirtioPciDevice::placed(device, self.memory.ram.clone(), levels.source(), placement)
                .with_msix(msi);
        device.set_interrupt_line(line);
        prepare(&mut device);
        let notify = Arc::new(KvmNotifyEvents::new(self.vm.clone()));
        if let Err(e) = device.use_ioeventfd(notify) {
            log::warn!("virtio: no notify eventfds ({e}); notifications exit to the VMM");
        }
        let device = Arc::new(Mutex::new(device));
        if let Some(handler) = NotifyHandler::new(&device).map_err(Error::Thread)? {
            events.add(Box::new(handler));
        }
        Ok(device)
    }

    /// virtio-rng at PCI `slot`, serving the host's getrandom(2) at the
    /// default rate cap; a throttled request is retried on the event loop.
    fn add_rng(
        &self,
        pci: &mut PciRoot,
        slot: u8,
        levels: &Arc<WiredOr>,
        events: &mut EventLoop,
    ) -> Result<(), Error> {
        let rng = Rng::new(Box::new(HostRandom), RateLimit::default())
            .map_err(|e| Error::Thread(std::io::Error::other(e.to_string())))?
            .with_retry_timer()
            .map_err(Error::Thread)?;
        let shared = SharedVirtio::new(rng);
        events.add(Box::new(shared.handler()));
        let line = intx_gsi(slot);
        self.add_virtio(pci, slot, line, Box::new(shared), levels, events)
    }

    /// virtio-snd at PCI `slot`, playing into `config.output`: queue
    /// notifications and its pacing timer are served on the event loop.
    fn add_sound(
        &self,
        pci: &mut PciRoot,
        slot: u8,
        config: &SoundConfig,
        levels: &Arc<WiredOr>,
        events: &mut EventLoop,
    ) -> Result<Arc<SoundControl>, Error> {
        let sink = crate::audio::open_sink(&config.output)?;
        let source = crate::audio::open_source(&SourceConfig::None)?;
        let control = SoundControl::new(false);
        control.set_volume(f32::from(config.volume.min(100)) / 100.0);
        control.set_muted(config.muted);
        let snd = Snd::new(SndConfig::default(), sink, source, control.clone()).map_err(|e| {
            crate::audio::AudioError::Stream(format!("cannot create the pacing timer: {e}"))
        })?;
        let snd = SharedSnd::new(snd);
        events.add(Box::new(snd.handler()));
        let line = intx_gsi(slot);
        self.add_virtio(pci, slot, line, Box::new(snd), levels, events)?;
        Ok(control)
    }

    /// virtio-console at PCI `slot`, its host input delivered on the
    /// event loop.
    fn add_console(
        &self,
        pci: &mut PciRoot,
        slot: u8,
        config: &ConsoleConfig,
        levels: &Arc<WiredOr>,
        events: &mut EventLoop,
    ) -> Result<ConsoleSender, Error> {
        let sink: Box<dyn Write + Send> = match &config.output {
            ConsoleOutput::File(path) => Box::new(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| Error::ConsoleOutput {
                        path: path.clone(),
                        source,
                    })?,
            ),
            ConsoleOutput::Stdout => Box::new(std::io::stdout()),
        };
        let console = Console::new(sink, None).map_err(|e| match e {
            ConsoleError::EventFd(e) => Error::Thread(e),
            other => Error::Thread(std::io::Error::other(other.to_string())),
        })?;
        let sender = console.sender();
        let shared = SharedConsole::new(console);
        events.add(Box::new(shared.handler()));
        let line = intx_gsi(slot);
        self.add_virtio(pci, slot, line, Box::new(shared), levels, events)?;
        Ok(sender)
    }

    /// A virtio-input device of flavour `kind` at PCI `slot`, its host
    /// events delivered on the event loop.
    fn add_input(
        &self,
        pci: &mut PciRoot,
        slot: u8,
        kind: InputKind,
        levels: &Arc<WiredOr>,
        events: &mut EventLoop,
    ) -> Result<InputSender, Error> {
        let input = Input::new(kind).map_err(|e| match e {
            InputError::EventFd(e) => Error::Thread(e),
            other => Error::Thread(std::io::Error::other(other.to_string())),
        })?;
        let shared = SharedInput::new(input);
        let sender = shared.sender();
        events.add(Box::new(shared.handler()));
        let line = intx_gsi(slot);
        self.add_virtio(pci, slot, line, Box::new(shared), levels, events)?;
        Ok(sender)
    }

    /// virtio-net at PCI `slot` on a private passt, whose frames reach the
    /// guest on the event loop.
    fn add_net(
        &self,
        pci: &mut PciRoot,
        slot: u8,
        config: &NetConfig,
        levels: &Arc<WiredOr>,
        events: &mut EventLoop,
    ) -> Result<(), Error> {
        let passt = Passt::start_private()?;
        let sender = passt
            .sender()
            .map_err(|e| Error::Network(crate::net::passt::PasstError::Connect(e)))?;
        let net = SharedNet::new(Net::new(config.mac, Box::new(sender)));
        let handler = NetHandler::new(net.clone(), Box::new(passt)).map_err(Error::Thread)?;
        events.add(Box::new(handler));
        let line = intx_gsi(slot);
        self.add_virtio(pci, slot, line, Box::new(net), levels, events)?;
        Ok(())
    }

    /// The display adapter of `display` at PCI `slot`: the standard VGA (see
    /// [`Self::add_vga_windows`]), and for virtio-vga a virtio-gpu in the
    /// same function whose picture the screen shows once the guest's
    /// driver sets a scanout.
    fn add_display(
        &self,
        pci: &mut PciRoot,
        slot: u8,
        display: &DisplayConfig,
        levels: &Arc<WiredOr>,
        events: &mut EventLoop,
    ) -> Result<GuestScreen, Error> {
        let vga = StdVga::new()?;
        self.add_vga_windows(pci, &vga)?;
        let screen = vga.screen();
        match display.adapter {
            DisplayAdapter::StdVga => {
                pci.add(slot, 0, Arc::new(Mutex::new(vga)))?;
                Ok(screen)
            }
            DisplayAdapter::VirtioVga => {
                let picture = Arc::new(GpuPicture::default());
                let mut config = GpuConfig::default();
                if let Some((width, height)) = display.size {
                    config.width = width;
                    config.height = height;
                }
                let gpu =
                    Gpu::new(config, picture.clone()).map_err(|e| Error::Display(e.to_string()))?;
                let gpu = SharedVirtio::new(gpu);
                let placement = Placement {
                    bar: virtio_vga::VIRTIO_BAR,
                    class: (0x03, 0x00),
                };
                let line = intx_gsi(slot);
                let virtio = self.virtio_function(
                    Box::new(gpu.clone()),
                    placement,
                    line,
                    levels,
                    events,
                    |device| device.add_bar(0, VRAM_SIZE as u64, BarKind::Memory32),
                )?;
                pci.add(slot, 0, Arc::new(Mutex::new(VirtioVga::new(vga, virtio))))?;
                Ok(screen.with_gpu(GpuOutput { picture, gpu }))
            }
        }
    }

    /// The VGA's ISA windows (legacy ports, DISPI ports, the 0xA0000
    /// window), and video memory mapped into the guest wherever the guest
    /// puts BAR 0.
    fn add_vga_windows(&self, pci: &mut PciRoot, vga: &StdVga) -> Result<(), Error> {
        let legacy = vga.legacy_devices();
        self.add(
            std_vga::VGA_PORTS_START,
            std_vga::VGA_PORTS_LEN,
            legacy.ports(),
        )?;
        self.add(std_vga::DISPI_PORT, 2, legacy.dispi())?;
        self.mmio
            .insert(legacy.window(), std_vga::WINDOW_START, std_vga::WINDOW_LEN)?;
        let limit = self.memory.kvm_private_pages();
        pci.set_ram_mapper(Arc::new(KvmBarMapper::new(self.vm.clone(), limit)));
        Ok(())
    }
}

/// Types into a VM's COM1 from any thread.
#[derive(Clone)]
pub struct SerialPort {
    serial: Arc<Mutex<Serial>>,
}

impl SerialPort {
    /// Queues `bytes` for the guest; returns how many the FIFO took.
    pub fn input(&self, bytes: &[u8]) -> usize {
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue_input(bytes)
    }
}

/// Delivers host keyboard and mouse input to the VM's PS/2 devices and,
/// where the VM has them, its virtio tablet and keyboard.
#[derive(Clone)]
pub struct InputPort {
    i8042: Arc<Mutex<I8042>>,
    tablet: Option<InputSender>,
    virtio_keyboard: Option<InputSender>,
}

impl InputPort {
    /// The virtio tablet (absolute pointer), if the VM has one.
    pub fn tablet(&self) -> Option<&InputSender> {
        self.tablet.as_ref()
    }

    /// The virtio keyboard, if the VM has one; check
    /// [`InputSender::is_active`] before sending keys to it, so that a
    /// guest does not get them twice (there and on PS/2).
    pub fn virtio_keyboard(&self) -> Option<&InputSender> {
        self.virtio_keyboard.as_ref()
    }

    /// One key event as a PS/2 keyboard sends it in scan code set 2.
    pub fn keyboard(&self, set2: &[u8]) {
        self.i8042
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keyboard_input(set2);
    }

    /// Relative mouse motion (right and down positive), wheel notches
    /// (towards the user positive) and the held buttons (bit 0 left,
    /// 1 right, 2 middle).
    pub fn mouse(&self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        self.i8042
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mouse_input(dx, dy, dz, buttons);
    }
}

/// The vCPU threads of a running VM, shared by its handle and its remotes.
/// [`VmHandle::wait`] empties the list before it joins them, so a kick never
/// signals a thread that was joined.
type VcpuThreads = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// Kicks every vCPU thread still in `threads` out of `KVM_RUN`.
fn kick_threads(threads: &VcpuThreads) {
    for thread in threads.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if let Err(e) = thread.kill(kick_signal()) {
            // The thread may already have exited; nothing to kick.
            log::trace!("kick failed: {e}");
        }
    }
}

/// Drives a running VM from any thread (pause, resume, stop, reset, power
/// button) while another thread waits for it in [`VmHandle::wait`].
#[derive(Clone)]
pub struct VmRemote {
    control: Arc<VmControl>,
    threads: VcpuThreads,
    machine: Arc<MachineParts>,
    acpi_pm: Arc<Mutex<AcpiPm>>,
    cdroms: Arc<[CdDrive]>,
}

/// What saving a VM's state reaches: weakly, so that a handle kept after
/// the VM ended holds neither its memory nor its devices.
struct MachineParts {
    vm: Weak<VmFd>,
    pio: Weak<Bus>,
    mmio: Weak<Bus>,
    ram: Weak<fs::File>,
    memory_bytes: u64,
    firmware: Option<Arc<[u8]>>,
    vcpus: Vec<Arc<VcpuShared>>,
    /// Holds the event loop still during a save.
    gate: Option<Arc<LoopGate>>,
}

impl MachineParts {
    /// Pauses the VM and saves its state to `path` (see
    /// [`VmHandle::save_state`]).
    fn save(
        &self,
        control: &VmControl,
        threads: &VcpuThreads,
        path: &Path,
    ) -> Result<SaveReport, StateError> {
        let (Some(vm), Some(pio), Some(mmio), Some(ram)) = (
            self.vm.upgrade(),
            self.pio.upgrade(),
            self.mmio.upgrade(),
            self.ram.upgrade(),
        ) else {
            return Err(StateError::Stopped);
        };
        if control.is_stopping() {
            return Err(StateError::Stopped);
        }
        // Asked for at the save, not at every start (or guest reboot).
        let kvm = Kvm::new().map_err(StateError::kvm("open /dev/kvm"))?;
        let msrs = crate::snapshot::kvm_state::msrs_to_save(&kvm).into();
        let kick = || kick_threads(threads);
        let parts = SaveParts {
            vm: &vm,
            control,
            kick: &kick,
            events: self.gate.as_ref(),
            vcpus: &self.vcpus,
            msrs,
            pio: &pio,
            mmio: &mmio,
            ram: &ram,
            memory_bytes: self.memory_bytes,
            firmware: self.firmware.as_deref(),
        };
        machine_state::save(&parts, path)
    }
}

impl VmRemote {
    /// The VM's control.
    pub fn control(&self) -> Arc<VmControl> {
        self.control.clone()
    }

    /// How many IDE CD-ROM drives the VM has.
    pub fn cd_drives(&self) -> usize {
        self.cdroms.len()
    }

    /// Puts the disc `image` (raw, read-only) into IDE CD-ROM drive `cd`
    /// (0 = the VM's first), or empties its tray (None).
    pub fn change_cd(&self, cd: usize, image: Option<&Path>) -> Result<(), Error> {
        let missing = Error::NoSuchCdrom {
            index: cd,
            count: self.cdroms.len(),
        };
        let Some(drive) = self.cdroms.get(cd) else {
            return Err(missing);
        };
        let disc = image
            .map(|path| {
                open_image(path, DiskFormat::Raw, true, &Dependencies::default()).map_err(
                    |source| Error::Disk {
                        path: path.to_path_buf(),
                        source,
                    },
                )
            })
            .transpose()?;
        drive
            .channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .change_disc(drive.device, disc)
            .map_err(|_| missing)
    }

    /// Pauses all vCPUs.
    pub fn pause(&self) {
        self.control.set_paused(true);
        kick_threads(&self.threads);
    }

    /// Pauses the VM and saves its whole state to `path` (see
    /// [`VmHandle::save_state`]).
    pub fn save_state(&self, path: &Path) -> Result<SaveReport, StateError> {
        self.machine.save(&self.control, &self.threads, path)
    }

    /// Resumes all vCPUs.
    pub fn resume(&self) {
        self.control.set_paused(false);
    }

    /// Stops the VM with `outcome` (e.g. [`Outcome::Stopped`] to pull the
    /// plug, [`Outcome::Reset`] to reset it).
    pub fn stop_with(&self, outcome: Outcome) {
        self.control.request_stop(outcome);
        kick_threads(&self.threads);
    }

    /// Presses the ACPI power button.
    pub fn press_power_button(&self) {
        self.acpi_pm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .press_power_button();
    }
}

/// A running VM.
pub struct VmHandle {
    control: Arc<VmControl>,
    cdroms: Arc<[CdDrive]>,
    threads: VcpuThreads,
    machine: Arc<MachineParts>,
    shared: Vec<Arc<VcpuShared>>,
    post_code: Arc<AtomicU8>,
    acpi_pm: Arc<Mutex<AcpiPm>>,
    i8042: Arc<Mutex<I8042>>,
    serial: Arc<Mutex<Serial>>,
    screen: Option<GuestScreen>,
    sound: Option<Arc<SoundControl>>,
    console: Option<ConsoleSender>,
    tablet: Option<InputSender>,
    virtio_keyboard: Option<InputSender>,
    /// The event loop, stopped (and passt with it) when the VM is.
    events: Option<EventLoopHandle>,
    // Kept alive for as long as the vCPU threads run.
    vm: Arc<VmFd>,
    _memory: VmMemory,
}

impl VmHandle {
    /// The VM's control, to stop it from another thread.
    pub fn control(&self) -> Arc<VmControl> {
        self.control.clone()
    }

    /// The last POST code the guest wrote to port 0x80.
    pub fn post_code(&self) -> u8 {
        self.post_code.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn kick_all(&self) {
        kick_threads(&self.threads);
    }

    /// A handle that drives this VM from other threads.
    pub fn remote(&self) -> VmRemote {
        VmRemote {
            control: self.control.clone(),
            threads: self.threads.clone(),
            machine: self.machine.clone(),
            acpi_pm: self.acpi_pm.clone(),
            cdroms: self.cdroms.clone(),
        }
    }

    /// Presses the ACPI power button: a guest with ACPI shuts down cleanly.
    pub fn press_power_button(&self) {
        self.acpi_pm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .press_power_button();
    }

    /// Types `bytes` into COM1 (as if on a terminal attached to it);
    /// returns how many the UART's FIFO took.
    pub fn serial_input(&self, bytes: &[u8]) -> usize {
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue_input(bytes)
    }

    /// Sends `bytes` to the virtio console's input; returns how many its
    /// buffer took (0 without a console).
    pub fn console_input(&self, bytes: &[u8]) -> usize {
        self.console.as_ref().map_or(0, |c| c.send(bytes))
    }

    /// A handle that sends input to the virtio console from any thread.
    pub fn console_sender(&self) -> Option<ConsoleSender> {
        self.console.clone()
    }

    /// A handle that types into COM1 from another thread.
    pub fn serial_port(&self) -> SerialPort {
        SerialPort {
            serial: self.serial.clone(),
        }
    }

    /// A handle that delivers keyboard and mouse input from any thread.
    pub fn input(&self) -> InputPort {
        InputPort {
            i8042: self.i8042.clone(),
            tablet: self.tablet.clone(),
            virtio_keyboard: self.virtio_keyboard.clone(),
        }
    }

    /// The guest's screen, if the VM has one.
    pub fn screen(&self) -> Option<GuestScreen> {
        self.screen.clone()
    }

    /// The sound card's volume, mute and counters, if the VM has one
    /// (changes apply to the next period the guest plays).
    pub fn sound(&self) -> Option<Arc<SoundControl>> {
        self.sound.clone()
    }

    /// Pauses all vCPUs.
    pub fn pause(&self) {
        self.control.set_paused(true);
        self.kick_all();
    }

    /// Pauses the VM and writes its whole state (vCPUs, interrupt
    /// controllers, clock, devices, RAM) to `path`, atomically; the VM
    /// stays paused, to be resumed or stopped. [`VmBuilder::restore_from`]
    /// starts a VM from the file. Fails, writing nothing, when a device of
    /// the VM cannot be saved yet.
    pub fn save_state(&self, path: &Path) -> Result<SaveReport, StateError> {
        self.machine.save(&self.control, &self.threads, path)
    }

    /// Resumes all vCPUs.
    pub fn resume(&self) {
        self.control.set_paused(false);
    }

    /// Stops the VM (as pulling the plug).
    pub fn stop(&self) {
        self.control.request_stop(Outcome::Stopped);
        self.kick_all();
    }

    /// Waits until the VM stops, joins its threads and returns why it stopped.
    pub fn wait(self) -> Outcome {
        let mut hung_probes = 0;
        let outcome = loop {
            if let Some(outcome) = self.control.wait_stop(HANG_PROBE_INTERVAL) {
                break outcome;
            }
            if self.control.is_paused() {
                continue;
            }
            match self.hang_check() {
                // Two probes in a row, so a vCPU that woke another between
                // two snapshots is not taken for hung.
                Some(rip) if hung_probes >= 1 => {
                    self.control
                        .request_stop(Outcome::HaltedWithInterruptsOff { rip });
                }
                Some(_) => hung_probes += 1,
                None => hung_probes = 0,
            }
            for state in &self.shared {
                state.request_probe();
            }
            self.kick_all();
        };
        self.kick_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            // A panicking vCPU already recorded its outcome.
            let _ = thread.join();
        }
        // Ends the event loop and stops the network back-end.
        drop(self.events);
        // The guest is gone: the slow part of closing the VM can go first.
        if let Err(e) = crate::teardown::prepare_close(&self.vm) {
            log::debug!("closing the VM the slow way: {e}");
        }
        outcome
    }

    /// True when the last probe found the boot vCPU halted with interrupts
    /// off and every other vCPU halted likewise or never started.
    fn hang_check(&self) -> Option<u64> {
        let mut results = self.shared.iter().map(|s| s.probe_result());
        let (boot_state, rip) = results.next()?;
        let others_stuck = results.all(|(state, _)| state != ProbeState::Running);
        (boot_state == ProbeState::HaltedInterruptsOff && others_stuck).then_some(rip)
    }
}
