// SPDX-License-Identifier: Apache-2.0
//! `nestbox run`: an ephemeral VM described entirely by flags, its serial
//! console on the terminal (input too: Ctrl-A x quits) or in a file. A guest reset reboots it (unless
//! `--no-reboot`); how it ended is the exit status, with one clear line
//! for every failure.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use display::framebuffer::SharedFramebuffer;
use display::scale::ScaleMode;
use engine::audio::SinkConfig;
use engine::boot::linux::LinuxBoot;
use engine::devices::virtio::net::stable_mac;
use engine::host::Acceleration;
use engine::net::passt::PASST_PATH;
use engine::vm::{ConsoleConfig, ConsoleOutput, DiskConfig, VirtioInputConfig};
use engine::{
    BootSource, DisplayConfig, NetConfig, Outcome, SoundConfig, VmBuilder, VmConfig, VmIo,
};

use super::console::{self, ConsoleInput, ConsoleTarget, RawTerminal};
use super::disk_arg::parse_disk;
use super::size::parse_size;
use crate::screen::{self, LiveVm};

use crate::library::caps::Caps;
use crate::library::config::{Adapter, IPXE_ROM_PATH, SEABIOS_PATH};

/// How long the VM waits for its window before starting without it.
const WINDOW_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the VM gets a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DisplayMode {
    /// A window showing the guest's screen, with keyboard and mouse.
    Window,
    /// No window (the serial console only, unless --screenshot asks for a screen).
    None,
}

/// The VM's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetMode {
    /// A virtio-net card on user-mode NAT (a private passt).
    Nat,
    /// No network card.
    None,
}

/// Firmware Nestbox knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Firmware {
    /// SeaBIOS from the `seabios` package.
    Seabios,
}

/// Flags of `nestbox run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Guest memory (e.g. 512M, 2G; a bare number is MiB).
    #[arg(long, short = 'm', default_value = "512M", value_parser = parse_size)]
    memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Boot this Linux kernel directly (bzImage, or ELF vmlinux with a PVH entry).
    #[arg(long, conflicts_with_all = ["bios", "firmware"])]
    kernel: Option<PathBuf>,
    /// Initial ramdisk for --kernel.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line for --kernel.
    #[arg(long, requires = "kernel", default_value = "console=ttyS0")]
    cmdline: String,
    /// Boot this firmware image (a raw flash image, mapped below 4 GiB).
    #[arg(long, conflicts_with = "firmware")]
    bios: Option<PathBuf>,
    /// Boot named firmware.
    #[arg(long, value_enum)]
    firmware: Option<Firmware>,
    /// Attach a disk image: PATH[,format=raw|qcow2][,readonly][,ide][,cdrom]
    /// (virtio-blk unless `ide`; an ISO on IDE is a CD-ROM)
    /// (repeatable; ISO files attach read-only).
    #[arg(long = "disk", value_parser = parse_disk)]
    disks: Vec<DiskConfig>,
    /// Where the guest's serial port goes: `stdio` or a file path.
    #[arg(long, default_value = "stdio")]
    serial: String,
    /// Give the VM a virtio console (`/dev/hvc0`) whose output goes to
    /// `stdio` or to a file; with `stdio` and `--serial` elsewhere, the
    /// terminal's input goes to it.
    #[arg(long)]
    console: Option<String>,
    /// Give the VM a virtio entropy device (`/dev/hwrng`) fed by the host.
    #[arg(long)]
    rng: bool,
    /// Write the firmware debug console (port 0x402) to this file.
    #[arg(long)]
    debugcon: Option<PathBuf>,
    /// Allow more than half of the host's RAM (never more than RAM - 2 GiB).
    #[arg(long)]
    allow_overcommit: bool,
    /// Exit instead of rebooting when the guest resets (or triple-faults,
    /// which resets a PC).
    #[arg(long)]
    no_reboot: bool,
    /// Show the guest's screen in a window (`window`) or not (`none`).
    #[arg(long, value_enum, default_value = "none")]
    display: DisplayMode,
    /// How the window fits the guest screen: fit, 1:1, integer or stretch.
    #[arg(long, default_value = "fit")]
    scale: ScaleMode,
    /// The screen is a plain standard VGA (default: virtio-vga, a standard
    /// VGA with a virtio-gpu that the guest's driver takes over).
    #[arg(long)]
    vga: bool,
    /// VGA BIOS for the screen (default: Debian's vgabios-virtio.bin, or
    /// vgabios-stdvga.bin with --vga).
    #[arg(long)]
    vga_bios: Option<PathBuf>,
    /// Save the guest's screen as a PNG file (gives the VM a screen).
    #[arg(long)]
    screenshot: Option<PathBuf>,
    /// Seconds after the start to take --screenshot.
    #[arg(long, default_value_t = 5.0, requires = "screenshot")]
    screenshot_after: f64,
    /// The network: `nat` (virtio-net on user-mode NAT through passt) or `none`.
    #[arg(long, value_enum, default_value = "none")]
    net: NetMode,
    /// Seed of the network card's stable MAC address (e.g. the VM's name):
    /// the same seed gives the same address on every run.
    #[arg(long, default_value = "nestbox")]
    mac_seed: String,
    /// Network boot ROM firmware runs for the card (default: Debian's iPXE
    /// ROM for virtio-net when installed; `none` for no network boot).
    #[arg(long)]
    net_rom: Option<PathBuf>,
    /// The sound card: `host` (virtio-snd playing on the host's default
    /// output; no sound, with a notice, when there is none), `none` (no
    /// sound card) or `wav:FILE` (written as the guest plays).
    #[arg(long, default_value = "none")]
    sound: SinkConfig,
}

