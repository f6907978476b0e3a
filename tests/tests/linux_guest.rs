// SPDX-License-Identifier: Apache-2.0
//! Tier 4.5, "Linux on Nestbox here": a real Linux (the small test kernel,
//! tests/guest/kernel/) boots on Nestbox's own machine and its drivers
//! check every device from inside the guest, driven over the serial
//! console (tests/src/linux_guest.rs). Runs on every host with /dev/kvm,
//! software-only KVM included (~35-60 s a boot there), so one boot carries
//! all the device checks:
//! - virtio-blk (raw and qcow2) and an IDE disk through ata_piix: the
//!   checksum of the host-made image, a 64 KiB write with fsync read back,
//!   and the write found in the image by the host after power-off;
//! - an ATAPI CD-ROM (sr_mod, ISO 9660): a file from an xorriso ISO;
//! - virtio-net: a DHCP lease from passt, a line from a host TCP server;
//! - virtio-rng bytes, first through MSI-X, then again with the function
//!   rebound to its PCI INTx line (both kinds counted in /proc/interrupts);
//! - virtio-console both ways; keys typed on the host through virtio-input
//!   and through the PS/2 keyboard, read as evdev events;
//! - virtio-snd registers a sound card; 2 vCPUs online; the RTC's time;
//! - the ACPI power button: the guest powers off in order (S5).
//!
//!
//! A second boot (`nestbox.test=gpu`) checks virtio-gpu through the
//! engine's virtio-vga: Linux's virtio_gpu driver takes the screen over
//! from the VGA, its framebuffer console's colour bands appear on the
//! VM's screen exactly, a display size the host asks for becomes the
//! guest's preferred mode, and once the guest unbinds its driver (a
//! device reset) the screen is the VGA's again.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use display::keymap::{set2_break, set2_make};
use engine::audio::SinkConfig;
use engine::devices::std_vga::Frame;
use engine::devices::virtio::input::InputEvent;
use engine::devices::virtio::net::stable_mac;
use engine::net::passt::PASST_PATH;
use engine::vm::{
    ConsoleConfig, ConsoleOutput, DiskBus, DiskConfig, DiskFormat, DisplayAdapter, DisplayConfig,
    NetConfig, SoundConfig, VirtioInputConfig,
};
use engine::{Outcome, VmConfig};
use nestbox_tests::gpu::{marker_field, mismatches};
use nestbox_tests::linux_guest::{
    AGENT_CMDLINE, BOOT_TIMEOUT, Fields, LinuxGuest, small_guest_config, small_guest_files,
};
use nestbox_tests::qemu::{key_results, temp_path};
use nestbox_tests::{XORRISO, kvm_available, require_file};

/// Size of each host-made disk image.
const DISK_BYTES: usize = 4 << 20;
/// Where the agent writes its 64 KiB pattern.
const PATTERN_OFFSET: usize = 1 << 20;
const PATTERN_BYTES: usize = 64 << 10;
/// The line the host's TCP server sends.
const NET_REPLY: &str = "NESTBOX-NET-HELLO-5c21";
/// The first line of HELLO.TXT on the test CD.
const CD_TEXT: &str = "NESTBOX-CD-TEXT-9e04";
/// What the host sends the guest over the virtio console.
const CONSOLE_IN: &str = "hello-from-the-host";
/// How long one agent command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// The display size the host asks the virtio-gpu guest for.
const NEW_WIDTH: u32 = 1280;
const NEW_HEIGHT: u32 = 800;
const KEY_A: u16 = 30;
const KEY_B: u16 = 48;
const KEY_LEFTSHIFT: u16 = 42;
const KEY_F12: u16 = 88;
/// Keys typed on the host for each keyboard: shift+A, B, then F12 (the
/// agent's end marker).
const STROKES: &[(u16, bool)] = &[
    (KEY_LEFTSHIFT, true),
    (KEY_A, true),
    (KEY_A, false),
    (KEY_LEFTSHIFT, false),
    (KEY_B, true),
    (KEY_B, false),
    (KEY_F12, true),
    (KEY_F12, false),
];

