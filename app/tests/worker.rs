// SPDX-License-Identifier: Apache-2.0
//! VM workers as a user meets them through the CLI: `nestbox start
//! --headless` runs a library VM in its own process, and every other
//! command (a fresh client each time, as a restarted GUI is) finds it by its
//! socket: list, screenshot (the framebuffer memfd comes over the socket),
//! pause/resume, send-keys, cd, stop and kill. A worker killed with
//! SIGKILL is reported as failed, and a bad client never takes a worker
//! down.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Env, seabios_vm_usable, wait_for};

impl Env {
    /// Creates a small SeaBIOS VM and returns its id.
    fn create(&self) -> String {
        let out = self.ok(&[
            "create",
            "--name",
            "t",
            "--profile",
            "generic-bios",
            "--memory",
            "64M",
            "--new-disk",
            "1M",
        ]);
        out.trim().to_string()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_clean_failure(output: &Output, needle: &str) {
    let err = stderr(output);
    assert!(!output.status.success(), "unexpected success: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
    assert!(!err.contains("panicked"), "nestbox panicked: {err}");
}

fn png_size(path: &Path) -> Option<(u32, u32)> {
    let file = std::fs::File::open(path).ok()?;
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .ok()?;
    let info = reader.info();
    Some((info.width, info.height))
}

/// The pid of VM `id`'s worker, found by its command line.
fn worker_pid(id: &str) -> Option<i32> {
    let wanted = format!("vm-worker\0{id}\0");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(&wanted)
                .then_some(pid)
        })
}

#[test]
fn test_worker_start_list_screenshot_pause_keys_stop() {
    if !seabios_vm_usable("test_worker_start_list_screenshot_pause_keys_stop") {
        return;
    }
    let env = Env::new("life");
    let id = env.create();
    assert_eq!(env.list_state(&id), "stopped");
    env.ok(&["start", &id, "--headless"]);

    // The socket is in a private directory.
    let socket = env.socket(&id);
    assert!(socket.exists(), "no socket at {}", socket.display());
    let mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(env.list_state(&id), "running");

    // The worker cannot gain privileges (nor can what it starts).
    let pid = worker_pid(&id).expect("no worker process");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])),
        "the worker may gain privileges:\n{status}"
    );

    // Esc while SeaBIOS offers its boot menu opens it.
    assert!(
        wait_for(Duration::from_secs(30), || env
            .serial(&id)
            .contains("Press ESC for boot menu")),
        "no boot menu prompt: {}",
        env.serial(&id)
    );
    env.ok(&["send-keys", &id, "esc"]);
    assert!(
        wait_for(Duration::from_secs(20), || env
            .serial(&id)
            .contains("Select boot device")),
        "Esc did not open the boot menu: {}",
        env.serial(&id)
    );

    // A fresh client maps the worker's framebuffer: SeaBIOS's text mode.
    let shot = env.0.join("shot.png");
    let text_mode = wait_for(Duration::from_secs(20), || {
        env.nestbox(&["screenshot", &id, shot.to_str().unwrap()])
            .status
            .success()
            && png_size(&shot) == Some((720, 400))
    });
    assert!(text_mode, "no 720x400 screenshot: {:?}", png_size(&shot));

    env.ok(&["pause", &id]);
    assert_eq!(env.list_state(&id), "paused");
    env.ok(&["resume", &id]);
    assert_eq!(env.list_state(&id), "running");

    assert_clean_failure(
        &env.nestbox(&["start", &id, "--headless"]),
        "already running",
    );
    assert_clean_failure(&env.nestbox(&["delete", &id, "--yes"]), "is running");
    assert_clean_failure(&env.nestbox(&["send-keys", &id, "nokey"]), "unknown key");

    // The thumbnail comes every few seconds.
    let thumbnail = env.vm_dir(&id).join("thumbnail.png");
    assert!(
        wait_for(Duration::from_secs(10), || png_size(&thumbnail)
            .is_some_and(|(w, _)| w == 160)),
        "no thumbnail"
    );

    // SeaBIOS ignores the power button: --force pulls the plug.
    env.ok(&["stop", &id, "--timeout", "1", "--force"]);
    assert!(!socket.exists(), "the socket outlived its worker");
    assert_eq!(env.list_state(&id), "stopped");
    assert_clean_failure(&env.nestbox(&["kill", &id]), "is not running");
    assert!(worker_pid(&id).is_none());
}

