// SPDX-License-Identifier: Apache-2.0
//! The host files a VM needs at run time that Nestbox does not carry
//! itself (firmware, the VGA BIOS, the user-mode network helper), the
//! Debian packages that bring them, and which of them this host lacks.
//! The app looks once at start and says what to install, and the New VM
//! wizard says it for the VM being made, instead of the VM failing to
//! start later.

use std::path::Path;

use crate::library::config::{SEABIOS_PATH, VGA_BIOS_PATH, VIRTIO_VGA_BIOS_PATH};

/// One helper file and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Helper {
    /// What it is, in words.
    pub what: &'static str,
    /// Where Nestbox looks for it.
    pub path: &'static str,
    /// The Debian package that installs it there.
    pub package: &'static str,
}

/// SeaBIOS, the firmware of every VM that does not boot a kernel directly.
pub const SEABIOS: Helper = Helper {
    what: "SeaBIOS (the PC firmware)",
    path: SEABIOS_PATH,
    package: "seabios",
};

/// The VGA BIOS of the virtio-vga screen.
pub const VIRTIO_VGA_BIOS: Helper = Helper {
    what: "the VGA BIOS",
    path: VIRTIO_VGA_BIOS_PATH,
    package: "seabios",
};

/// The VGA BIOS of the plain standard VGA.
pub const STD_VGA_BIOS: Helper = Helper {
    what: "the VGA BIOS",
    path: VGA_BIOS_PATH,
    package: "seabios",
};

/// passt, the user-mode NAT behind a VM's network card.
pub const PASST: Helper = Helper {
    what: "passt (networking)",
    path: engine::net::passt::PASST_PATH,
    package: "passt",
};

/// Every helper, for the look at start.
pub const ALL: [Helper; 4] = [SEABIOS, VIRTIO_VGA_BIOS, STD_VGA_BIOS, PASST];

/// What a VM needs, by the shape of its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// It boots through SeaBIOS (not a kernel directly).
    pub bios: bool,
    /// Its screen is the plain standard VGA (else virtio-vga).
    pub std_vga: bool,
    /// It has a NAT network card.
    pub network: bool,
}

impl Needs {
    /// The helpers a VM of this shape cannot start without.
    pub fn helpers(self) -> Vec<Helper> {
        let mut helpers = Vec::new();
        if self.bios {
            helpers.push(SEABIOS);
            helpers.push(if self.std_vga {
                STD_VGA_BIOS
            } else {
                VIRTIO_VGA_BIOS
            });
        }
        if self.network {
            helpers.push(PASST);
        }
        helpers
    }
}

/// Which helpers this host lacks (looked at once): bit `i` for
/// `ALL[i]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Installed {
    missing: u8,
}

impl Installed {
    /// Looks on this host.
    pub fn detect() -> Self {
        Self::lacking(
            &ALL.into_iter()
                .filter(|h| !Path::new(h.path).exists())
                .collect::<Vec<_>>(),
        )
    }

    /// A host that lacks exactly `missing` (tests).
    pub fn lacking(missing: &[Helper]) -> Self {
        let bits = ALL
            .iter()
            .enumerate()
            .filter(|(_, h)| missing.contains(h))
            .fold(0u8, |bits, (i, _)| bits | 1 << i);
        Self { missing: bits }
    }

    /// Whether this host lacks `helper`.
    fn lacks(&self, helper: &Helper) -> bool {
        ALL.iter()
            .position(|h| h == helper)
            .is_some_and(|i| self.missing & 1 << i != 0)
    }

    /// Every helper this host lacks.
    pub fn missing(&self) -> Vec<Helper> {
        ALL.into_iter().filter(|h| self.lacks(h)).collect()
    }

    /// Of what `needs` asks for, what this host lacks.
    pub fn missing_for(&self, needs: Needs) -> Vec<Helper> {
        needs
            .helpers()
            .into_iter()
            .filter(|h| self.lacks(h))
            .collect()
    }
}

/// What to tell the user about `missing` helpers (None: nothing missing):
/// what they are, and the packages and command that install them.
pub fn install_advice(missing: &[Helper]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let mut whats: Vec<&str> = missing.iter().map(|h| h.what).collect();
    whats.dedup();
    let mut packages: Vec<&str> = missing.iter().map(|h| h.package).collect();
    packages.sort_unstable();
    packages.dedup();
    let noun = if packages.len() == 1 {
        "package"
    } else {
        "packages"
    };
    Some(format!(
        "{} not installed: install the {} {noun} (sudo apt install {})",
        whats.join(", "),
        packages.join(", "),
        packages.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_bios_vm_with_network_needs_seabios_its_vga_bios_and_passt() {
        let needs = Needs {
            bios: true,
            std_vga: false,
            network: true,
        };
        assert_eq!(needs.helpers(), vec![SEABIOS, VIRTIO_VGA_BIOS, PASST]);
        let kernel = Needs {
            bios: false,
            std_vga: true,
            network: false,
        };
        assert!(kernel.helpers().is_empty());
        let dos = Needs {
            bios: true,
            std_vga: true,
            network: false,
        };
        assert_eq!(dos.helpers(), vec![SEABIOS, STD_VGA_BIOS]);
    }

    #[test]
    fn test_advice_names_each_package_once() {
        let host = Installed::lacking(&[SEABIOS, VIRTIO_VGA_BIOS, PASST]);
        let needs = Needs {
            bios: true,
            std_vga: false,
            network: true,
        };
        let missing = host.missing_for(needs);
        assert_eq!(
            install_advice(&missing).unwrap(),
            "SeaBIOS (the PC firmware), the VGA BIOS, passt (networking) not installed: \
             install the passt, seabios packages (sudo apt install passt seabios)"
        );
        assert_eq!(
            install_advice(&host.missing_for(Needs {
                network: false,
                ..needs
            }))
            .unwrap(),
            "SeaBIOS (the PC firmware), the VGA BIOS not installed: install the seabios \
             package (sudo apt install seabios)"
        );
        assert_eq!(install_advice(&[]), None);
        assert!(Installed::default().missing_for(needs).is_empty());
    }
}
