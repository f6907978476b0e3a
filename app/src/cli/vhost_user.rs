// SPDX-License-Identifier: Apache-2.0
//! `nestbox vhost-user-blk`, `vhost-user-rng`, `vhost-user-net`,
//! `vhost-user-input`, `vhost-user-snd` and `vhost-user-gpu`: serve a
//! Nestbox device on a vhost-user UNIX socket, for QEMU (`-device
//! vhost-user-blk-pci`, `vhost-user-rng-pci`, `-netdev vhost-user`,
//! `vhost-user-input-pci`, `vhost-user-snd-pci`, `vhost-user-gpu-pci`) or
//! any other front-end. Each returns when the front-end disconnects.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use display::framebuffer::SharedFramebuffer;
use display::scale::ScaleMode;
use display::view::GuestInput;
use eframe::egui;
use engine::audio::{SinkConfig, SoundControl, SourceConfig, open_sink, open_source};
use engine::devices::virtio::gpu::vhost_user_display::FrontendSink;
use engine::devices::virtio::gpu::{Gpu, GpuConfig, NullSink};
use engine::devices::virtio::input::{Input, InputKind, InputSender};

use crate::viewer::VmLink;
use engine::devices::virtio::net::{Net, stable_mac};
use engine::devices::virtio::rng::{HostRandom, RateLimit, Rng};
use engine::devices::virtio::snd::{Snd, SndConfig};
use engine::net::passt::Passt;
use engine::vm::DiskConfig;

use super::disk_arg::parse_disk;

/// Flags of `nestbox vhost-user-blk`.
#[derive(Debug, Args)]
pub struct VhostUserBlkArgs {
    /// The UNIX socket to listen on (created; must not exist).
    #[arg(long)]
    socket: PathBuf,
    /// The disk image: PATH[,format=raw|qcow2][,readonly].
    #[arg(long, value_parser = parse_disk)]
    disk: DiskConfig,
}

/// Serves the disk until the front-end disconnects.
pub fn run(args: VhostUserBlkArgs) -> anyhow::Result<()> {
    if !args.disk.path.is_file() {
        bail!(
            "Disk image {} does not exist or is not a file",
            args.disk.path.display()
        );
    }
    let block = args
        .disk
        .open_block("nestbox-vhost-blk")
        .with_context(|| format!("Cannot open {}", args.disk.path.display()))?;
    engine::vhost_user::serve(&args.socket, block)?;
    Ok(())
}

/// Flags of `nestbox vhost-user-rng`.
#[derive(Debug, Args)]
pub struct VhostUserRngArgs {
    /// The UNIX socket to listen on (created; must not exist).
    #[arg(long)]
    socket: PathBuf,
    /// The most entropy served per second, in bytes.
    #[arg(long, default_value_t = RateLimit::default().bytes_per_second)]
    bytes_per_second: u64,
}

/// Serves host entropy until the front-end disconnects.
pub fn run_rng(args: VhostUserRngArgs) -> anyhow::Result<()> {
    let limit = RateLimit {
        bytes_per_second: args.bytes_per_second,
        ..RateLimit::default()
    };
    let rng = Rng::new(Box::new(HostRandom), limit)?;
    engine::vhost_user::serve(&args.socket, rng)?;
    Ok(())
}

/// Flags of `nestbox vhost-user-net`.
#[derive(Debug, Args)]
pub struct VhostUserNetArgs {
    /// The UNIX socket to listen on (created; must not exist).
    #[arg(long)]
    socket: PathBuf,
    /// Seed for the device's stable MAC address (e.g. the VM's name).
    #[arg(long, default_value = "nestbox")]
    mac_seed: String,
}

/// Serves a NIC on user-mode NAT (a private passt) until the front-end
/// disconnects.
pub fn run_net(args: VhostUserNetArgs) -> anyhow::Result<()> {
    let passt_socket = args.socket.with_extension("passt");
    let passt = Passt::start(&passt_socket)?;
    let net = Net::new(stable_mac(&args.mac_seed), Box::new(passt.sender()?));
    engine::vhost_user::serve_net(&args.socket, net, passt)?;
    Ok(())
}

/// The flavours of `nestbox vhost-user-input --kind`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum InputKindArg {
    /// A PC keyboard.
    Keyboard,
    /// An absolute pointer.
    Tablet,
    /// A relative mouse.
    Mouse,
}

impl From<InputKindArg> for InputKind {
    fn from(kind: InputKindArg) -> Self {
        match kind {
            InputKindArg::Keyboard => Self::Keyboard,
            InputKindArg::Tablet => Self::Tablet,
            InputKindArg::Mouse => Self::Mouse,
        }
    }
}

/// Flags of `nestbox vhost-user-input`.
#[derive(Debug, Args)]
pub struct VhostUserInputArgs {
    /// The UNIX socket to listen on (created; must not exist).
    #[arg(long)]
    socket: PathBuf,
    /// Which input device the guest sees.
    #[arg(long, value_enum)]
    kind: InputKindArg,
    /// Open a window: what is typed or clicked in it goes to the guest.
    #[arg(long)]
    window: bool,
}

