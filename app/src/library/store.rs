// SPDX-License-Identifier: Apache-2.0
//! The folder of VMs (`<data dir>/vms/<id>/`), each with its `vm.toml` and
//! usually its disks: list, create, get, update and delete.
//!
//! A VM whose `vm.toml` cannot be read or parsed is listed as needing
//! attention, with the error; the store never rewrites, moves or deletes it
//! on its own. Only [`VmStore::delete`], which the caller confirms with the
//! user first, removes a VM directory.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use directories::ProjectDirs;

use super::atomic::TEMP_PREFIX;
use super::config::{ConfigError, VM_FILE, VmFile};
use super::prefs::Preferences;

/// Longest name part of an id.
const MAX_SLUG: usize = 16;

/// How many ids to try before giving up on a free one.
const ID_ATTEMPTS: u32 = 32;

/// One VM in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEntry {
    /// Its id (the directory's name).
    pub id: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its settings, or why they cannot be used ("needs attention").
    pub state: Result<VmFile, ConfigError>,
}

impl VmEntry {
    /// The VM's name, or its id when the settings cannot be read.
    pub fn display_name(&self) -> &str {
        match &self.state {
            Ok(vm) => &vm.name,
            Err(_) => &self.id,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No home directory to put the data directory in.
    NoDataDir,
    /// An id that cannot name a VM directory.
    InvalidId(String),
    /// No VM with this id.
    NotFound(String),
    /// The VM's settings cannot be used (for update: it is left as it is).
    Config(ConfigError),
    /// Preparing a new VM's directory failed (the directory was removed).
    Prepare(String),
    /// A filesystem operation failed.
    Io {
        /// What was being done, e.g. "Cannot create /x".
        action: String,
        /// The OS's message.
        message: String,
    },
}

impl StoreError {
    fn io(action: String, err: &io::Error) -> Self {
        StoreError::Io {
            action,
            message: err.to_string(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NoDataDir => write!(
                f,
                "Cannot find a data directory: set HOME or XDG_DATA_HOME, \
                 or set a VM folder in the preferences"
            ),
            StoreError::InvalidId(id) => write!(f, "'{id}' is not a VM id"),
            StoreError::NotFound(id) => {
                write!(f, "No VM with id '{id}' (nestbox list shows the ids)")
            }
            StoreError::Config(err) => write!(f, "{err}"),
            StoreError::Prepare(message) => write!(f, "{message}"),
            StoreError::Io { action, message } => write!(f, "{action}: {message}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The VM folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStore {
    root: PathBuf,
}

impl VmStore {
    /// A store over `root`, the folder holding one directory per VM (it is
    /// created when the first VM is).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The default VM folder: `vms/` in Nestbox's data directory
    /// (`$XDG_DATA_HOME/nestbox`, else `~/.local/share/nestbox`).
    pub fn default_root() -> Result<PathBuf, StoreError> {
        ProjectDirs::from("org", "Nestbox", "nestbox")
            .map(|dirs| dirs.data_dir().join("vms"))
            .ok_or(StoreError::NoDataDir)
    }

    /// The store the user's preferences name: their VM folder, else the
    /// default.
    pub fn from_prefs(prefs: &Preferences) -> Result<Self, StoreError> {
        match &prefs.vm_folder {
            Some(folder) => Ok(Self::new(folder.clone())),
            None => Self::default_root().map(Self::new),
        }
    }

    /// The VM folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of VM `id` (whether or not it exists).
    pub fn dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        if is_valid_id(id) {
            Ok(self.root.join(id))
        } else {
            Err(StoreError::InvalidId(id.to_string()))
        }
    }

    /// Every VM, sorted by id; a missing VM folder is an empty list.
    pub fn list(&self) -> Result<Vec<VmEntry>, StoreError> {
        let read = match fs::read_dir(&self.root) {
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                let action = format!("Cannot list {}", self.root.display());
                return Err(StoreError::io(action, &err));
            }
        };
        let mut entries = Vec::new();
        for item in read {
            let item = item
                .map_err(|e| StoreError::io(format!("Cannot list {}", self.root.display()), &e))?;
            let Some(id) = item.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !is_valid_id(&id) || !item.path().is_dir() {
                continue;
            }
            let dir = item.path();
            let state = VmFile::load(&dir.join(VM_FILE));
            entries.push(VmEntry { id, dir, state });
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(entries)
    }

    /// Creates a VM from `vm` and returns its new id.
    pub fn create(&self, vm: &VmFile) -> Result<String, StoreError> {
        self.create_with(vm, |_| Ok(()))
    }

    /// Creates a VM: makes its directory, runs `prepare` in it (for example
    /// to create its disk image), then writes `vm.toml`. If `prepare` or the
    /// write fails, the new directory is removed again.
    pub fn create_with(
        &self,
        vm: &VmFile,
        prepare: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<String, StoreError> {
        fs::create_dir_all(&self.root)
            .map_err(|e| StoreError::io(format!("Cannot create {}", self.root.display()), &e))?;
        let (id, dir) = self.new_dir(&vm.name)?;
        let result = prepare(&dir).map_err(StoreError::Prepare).and_then(|()| {
            vm.save(&dir).map_err(|e| {
                StoreError::io(format!("Cannot write {}", dir.join(VM_FILE).display()), &e)
            })
        });
        match result {
            Ok(()) => Ok(id),
            Err(err) => {
                // Only what this call made is removed.
                let _ = fs::remove_dir_all(&dir);
                Err(err)
            }
        }
    }

    /// Makes a fresh directory named `<slug of name>-<4 hex digits>`.
    fn new_dir(&self, name: &str) -> Result<(String, PathBuf), StoreError> {
        let slug = slug(name);
        let random = RandomState::new();
        for attempt in 0..ID_ATTEMPTS {
            let mut hasher = random.build_hasher();
            hasher.write_u32(attempt);
            hasher.write_u32(std::process::id());
            let id = format!("{slug}-{:04x}", hasher.finish() & 0xffff);
            let dir = self.root.join(&id);
            // The VM's files (disks, logs, config) are the user's alone.
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok((id, dir)),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => {
                    return Err(StoreError::io(
                        format!("Cannot create {}", dir.display()),
                        &err,
                    ));
                }
            }
        }
        Err(StoreError::Io {
            action: format!("Cannot find a free id for '{name}'"),
            message: "too many VMs with similar names".to_string(),
        })
    }

    /// The settings of VM `id`.
    pub fn get(&self, id: &str) -> Result<VmFile, StoreError> {
        let dir = self.existing_dir(id)?;
        VmFile::load(&dir.join(VM_FILE)).map_err(StoreError::Config)
    }

    /// Replaces the settings of VM `id`. A `vm.toml` that currently fails to
    /// load is not overwritten: the user fixes or deletes it first.
    pub fn update(&self, id: &str, vm: &VmFile) -> Result<(), StoreError> {
        let dir = self.existing_dir(id)?;
        VmFile::load(&dir.join(VM_FILE)).map_err(StoreError::Config)?;
        vm.save(&dir).map_err(|e| {
            StoreError::io(format!("Cannot write {}", dir.join(VM_FILE).display()), &e)
        })
    }

    /// Removes VM `id`'s directory with everything inside it, its disks
    /// included (disks elsewhere, such as an ISO, stay). Works for a VM that
    /// needs attention too. The caller confirms with the user first.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.existing_dir(id)?;
        fs::remove_dir_all(&dir)
            .map_err(|e| StoreError::io(format!("Cannot delete {}", dir.display()), &e))
    }

    fn existing_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        let dir = self.dir(id)?;
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(StoreError::NotFound(id.to_string()))
        }
    }
}

/// Ids are what [`VmStore::create`] makes, or any plain directory name a
/// user put there by hand: not empty, no `/`, not hidden, not `.`/`..`.
fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && !id.starts_with(TEMP_PREFIX)
        && !id.contains(['/', '\\', '\0'])
}

/// The name part of an id: lower-case ASCII letters and digits, other runs
/// turned into one `-`, at most [`MAX_SLUG`] long; `vm` if nothing is left.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= MAX_SLUG {
            break;
        }
    }
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "vm".to_string()
    } else {
        out.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::library::config::{Boot, Created, Firmware, Problem, SCHEMA};
    use crate::library::testdir::TestDir;

    fn vm(name: &str) -> VmFile {
        VmFile {
            schema: SCHEMA,
            name: name.to_string(),
            profile: "generic-bios".to_string(),
            memory_mib: 128,
            vcpus: 1,
            os: String::new(),
            network: Default::default(),
            sound: Default::default(),
            allow_overcommit: false,
            suspend_on_host_shutdown: false,
            created: Created::UnixSeconds(1),
            boot: Boot::Firmware(Firmware::Seabios),
            display: Default::default(),
            disks: Vec::new(),
        }
    }

    fn store(dir: &TestDir) -> VmStore {
        VmStore::new(dir.path().join("vms"))
    }

    #[test]
    fn test_missing_folder_lists_nothing() {
        let dir = TestDir::new("store-empty");
        assert_eq!(store(&dir).list().unwrap(), Vec::new());
    }

    #[test]
    fn test_create_get_update_list_round_trip() {
        let dir = TestDir::new("store-round");
        let store = store(&dir);
        let id = store.create(&vm("My Debian!")).unwrap();
        assert!(id.starts_with("my-debian-"), "{id}");
        assert_eq!(store.get(&id).unwrap(), vm("My Debian!"));
        let mut changed = vm("My Debian!");
        changed.memory_mib = 256;
        store.update(&id, &changed).unwrap();
        assert_eq!(store.get(&id).unwrap().memory_mib, 256);
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, id);
        assert_eq!(list[0].state, Ok(changed));
    }

    #[test]
    fn test_same_name_twice_gets_two_ids() {
        let dir = TestDir::new("store-twice");
        let store = store(&dir);
        let a = store.create(&vm("same")).unwrap();
        let b = store.create(&vm("same")).unwrap();
        assert_ne!(a, b);
        assert_eq!(store.list().unwrap().len(), 2);
    }

    #[test]
    fn test_corrupt_file_needs_attention_and_is_never_touched() {
        let dir = TestDir::new("store-corrupt");
        let store = store(&dir);
        let id = store.create(&vm("broken")).unwrap();
        let path = store.dir(&id).unwrap().join(VM_FILE);
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("memory = 128", "memory = \"lots\"");
        fs::write(&path, &text).unwrap();
        let before = fs::read(&path).unwrap();

        let list = store.list().unwrap();
        let err = list[0].state.clone().unwrap_err();
        assert!(err.location().is_some());
        assert!(err.to_string().contains("line 4, column 10"), "{err}");
        assert_eq!(list[0].display_name(), id);
        assert!(matches!(store.get(&id), Err(StoreError::Config(_))));
        assert!(matches!(
            store.update(&id, &vm("fixed")),
            Err(StoreError::Config(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(fs::read_dir(store.dir(&id).unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn test_directory_without_vm_file_needs_attention() {
        let dir = TestDir::new("store-nofile");
        let store = store(&dir);
        fs::create_dir_all(store.root().join("stray")).unwrap();
        fs::create_dir_all(store.root().join(".hidden")).unwrap();
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        let err = list[0].state.clone().unwrap_err();
        assert!(matches!(
            err.problem,
            Problem::Read {
                kind: io::ErrorKind::NotFound,
                ..
            }
        ));
        assert!(store.dir("stray").unwrap().is_dir());
    }

    #[test]
    fn test_delete_removes_the_directory_and_its_disks() {
        let dir = TestDir::new("store-delete");
        let store = store(&dir);
        let keep = store.create(&vm("keep")).unwrap();
        let id = store.create(&vm("gone")).unwrap();
        fs::write(store.dir(&id).unwrap().join("disk.img"), b"data").unwrap();
        store.delete(&id).unwrap();
        assert!(!store.dir(&id).unwrap().exists());
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(matches!(store.delete(&id), Err(StoreError::NotFound(_))));
        assert!(store.get(&keep).is_ok());
    }

    #[test]
    fn test_ids_cannot_escape_the_folder() {
        let dir = TestDir::new("store-escape");
        let store = store(&dir);
        for bad in ["..", "../x", "a/b", "", ".hidden"] {
            assert!(
                matches!(store.delete(bad), Err(StoreError::InvalidId(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn test_failed_prepare_leaves_nothing() {
        let dir = TestDir::new("store-prepare");
        let store = store(&dir);
        let err = store
            .create_with(&vm("x"), |d| {
                fs::write(d.join("disk.img"), b"partial").unwrap();
                Err("no space".to_string())
            })
            .unwrap_err();
        assert_eq!(err, StoreError::Prepare("no space".to_string()));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn test_slug() {
        assert_eq!(slug("Windows 98 SE (retro)"), "windows-98-se-re");
        assert_eq!(slug("日本"), "vm");
        assert_eq!(slug("  a  "), "a");
    }
}
