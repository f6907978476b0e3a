// SPDX-License-Identifier: Apache-2.0
//! A VM's snapshots: a tree of named points the VM can go back to, kept in
//! `snapshots.toml` and the `snapshots/` folder of the VM's directory.
//!
//! A snapshot holds the VM's settings as they were (`snapshots/ID.vm.toml`),
//! each writable hard disk's image as it was, and, when the VM was
//! suspended, its machine state (`snapshots/ID.state`). Disks use external
//! qcow2 overlays ([`engine::snapshot::disks`]): taking a snapshot freezes
//! each disk's current image, which is never written again, and gives the
//! VM a new empty overlay on top of it; reverting gives the VM a new
//! overlay on top of the snapshot's frozen images (the state it leaves is
//! dropped); deleting a snapshot merges its frozen images into the images
//! that depend on them and removes them. The VM's worker lock is held
//! throughout, so no worker starts the VM meanwhile.
//!
//! Every step that changes what the VM uses is ordered so that a crash
//! loses no data: new images are complete on disk before `vm.toml` names
//! them, `vm.toml` is replaced before `snapshots.toml` records the step,
//! and images nothing names any more are removed last.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use engine::devices::virtio::qcow2::{Dependencies, Qcow2Image};
use engine::snapshot::disks::{self, Backing};
use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use super::config::{Created, DiskFormat, Media, VmFile, resolve};
use crate::worker::liveness::WorkerLock;
use crate::worker::paths::SUSPENDED_STATE;

/// The file listing a VM's snapshots, in its directory.
pub const SNAPSHOTS_FILE: &str = "snapshots.toml";
/// The folder of snapshot images and states, in the VM's directory.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Unique within the VM ("s1", "s2", ...).
    pub id: String,
    /// The name the user gave it.
    pub name: String,
    /// When it was taken.
    pub created: Created,
    /// The snapshot it was taken on top of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Whether it holds a machine state (taken of a suspended VM).
    #[serde(default)]
    pub running: bool,
}

/// A VM's snapshot tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotTree {
    /// The snapshot the VM's current state descends from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Every snapshot, oldest first.
    #[serde(default, rename = "snapshot")]
    pub snapshots: Vec<Snapshot>,
}

/// What a snapshot operation could not do.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The VM has a live worker.
    #[error("The VM is running: {0}")]
    Running(String),
    /// No snapshot of that name or id.
    #[error("The VM has no snapshot called \"{0}\" (see nestbox snapshot ID list)")]
    NotFound(String),
    /// Two snapshots match the name.
    #[error(
        "More than one snapshot is called \"{0}\": name it by its id (see nestbox snapshot ID list)"
    )]
    Ambiguous(String),
    /// A name the user gave is empty.
    #[error("A snapshot needs a name")]
    EmptyName,
    /// `snapshots.toml` or a snapshot's settings cannot be read.
    #[error("{path} cannot be read: {what}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A file operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> SnapshotError {
    let what = what.into();
    move |source| SnapshotError::Io { what, source }
}