/// Serves an input device until the front-end disconnects. With
/// `--window`, a Nestbox window is the host input source; without, the
/// guest sees the device but no events.
pub fn run_input(args: VhostUserInputArgs) -> anyhow::Result<()> {
    let kind: InputKind = args.kind.into();
    let input = Input::new(kind)?;
    if !args.window {
        engine::vhost_user::serve(&args.socket, input)?;
        return Ok(());
    }
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        anyhow::bail!(
            "No graphical session to open a window in (DISPLAY and WAYLAND_DISPLAY are unset)"
        );
    }
    let link = Arc::new(InputWindow {
        sender: input.sender(),
        kind,
        held: Mutex::new(0),
        finished: AtomicBool::new(false),
        waker: Mutex::new(None),
    });
    let socket = args.socket.clone();
    let served = {
        let link = link.clone();
        std::thread::Builder::new()
            .name("vhost-user".into())
            .spawn(move || {
                let result = engine::vhost_user::serve(&socket, input);
                link.finished.store(true, Ordering::SeqCst);
                if let Some(ctx) = lock(&link.waker).as_ref() {
                    ctx.request_repaint();
                }
                result
            })?
    };
    // The window has no screen to show: the guest's screen is elsewhere.
    let framebuffer = Arc::new(SharedFramebuffer::with_default_capacity()?);
    let title = format!("Nestbox — virtio-input {}", kind.name());
    crate::viewer::run(&title, framebuffer, link, ScaleMode::Fit)?;
    if served.is_finished() {
        served
            .join()
            .map_err(|_| anyhow::anyhow!("The vhost-user thread crashed"))??;
    }
    Ok(())
}

/// The window as the input device's host side.
struct InputWindow {
    sender: InputSender,
    kind: InputKind,
    held: Mutex<u8>,
    finished: AtomicBool,
    waker: Mutex<Option<egui::Context>>,
}

impl VmLink for InputWindow {
    fn set_waker(&self, ctx: egui::Context) {
        *lock(&self.waker) = Some(ctx);
    }

    fn window_shown(&self) {}

    fn input(&self, event: GuestInput) {
        let mut held = lock(&self.held);
        let (events, now) = crate::virtio_input::to_events(self.kind, event, *held);
        *held = now;
        if !events.is_empty() {
            log::debug!("input: {events:?}");
            self.sender.push_events(&events);
        }
    }

    fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    // Closing the window ends the process, and with it the device.
    fn stop(&self) {}
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Flags of `nestbox vhost-user-snd`.
#[derive(Debug, Args)]
pub struct VhostUserSndArgs {
    /// The UNIX socket to listen on (created; must not exist).
    #[arg(long)]
    socket: PathBuf,
    /// Where playback goes: host (the default output; none without one),
    /// none, or wav:FILE.
    #[arg(long, default_value = "host")]
    sound: SinkConfig,
    /// Offer the guest a capture stream fed from: host (the default
    /// input), none (silence), wav:FILE (looped) or tone:HZ. Off unless
    /// given.
    #[arg(long)]
    capture: Option<SourceConfig>,
}

/// Serves a virtio sound card until the front-end disconnects.
pub fn run_snd(args: VhostUserSndArgs) -> anyhow::Result<()> {
    let sink = open_sink(&args.sound)?;
    let source = open_source(args.capture.as_ref().unwrap_or(&SourceConfig::None))?;
    let capture = args.capture.is_some();
    let snd = Snd::new(
        SndConfig { capture },
        sink,
        source,
        SoundControl::new(capture),
    )
    .context("Cannot create the sound device")?;
    let control = snd.control().clone();
    engine::vhost_user::serve(&args.socket, snd)?;
    let stats = control.stats();
    let counts = stats.snapshot();
    let ms = |q: f64| {
        stats.sink_latency.quantile(q).map_or_else(
            || "-".to_string(),
            |d| format!("{:.2}", d.as_secs_f64() * 1e3),
        )
    };
    // One line of key=value pairs, for people and for bench/sound.py.
    eprintln!(
        "vhost-user-snd: stats frames_played={} frames_captured={} underruns={} overruns={} \
         latency_writes={} latency_p50_ms={} latency_p99_ms={} latency_max_ms={}",
        counts.frames_played,
        counts.frames_captured,
        counts.underruns,
        counts.overruns,
        stats.sink_latency.count(),
        ms(0.5),
        ms(0.99),
        ms(1.0),
    );
    Ok(())
}

/// Flags of `nestbox vhost-user-gpu`.
#[derive(Debug, Args)]
pub struct VhostUserGpuArgs {
    /// The UNIX socket to listen on (created; must not exist).
    #[arg(long)]
    socket: PathBuf,
    /// Scanouts; must match the front-end's (QEMU's `max_outputs`).
    #[arg(long, default_value_t = GpuConfig::default().num_scanouts)]
    scanouts: u32,
}

/// Serves a 2D GPU until the front-end disconnects. The front-end owns the
/// displays: frames go to it (QEMU shows them on its own display), and it
/// decides the display sizes the guest is offered.
pub fn run_gpu(args: VhostUserGpuArgs) -> anyhow::Result<()> {
    let display = Arc::new(FrontendSink::new(Arc::new(NullSink)));
    let config = GpuConfig {
        num_scanouts: args.scanouts,
        ..GpuConfig::default()
    };
    let gpu = Gpu::new(config, display.clone())?;
    engine::vhost_user::serve_gpu(&args.socket, gpu, display)?;
    Ok(())
}
