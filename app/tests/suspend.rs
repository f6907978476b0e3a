// SPDX-License-Identifier: Apache-2.0
//! Suspend and resume as a user does them with the CLI: a library VM at
//! SeaBIOS's boot menu is suspended (`nestbox suspend`), its worker ends,
//! and `nestbox start` brings it back in a new worker from its saved
//! state: the screen is the same pixel for pixel, a key sent then is
//! acted on by the firmware, and the saved state is gone; once for a VM of
//! the fewest devices, once for the generic BIOS profile's whole machine
//! (disk, CD-ROM drive, network, sound, virtio-vga).

use std::path::Path;
use std::time::Duration;

mod common;

use common::{Env, esc_boots, open_boot_menu, screenshot, wait_for, worker_alive};

/// Held by each test while its VM runs: on a 2-CPU host, SeaBIOS VMs
/// booting side by side can miss the boot menu's few seconds.
static ONE_VM_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_vm_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const VGA_BIOS: &str = "/usr/share/seabios/vgabios-stdvga.bin";
/// After this long without changes the text cursor stops blinking, so two
/// screenshots of the same screen are the same pixels.
const STILL: Duration = Duration::from_secs(11);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A library VM made of what can be saved: SeaBIOS, the standard VGA, the
/// PS/2 and virtio input devices and virtio-rng, no disks, network or
/// sound.
fn savable_vm(env: &Env) -> String {
    let disk = env.blank_image("blank.img", 1 << 20);
    let id = env.create_bios_vm("menu", &disk);
    let config = env.vm_dir(&id).join("vm.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    let toml = toml
        .split("[[disks]]")
        .next()
        .unwrap()
        .replace("network = \"nat\"", "network = \"none\"")
        .replace("sound = \"host\"", "sound = \"none\"")
        .replace("[display]\n", "[display]\nadapter = \"vga\"\n");
    std::fs::write(&config, toml).unwrap();
    id
}

/// Suspends VM `id`, at SeaBIOS's boot menu, and resumes it in a new
/// worker: the screen is the same pixels, and Esc after the resume makes
/// the firmware leave its menu and boot (`booting`, a line it prints then).
fn suspend_and_resume_at_the_boot_menu(env: &Env, id: &str, booting: &str) {
    env.start_headless(id);
    open_boot_menu(env, id);
    std::thread::sleep(STILL);
    let before = screenshot(env, id, "before.png");

    let suspended = env.nestbox(&["suspend", id]);
    let said = text(&suspended.stderr);
    assert!(
        suspended.status.success() && said.contains("suspended"),
        "{said}"
    );
    assert_eq!(env.list_state(id), "suspended");
    let saved = env.vm_dir(id).join("suspended.state");
    assert!(saved.is_file(), "no saved state");
    assert!(
        wait_for(Duration::from_secs(10), || !worker_alive(id)),
        "the worker did not end"
    );

    env.start_headless(id);
    assert_eq!(env.list_state(id), "running");
    assert!(!saved.exists(), "the saved state outlived the resume");
    std::thread::sleep(STILL);
    let after = screenshot(env, id, "after.png");
    assert!(
        before == after,
        "the resumed screen differs: see {} and {}",
        env.0.join("before.png").display(),
        env.0.join("after.png").display()
    );
    // The menu takes Esc (1.5 s after it opened, long past): the
    // firmware goes on to boot.
    esc_boots(env, id, booting);
    env.ok(&["kill", id]);
}

#[test]
fn test_suspended_boot_menu_resumes_in_a_new_worker_pixel_for_pixel() {
    let test = "test_suspended_boot_menu_resumes_in_a_new_worker_pixel_for_pixel";
    let _alone = one_vm_at_a_time();
    if !common::seabios_vm_usable(test)
        || nestbox_tests::require_file(test, Path::new(VGA_BIOS), "install Debian's seabios")
            .is_none()
    {
        return;
    }
    let env = Env::new("suspend");
    let id = savable_vm(&env);
    suspend_and_resume_at_the_boot_menu(&env, &id, "No bootable device");
}

#[test]
fn test_vm_with_disk_cdrom_network_sound_and_virtio_vga_suspends_and_resumes() {
    let test = "test_vm_with_disk_cdrom_network_sound_and_virtio_vga_suspends_and_resumes";
    let _alone = one_vm_at_a_time();
    if !common::seabios_vm_usable(test) {
        return;
    }
    // The profile's whole machine: IDE disk and CD-ROM drive, NAT
    // (passt), sound, virtio-vga with its VGA BIOS.
    let env = Env::new("suspend-full");
    let disk = env.blank_image("blank.img", 1 << 20);
    let disc = env.blank_image("disc.iso", 2 << 20);
    let id = env.create_bios_vm("full", &disk);
    let config = env.vm_dir(&id).join("vm.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "\n[[disks]]\npath = \"{}\"\nformat = \"raw\"\nreadonly = true\nmedia = \"cdrom\"\nbus = \"ide\"\n",
        disc.display()
    ));
    std::fs::write(&config, toml).unwrap();
    suspend_and_resume_at_the_boot_menu(&env, &id, "Booting from ");
}

/// The worker of VM `id`'s pid, from its lock file.
fn worker_pid(env: &Env, id: &str) -> i32 {
    std::fs::read_to_string(env.vm_dir(id).join("worker.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn test_a_vm_set_to_suspend_at_host_shutdown_suspends_on_sigterm_and_resumes() {
    let test = "test_a_vm_set_to_suspend_at_host_shutdown_suspends_on_sigterm_and_resumes";
    let _alone = one_vm_at_a_time();
    if !common::seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("suspend-sigterm");
    let disk = env.blank_image("blank.img", 1 << 20);
    let id = env.create_bios_vm("shutdown", &disk);
    let config = env.vm_dir(&id).join("vm.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    let toml = toml.replacen(
        "allow_overcommit = false\n",
        "allow_overcommit = false\nsuspend_on_host_shutdown = true\n",
        1,
    );
    std::fs::write(&config, toml).unwrap();
    env.start_headless(&id);
    open_boot_menu(&env, &id);
    // SeaBIOS's menu ignores Esc for its first 1.5 s (guest time, which
    // the saved state carries on).
    std::thread::sleep(Duration::from_secs(3));

    // What systemd sends every process when the computer shuts down.
    let pid = worker_pid(&env, &id);
    // SAFETY: kill(2) takes a pid and a signal number; no memory is shared.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    assert!(
        wait_for(Duration::from_secs(30), || !worker_alive(&id)),
        "the worker did not end"
    );
    assert_eq!(env.list_state(&id), "suspended");
    let log = std::fs::read_to_string(env.vm_dir(&id).join("worker.log")).unwrap();
    assert!(log.contains("SIGTERM: VM suspended"), "{log}");

    env.start_headless(&id);
    assert_eq!(env.list_state(&id), "running");
    assert!(!env.vm_dir(&id).join("suspended.state").exists());
    // Back at the menu it was suspended in: Esc boots.
    esc_boots(&env, &id, "Booting from ");
    env.ok(&["kill", &id]);
}
