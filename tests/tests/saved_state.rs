// SPDX-License-Identifier: Apache-2.0
//! Tier 2: a VM's whole machine state saved to a file and restored into
//! a fresh VM in another process. The guest (payloads/count_user.S)
//! counts at CPL3 and prints each count on COM1; the counts printed before
//! the save and after the restore, put together, must be 1, 2, 3, ...
//! with none missing and none repeated. A damaged, truncated or foreign
//! state file, or one from a VM of another shape, is refused with a clear
//! error and left as it was.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use engine::devices::std_vga::{Frame, GuestScreen};
use engine::snapshot::StateError;
use engine::vm::{
    ConsoleConfig, ConsoleOutput, DiskBus, DiskConfig, DiskFormat, DisplayAdapter, DisplayConfig,
};
use engine::{Error, VmBuilder, VmConfig, VmIo};
use nestbox_tests::linux_guest::{
    AGENT_CMDLINE, Fields, LinuxGuest, small_guest_config, small_guest_files,
};
use nestbox_tests::{Capture, SEABIOS, VmGuard, firmware_vm, kvm_available, payload, require_file};

/// Set in the child process: the state file it restores.
const RESTORE_FROM: &str = "NESTBOX_TEST_RESTORE_FROM";
/// Set in the SeaBIOS test's child: where it writes the screen it finds.
const SCREEN_TO: &str = "NESTBOX_TEST_SCREEN_TO";
const VGA_BIOS: &str = "/usr/share/seabios/vgabios-stdvga.bin";
/// Set in the Linux test's child: the guest's kernel and initramfs.
const LINUX_FILES: &str = "NESTBOX_TEST_LINUX_FILES";
/// Counts the parent waits for before it saves.
const COUNTS_BEFORE_SAVE: usize = 300;
/// Counts the child waits for after the restore.
const COUNTS_AFTER_RESTORE: usize = 300;
const TIMEOUT: Duration = Duration::from_secs(60);

fn config(memory_bytes: u64) -> VmConfig {
    VmConfig {
        memory_bytes,
        ..firmware_vm(payload::image("count_user"))
    }
}

/// Runs this test binary's test `test` in a new process with `env` set
/// (where the test plays its restoring half); its standard output, after
/// checking that it succeeded.
fn restore_in_a_new_process(test: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout).into_owned();
    assert!(
        child.status.success(),
        "the restoring process failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    stdout
}

fn io(serial: &Capture) -> VmIo {
    VmIo {
        serial: serial.writer(),
        debugcon: None,
    }
}

