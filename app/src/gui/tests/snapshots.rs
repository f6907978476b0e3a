// SPDX-License-Identifier: Apache-2.0
//! The snapshot section of a stopped VM, clicked as a user does: take two
//! snapshots by name, revert to the first (after saying yes), delete the
//! second; the tree, the current position and the VM's disk follow.

use egui_kittest::kittest::Queryable;

use super::*;
use crate::gui::snapshots_panel::{NAME_LABEL, TAKE};

/// Steps `harness` until a widget labelled `label` shows (the work runs
/// on its own thread); panics after 20 s.
fn wait_for_label(harness: &mut Harness<'_, NestboxApp>, label: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while harness.query_by_label_contains(label).is_none() {
        assert!(
            std::time::Instant::now() < until,
            "{label} never showed: {:#?}",
            harness.root()
        );
        harness.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn take(harness: &mut Harness<'_, NestboxApp>, name: &str) {
    harness
        .get_by_label(NAME_LABEL)
        .set_text_value_accesskit(name);
    harness.run();
    harness.get_by_label(TAKE).click();
    harness.step();
    wait_for_label(harness, &format!("Snapshot \"{name}\" taken."));
}

fn first_disk(fx: &Fixture, id: &str) -> PathBuf {
    fx.store.get(id).unwrap().disks[0].path.clone()
}

#[test]
fn test_gui_snapshots_take_revert_after_asking_and_delete() {
    let fx = Fixture::new("gui-snapshots");
    let disk = fx.dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let id = fx.vm("Linux", 512, &[&disk]);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));
    assert!(
        harness
            .query_by_label_contains("No snapshots yet")
            .is_some()
    );
    assert!(!enabled(&harness, TAKE), "a snapshot needs a name");

    take(&mut harness, "clean");
    let after_clean = first_disk(&fx, &id);
    assert_ne!(after_clean, disk, "the VM writes to an overlay now");
    take(&mut harness, "configured");
    assert!(harness.query_by_label_contains("clean  (").is_some());
    assert!(harness.query_by_label_contains("configured  (").is_some());
    assert_eq!(harness.query_all_by_label("Now").count(), 1);

    // Revert asks first; No leaves everything as it was.
    harness.get_by_label("Revert to clean").click();
    harness.run();
    harness.get_by_label("No").click();
    harness.run();
    let before = first_disk(&fx, &id);
    harness.get_by_label("Revert to clean").click();
    harness.run();
    assert_eq!(first_disk(&fx, &id), before, "nothing before the yes");
    harness.get_by_label("Yes, revert").click();
    harness.step();
    wait_for_label(&mut harness, "Back at \"clean\".");
    let reverted = first_disk(&fx, &id);
    assert_ne!(reverted, before, "a new overlay on top of the snapshot");
    let tree = crate::library::snapshots::SnapshotTree::load(&fx.store.dir(&id).unwrap()).unwrap();
    assert_eq!(tree.current.as_deref(), Some("s1"));

    harness.get_by_label("Delete configured").click();
    harness.run();
    harness.get_by_label("Yes, delete").click();
    harness.step();
    wait_for_label(&mut harness, "Snapshot \"configured\" deleted.");
    assert!(harness.query_by_label_contains("configured  (").is_none());
    assert!(harness.query_by_label_contains("clean  (").is_some());
    assert_eq!(first_disk(&fx, &id), reverted);
}

#[test]
fn test_gui_snapshot_of_a_running_vm_suspends_takes_it_and_resumes() {
    use crate::gui::live_snapshot;
    let fx = Fixture::new("gui-live-snapshot");
    let disk = fx.dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let id = fx.vm("Desktop", 512, &[&disk]);
    fx.backend
        .0
        .borrow_mut()
        .states
        .insert(id.clone(), RunState::Running);
    let mut harness = harness(fx.app(host(8, 2, 100), FakePicker::default()));

    harness.get_by_label("Snapshot").click();
    harness.run();
    assert!(!enabled(&harness, live_snapshot::TAKE), "it needs a name");
    harness
        .get_by_label(live_snapshot::NAME_LABEL)
        .set_text_value_accesskit("before the update");
    harness.run();
    harness.get_by_label(live_snapshot::TAKE).click();
    harness.run();
    assert_eq!(fx.commands(), [VmCommand::Suspend]);
    assert!(
        crate::library::snapshots::SnapshotTree::load(&fx.store.dir(&id).unwrap())
            .unwrap()
            .snapshots
            .is_empty(),
        "nothing is taken before the VM is suspended"
    );

    // The worker saved the VM and ended.
    fx.backend
        .0
        .borrow_mut()
        .states
        .insert(id.clone(), RunState::Suspended);
    wait_for_label(&mut harness, "Snapshot \"before the update\" taken");
    let tree = crate::library::snapshots::SnapshotTree::load(&fx.store.dir(&id).unwrap()).unwrap();
    assert_eq!(tree.snapshots.len(), 1);
    assert_eq!(tree.snapshots[0].name, "before the update");
    assert_eq!(
        fx.backend.0.borrow().started,
        [id],
        "started again: it resumes"
    );
}
