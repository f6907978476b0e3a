// SPDX-License-Identifier: Apache-2.0
//! Host-side network back-ends for virtio-net: user-mode NAT through
//! Debian's `passt` (no root needed).

pub mod passt;
