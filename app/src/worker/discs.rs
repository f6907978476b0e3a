// SPDX-License-Identifier: Apache-2.0
//! Changing the disc in a library VM's IDE CD-ROM drive, as the GUI's
//! CD-ROM menu and `nestbox cd` both do it: in the running VM (when it
//! runs) and in its settings.

use std::path::PathBuf;

use super::api::{VmBackend, VmCommand};
use crate::library::store::VmStore;

/// Puts `image` into CD-ROM drive `cd` of VM `id`, or takes its disc out
/// (None): first checked against the VM's settings, then told to its
/// worker if it runs, then saved. Nothing changes when the VM has no such
/// drive or its worker refuses.
pub fn change_disc(
    store: &VmStore,
    backend: &mut dyn VmBackend,
    id: &str,
    cd: usize,
    image: Option<PathBuf>,
) -> Result<(), String> {
    let mut vm = store.get(id).map_err(|e| e.to_string())?;
    vm.change_cd(cd, image.clone())?;
    if backend.state(id).is_live() {
        backend.command(id, VmCommand::ChangeCd { cd, image })?;
    }
    store
        .update(id, &vm)
        .map_err(|e| format!("The disc change was not saved: {e}"))
}