#[test]
fn test_worker_killed_by_sigkill_is_reported_failed() {
    if !seabios_vm_usable("test_worker_killed_by_sigkill_is_reported_failed") {
        return;
    }
    let env = Env::new("sigkill");
    let id = env.create();
    env.ok(&["start", &id, "--headless"]);
    let pid = worker_pid(&id).expect("no worker process");
    // A client waiting on the worker when it dies.
    let waiting = env
        .command(&["stop", &id, "--timeout", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = waiting.wait_with_output().unwrap();
    assert_clean_failure(&output, "worker died");
    // A fresh client finds the stale socket and reports the failure too.
    assert!(
        env.list_state(&id)
            .starts_with("failed: The VM's worker died")
    );
    // Starting again replaces the stale socket.
    env.ok(&["start", &id, "--headless"]);
    assert_eq!(env.list_state(&id), "running");
    env.ok(&["kill", &id]);
    assert!(!env.socket(&id).exists());
}

/// One frame of the worker protocol: u32 little-endian length, then JSON.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Reads one frame's body, None at end of stream.
fn read_frame(stream: &mut UnixStream) -> Option<String> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

fn closed(stream: &mut UnixStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

#[test]
fn test_bad_clients_are_dropped_and_the_worker_carries_on() {
    if !seabios_vm_usable("test_bad_clients_are_dropped_and_the_worker_carries_on") {
        return;
    }
    let env = Env::new("badclient");
    let id = env.create();
    env.ok(&["start", &id, "--headless"]);
    let socket = env.socket(&id);

    let mut garbage = UnixStream::connect(&socket).unwrap();
    garbage.write_all(&frame(b"this is not json")).unwrap();
    assert!(closed(&mut garbage), "garbage did not close the client");

    let mut huge = UnixStream::connect(&socket).unwrap();
    huge.write_all(&(64u32 << 20).to_le_bytes()).unwrap();
    assert!(
        closed(&mut huge),
        "an oversized frame did not close the client"
    );

    let mut old = UnixStream::connect(&socket).unwrap();
    old.write_all(&frame(br#"{"Hello":{"version":999}}"#))
        .unwrap();
    let answer = read_frame(&mut old).expect("no answer to the hello");
    assert!(
        answer.contains("Refused") && answer.contains("999"),
        "{answer}"
    );

    // A good client in raw JSON: hello, then the state.
    let mut good = UnixStream::connect(&socket).unwrap();
    good.write_all(&frame(br#"{"Hello":{"version":1}}"#))
        .unwrap();
    let hello = read_frame(&mut good).unwrap();
    assert!(hello.contains(&format!("\"vm_id\":\"{id}\"")), "{hello}");
    good.write_all(&frame(br#"{"Request":{"id":5,"request":"GetState"}}"#))
        .unwrap();
    let reply = read_frame(&mut good).unwrap();
    assert!(
        reply.contains("\"id\":5") && reply.contains("Running"),
        "{reply}"
    );

    assert_eq!(env.list_state(&id), "running");
    env.ok(&["kill", &id]);
    // The connected client hears how it ended before the socket closes.
    let mut heard = String::new();
    while let Some(message) = read_frame(&mut good) {
        heard.push_str(&message);
    }
    assert!(heard.contains("Exiting"), "{heard}");
}

#[test]
fn test_commands_on_a_stopped_or_unknown_vm_are_clear_errors() {
    let env = Env::new("errors");
    let id = env.create();
    for args in [
        vec!["stop", id.as_str()],
        vec!["kill", &id],
        vec!["pause", &id],
        vec!["resume", &id],
        vec!["send-keys", &id, "esc"],
        vec!["screenshot", &id, "/tmp/never.png"],
    ] {
        assert_clean_failure(&env.nestbox(&args), "is not running");
    }
    assert_clean_failure(
        &env.nestbox(&["start", "no-such-vm", "--headless"]),
        "No VM with id 'no-such-vm'",
    );
    assert_clean_failure(
        &env.nestbox(&["send-keys", &id, "ctrl+nokey"]),
        "unknown key",
    );
}

#[test]
fn test_cd_changed_in_a_running_vm_boots_after_a_reset_and_is_saved() {
    let test = "test_cd_changed_in_a_running_vm_boots_after_a_reset_and_is_saved";
    if !seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("cd");
    let bootable = env.0.join("boot.iso");
    if nestbox_tests::bootable_cd(test, &env.0.join("cd-tree"), &bootable).is_none() {
        return;
    }
    // A VM with an IDE CD-ROM and no network card (the DOS profile),
    // holding a disc that does not boot.
    let blank = env.0.join("blank.iso");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let out = env.ok(&[
        "create",
        "--name",
        "cd",
        "--profile",
        "dos-retro",
        "--memory",
        "64M",
        "--iso",
        blank.to_str().unwrap(),
    ]);
    let id = out.trim().to_string();
    let settings = || std::fs::read_to_string(env.vm_dir(&id).join("vm.toml")).unwrap();
    assert!(settings().contains("bus = \"ide\""), "{}", settings());

    // Stopped: the settings change alone.
    env.ok(&["cd", &id, "--eject"]);
    assert!(settings().contains("ejected = true"), "{}", settings());
    assert_clean_failure(
        &env.nestbox(&["cd", &id, "--drive", "1", bootable.to_str().unwrap()]),
        "no drive 1",
    );
    assert_clean_failure(
        &env.nestbox(&["cd", &id, env.0.join("nowhere.iso").to_str().unwrap()]),
        "does not exist",
    );

    // Running with the tray empty, SeaBIOS finds nothing to boot.
    env.ok(&["start", &id, "--headless"]);
    assert!(
        wait_for(Duration::from_secs(60), || env
            .serial(&id)
            .contains("No bootable device")),
        "SeaBIOS did not give up: {}",
        env.serial(&id)
    );
    assert!(!env.serial(&id).contains("NESTBOX-BOOT-SECTOR-OK"));

    // The disc goes in while it runs; Ctrl+Alt+Del makes SeaBIOS reset the
    // machine, and the rebooted VM boots from it.
    env.ok(&["cd", &id, bootable.to_str().unwrap()]);
    assert!(!settings().contains("ejected"), "{}", settings());
    assert!(
        settings().contains(bootable.to_str().unwrap()),
        "{}",
        settings()
    );
    env.ok(&["send-keys", &id, "ctrl+alt+delete"]);
    assert!(
        wait_for(Duration::from_secs(60), || env
            .serial(&id)
            .contains("NESTBOX-BOOT-SECTOR-OK")),
        "the new disc did not boot: {}",
        env.serial(&id)
    );
    assert!(
        wait_for(Duration::from_secs(20), || env.list_state(&id) != "running"),
        "the VM did not end after its debug exit"
    );
}

#[test]
fn test_a_guest_that_stops_itself_is_told_plainly_and_leaves_its_last_screen() {
    let test = "test_a_guest_that_stops_itself_is_told_plainly_and_leaves_its_last_screen";
    if !seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("hang");
    // SeaBIOS shows its screen, boots the disk, whose boot sector halts
    // with interrupts off.
    let disk = env.boot_disk("hang_boot");
    let id = env.create_bios_vm("Hang", &disk);
    env.start_headless(&id);
    let deadline = Instant::now() + Duration::from_secs(120);
    let state = loop {
        let state = env.list_state(&id);
        if state.starts_with("failed") || Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let serial = env.wait_serial(&id, &["NESTBOX-HANG-BOOT"], Duration::from_secs(1));
    assert!(serial.contains("NESTBOX-HANG-BOOT"), "{serial}");
    // What happened and when, in plain words, then the details, one line.
    assert!(
        state.starts_with(
            "failed: The guest stopped itself: it halted with nothing left to wake it (after "
        ),
        "{state}"
    );
    assert!(
        state.contains(" Details: The guest hung: all vCPUs halted"),
        "{state}"
    );
    // The screen it stopped on is kept, whole: SeaBIOS's 720x400 text.
    let png = env.vm_dir(&id).join("last-screen.png");
    let file = std::fs::File::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    assert_eq!((reader.info().width, reader.info().height), (720, 400));
    // The next start begins without it.
    env.start_headless(&id);
    assert!(!png.exists(), "a new run has no last screen yet");
    env.ok(&["kill", &id]);
}