fn work_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("saved_state-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until `serial` holds `lines` newlines.
fn wait_for_lines(serial: &Capture, lines: usize) {
    let deadline = Instant::now() + TIMEOUT;
    while serial.bytes().iter().filter(|&&b| b == b'\n').count() < lines {
        assert!(
            Instant::now() < deadline,
            "the guest printed only:\n{}",
            serial.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the counting guest until it printed `lines` counts, saves it to
/// `state` and stops it; returns what it printed.
fn save_counting_vm(state: &Path, lines: usize) -> String {
    let serial = Capture::new();
    let vm = VmGuard::start(VmBuilder::new(config(64 << 20), io(&serial)));
    wait_for_lines(&serial, lines);
    let report = vm.handle().save_state(state).expect("the VM saves");
    // Paused from the save on: nothing more is printed.
    let printed = serial.text();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(serial.text(), printed, "the VM ran on after its save");
    vm.stop();
    assert!(report.ram.pages > 0, "RAM was saved: {report:?}");
    assert!(
        report.file_bytes < 1 << 20,
        "only touched pages are written: {report:?}"
    );
    printed
}

/// The counts in the whole lines of `text` (what follows the last newline
/// is a line the guest had not finished), which must be eight hex digits
/// each; panics naming the first line that is not.
fn counts(text: &str) -> Vec<u32> {
    let whole = text.rsplit_once('\n').map_or("", |(lines, _)| lines);
    let mut counts = Vec::new();
    for line in whole.split('\n').filter(|l| !l.is_empty()) {
        let count = u32::from_str_radix(line, 16)
            .ok()
            .filter(|_| line.len() == 8)
            .unwrap_or_else(|| panic!("not a count: {line:?} in\n{text}"));
        counts.push(count);
    }
    counts
}

/// The child's half: restore the state, let the guest count on, print
/// what it printed between markers.
fn restore_in_this_process(state: &str) {
    let serial = Capture::new();
    let builder = VmBuilder::new(config(64 << 20), io(&serial)).restore_from(Path::new(state));
    let vm = VmGuard::start(builder);
    wait_for_lines(&serial, COUNTS_AFTER_RESTORE);
    vm.handle().pause();
    println!(
        "RESTORED-SERIAL-BEGIN\n{}RESTORED-SERIAL-END",
        serial.text()
    );
    vm.stop();
}

#[test]
fn test_saved_count_goes_on_in_a_new_process() {
    if let Ok(state) = std::env::var(RESTORE_FROM) {
        restore_in_this_process(&state);
        return;
    }
    let test = "test_saved_count_goes_on_in_a_new_process";
    if !kvm_available(test) {
        return;
    }
    let dir = work_dir(test);
    let state = dir.join("count.state");
    let before = save_counting_vm(&state, COUNTS_BEFORE_SAVE);

    let stdout = restore_in_a_new_process(test, &[(RESTORE_FROM, state.as_os_str())]);
    let after = stdout
        .split_once("RESTORED-SERIAL-BEGIN\n")
        .and_then(|(_, rest)| rest.split_once("RESTORED-SERIAL-END"))
        .map(|(serial, _)| serial.to_string())
        .unwrap_or_else(|| panic!("no restored output in:\n{stdout}"));

    // The save may fall in the middle of a line: the restored guest
    // finishes it.
    let counts = counts(&format!("{before}{after}"));
    let saved_at = before.matches('\n').count();
    assert!(
        counts.len() >= saved_at + COUNTS_AFTER_RESTORE - 1,
        "the restored guest counted on: {} counts, {saved_at} before the save",
        counts.len()
    );
    for (index, &count) in counts.iter().enumerate() {
        assert_eq!(
            count,
            index as u32 + 1,
            "count {} is {count:#x} (saved after {saved_at} counts)",
            index + 1
        );
    }
}

fn start_error(builder: VmBuilder) -> StateError {
    match builder.start() {
        Ok(_) => panic!("a VM started from a bad state"),
        Err(Error::State(e)) => e,
        Err(other) => panic!("not a state error: {other}"),
    }
}

/// Starting from `state` fails with the error `check` accepts, and the
/// file is left byte for byte as it was.
fn refused(state: &Path, memory_bytes: u64, check: impl Fn(&StateError) -> bool) -> String {
    let before = std::fs::read(state).unwrap();
    let serial = Capture::new();
    let error = start_error(VmBuilder::new(config(memory_bytes), io(&serial)).restore_from(state));
    assert!(check(&error), "unexpected error: {error}");
    assert_eq!(std::fs::read(state).unwrap(), before, "the file changed");
    assert!(serial.is_empty(), "the guest ran: {}", serial.text());
    error.to_string()
}

#[test]
fn test_bad_state_files_are_refused_and_left_alone() {
    let test = "test_bad_state_files_are_refused_and_left_alone";
    if !kvm_available(test) {
        return;
    }
    let dir = work_dir(test);
    let good = dir.join("good.state");
    save_counting_vm(&good, 20);
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.join("truncated.state");
    std::fs::write(&truncated, &bytes[..bytes.len() - 5000]).unwrap();
    let message = refused(&truncated, 64 << 20, |e| {
        matches!(e, StateError::Truncated { .. })
    });
    assert!(message.contains("truncated"), "{message}");

    let damaged = dir.join("damaged.state");
    let mut flipped = bytes.clone();
    let middle = flipped.len() - 3000;
    flipped[middle] ^= 0x40;
    std::fs::write(&damaged, &flipped).unwrap();
    let message = refused(&damaged, 64 << 20, |e| {
        matches!(e, StateError::Corrupt { .. })
    });
    assert!(message.contains("damaged"), "{message}");

    let newer = dir.join("newer.state");
    let mut version = bytes.clone();
    version[8] = 200;
    std::fs::write(&newer, &version).unwrap();
    let message = refused(&newer, 64 << 20, |e| {
        matches!(e, StateError::WrongVersion { found: 200, .. })
    });
    assert!(message.contains("format 200"), "{message}");

    let other = dir.join("disk.img");
    std::fs::write(&other, vec![0u8; 1 << 16]).unwrap();
    refused(&other, 64 << 20, |e| {
        matches!(e, StateError::NotAStateFile { .. })
    });

    let message = refused(&good, 128 << 20, |e| {
        matches!(e, StateError::WrongHardware { .. })
    });
    assert!(
        message.contains("64 MiB of memory") && message.contains("128 MiB"),
        "{message}"
    );

    // The same file still restores into the VM it came from.
    let serial = Capture::new();
    let vm = VmGuard::start(VmBuilder::new(config(64 << 20), io(&serial)).restore_from(&good));
    wait_for_lines(&serial, 5);
    vm.stop();
}

#[test]
fn test_save_that_cannot_be_written_leaves_nothing_and_the_vm_runs_on() {
    let test = "test_save_that_cannot_be_written_leaves_nothing_and_the_vm_runs_on";
    if !kvm_available(test) {
        return;
    }
    let dir = work_dir(test);
    // A folder that does not exist: the save fails after the machine was
    // brought to rest and captured, at the file.
    let state = dir.join("gone").join("console.state");
    let mut with_console = config(64 << 20);
    let console_log = dir.parent().unwrap().join(format!("{test}-console.log"));
    with_console.console = Some(ConsoleConfig {
        output: ConsoleOutput::File(console_log),
    });
    let serial = Capture::new();
    let vm = VmGuard::start(VmBuilder::new(with_console, io(&serial)));
    wait_for_lines(&serial, 5);
    let error = vm.handle().save_state(&state).unwrap_err();
    assert!(matches!(error, StateError::Write { .. }), "{error}");
    assert!(
        error.to_string().contains("Cannot write the machine state"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing is written"
    );
    // It runs on: it counts on, and a save that can be written works.
    let printed = serial.bytes().iter().filter(|&&b| b == b'\n').count();
    wait_for_lines(&serial, printed + 10);
    vm.handle()
        .save_state(&dir.join("console.state"))
        .expect("a VM with a virtio console saves");
    vm.stop();
}

/// SeaBIOS with the standard VGA and its VGA BIOS, no disks.
fn seabios_with_screen() -> VmConfig {
    VmConfig {
        display: Some(DisplayConfig {
            adapter: DisplayAdapter::StdVga,
            vga_bios: Some(VGA_BIOS.into()),
            size: None,
        }),
        ..firmware_vm(SEABIOS.into())
    }
}

fn screen_shows(screen: &GuestScreen, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if screen
            .text()
            .is_some_and(|rows| rows.iter().any(|row| row.contains(needle)))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Esc as a PS/2 keyboard sends it in scan code set 2: make, break.
fn press_esc(vm: &VmGuard) {
    let input = vm.handle().input();
    input.keyboard(&[0x76]);
    input.keyboard(&[0xf0, 0x76]);
}

fn frame_bytes(frame: &Frame) -> Vec<u8> {
    let mut bytes = frame.width.to_le_bytes().to_vec();
    bytes.extend_from_slice(&frame.height.to_le_bytes());
    bytes.extend_from_slice(&frame.pixels);
    bytes
}

/// The SeaBIOS test's child: restore, write the screen as found, press
/// Esc and report whether the firmware went on to boot.
fn restore_seabios_in_this_process(state: &str, screen_to: &str) {
    let serial = Capture::new();
    let builder = VmBuilder::new(seabios_with_screen(), io(&serial)).restore_from(Path::new(state));
    let vm = VmGuard::start(builder);
    let screen = vm.handle().screen().expect("the VM has a screen");
    let mut frame = Frame::default();
    screen.render_still(&mut frame);
    std::fs::write(screen_to, frame_bytes(&frame)).unwrap();
    press_esc(&vm);
    if screen_shows(&screen, "No bootable device", TIMEOUT) {
        println!("ESC-LEFT-THE-MENU");
    } else {
        println!("still: {:?}\nserial: {}", screen.text(), serial.text());
    }
    vm.stop();
}

#[test]
fn test_seabios_boot_menu_comes_back_pixel_for_pixel_and_takes_a_key() {
    if let (Ok(state), Ok(screen_to)) = (std::env::var(RESTORE_FROM), std::env::var(SCREEN_TO)) {
        restore_seabios_in_this_process(&state, &screen_to);
        return;
    }
    let test = "test_seabios_boot_menu_comes_back_pixel_for_pixel_and_takes_a_key";
    if !kvm_available(test)
        || require_file(test, Path::new(SEABIOS), "install Debian's seabios").is_none()
        || require_file(test, Path::new(VGA_BIOS), "install Debian's seabios").is_none()
    {
        return;
    }
    let dir = work_dir(test);
    let state = dir.join("menu.state");
    let serial = Capture::new();
    let vm = VmGuard::start(VmBuilder::new(seabios_with_screen(), io(&serial)));
    let screen = vm.handle().screen().expect("the VM has a screen");
    assert!(
        screen_shows(&screen, "Press ESC for boot menu", Duration::from_secs(120)),
        "no boot menu prompt: {:?}",
        screen.text()
    );
    press_esc(&vm);
    assert!(
        screen_shows(&screen, "Select boot device", TIMEOUT),
        "Esc did not open the boot menu: {:?}",
        screen.text()
    );
    // The menu waits for a key: the screen is still from here on. SeaBIOS
    // takes Esc there only 1.5 s after the menu opened (counted in its
    // timer ticks), so the state is saved after that.
    std::thread::sleep(Duration::from_secs(2));
    let report = vm.handle().save_state(&state).expect("the VM saves");
    let mut before = Frame::default();
    screen.render_still(&mut before);
    vm.stop();
    assert!(before.width > 0, "a picture was shown");
    assert!(
        report.file_bytes < 4 << 20,
        "only touched memory is written: {report:?}"
    );

    let screen_file = dir.join("restored-screen.bin");
    let stdout = restore_in_a_new_process(
        test,
        &[
            (RESTORE_FROM, state.as_os_str()),
            (SCREEN_TO, screen_file.as_os_str()),
        ],
    );
    let after = std::fs::read(&screen_file).unwrap();
    let shot = dir.join("boot-menu-before.png");
    display::screenshot::write_png(&shot, before.width, before.height, &before.pixels).unwrap();
    assert!(
        after == frame_bytes(&before),
        "the restored screen differs from the saved one ({})",
        shot.display()
    );
    assert!(
        stdout.contains("ESC-LEFT-THE-MENU"),
        "Esc after the restore did not reach the firmware:\n{stdout}"
    );
}

/// The small Linux guest with virtio-rng, a qcow2 disk on virtio
/// (`vda`) and a raw disk on IDE (`sda`) in `dir`.
fn linux_with_disks(kernel: PathBuf, initrd: PathBuf, dir: &Path) -> VmConfig {
    let disk = |name: &str, format, bus| DiskConfig {
        path: dir.join(name),
        format,
        readonly: false,
        bus,
        cdrom: false,
        ejected: false,
        dependencies: Default::default(),
        cache: Default::default(),
    };
    VmConfig {
        rng: true,
        disks: vec![
            disk("virtio.qcow2", DiskFormat::Qcow2, DiskBus::Virtio),
            disk("ide.img", DiskFormat::Raw, DiskBus::Ide),
        ],
        ..small_guest_config(kernel, initrd, AGENT_CMDLINE)
    }
}

/// `count` bytes of the line `text` repeated.
fn repeated(text: &str, count: usize) -> Vec<u8> {
    format!("{text}\n").bytes().cycle().take(count).collect()
}

/// What `qemu-img` says of `args`; panics when it fails.
fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

/// The Linux test's child: restore, then ask the shell what it
/// remembers, read the entropy device, write back what the guest had
/// only in its page cache at the save, use the IDE disk, and end.
fn restore_linux_in_this_process(state: &str, files: &str) {
    let mut parts = files.split('\n');
    let (Some(kernel), Some(initrd), Some(dir)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("kernel, initramfs and folder expected: {files}");
    };
    let guest = LinuxGuest::restore(
        linux_with_disks(kernel.into(), initrd.into(), Path::new(dir)),
        Path::new(state),
    );
    let timeout = Duration::from_secs(60);
    for line in [
        "sh cat /tmp/before-save",
        "rng",
        "facts",
        "sh sync && echo NESTBOX-RESULT synced=yes",
        "blk sda",
    ] {
        match guest.command(line, timeout) {
            Ok(output) => println!("{output}"),
            Err(e) => println!("FAILED: {e}"),
        }
    }
}

#[test]
fn test_linux_shell_answers_after_restore_in_a_new_process() {
    if let (Ok(state), Ok(files)) = (std::env::var(RESTORE_FROM), std::env::var(LINUX_FILES)) {
        restore_linux_in_this_process(&state, &files);
        return;
    }
    let test = "test_linux_shell_answers_after_restore_in_a_new_process";
    if !kvm_available(test) {
        return;
    }
    let Some((kernel, initrd)) = small_guest_files(test) else {
        return;
    };
    if require_file(
        test,
        Path::new("/usr/bin/qemu-img"),
        "install Debian's qemu-utils",
    )
    .is_none()
    {
        return;
    }
    let dir = work_dir(test);
    let state = dir.join("linux.state");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        dir.join("virtio.qcow2").to_str().unwrap(),
        "8M",
    ]);
    std::fs::write(dir.join("ide.img"), vec![0u8; 8 << 20]).unwrap();
    let guest = LinuxGuest::boot(linux_with_disks(kernel.clone(), initrd.clone(), &dir));
    guest.wait_ready().unwrap();
    let before = guest.command("rng", Duration::from_secs(60)).unwrap();
    assert!(before.contains("bytes=64"), "{before}");
    // Flushed to the disk before the save (the agent's blk: 64 KiB at
    // 1 MiB, fsync), and written into the guest's page cache only (64 KiB
    // at 2 MiB), for the restored guest to write back.
    let flushed = guest.command("blk vda", Duration::from_secs(60)).unwrap();
    assert!(flushed.contains("blk dev=vda"), "{flushed}");
    guest
        .command(
            "sh yes NESTBOX-DIRTY-AT-SAVE | head -c 65536 | dd of=/dev/vda bs=65536 seek=32 2>/dev/null; echo NESTBOX-RESULT cached=yes",
            Duration::from_secs(60),
        )
        .unwrap();
    guest
        .command(
            "sh echo NESTBOX-RESULT remembered=$((6 * 7)) > /tmp/before-save",
            Duration::from_secs(60),
        )
        .unwrap();
    let report = guest.handle().save_state(&state).expect("the VM saves");
    drop(guest);
    assert!(
        report.file_bytes < report.ram.touched + (8 << 20),
        "the file holds the touched memory, not all of it: {report:?}"
    );

    let files = format!(
        "{}\n{}\n{}",
        kernel.display(),
        initrd.display(),
        dir.display()
    );
    let stdout = restore_in_a_new_process(
        test,
        &[
            (RESTORE_FROM, state.as_os_str()),
            (LINUX_FILES, std::ffi::OsStr::new(&files)),
        ],
    );
    assert!(
        !stdout.contains("FAILED"),
        "the restored guest did not answer:\n{stdout}"
    );
    assert!(
        stdout.contains("remembered=42"),
        "the shell's file is gone:\n{stdout}"
    );
    assert!(
        stdout.contains("NESTBOX-RESULT rng") && stdout.contains("bytes=64"),
        "the restored virtio-rng did not serve:\n{stdout}"
    );
    assert!(
        stdout.contains("online=0-1"),
        "both vCPUs are back:\n{stdout}"
    );
    assert!(
        stdout.contains("synced=yes") && stdout.contains("blk dev=sda"),
        "the restored guest did not use its disks:\n{stdout}"
    );
    let ide = Fields::of(&stdout, "blk").expect("blk sda answered");
    assert_eq!(ide.get("written"), ide.get("read"), "{stdout}");

    // Both disks hold what the guest wrote before and after the restore,
    // and the qcow2 image is consistent.
    let check = qemu_img(&["check", dir.join("virtio.qcow2").to_str().unwrap()]);
    assert!(check.contains("No errors"), "{check}");
    let raw = dir.join("virtio.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        dir.join("virtio.qcow2").to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let vda = std::fs::read(&raw).unwrap();
    assert!(
        vda[1 << 20..(1 << 20) + 65536] == repeated("NESTBOX-GUEST-WRITE-vda", 65536)[..],
        "the write flushed before the save is not on the virtio disk"
    );
    assert!(
        vda[2 << 20..(2 << 20) + 65536] == repeated("NESTBOX-DIRTY-AT-SAVE", 65536)[..],
        "the page cache the restored guest wrote back is not on the virtio disk"
    );
    let sda = std::fs::read(dir.join("ide.img")).unwrap();
    assert!(
        sda[1 << 20..(1 << 20) + 65536] == repeated("NESTBOX-GUEST-WRITE-sda", 65536)[..],
        "the restored guest's write is not on the IDE disk"
    );
}
