// SPDX-License-Identifier: Apache-2.0
//! File dialogs behind a trait, so the wizard can be driven by tests. The
//! real picker uses the XDG desktop portal through `rfd`; with no portal
//! running it returns `None` at once, as if the user pressed Cancel (the
//! wizard says so then, and offers a path field).

use std::path::PathBuf;

/// What the user is asked to choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PickKind {
    /// An installer CD image.
    Iso,
    /// An existing raw or qcow2 disk image.
    DiskImage,
    /// A Linux kernel (bzImage or vmlinux).
    Kernel,
    /// An initial ramdisk.
    Initrd,
}

impl PickKind {
    /// The dialog's title.
    pub fn title(self) -> &'static str {
        match self {
            PickKind::Iso => "Choose an ISO image",
            PickKind::DiskImage => "Choose a disk image",
            PickKind::Kernel => "Choose a Linux kernel",
            PickKind::Initrd => "Choose an initrd",
        }
    }

    /// File-name filter: a label and extensions (none: any file).
    fn filter(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            PickKind::Iso => Some(("ISO images", &["iso", "ISO"])),
            PickKind::DiskImage => Some((
                "Disk images",
                &["img", "raw", "qcow2", "IMG", "RAW", "QCOW2"],
            )),
            PickKind::Kernel | PickKind::Initrd => None,
        }
    }
}

/// Asks the user for a file.
pub trait FilePicker {
    /// The chosen file, or `None` when the user cancelled (or no dialog
    /// could be shown).
    fn pick(&mut self, kind: PickKind) -> Option<PathBuf>;
}

/// The desktop's file dialog, through the XDG desktop portal.
#[derive(Debug, Default)]
pub struct PortalPicker;

impl FilePicker for PortalPicker {
    fn pick(&mut self, kind: PickKind) -> Option<PathBuf> {
        let mut dialog = rfd::FileDialog::new().set_title(kind.title());
        if let Some((label, extensions)) = kind.filter() {
            dialog = dialog.add_filter(label, extensions);
        }
        dialog.pick_file()
    }
}
