// SPDX-License-Identifier: Apache-2.0
//! qcow2 disk images for virtio-blk, through the `imago` crate (written by
//! a QEMU block-layer maintainer) in its synchronous mode: reads, writes
//! that allocate clusters, flush (metadata caches, then fsync), discard and
//! write-zeroes.
//!
//! An image names other files in its header (a backing image, an external
//! data file), and an image can come from anywhere: such a file is opened
//! only where [`Dependencies`] allows it (the VM's folder, or files the
//! user named), after symlinks are resolved; anything else fails the open
//! with a message naming the file, before it is opened. Backing images are
//! opened read-only, and every file is locked like the image itself.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{
    FormatAccess, FormatDriverBuilder, Storage, StorageOpenOptions, format::gate::ImplicitOpenGate,
};

use super::block::{BlockError, DiskBackend};
use crate::image_lock::ImageLock;

/// The first four bytes of every qcow2 image.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// The files a qcow2 image may open by the names in its header (backing
/// images, external data files): those inside one of `dirs` or equal to
/// one of `files`, compared after resolving symlinks. The default allows
/// none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependencies {
    /// Folders whose files may be opened (a library VM's own folder).
    pub dirs: Vec<PathBuf>,
    /// Files the user named.
    pub files: Vec<PathBuf>,
}

impl Dependencies {
    /// The real path of `path` if it is allowed, or an error naming it.
    fn check(&self, path: &Path) -> io::Result<PathBuf> {
        let real = std::fs::canonicalize(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let inside =
            |dir: &PathBuf| std::fs::canonicalize(dir).is_ok_and(|dir| real.starts_with(&dir));
        let named = |file: &PathBuf| std::fs::canonicalize(file).is_ok_and(|file| file == real);
        if self.dirs.iter().any(inside) || self.files.iter().any(named) {
            return Ok(real);
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the image names {} as a file it depends on (a backing image or data file), \
                 which is outside the VM's folder and was not named as allowed; \
                 Nestbox does not open it. If you trust it, allow it explicitly: \
                 `nestbox create --backing FILE`, `nestbox run --disk IMAGE,backing=FILE`, \
                 or `backing = [\"FILE\"]` on the disk in vm.toml",
                path.display()
            ),
        ))
    }
}

/// imago's gate for the files an image names: checks each against the
/// [`Dependencies`] and locks it; the locks live as long as the image.
#[derive(Clone)]
struct DependencyGate {
    allowed: Arc<Dependencies>,
    locks: Arc<Mutex<Vec<ImageLock>>>,
}

impl ImplicitOpenGate<ImagoFile> for DependencyGate {
    fn open_format<F: FormatDriverBuilder<ImagoFile>>(
        &mut self,
        builder: F,
    ) -> io::Result<FormatAccess<ImagoFile>> {
        // A backing image's own dependencies pass through the same gate.
        Ok(FormatAccess::new(builder.open(self.clone())?))
    }

    fn open_storage(&mut self, options: StorageOpenOptions) -> io::Result<ImagoFile> {
        let Some(name) = options.get_filename().map(Path::to_path_buf) else {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the image depends on a file without a name",
            ));
        };
        let real = self.allowed.check(&name)?;
        let lock = ImageLock::acquire(&real, options.get_writable())
            .map_err(|e| io::Error::new(io::ErrorKind::ResourceBusy, e.to_string()))?;
        let file = ImagoFile::open(options.filename(&real))?;
        self.locks
            .lock()
            .map_err(|_| io::Error::other("image locks poisoned"))?
            .push(lock);
        Ok(file)
    }
}

/// A qcow2 image.
pub struct Qcow2Image {
    access: FormatAccess<ImagoFile>,
    read_only: bool,
    /// The backing image its header names, as written there.
    backing_name: Option<String>,
    /// Held while the image is open; dropped after the close flush.
    _lock: ImageLock,
    /// The locks of the files it depends on.
    _dependency_locks: Arc<Mutex<Vec<ImageLock>>>,
}