/// Deterministic bytes for a disk image (xorshift), different per seed.
fn image_bytes(seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..DISK_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn md5(bytes: &[u8]) -> String {
    let mut child = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("md5sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..32].to_string()
}

/// The pattern the agent writes to disk `dev`.
fn pattern(dev: &str) -> Vec<u8> {
    format!("NESTBOX-GUEST-WRITE-{dev}\n")
        .bytes()
        .cycle()
        .take(PATTERN_BYTES)
        .collect()
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn disk(path: &Path, format: DiskFormat, bus: DiskBus, cdrom: bool) -> DiskConfig {
    DiskConfig {
        path: path.to_path_buf(),
        format,
        readonly: false,
        bus,
        cdrom,
        ejected: false,
        dependencies: Default::default(),
        cache: Default::default(),
    }
}

/// The summed per-CPU counts of the /proc/interrupts lines (as the agent
/// printed them) whose text contains every word of `words`.
fn interrupt_count(output: &str, words: &[&str]) -> u64 {
    output
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("NESTBOX-IRQ "))
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map_while(|w| w.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Whether the agent read exactly [`STROKES`] from a keyboard.
fn typed_strokes(output: &str) -> Result<(), String> {
    let keys = key_results(output);
    if keys == STROKES {
        Ok(())
    } else {
        Err(format!("keys {keys:?}"))
    }
}

/// The checks' results, reported together at the end.
#[derive(Default)]
struct Checks {
    failures: Vec<String>,
    passed: Vec<&'static str>,
}

impl Checks {
    fn check(&mut self, name: &'static str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                eprintln!("linux guest: {name}: ok");
                self.passed.push(name);
            }
            Err(why) => {
                eprintln!("linux guest: {name}: FAILED: {why}");
                self.failures.push(format!("{name}: {why}"));
            }
        }
    }
}

fn expect_eq(what: &str, got: &str, want: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// The files one boot uses, in a temp dir removed at the end.
struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn test_linux_guest_drives_every_device_on_nestbox() {
    let test = "test_linux_guest_drives_every_device_on_nestbox";
    if !kvm_available(test) {
        return;
    }
    let Some((kernel, initrd)) = small_guest_files(test) else {
        return;
    };
    let Some(xorriso) = require_file(test, Path::new(XORRISO), "install Debian's xorriso") else {
        return;
    };
    if require_file(test, Path::new(PASST_PATH), "install Debian's passt").is_none() {
        return;
    }
    let work = Workdir(temp_path("linux-guest"));
    let dir = &work.0;
    std::fs::create_dir_all(dir).unwrap();

    // Disks the host makes: raw virtio, qcow2 virtio (from a raw), raw IDE.
    let images = [("vda", 11u64), ("vdb", 22), ("sda", 33)];
    let contents: Vec<Vec<u8>> = images.iter().map(|(_, seed)| image_bytes(*seed)).collect();
    let raw_virtio = dir.join("virtio.raw");
    let qcow2_source = dir.join("qcow2-source.raw");
    let qcow2 = dir.join("virtio.qcow2");
    let raw_ide = dir.join("ide.raw");
    std::fs::write(&raw_virtio, &contents[0]).unwrap();
    std::fs::write(&qcow2_source, &contents[1]).unwrap();
    qemu_img(
        &["convert", "-q", "-f", "raw", "-O", "qcow2"]
            .into_iter()
            .chain([qcow2_source.to_str().unwrap(), qcow2.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    std::fs::write(&raw_ide, &contents[2]).unwrap();
    // A CD made by xorriso with one text file.
    let cd_tree = dir.join("cd-tree");
    std::fs::create_dir_all(&cd_tree).unwrap();
    std::fs::write(cd_tree.join("HELLO.TXT"), format!("{CD_TEXT}\n")).unwrap();
    let iso = dir.join("cd.iso");
    let made = Command::new(&xorriso)
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(&iso)
        .arg(&cd_tree)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    // The host's TCP server: loopback only, one known line per connection.
    let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in server.incoming().flatten() {
            let _ = writeln!(stream, "{NET_REPLY}");
        }
    });

    let console_log = dir.join("console.log");
    let config = VmConfig {
        disks: vec![
            disk(&raw_virtio, DiskFormat::Raw, DiskBus::Virtio, false),
            disk(&qcow2, DiskFormat::Qcow2, DiskBus::Virtio, false),
            disk(&raw_ide, DiskFormat::Raw, DiskBus::Ide, false),
            disk(&iso, DiskFormat::Raw, DiskBus::Ide, true),
        ],
        network: Some(NetConfig {
            mac: stable_mac("linux-guest-test"),
            boot_rom: None,
        }),
        console: Some(ConsoleConfig {
            output: ConsoleOutput::File(console_log.clone()),
        }),
        input: Some(VirtioInputConfig {
            tablet: false,
            keyboard: true,
        }),
        sound: Some(SoundConfig {
            output: SinkConfig::None,
            volume: 100,
            muted: false,
        }),
        rng: true,
        ..small_guest_config(kernel, initrd, AGENT_CMDLINE)
    };
    let guest = LinuxGuest::boot(config);
    if let Err(why) = guest.wait_ready() {
        panic!("{why}");
    }
    let mut checks = Checks::default();
    let run = |line: &str| guest.command(line, COMMAND_TIMEOUT);

    // The machine: CPUs and the RTC's time.
    checks.check(
        "2 vCPUs",
        if guest.serial().contains("NESTBOX-GUEST-READY") && guest.serial().contains("cpus=2") {
            Ok(())
        } else {
            Err("the ready line does not say cpus=2".into())
        },
    );
    let host_now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // The guest reads its RTC while the command runs, which takes seconds
    // on a loaded host that emulates the guest kernel: between these two.
    let asked = host_now();
    let facts = run("facts");
    let answered = host_now();
    checks.check(
        "CPUs online and RTC time",
        facts.and_then(|out| {
            let fields = Fields::of(&out, "facts").ok_or("no facts line")?;
            expect_eq("online CPUs", fields.get("online"), "0-1")?;
            // The CMOS RTC's time as the guest reads it (its system clock
            // may drift: its TSC was calibrated under emulation here).
            let rtc: u64 = fields.get("rtc").parse().map_err(|_| "no RTC time")?;
            if rtc + 2 < asked || rtc > answered + 2 {
                return Err(format!(
                    "guest RTC {rtc}, host {asked} to {answered} while it ran"
                ));
            }
            Ok(())
        }),
    );

    // Disks.
    for ((dev, _), content) in images.iter().zip(&contents) {
        let name = match *dev {
            "vda" => "virtio-blk raw read/write/flush",
            "vdb" => "virtio-blk qcow2 read/write/flush",
            _ => "IDE disk (ata_piix) read/write/flush",
        };
        let result = run(&format!("blk {dev}")).and_then(|out| {
            let fields = Fields::of(&out, "blk").ok_or("no blk line")?;
            expect_eq("error", fields.get("error"), "")?;
            expect_eq("image checksum", fields.get("image"), &md5(content))?;
            expect_eq("write read back", fields.get("read"), fields.get("written"))?;
            expect_eq("pattern", fields.get("written"), &md5(&pattern(dev)))
        });
        checks.check(name, result);
    }
    checks.check(
        "ATAPI CD-ROM (sr_mod, ISO 9660)",
        run("cd").and_then(|out| {
            let fields = Fields::of(&out, "cd").ok_or("no cd line")?;
            expect_eq("error", fields.get("error"), "")?;
            expect_eq("HELLO.TXT", fields.get("text"), CD_TEXT)
        }),
    );

    // Network: a lease from passt, then the host's server.
    checks.check(
        "virtio-net DHCP and TCP to the host",
        run(&format!("net {port}")).and_then(|out| {
            let fields = Fields::of(&out, "net").ok_or("no net line")?;
            expect_eq("error", fields.get("error"), "")?;
            if fields.get("address").parse::<Ipv4Addr>().is_err() {
                return Err(format!("no address:\n{out}"));
            }
            expect_eq("reply", fields.get("reply"), NET_REPLY)
        }),
    );

    // Entropy through MSI-X.
    let rng_check = |out: Result<String, String>| {
        out.and_then(|out| {
            let fields = Fields::of(&out, "rng").ok_or("no rng line")?;
            expect_eq("bytes", fields.get("bytes"), "64")?;
            if !fields.get("current").starts_with("virtio_rng") {
                return Err(format!("hwrng is {:?}", fields.get("current")));
            }
            Ok(())
        })
    };
    checks.check("virtio-rng (MSI-X)", rng_check(run("rng")));

    // Console both ways.
    let console_sender = guest.handle().console_sender();
    let console = guest.command_with("console", COMMAND_TIMEOUT, |so_far| {
        if so_far.contains("NESTBOX-CONSOLE-READY")
            && let Some(sender) = &console_sender
        {
            sender.send(format!("{CONSOLE_IN}\n").as_bytes());
        }
    });
    checks.check(
        "virtio-console both ways",
        console.and_then(|out| {
            let fields = Fields::of(&out, "console").ok_or("no console line")?;
            expect_eq("guest read", fields.get("in"), CONSOLE_IN)?;
            let log = std::fs::read_to_string(&console_log).unwrap_or_default();
            if !log.contains("NESTBOX-CONSOLE-OUT hello from the guest") {
                return Err(format!("the host's console log has {log:?}"));
            }
            Ok(())
        }),
    );

    // Keys typed on the host, through virtio-input and through PS/2.
    let keyboard = guest.handle().input().virtio_keyboard().cloned();
    let typed = guest.command_with("input Nestbox Keyboard", COMMAND_TIMEOUT, |so_far| {
        if so_far.contains("NESTBOX-INPUT-READY")
            && let Some(keyboard) = &keyboard
        {
            let events: Vec<InputEvent> = STROKES
                .iter()
                .flat_map(|&(code, pressed)| [InputEvent::key(code, pressed), InputEvent::syn()])
                .collect();
            keyboard.push_events(&events);
        }
    });
    checks.check(
        "virtio-input keyboard",
        typed.and_then(|out| typed_strokes(&out)),
    );
    let ps2 = guest.handle().input();
    let typed = guest.command_with(
        "input AT Translated Set 2 keyboard",
        COMMAND_TIMEOUT,
        |so_far| {
            if so_far.contains("NESTBOX-INPUT-READY") {
                for &(code, pressed) in STROKES {
                    let bytes = if pressed {
                        set2_make(code)
                    } else {
                        set2_break(code)
                    };
                    ps2.keyboard(&bytes);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        },
    );
    checks.check(
        "PS/2 keyboard (i8042, atkbd)",
        typed.and_then(|out| typed_strokes(&out)),
    );

    // Entropy again with the rng function on its INTx line; then both
    // kinds of interrupt must have been delivered.
    let intx = run("intx 0x1044").and_then(|out| {
        let fields = Fields::of(&out, "intx").ok_or("no intx line")?;
        expect_eq("error", fields.get("error"), "")?;
        Ok(())
    });
    checks.check("virtio-rng rebound to INTx", intx);
    checks.check("virtio-rng (INTx)", rng_check(run("rng")));
    checks.check(
        "PCI INTx and MSI-X both delivered",
        run("facts").and_then(|out| {
            let intx = interrupt_count(&out, &["IO-APIC", "fasteoi", "virtio"]);
            let msix = interrupt_count(&out, &["PCI-MSI", "virtio"]);
            if intx == 0 || msix == 0 {
                return Err(format!("INTx {intx}, MSI-X {msix} in:\n{out}"));
            }
            Ok(())
        }),
    );

    checks.check(
        "virtio-snd card",
        run("snd").and_then(|out| {
            let fields = Fields::of(&out, "snd").ok_or("no snd line")?;
            expect_eq("error", fields.get("error"), "")
        }),
    );

    // The power button: an orderly power-off.
    guest.handle().press_power_button();
    let (outcome, serial) = guest.wait_end(Duration::from_secs(120));
    checks.check(
        "ACPI power button powers off (S5)",
        if outcome == Outcome::PowerOff && serial.contains("NESTBOX-POWER-BUTTON") {
            Ok(())
        } else {
            Err(format!("outcome {outcome:?}"))
        },
    );

    // The guest's writes are in the images after the VM has ended.
    let qcow2_back = dir.join("qcow2-back.raw");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "qcow2",
        "-O",
        "raw",
        qcow2.to_str().unwrap(),
        qcow2_back.to_str().unwrap(),
    ]);
    for (dev, path) in [
        ("vda", &raw_virtio),
        ("vdb", &qcow2_back),
        ("sda", &raw_ide),
    ] {
        let bytes = std::fs::read(path).unwrap();
        let found = bytes.get(PATTERN_OFFSET..PATTERN_OFFSET + PATTERN_BYTES);
        let name = match dev {
            "vda" => "raw virtio write in the image after power-off",
            "vdb" => "qcow2 write in the image after power-off",
            _ => "IDE write in the image after power-off",
        };
        checks.check(
            name,
            if found == Some(pattern(dev).as_slice()) {
                Ok(())
            } else {
                Err(format!(
                    "{} does not hold the pattern at 1 MiB",
                    path.display()
                ))
            },
        );
    }

    assert!(
        checks.failures.is_empty(),
        "{} of {} checks failed:\n  {}\nserial:\n{serial}",
        checks.failures.len(),
        checks.failures.len() + checks.passed.len(),
        checks.failures.join("\n  ")
    );
}

#[test]
fn test_linux_guest_drives_virtio_gpu_on_nestbox() {
    let test = "test_linux_guest_drives_virtio_gpu_on_nestbox";
    if !kvm_available(test) {
        return;
    }
    let Some((kernel, initrd)) = small_guest_files(test) else {
        return;
    };
    let cmdline = AGENT_CMDLINE.replace("nestbox.test=agent", "nestbox.test=gpu");
    let mut config = small_guest_config(kernel, initrd, &cmdline);
    config.display = Some(DisplayConfig {
        adapter: DisplayAdapter::VirtioVga,
        vga_bios: None,
        size: None,
    });
    let guest = LinuxGuest::boot(config);
    let screen = guest.handle().screen().expect("the VM has a screen");
    let vga_text_before = screen.text().is_some();

    // The guest draws its bands once virtio_gpu's fbdev is up.
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let (w, h) = loop {
        let serial = guest.serial();
        let w = marker_field(&serial, "NESTBOX-GPU-DRAWN", "w");
        let h = marker_field(&serial, "NESTBOX-GPU-DRAWN", "h");
        if let (Some(w), Some(h)) = (w, h) {
            break (w, h);
        }
        assert!(Instant::now() < deadline, "the guest never drew:\n{serial}");
        std::thread::sleep(Duration::from_millis(200));
    };

    // The screen shows the GPU's picture: exactly the bands.
    let mut frame = Frame::default();
    let mut bad = usize::MAX;
    let shown_by = Instant::now() + Duration::from_secs(20);
    while Instant::now() < shown_by {
        screen.render(&mut frame);
        if (frame.width, frame.height) == (w, h) {
            bad = mismatches(w, h, &frame.pixels);
            if bad == 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nestbox_virtio_gpu_bands.png");
    if frame.width > 0 {
        display::screenshot::write_png(&shot, frame.width, frame.height, &frame.pixels).unwrap();
    }
    let text_after = screen.text();
    let gpu_shown_before_reset = screen.shows_gpu();

    // The host asks for a larger display, as a resized window does.
    let asked = screen.request_display_size(NEW_WIDTH, NEW_HEIGHT);
    let deadline = Instant::now() + Duration::from_secs(120);
    let serial = loop {
        let serial = guest.serial();
        let ended = serial
            .find("NESTBOX-RESULT gpu-mode")
            .is_some_and(|at| serial[at..].contains('\n'));
        if ended {
            break serial;
        }
        assert!(Instant::now() < deadline, "no gpu-mode result:\n{serial}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let fields = Fields::of(&serial, "gpu-mode").expect("a gpu-mode line");

    // The guest unbinds its driver, which resets the device: the screen
    // is the VGA's again.
    let deadline = Instant::now() + Duration::from_secs(120);
    let back_to_vga = loop {
        let unbound = guest.serial().contains("NESTBOX-RESULT gpu-unbound");
        if unbound && !screen.shows_gpu() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let serial = guest.serial();

    assert!(!vga_text_before || text_after.is_none());
    assert_eq!(
        (w, h),
        (1024, 768),
        "virtio_gpu's fbdev has the device's preferred size\n{serial}"
    );
    assert_eq!(
        bad,
        0,
        "the VM's screen never showed the guest's bands exactly (last: {}x{}; {}); serial:\n{serial}",
        frame.width,
        frame.height,
        shot.display()
    );
    assert!(
        text_after.is_none(),
        "the screen is the GPU's picture, not VGA text"
    );
    assert!(asked, "the display size request was refused");
    assert!(gpu_shown_before_reset, "the GPU's picture was the screen");
    assert!(
        back_to_vga,
        "after the device reset the screen is the VGA's again\n{serial}"
    );
    assert_eq!(fields.get("first"), "1024x768", "{serial}");
    assert_eq!(
        fields.get("mode"),
        format!("{NEW_WIDTH}x{NEW_HEIGHT}"),
        "{serial}"
    );
}