impl SnapshotTree {
    /// Loads `dir/snapshots.toml` (an empty tree when there is none).
    pub fn load(dir: &Path) -> Result<Self, SnapshotError> {
        let path = dir.join(SNAPSHOTS_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io_error(format!("Cannot read {}", path.display()))(e)),
        };
        toml::from_str(&text).map_err(|e| SnapshotError::Damaged {
            path,
            what: e.message().to_string(),
        })
    }

    fn save(&self, dir: &Path) -> Result<(), SnapshotError> {
        let path = dir.join(SNAPSHOTS_FILE);
        let text = toml::to_string_pretty(self)
            .map_err(|e| io_error("Cannot write the snapshot list")(io::Error::other(e)))?;
        write_atomic(&path, text.as_bytes())
            .map_err(io_error(format!("Cannot write {}", path.display())))
    }

    /// The snapshot named `name` (its name, or its id).
    pub fn find(&self, name: &str) -> Result<&Snapshot, SnapshotError> {
        if let Some(s) = self.snapshots.iter().find(|s| s.id == name) {
            return Ok(s);
        }
        let mut named = self.snapshots.iter().filter(|s| s.name == name);
        match (named.next(), named.next()) {
            (Some(s), None) => Ok(s),
            (Some(_), Some(_)) => Err(SnapshotError::Ambiguous(name.to_string())),
            _ => Err(SnapshotError::NotFound(name.to_string())),
        }
    }

    /// The snapshots taken on top of `id`.
    pub fn children(&self, id: &str) -> impl Iterator<Item = &Snapshot> {
        self.snapshots
            .iter()
            .filter(move |s| s.parent.as_deref() == Some(id))
    }

    fn next_id(&self) -> String {
        let highest = self
            .snapshots
            .iter()
            .filter_map(|s| s.id.strip_prefix('s')?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        format!("s{}", highest + 1)
    }
}

/// How far a long snapshot operation (a delete's merges) is, and a way to
/// cancel it, shared with the thread doing it.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
}

impl Progress {
    /// The fraction done, 0 to 1.
    pub fn fraction(&self) -> f32 {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return 0.0;
        }
        (self.done.load(Ordering::Relaxed) as f64 / total as f64) as f32
    }

    /// Asks the operation to stop at its next step; what it did so far
    /// stays consistent (see [`delete_with`]).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    fn step(&self, done: u64, total: u64) -> bool {
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        !self.cancelled.load(Ordering::Relaxed)
    }
}

/// The settings file of snapshot `id`.
fn settings_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(SNAPSHOTS_DIR).join(format!("{id}.vm.toml"))
}

/// The machine state of snapshot `id`.
pub fn state_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(SNAPSHOTS_DIR).join(format!("{id}.state"))
}

/// The settings the VM had when snapshot `id` was taken.
fn load_settings(dir: &Path, id: &str) -> Result<VmFile, SnapshotError> {
    let path = settings_path(dir, id);
    VmFile::load(&path).map_err(|e| SnapshotError::Damaged {
        path,
        what: e.to_string(),
    })
}

/// Whether disk `disk` of a VM is one snapshots cover: a writable hard
/// disk (CD-ROMs and read-only disks are never written).
fn covered(disk: &super::config::Disk) -> bool {
    disk.media == Media::Disk && !disk.readonly
}

fn engine_format(format: DiskFormat) -> engine::vm::DiskFormat {
    format.into()
}

/// What a VM's images may open: its own folder and the files its disks
/// name as allowed backing images.
fn dependencies(dir: &Path, vm: &VmFile) -> Dependencies {
    Dependencies {
        dirs: vec![dir.to_path_buf()],
        files: vm
            .disks
            .iter()
            .flat_map(|d| d.backing.iter().map(|f| resolve(dir, f)))
            .collect(),
    }
}

/// A fresh name for an image of disk `index` in the snapshots folder.
fn new_image_name(dir: &Path, index: usize) -> PathBuf {
    let folder = dir.join(SNAPSHOTS_DIR);
    let mut n = 1u64;
    loop {
        let name = PathBuf::from(SNAPSHOTS_DIR).join(format!("disk{index}-{n}.qcow2"));
        if !folder.join(name.file_name().unwrap_or_default()).exists() {
            return name;
        }
        n += 1;
    }
}

