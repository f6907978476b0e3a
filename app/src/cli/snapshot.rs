// SPDX-License-Identifier: Apache-2.0
//! `nestbox snapshot ID take NAME | list | revert NAME | delete NAME`: a
//! VM's snapshot tree from the command line (see
//! [`crate::library::snapshots`]). A running VM is suspended for a take
//! (its machine state goes into the snapshot with its disks, taken at the
//! one pause) and resumed afterwards; revert and delete need it stopped or
//! suspended.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::vmcmd::open_store;
use crate::library::config::Created;
use crate::library::snapshots::{self, Snapshot, SnapshotTree};
use crate::worker::api::VmBackend;
use crate::worker::backend::WorkerBackend;

/// Flags of `nestbox snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The VM's id.
    id: String,
    #[command(subcommand)]
    action: Action,
}

/// What to do with the snapshots.
#[derive(Debug, Subcommand)]
enum Action {
    /// Take a snapshot named NAME (a running VM is suspended for it and
    /// resumed after).
    Take {
        /// Its name.
        name: String,
    },
    /// Show the snapshot tree, the current position marked.
    List,
    /// Go back to snapshot NAME; what the VM did since is dropped.
    Revert {
        /// The snapshot's name or id.
        name: String,
    },
    /// Delete snapshot NAME; the others and the current state stay.
    Delete {
        /// The snapshot's name or id.
        name: String,
    },
}

/// `nestbox snapshot`.
pub fn run(args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let (_, store) = open_store()?;
    store.get(&args.id)?;
    let dir = store.dir(&args.id)?;
    match args.action {
        Action::List => {
            let tree = SnapshotTree::load(&dir)?;
            print!(
                "{}",
                render_tree(&tree, |id| snapshots::size_on_disk(&dir, id))
            );
        }
        Action::Take { name } => {
            let backend = WorkerBackend::new(store.clone()).map_err(|e| anyhow!(e))?;
            let was_running = backend.state(&args.id).is_live();
            if was_running {
                super::vmctl::suspend(super::vmctl::IdArgs::of(&args.id))?;
            }
            let taken = snapshots::take(&dir, &name);
            if was_running {
                super::vmctl::start(super::vmctl::StartArgs::headless(&args.id))?;
            }
            let taken = taken?;
            eprintln!(
                "nestbox: snapshot \"{}\" ({}) of VM {} taken{}",
                taken.name,
                taken.id,
                args.id,
                if taken.running {
                    " with its running state"
                } else {
                    ""
                }
            );
        }
        Action::Revert { name } => {
            let snapshot = snapshots::revert(&dir, &name)?;
            eprintln!(
                "nestbox: VM {} is back at snapshot \"{}\" ({}){}",
                args.id,
                snapshot.name,
                snapshot.id,
                if snapshot.running {
                    "; it is suspended there: nestbox start resumes it"
                } else {
                    ""
                }
            );
        }
        Action::Delete { name } => {
            let snapshot = snapshots::delete(&dir, &name)?;
            eprintln!(
                "nestbox: snapshot \"{}\" ({}) of VM {} deleted",
                snapshot.name, snapshot.id, args.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The tree as text: each snapshot under its parent, its id, name, time
/// and size, then where the VM is now ("> now").
pub fn render_tree(tree: &SnapshotTree, size: impl Fn(&str) -> u64) -> String {
    if tree.snapshots.is_empty() {
        return "No snapshots.\n".to_string();
    }
    let mut out = String::new();
    let roots: Vec<&Snapshot> = tree
        .snapshots
        .iter()
        .filter(|s| s.parent.is_none())
        .collect();
    for root in roots {
        render_node(tree, root, 0, &size, &mut out);
    }
    if tree.current.is_none() {
        out.push_str("> now (before any snapshot)\n");
    }
    out
}

fn render_node(
    tree: &SnapshotTree,
    snapshot: &Snapshot,
    depth: usize,
    size: &impl Fn(&str) -> u64,
    out: &mut String,
) {
    let indent = "  ".repeat(depth);
    let when = match &snapshot.created {
        Created::Rfc3339(text) => text.clone(),
        other => other
            .unix_seconds()
            .map_or_else(String::new, |s| format!("{s}")),
    };
    out.push_str(&format!(
        "{indent}{}  {}  {}  {}{}\n",
        snapshot.id,
        snapshot.name,
        when,
        snapshots::size_text(size(&snapshot.id)),
        if snapshot.running { "  (running)" } else { "" }
    ));
    for child in tree.children(&snapshot.id) {
        render_node(tree, child, depth + 1, size, out);
    }
    if tree.current.as_deref() == Some(&snapshot.id) {
        out.push_str(&format!("{indent}  > now\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(id: &str, parent: Option<&str>) -> Snapshot {
        Snapshot {
            id: id.to_string(),
            name: format!("name of {id}"),
            created: Created::Rfc3339("2026-12-07T12:00:00Z".to_string()),
            parent: parent.map(str::to_string),
            running: id == "s2",
        }
    }

    #[test]
    fn test_tree_shows_children_under_parents_and_marks_now() {
        let tree = SnapshotTree {
            current: Some("s2".to_string()),
            snapshots: vec![
                snapshot("s1", None),
                snapshot("s2", Some("s1")),
                snapshot("s3", Some("s1")),
            ],
        };
        let text = render_tree(&tree, |_| 3 << 20);
        assert_eq!(
            text,
            "s1  name of s1  2026-12-07T12:00:00Z  3.0 MiB\n\
             \x20 s2  name of s2  2026-12-07T12:00:00Z  3.0 MiB  (running)\n\
             \x20   > now\n\
             \x20 s3  name of s3  2026-12-07T12:00:00Z  3.0 MiB\n"
        );
        assert_eq!(
            render_tree(&SnapshotTree::default(), |_| 0),
            "No snapshots.\n"
        );
    }
}