/// Runs the VM until it powers off, exits or fails.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    Caps::check_start(
        args.memory.div_ceil(1 << 20),
        args.cpus,
        args.allow_overcommit,
    )?;
    let boot = boot_source(&args)?;
    if let Some(warning) = Acceleration::detect().warning() {
        eprintln!("nestbox: warning: {warning}");
    }
    if args.display == DisplayMode::Window
        && std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        bail!(
            "No graphical session to open a window in (DISPLAY and WAYLAND_DISPLAY are unset): use --display none"
        );
    }
    let wants_screen = args.display == DisplayMode::Window || args.screenshot.is_some();
    let display = if wants_screen {
        Some(display_config(&args, &boot)?)
    } else {
        None
    };
    let network = network_config(&args, &boot)?;
    let config = VmConfig {
        console: args.console.as_deref().map(|target| ConsoleConfig {
            output: if target == "stdio" {
                ConsoleOutput::Stdout
            } else {
                ConsoleOutput::File(PathBuf::from(target))
            },
        }),
        memory_bytes: args.memory,
        vcpus: args.cpus,
        boot,
        disks: args.disks.clone(),
        display,
        network,
        sound: sound_config(&args.sound),
        // The tablet and keyboard come with a window to point and type in.
        input: (args.display == DisplayMode::Window).then(VirtioInputConfig::default),
        rng: args.rng,
    };
    for disk in &config.disks {
        if !disk.path.is_file() {
            bail!(
                "Disk image {} does not exist or is not a file",
                disk.path.display()
            );
        }
    }
    let console = ConsoleTarget::default();
    let _raw = if args.serial == "stdio" || args.console.as_deref() == Some("stdio") {
        console::spawn_input(console.clone()).context("Cannot read the terminal")?;
        Some(RawTerminal::enable())
    } else {
        None
    };
    let live = Arc::new(LiveVm::default());
    crate::termination::end_vm_on_termination(
        live.clone(),
        crate::termination::OnTermination::Stop,
    )
    .context("Cannot handle termination signals")?;
    let screenshot = match args.screenshot.clone() {
        Some(path) => Some(screen::spawn_screenshot(
            live.clone(),
            path,
            Duration::from_secs_f64(args.screenshot_after.max(0.0)),
        )?),
        None => None,
    };
    if args.display == DisplayMode::None {
        let code = run_vms(&args, &config, &console, &live)?;
        return Ok(with_screenshot(code, screenshot.as_deref(), &args));
    }
    let framebuffer = Arc::new(
        SharedFramebuffer::with_default_capacity().context("Cannot create the screen buffer")?,
    );
    screen::spawn_pump(live.clone(), framebuffer.clone())?;
    let vm_thread = {
        let (config, console, live) = (config.clone(), console.clone(), live.clone());
        let options = RebootOptions::from(&args);
        std::thread::Builder::new()
            .name("vm".into())
            .spawn(move || {
                // Power on once the window shows, so the user sees the
                // boot from its first line (and can reach the boot menu).
                if !live.wait_for_window(WINDOW_START_TIMEOUT) {
                    log::warn!(
                        "the window did not show within {WINDOW_START_TIMEOUT:?}; starting anyway"
                    );
                }
                let result = run_vms_with(&options, &config, &console, &live);
                live.finish();
                result
            })
            .context("Cannot start the VM thread")?
    };
    let title = format!("Nestbox — {}", describe(&config.boot));
    let shown = crate::viewer::run(&title, framebuffer, live.clone(), args.scale);
    // The window is gone: the VM goes with it.
    live.stop_current();
    let code = vm_thread
        .join()
        .map_err(|_| anyhow::anyhow!("The VM thread crashed"))??;
    shown?;
    Ok(with_screenshot(code, screenshot.as_deref(), &args))
}