/// Gives every covered disk of `vm` a new overlay on top of its current
/// image; returns the new settings (disks switched to the overlays).
fn with_new_overlays(dir: &Path, vm: &VmFile) -> Result<VmFile, SnapshotError> {
    let deps = dependencies(dir, vm);
    let mut next = vm.clone();
    for (index, disk) in next.disks.iter_mut().enumerate() {
        if !covered(disk) {
            continue;
        }
        let frozen = resolve(dir, &disk.path);
        let format = engine_format(disk.format);
        let size = disks::image_size(&frozen, format, &deps).map_err(io_error(format!(
            "Cannot read the disk image {}",
            frozen.display()
        )))?;
        let overlay = new_image_name(dir, index);
        disks::create_overlay(
            &dir.join(&overlay),
            &Backing {
                path: header_name(dir, &frozen),
                format,
            },
            size,
        )
        .map_err(io_error(format!(
            "Cannot create a new image on top of {}",
            frozen.display()
        )))?;
        // An image outside the VM's folder (the disk the user picked) is
        // now a backing image the overlay may open.
        if !frozen.starts_with(dir) && !disk.backing.contains(&frozen) {
            disk.backing.push(frozen.clone());
        }
        disk.path = overlay;
        disk.format = DiskFormat::Qcow2;
    }
    Ok(next)
}

/// How an image in the snapshots folder names its backing image `image`
/// in its header: relative to that folder when `image` is in the VM's
/// folder (so the VM's folder can move), else its absolute path.
fn header_name(dir: &Path, image: &Path) -> PathBuf {
    if let Ok(inside) = image.strip_prefix(dir.join(SNAPSHOTS_DIR)) {
        return inside.to_path_buf();
    }
    match image.strip_prefix(dir) {
        Ok(inside) => Path::new("..").join(inside),
        Err(_) => image.to_path_buf(),
    }
}

/// Whether `a` and `b` name the same file (paths with `..` or symlinks
/// included).
fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Holds VM `dir`'s worker lock: no worker runs the VM, none starts.
fn lock_stopped(dir: &Path) -> Result<WorkerLock, SnapshotError> {
    WorkerLock::claim(dir).map_err(|e| {
        SnapshotError::Running(format!(
            "{e}; suspend it (nestbox suspend) or shut it down first"
        ))
    })
}

/// Takes snapshot `name` of the stopped or suspended VM in `dir`; the VM
/// goes on from the new snapshot. Returns it.
pub fn take(dir: &Path, name: &str) -> Result<Snapshot, SnapshotError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(SnapshotError::EmptyName);
    }
    let _lock = lock_stopped(dir)?;
    let vm = load_vm(dir)?;
    let mut tree = SnapshotTree::load(dir)?;
    let id = tree.next_id();
    let folder = dir.join(SNAPSHOTS_DIR);
    fs::create_dir_all(&folder).map_err(io_error(format!("Cannot create {}", folder.display())))?;

    // The snapshot's own files first: its settings and machine state.
    let settings = settings_path(dir, &id);
    write_atomic(
        &settings,
        vm.to_toml()
            .map_err(io_error("Cannot write the snapshot's settings"))?
            .as_bytes(),
    )
    .map_err(io_error(format!("Cannot write {}", settings.display())))?;
    let suspended = dir.join(SUSPENDED_STATE);
    let running = suspended.is_file();
    if running {
        copy_state(&suspended, &state_path(dir, &id))?;
    }
    // Then the overlays, which the VM uses from here on.
    let next = with_new_overlays(dir, &vm)?;
    save_vm(dir, &next)?;
    tree.snapshots.push(Snapshot {
        id: id.clone(),
        name: name.to_string(),
        created: Created::now(),
        parent: tree.current.clone(),
        running,
    });
    tree.current = Some(id.clone());
    tree.save(dir)?;
    tree.find(&id).cloned()
}

