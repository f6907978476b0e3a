// SPDX-License-Identifier: Apache-2.0
//! How the engine's unit tests say they cannot run here, as the tests
//! crate's `skipped_missing` does (the engine cannot depend on that
//! crate): one line `SKIPPED: <where>: <why>` on stderr, past the test
//! harness's capture, which `.ci/run` counts as a skip; a panic instead
//! under `NESTBOX_REQUIRE_KVM=1`, where a missing tool is a broken set-up.

use std::io::Write;

/// Reports that the test at `place` skips because `why`.
pub(crate) fn skipped_missing(place: &str, why: &str) {
    if std::env::var("NESTBOX_REQUIRE_KVM").is_ok_and(|v| v == "1") {
        panic!("{place}: NESTBOX_REQUIRE_KVM=1 but {why}");
    }
    let line = format!("SKIPPED: {place}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}