/// The exit status once the VM ended: `code`, unless `--screenshot` asked
/// for a picture that was not saved (it failed, or the VM ended before
/// `--screenshot-after`: said here), which is a failure.
fn with_screenshot(
    code: ExitCode,
    screenshot: Option<&screen::ScreenshotTaken>,
    args: &RunArgs,
) -> ExitCode {
    match screenshot.map(screen::ScreenshotTaken::outcome) {
        None | Some(Some(Ok(()))) => code,
        Some(Some(Err(_))) => ExitCode::FAILURE,
        Some(None) => {
            eprintln!(
                "nestbox: no screenshot: the VM ended before --screenshot-after ({} s)",
                args.screenshot_after
            );
            ExitCode::FAILURE
        }
    }
}

/// What the reboot loop needs from the flags.
#[derive(Clone)]
struct RebootOptions {
    serial: String,
    /// Terminal input goes to the virtio console (not COM1).
    console_input: bool,
    debugcon: Option<PathBuf>,
    no_reboot: bool,
}

impl From<&RunArgs> for RebootOptions {
    fn from(args: &RunArgs) -> Self {
        Self {
            serial: args.serial.clone(),
            console_input: args.serial != "stdio" && args.console.as_deref() == Some("stdio"),
            debugcon: args.debugcon.clone(),
            no_reboot: args.no_reboot,
        }
    }
}

fn run_vms(
    args: &RunArgs,
    config: &VmConfig,
    console: &ConsoleTarget,
    live: &Arc<LiveVm>,
) -> anyhow::Result<ExitCode> {
    let result = run_vms_with(&RebootOptions::from(args), config, console, live);
    live.finish();
    result
}

/// Runs the VM, rebooting it on a guest reset, until it ends.
fn run_vms_with(
    options: &RebootOptions,
    config: &VmConfig,
    console: &ConsoleTarget,
    live: &LiveVm,
) -> anyhow::Result<ExitCode> {
    let mut first_boot = true;
    loop {
        let io = VmIo {
            serial: serial_out(&options.serial, first_boot)?,
            debugcon: match &options.debugcon {
                Some(path) => Some(Box::new(open_log(path, first_boot)?)),
                None => None,
            },
        };
        first_boot = false;
        let handle = VmBuilder::new(config.clone(), io).start()?;
        let port = match handle.console_sender() {
            Some(sender) if options.console_input => ConsoleInput::Virtio(sender),
            _ => ConsoleInput::Serial(handle.serial_port()),
        };
        console.attach(port, handle.control());
        live.attach(&handle);
        let outcome = handle.wait();
        // The ended VM's devices (and its disks, with their image locks)
        // go before the next boot opens them again.
        live.detach();
        if outcome.restarts() && !options.no_reboot && !live.stop_requested() {
            if outcome != Outcome::Reset {
                log::warn!("{outcome}: resetting the machine, as a PC does");
            }
            log::info!("guest reset: rebooting");
            continue;
        }
        if outcome.is_failure() {
            eprintln!("nestbox: {outcome}");
        }
        return Ok(ExitCode::from(outcome.exit_code().clamp(0, 255) as u8));
    }
}

/// A short name for the window title.
fn describe(boot: &BootSource) -> String {
    let path = match boot {
        BootSource::Linux(linux) => &linux.kernel,
        BootSource::Firmware { path, .. } => path,
    };
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "VM".to_string())
}

