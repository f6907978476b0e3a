// SPDX-License-Identifier: Apache-2.0
//! A worker that cannot answer (SIGSTOP) is "not responding", never
//! "stopped": `list` says so, `delete` refuses and leaves the VM's files,
//! `kill` ends it, and then the VM is stopped and can be deleted.

mod common;

use common::{Env, seabios_vm_usable};

/// The state column of VM `id` in `nestbox list`.
fn listed_state(env: &Env, id: &str) -> String {
    let listed = env.nestbox(&["list"]);
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find(|line| line.starts_with(id))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn test_a_stopped_worker_is_not_responding_undeletable_and_killable() {
    let test = "test_a_stopped_worker_is_not_responding_undeletable_and_killable";
    if !seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("liveness");
    let disk = env.blank_image("blank.img", 1 << 20);
    let id = env.create_bios_vm("sleeper", &disk);
    env.start_headless(&id);
    let lock = std::fs::read_to_string(env.vm_dir(&id).join("worker.lock")).unwrap();
    let pid: i32 = lock.trim().parse().unwrap();
    // SAFETY: kill(2) on the worker's pid, read from the lock it holds.
    unsafe { libc::kill(pid, libc::SIGSTOP) };

    let listed = listed_state(&env, &id);
    let deleted = env.nestbox(&["delete", &id, "--yes"]);
    let dir_kept = env.vm_dir(&id).join("vm.toml").is_file();
    let killed = env.nestbox(&["kill", &id]);
    let after_kill = listed_state(&env, &id);
    let deleted_after = env.nestbox(&["delete", &id, "--yes"]);

    assert!(listed.contains("not responding"), "{listed}");
    assert!(!deleted.status.success(), "delete removed a live VM");
    assert!(
        String::from_utf8_lossy(&deleted.stderr).contains("not responding"),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(dir_kept, "the live VM's files were deleted");
    assert!(
        killed.status.success(),
        "kill: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    assert!(!after_kill.contains("not responding"), "{after_kill}");
    assert!(
        deleted_after.status.success(),
        "delete after kill: {}",
        String::from_utf8_lossy(&deleted_after.stderr)
    );
}
