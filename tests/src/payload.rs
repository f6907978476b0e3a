// SPDX-License-Identifier: Apache-2.0
//! The payload images `build.rs` assembled from `payloads/*.S`.

use std::path::PathBuf;

/// Path of the assembled payload `name` (the `.S` file's stem).
pub fn image(name: &str) -> PathBuf {
    PathBuf::from(env!("OUT_DIR")).join(format!("{name}.bin"))
}