impl Qcow2Image {
    /// Opens the qcow2 image at `path`, writable unless `read_only`,
    /// locked as QEMU locks it (see [`ImageLock`]); it may not open any
    /// file its header names (see [`open_with`](Self::open_with)).
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        Self::open_with(path, read_only, &Dependencies::default())
    }

    /// Like [`open`](Self::open), and the files its header names (a
    /// backing image, an external data file) are opened where
    /// `dependencies` allows them; elsewhere the open fails naming them.
    pub fn open_with(
        path: &Path,
        read_only: bool,
        dependencies: &Dependencies,
    ) -> Result<Self, BlockError> {
        let open_error = |source| BlockError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| io::Read::read_exact(&mut f, &mut magic))
            .map_err(open_error)?;
        if magic != QCOW2_MAGIC {
            return Err(open_error(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a qcow2 image (no QFI\\xfb magic)",
            )));
        }
        let lock = ImageLock::acquire(path, !read_only)?;
        // Opened here, not through the gate, which sees only what the
        // image names.
        let file = ImagoFile::open(StorageOpenOptions::new().filename(path).write(!read_only))
            .map_err(open_error)?;
        let gate = DependencyGate {
            allowed: Arc::new(dependencies.clone()),
            locks: Arc::new(Mutex::new(Vec::new())),
        };
        let locks = Arc::clone(&gate.locks);
        let image = Qcow2::<ImagoFile>::builder(file)
            .write(!read_only)
            .open(gate)
            .map_err(open_error)?;
        let backing_name = image.implicit_backing_file().cloned();
        Ok(Self {
            access: FormatAccess::new(image),
            read_only,
            backing_name,
            _lock: lock,
            _dependency_locks: locks,
        })
    }
}

impl Qcow2Image {
    /// The backing image its header names, resolved as qcow2 does
    /// (relative to the folder of `image`, this image's path).
    pub fn backing_path(&self, image: &Path) -> Option<PathBuf> {
        let name = Path::new(self.backing_name.as_deref()?);
        Some(match image.parent() {
            Some(dir) if name.is_relative() => dir.join(name),
            _ => name.to_path_buf(),
        })
    }

    /// imago's view of the image, for walking its mappings.
    pub(crate) fn access(&self) -> &FormatAccess<ImagoFile> {
        &self.access
    }
}

/// Closing the image writes what imago still caches (L2 tables,
/// refcounts) and syncs it: a guest that never flushes (DOS, most older
/// systems) still finds its writes after the VM ends, however it ends
/// short of SIGKILL or power loss (the app turns SIGTERM, SIGINT and
/// SIGHUP into a stop).
impl Drop for Qcow2Image {
    fn drop(&mut self) {
        if self.read_only {
            return;
        }
        if let Err(e) = DiskBackend::flush(self) {
            log::error!("qcow2: writing the image's metadata on close failed: {e}");
        }
    }
}

