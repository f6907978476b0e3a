// SPDX-License-Identifier: Apache-2.0
//! A vhost-user-blk back-end serving a raw image, for benchmarks: the same
//! engine code as `nestbox vhost-user-blk --disk PATH` (a [`RawFile`] in a
//! [`Block`], served by [`engine::vhost_user::serve`]) without building
//! the GUI that the `nestbox` binary links. Returns when QEMU disconnects.
//!
//! `cargo run --release -p engine --example vhost_user_blk -- SOCKET IMAGE [POLL_US]`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use engine::devices::virtio::block::{Block, RawFile};

fn main() {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(socket), Some(image)) = (args.next(), args.next()) else {
        eprintln!("usage: vhost_user_blk SOCKET IMAGE [POLL_US]");
        std::process::exit(2);
    };
    let disk = RawFile::open(&image, false).expect("cannot open the image");
    let mut block =
        Block::new(Box::new(disk), "nestbox-vhost-blk").expect("cannot create the device");
    // An optional third argument: the polling budget in microseconds.
    if let Some(us) = args.next() {
        let us: u64 = us
            .to_str()
            .and_then(|s| s.parse().ok())
            .expect("poll budget in µs");
        block.set_poll_budget(std::time::Duration::from_micros(us));
    }
    engine::vhost_user::serve(&socket, block).expect("vhost-user service failed");
}
