// SPDX-License-Identifier: Apache-2.0
//! What `create` and `start` make of the files and numbers a user gives
//! them: a hand-edited vm.toml over the host's caps is refused by `start`
//! with the message `create` gives; a qcow2 whose backing file lies
//! outside the VM and was not named is refused, naming the file; an
//! image's format and CD-ness come from its contents, not its name.

use std::path::Path;
use std::process::Command;

mod common;

use common::Env;

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The VM id `create` printed, or a panic with its message.
fn created(output: &std::process::Output) -> String {
    assert!(output.status.success(), "create: {}", stderr(output));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The last line of `text` that is not the software-KVM warning.
fn message(text: &str) -> String {
    text.lines()
        .rfind(|line| !line.contains("not hardware-accelerated"))
        .unwrap_or_default()
        .to_string()
}

/// Replaces the line starting with `key =` in VM `id`'s vm.toml.
fn edit_vm_toml(env: &Env, id: &str, key: &str, value: &str) {
    let path = env.vm_dir(id).join("vm.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with(&format!("{key} =")) {
                format!("{key} = {value}")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert_ne!(edited.join("\n"), text.trim_end(), "no {key} in vm.toml");
    std::fs::write(&path, edited.join("\n") + "\n").unwrap();
}

#[test]
fn test_start_refuses_a_hand_edited_vm_over_the_caps_with_creates_message() {
    let env = Env::new("caps-start");
    let disk = env.blank_image("disk.img", 1 << 20);
    let disk = disk.to_str().unwrap();
    for (key, toml_value, create_flag, create_value) in [
        ("memory", "200000", "--memory", "200000M"),
        ("vcpus", "100000", "--cpus", "100000"),
    ] {
        let id = created(&env.nestbox(&[
            "create",
            "--name",
            key,
            "--profile",
            "generic-bios",
            "--memory",
            "32M",
            "--cpus",
            "1",
            "--disk",
            disk,
        ]));
        edit_vm_toml(&env, &id, key, toml_value);

        let started = env.nestbox(&["start", &id, "--headless"]);
        let refused_create = env.nestbox(&[
            "create",
            "--name",
            "over",
            "--profile",
            "generic-bios",
            create_flag,
            create_value,
            "--disk",
            disk,
        ]);

        assert!(!started.status.success(), "{key}: the VM started");
        assert!(
            !refused_create.status.success(),
            "{key}: create accepted it"
        );
        let create_says = message(&stderr(&refused_create));
        let create_says = create_says.trim_start_matches("nestbox: ");
        assert!(!create_says.is_empty());
        assert!(
            stderr(&started).contains(create_says),
            "{key}: start said {:?}, create said {create_says:?}",
            stderr(&started)
        );
    }
}

/// A qcow2 overlay at `overlay` over the raw file `backing`, or None when
/// qemu-img is missing.
fn overlay_on(overlay: &Path, backing: &Path) -> Option<()> {
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b"])
        .arg(backing)
        .arg(overlay)
        .arg("1M")
        .status()
        .ok()?;
    status.success().then_some(())
}

#[test]
fn test_create_refuses_a_backing_file_nobody_named_and_takes_a_named_one() {
    let env = Env::new("backing");
    let secret = env.0.join("secret.raw");
    std::fs::write(&secret, [0x5a; 4096]).unwrap();
    let overlay = env.0.join("overlay.img");
    if overlay_on(&overlay, &secret).is_none() {
        nestbox_tests::skipped_missing(
            "test_create_refuses_a_backing_file_nobody_named_and_takes_a_named_one",
            "qemu-img is not installed",
        );
        return;
    }
    let create = |extra: &[&str]| {
        let mut args = vec![
            "create",
            "--name",
            "overlay",
            "--profile",
            "generic-bios",
            "--memory",
            "32M",
            "--disk",
            overlay.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        env.nestbox(&args)
    };

    let refused = create(&[]);
    let allowed = create(&["--backing", secret.to_str().unwrap()]);

    assert!(
        !refused.status.success(),
        "an unnamed backing file was accepted"
    );
    assert!(
        stderr(&refused).contains("secret.raw"),
        "{}",
        stderr(&refused)
    );
    let id = created(&allowed);
    let toml = std::fs::read_to_string(env.vm_dir(&id).join("vm.toml")).unwrap();
    // Named by its contents, though called .img.
    assert!(toml.contains("format = \"qcow2\""), "{toml}");
    assert!(toml.contains("secret.raw"), "{toml}");
}

#[test]
fn test_create_takes_an_iso_by_its_contents_as_a_read_only_cd() {
    let env = Env::new("iso-content");
    // An ISO 9660 primary volume descriptor's signature, in a file named .img.
    let image = env.0.join("installer.img");
    let mut bytes = vec![0u8; 0x9000];
    bytes[0x8000] = 1;
    bytes[0x8001..0x8006].copy_from_slice(b"CD001");
    std::fs::write(&image, bytes).unwrap();

    let id = created(&env.nestbox(&[
        "create",
        "--name",
        "cd",
        "--profile",
        "generic-bios",
        "--memory",
        "32M",
        "--disk",
        image.to_str().unwrap(),
    ]));

    let toml = std::fs::read_to_string(env.vm_dir(&id).join("vm.toml")).unwrap();
    assert!(toml.contains("readonly = true"), "{toml}");
    assert!(toml.contains("media = \"cdrom\""), "{toml}");
}

#[test]
fn test_a_new_vms_folder_disk_and_config_are_the_users_alone() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new("modes");
    let id = created(&env.nestbox(&[
        "create",
        "--name",
        "private",
        "--profile",
        "generic-bios",
        "--memory",
        "32M",
        "--new-disk",
        "1M",
    ]));
    let dir = env.vm_dir(&id);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;

    assert_eq!(mode(&dir), 0o700, "the VM's folder");
    assert_eq!(mode(&dir.join("vm.toml")), 0o600, "vm.toml");
    assert_eq!(mode(&dir.join("disk.img")), 0o600, "the new disk");
}