impl DiskBackend for Qcow2Image {
    fn size(&self) -> u64 {
        self.access.size()
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.access.read(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.access.write(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.access.flush()?;
        self.access.sync()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.access.discard_to_any(offset, len)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        self.access.write_zeroes(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    /// A qcow2 image made by qemu-img, or None when qemu-img is missing.
    fn qemu_img_create(name: &str, size: &str) -> Option<std::path::PathBuf> {
        let path =
            std::env::temp_dir().join(format!("nestbox-{name}-{}.qcow2", std::process::id()));
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg(size)
            .status()
            .ok()?;
        status.success().then_some(path)
    }

    fn qemu_img_check(path: &Path) -> bool {
        Command::new("qemu-img")
            .args(["check", "-q"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn test_qcow2_write_read_flush_passes_qemu_img_check() {
        let Some(path) = qemu_img_create("qcow2-rw", "16M") else {
            crate::test_skip::skipped_missing(module_path!(), "qemu-img is not installed");
            return;
        };
        let pattern: Vec<u8> = (0..65536u32).map(|i| (i * 13 % 251) as u8).collect();

        let mut image = Qcow2Image::open(&path, false).unwrap();
        image.write_at(&pattern, 3 << 20).unwrap();
        image.flush().unwrap();
        drop(image);
        let mut reopened = Qcow2Image::open(&path, true).unwrap();
        let mut back = vec![0u8; pattern.len()];
        reopened.read_at(&mut back, 3 << 20).unwrap();
        let mut untouched = vec![0xffu8; 4096];
        reopened.read_at(&mut untouched, 0).unwrap();
        let size = reopened.size();
        drop(reopened);
        let check = qemu_img_check(&path);
        std::fs::remove_file(&path).unwrap();

        assert_eq!(back, pattern);
        assert!(untouched.iter().all(|&b| b == 0));
        assert_eq!(size, 16 << 20);
        assert!(check, "qemu-img check failed");
    }

    #[test]
    fn test_qcow2_writes_never_flushed_are_in_the_image_after_close() {
        let Some(path) = qemu_img_create("qcow2-close", "4M") else {
            crate::test_skip::skipped_missing(module_path!(), "qemu-img is not installed");
            return;
        };
        let pattern = [0x5au8; 512];

        let mut image = Qcow2Image::open(&path, false).unwrap();
        for cluster in 1..8u64 {
            image.write_at(&pattern, cluster << 16).unwrap();
        }
        drop(image);
        let mut reopened = Qcow2Image::open(&path, true).unwrap();
        let mut back = [0u8; 512];
        let found: Vec<bool> = (1..8u64)
            .map(|cluster| {
                reopened.read_at(&mut back, cluster << 16).unwrap();
                back == pattern
            })
            .collect();
        drop(reopened);
        let check = qemu_img_check(&path);
        std::fs::remove_file(&path).unwrap();

        assert!(found.iter().all(|&f| f), "{found:?}");
        assert!(check, "qemu-img check failed");
    }

    #[test]
    fn test_qcow2_write_zeroes_reads_back_zeros() {
        let Some(path) = qemu_img_create("qcow2-zero", "4M") else {
            crate::test_skip::skipped_missing(module_path!(), "qemu-img is not installed");
            return;
        };
        let mut image = Qcow2Image::open(&path, false).unwrap();
        image.write_at(&[0xaa; 8192], 0).unwrap();

        image.write_zeroes(0, 4096, true).unwrap();
        let mut back = vec![0xffu8; 8192];
        image.read_at(&mut back, 0).unwrap();
        drop(image);
        std::fs::remove_file(&path).unwrap();

        assert!(back[..4096].iter().all(|&b| b == 0));
        assert!(back[4096..].iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn test_qcow2_open_raw_file_is_refused() {
        let path = std::env::temp_dir().join(format!("nestbox-notqcow2-{}", std::process::id()));
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let result = Qcow2Image::open(&path, true);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(result, Err(BlockError::Open { .. })));
    }

    /// An error and its sources, as one line.
    fn chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(inner) = source {
            text = format!("{text}: {inner}");
            source = inner.source();
        }
        text
    }

    /// A fresh folder in the temp directory.
    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "nestbox-deps-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A qcow2 overlay at `overlay` whose header names `backing` (raw),
    /// or None when qemu-img is missing.
    fn overlay_on(overlay: &Path, backing: &str) -> Option<()> {
        let status = Command::new("qemu-img")
            .args([
                "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", backing,
            ])
            .arg(overlay)
            .arg("1M")
            .status()
            .ok()?;
        status.success().then_some(())
    }

    /// Watches `path` for being opened (inotify); `opened` says whether
    /// anything opened it since.
    struct OpenWatch(std::fs::File);

    impl OpenWatch {
        fn new(path: &Path) -> Self {
            use std::os::fd::FromRawFd;
            use std::os::unix::ffi::OsStrExt;
            // SAFETY: inotify_init1 takes only flags; the fd is owned below.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            assert!(fd >= 0);
            let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
            // SAFETY: `name` is a NUL-terminated path that outlives the call.
            let watch = unsafe { libc::inotify_add_watch(fd, name.as_ptr(), libc::IN_OPEN) };
            assert!(watch >= 0);
            // SAFETY: `fd` is a new descriptor nothing else owns.
            Self(unsafe { std::fs::File::from_raw_fd(fd) })
        }

        fn opened(&mut self) -> bool {
            let mut events = [0u8; 4096];
            io::Read::read(&mut self.0, &mut events).is_ok_and(|n| n > 0)
        }
    }

    #[test]
    fn test_qcow2_backing_file_outside_the_allowed_places_is_refused_unopened() {
        let outside = folder("outside");
        let vm = folder("vm");
        let secret = outside.join("secret.raw");
        std::fs::write(&secret, [0x5a; 4096]).unwrap();
        let overlay = vm.join("disk.qcow2");
        if overlay_on(&overlay, secret.to_str().unwrap()).is_none() {
            crate::test_skip::skipped_missing(module_path!(), "qemu-img is not installed");
            return;
        }
        let mut watch = OpenWatch::new(&secret);

        let allowed_vm = Dependencies {
            dirs: vec![vm.clone()],
            files: Vec::new(),
        };
        let refused = [
            Qcow2Image::open(&overlay, true).err(),
            Qcow2Image::open(&overlay, false).err(),
            Qcow2Image::open_with(&overlay, true, &allowed_vm).err(),
        ];
        let opened = watch.opened();
        let _ = std::fs::remove_dir_all(&outside);
        let _ = std::fs::remove_dir_all(&vm);

        for error in refused {
            let message = chain(&error.expect("opened"));
            assert!(message.contains("secret.raw"), "{message}");
            assert!(message.contains("backing"), "{message}");
        }
        assert!(!opened, "the backing file was opened");
    }

    #[test]
    fn test_qcow2_backing_file_in_the_vm_folder_or_named_is_read() {
        let vm = folder("vm-ok");
        let base = vm.join("base.raw");
        std::fs::write(&base, [0x5a; 4096]).unwrap();
        let overlay = vm.join("disk.qcow2");
        if overlay_on(&overlay, "base.raw").is_none() {
            crate::test_skip::skipped_missing(module_path!(), "qemu-img is not installed");
            return;
        }
        let in_folder = Dependencies {
            dirs: vec![vm.clone()],
            files: Vec::new(),
        };
        let named = Dependencies {
            dirs: Vec::new(),
            files: vec![base.clone()],
        };
        let mut reads = Vec::new();
        for allowed in [in_folder, named] {
            let mut image = Qcow2Image::open_with(&overlay, false, &allowed).unwrap();
            let mut back = [0u8; 512];
            image.read_at(&mut back, 0).unwrap();
            reads.push(back);
        }
        let _ = std::fs::remove_dir_all(&vm);

        for back in reads {
            assert!(back.iter().all(|&b| b == 0x5a));
        }
    }

    #[test]
    fn test_qcow2_backing_symlink_out_of_the_vm_folder_is_refused() {
        let outside = folder("link-target");
        let vm = folder("vm-link");
        let secret = outside.join("secret.raw");
        std::fs::write(&secret, [0x5a; 4096]).unwrap();
        std::os::unix::fs::symlink(&secret, vm.join("base.raw")).unwrap();
        let overlay = vm.join("disk.qcow2");
        if overlay_on(&overlay, "base.raw").is_none() {
            crate::test_skip::skipped_missing(module_path!(), "qemu-img is not installed");
            return;
        }
        let allowed_vm = Dependencies {
            dirs: vec![vm.clone()],
            files: Vec::new(),
        };
        let result = Qcow2Image::open_with(&overlay, true, &allowed_vm);
        let _ = std::fs::remove_dir_all(&outside);
        let _ = std::fs::remove_dir_all(&vm);
        assert!(result.is_err(), "a symlink led out of the VM's folder");
    }
}