/// The screen: virtio-vga (the standard VGA alone with `--vga`), with its
/// BIOS when firmware boots.
fn display_config(args: &RunArgs, boot: &BootSource) -> anyhow::Result<DisplayConfig> {
    let adapter = if args.vga {
        Adapter::Vga
    } else {
        Adapter::VirtioVga
    };
    let vga_bios = match boot {
        // A directly booted kernel sets its own modes (or uses none).
        BootSource::Linux(_) => None,
        BootSource::Firmware { .. } => {
            let default = adapter.vga_bios();
            let path = args
                .vga_bios
                .clone()
                .unwrap_or_else(|| PathBuf::from(default));
            if !path.is_file() {
                if args.vga_bios.is_none() {
                    bail!(
                        "The VGA BIOS is not installed at {default}: install Debian's 'seabios' package"
                    );
                }
                bail!("VGA BIOS {} does not exist", path.display());
            }
            Some(path)
        }
    };
    Ok(DisplayConfig {
        adapter: adapter.engine(),
        vga_bios,
        size: None,
    })
}

/// The network card for `--net`, with its boot ROM when firmware boots.
fn network_config(args: &RunArgs, boot: &BootSource) -> anyhow::Result<Option<NetConfig>> {
    if args.net == NetMode::None {
        return Ok(None);
    }
    if !std::path::Path::new(PASST_PATH).is_file() {
        bail!(
            "passt is not installed at {PASST_PATH}: install Debian's passt package or use --net none"
        );
    }
    let boot_rom = match (boot, &args.net_rom) {
        // A directly booted kernel brings its own driver.
        (BootSource::Linux(_), _) => None,
        (BootSource::Firmware { .. }, Some(path)) if path.as_os_str() == "none" => None,
        (BootSource::Firmware { .. }, Some(path)) => {
            if !path.is_file() {
                bail!("Network boot ROM {} does not exist", path.display());
            }
            Some(path.clone())
        }
        (BootSource::Firmware { .. }, None) => {
            Some(PathBuf::from(IPXE_ROM_PATH)).filter(|path| path.is_file())
        }
    };
    Ok(Some(NetConfig {
        mac: stable_mac(&args.mac_seed),
        boot_rom,
    }))
}

/// The sound card for `--sound` (`none`: no card at all).
fn sound_config(sink: &SinkConfig) -> Option<SoundConfig> {
    match sink {
        SinkConfig::None => None,
        output => Some(SoundConfig {
            output: output.clone(),
            ..SoundConfig::default()
        }),
    }
}

fn boot_source(args: &RunArgs) -> anyhow::Result<BootSource> {
    if let Some(kernel) = &args.kernel {
        for file in std::iter::once(kernel).chain(args.initrd.iter()) {
            if !file.is_file() {
                bail!("{} does not exist or is not a file", file.display());
            }
        }
        return Ok(BootSource::Linux(LinuxBoot {
            kernel: kernel.clone(),
            initrd: args.initrd.clone(),
            cmdline: args.cmdline.clone(),
        }));
    }
    let path = match (&args.bios, args.firmware) {
        (Some(path), _) => path.clone(),
        (None, Some(Firmware::Seabios)) => PathBuf::from(SEABIOS_PATH),
        (None, None) => {
            bail!("Nothing to boot: give --kernel FILE, --firmware seabios or --bios FILE")
        }
    };
    if !path.is_file() {
        if args.firmware == Some(Firmware::Seabios) {
            bail!("SeaBIOS is not installed at {SEABIOS_PATH}: install Debian's 'seabios' package");
        }
        bail!("Firmware image {} does not exist", path.display());
    }
    Ok(BootSource::Firmware {
        path,
        serial_console: true,
    })
}

fn serial_out(target: &str, truncate: bool) -> anyhow::Result<Box<dyn Write + Send>> {
    if target == "stdio" {
        return Ok(Box::new(std::io::stdout()));
    }
    Ok(Box::new(open_log(&PathBuf::from(target), truncate)?))
}

fn open_log(path: &PathBuf, truncate: bool) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true);
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    options
        .open(path)
        .with_context(|| format!("Cannot open {} for writing", path.display()))
}