/// Goes back to snapshot `name`: the VM's disks, settings and (for a
/// snapshot of a suspended VM) machine state become the snapshot's; the
/// state the VM had is dropped.
pub fn revert(dir: &Path, name: &str) -> Result<Snapshot, SnapshotError> {
    let _lock = lock_stopped(dir)?;
    let vm = load_vm(dir)?;
    let mut tree = SnapshotTree::load(dir)?;
    let snapshot = tree.find(name)?.clone();
    let at_snapshot = load_settings(dir, &snapshot.id)?;
    let dropped = overlays_of(dir, &vm);
    let next = with_new_overlays(dir, &at_snapshot)?;

    // A machine state only goes with the disks it was saved with: the
    // VM's own goes before its disks change, the snapshot's comes after,
    // so a crash in between leaves a stopped VM, never a state resumed on
    // other disks.
    let suspended = dir.join(SUSPENDED_STATE);
    if suspended.exists() {
        fs::remove_file(&suspended)
            .map_err(io_error(format!("Cannot remove {}", suspended.display())))?;
    }
    save_vm(dir, &next)?;
    if snapshot.running {
        copy_state(&state_path(dir, &snapshot.id), &suspended)?;
    }
    tree.current = Some(snapshot.id.clone());
    tree.save(dir)?;
    // The state the VM left: its overlays, unless a snapshot froze them.
    let frozen = frozen_images(dir, &tree)?;
    for image in dropped {
        if !frozen.contains(&image) {
            let _ = fs::remove_file(&image);
        }
    }
    Ok(snapshot)
}

/// Deletes snapshot `name`: the images that depend on its frozen images
/// take in what they need of them, then its files go. The VM's current
/// state and every other snapshot read as before.
pub fn delete(dir: &Path, name: &str) -> Result<Snapshot, SnapshotError> {
    delete_with(dir, name, &Progress::default())
}

/// [`delete`], telling `progress` how far each merge is. Cancelled, it
/// stops with an error: images merged so far stand on the snapshot's
/// parent instead (they read the same), the one being merged is left as
/// it was, and the snapshot is still there, so a later delete finishes
/// the job.
pub fn delete_with(dir: &Path, name: &str, progress: &Progress) -> Result<Snapshot, SnapshotError> {
    let _lock = lock_stopped(dir)?;
    let vm = load_vm(dir)?;
    let mut tree = SnapshotTree::load(dir)?;
    let snapshot = tree.find(name)?.clone();
    let settings = load_settings(dir, &snapshot.id)?;
    let deps = {
        let mut deps = dependencies(dir, &vm);
        deps.files.extend(dependencies(dir, &settings).files);
        deps
    };
    // Every qcow2 image the VM or a snapshot may still use.
    let mut candidates = overlays_of(dir, &vm);
    for other in tree.snapshots.iter().filter(|s| s.id != snapshot.id) {
        candidates.extend(overlays_of(dir, &load_settings(dir, &other.id)?));
    }
    let mut removed = Vec::new();
    for disk in settings.disks.iter().filter(|d| covered(d)) {
        let frozen = resolve(dir, &disk.path);
        let below = backing_of(&frozen, disk.format, &deps)?.map(|b| Backing {
            path: header_name(dir, &b.path),
            format: b.format,
        });
        for image in candidates.iter().filter(|c| !same_file(c, &frozen)) {
            let depends = backing_of(image, DiskFormat::Qcow2, &deps)?
                .is_some_and(|b| same_file(&b.path, &frozen));
            if !depends {
                continue;
            }
            let mut step = |done, total| progress.step(done, total);
            disks::pull_into(image, &frozen, below.as_ref(), &deps, &mut step).map_err(
                io_error(format!(
                    "Cannot merge {} into {}",
                    frozen.display(),
                    image.display()
                )),
            )?;
        }
        // Only images Nestbox made are removed; a disk the user picked
        // stays where it is.
        if frozen.starts_with(dir) {
            removed.push(frozen);
        }
    }
    for child in tree
        .snapshots
        .iter_mut()
        .filter(|s| s.parent.as_deref() == Some(&snapshot.id))
    {
        child.parent.clone_from(&snapshot.parent);
    }
    if tree.current.as_deref() == Some(&snapshot.id) {
        tree.current.clone_from(&snapshot.parent);
    }
    tree.snapshots.retain(|s| s.id != snapshot.id);
    tree.save(dir)?;
    let still_used = frozen_images(dir, &tree)?;
    let in_use = overlays_of(dir, &vm);
    for image in removed {
        if !still_used.contains(&image) && !in_use.contains(&image) {
            let _ = fs::remove_file(&image);
        }
    }
    let _ = fs::remove_file(settings_path(dir, &snapshot.id));
    let _ = fs::remove_file(state_path(dir, &snapshot.id));
    Ok(snapshot)
}

/// Bytes snapshot `id` keeps on the host: its frozen images in the VM's
/// folder and its machine state.
pub fn size_on_disk(dir: &Path, id: &str) -> u64 {
    let mut bytes = fs::metadata(state_path(dir, id)).map_or(0, |m| m.len());
    if let Ok(settings) = load_settings(dir, id) {
        for disk in settings.disks.iter().filter(|d| covered(d)) {
            let image = resolve(dir, &disk.path);
            if image.starts_with(dir.join(SNAPSHOTS_DIR)) {
                bytes += allocated(&image);
            }
        }
    }
    bytes
}

/// `bytes` in words for the snapshot list ("324 KiB", "1.5 GiB").
pub fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// Bytes `path` takes on the host's disk.
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// The backing image `image` names, if any.
fn backing_of(
    image: &Path,
    format: DiskFormat,
    deps: &Dependencies,
) -> Result<Option<Backing>, SnapshotError> {
    if format != DiskFormat::Qcow2 {
        return Ok(None);
    }
    let open = Qcow2Image::open_with(image, true, deps).map_err(|e| SnapshotError::Io {
        what: format!("Cannot open {}", image.display()),
        source: io::Error::other(format!("{e:#}")),
    })?;
    let Some(path) = open.backing_path(image) else {
        return Ok(None);
    };
    let format = match engine::vm::ImageKind::probe(&path) {
        Ok(engine::vm::ImageKind::Qcow2) => engine::vm::DiskFormat::Qcow2,
        _ => engine::vm::DiskFormat::Raw,
    };
    Ok(Some(Backing { path, format }))
}

/// The images in the snapshots folder that covered disks of `vm` use.
fn overlays_of(dir: &Path, vm: &VmFile) -> Vec<PathBuf> {
    vm.disks
        .iter()
        .filter(|d| covered(d) && d.format == DiskFormat::Qcow2)
        .map(|d| resolve(dir, &d.path))
        .filter(|p| p.starts_with(dir.join(SNAPSHOTS_DIR)))
        .collect()
}

/// Every image a snapshot of `tree` froze.
fn frozen_images(dir: &Path, tree: &SnapshotTree) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut images = Vec::new();
    for snapshot in &tree.snapshots {
        let settings = load_settings(dir, &snapshot.id)?;
        images.extend(
            settings
                .disks
                .iter()
                .filter(|d| covered(d))
                .map(|d| resolve(dir, &d.path)),
        );
    }
    Ok(images)
}

fn load_vm(dir: &Path) -> Result<VmFile, SnapshotError> {
    let path = dir.join(super::config::VM_FILE);
    VmFile::load(&path).map_err(|e| SnapshotError::Damaged {
        path,
        what: e.to_string(),
    })
}

fn save_vm(dir: &Path, vm: &VmFile) -> Result<(), SnapshotError> {
    vm.save(dir).map_err(io_error(format!(
        "Cannot write {}",
        dir.join(super::config::VM_FILE).display()
    )))
}

/// Copies a machine state (a hard link where the file system allows: a
/// state is never written in place).
fn copy_state(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    let _ = fs::remove_file(to);
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let temp = to.with_extension("partial");
    fs::copy(from, &temp)
        .and_then(|_| fs::File::open(&temp)?.sync_all())
        .and_then(|()| fs::rename(&temp, to))
        .map_err(io_error(format!(
            "Cannot copy the machine state {} to {}",
            from.display(),
            to.display()
        )))
}
