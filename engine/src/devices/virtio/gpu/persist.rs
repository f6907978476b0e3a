// SPDX-License-Identifier: Apache-2.0
//! virtio-gpu in a saved machine state: every resource (format, size, the
//! guest backing the driver attached, the host copy of its pixels), each
//! scanout (connected, preferred size, the resource and rectangle shown),
//! the pending display events and the cursor.
//!
//! A restored state is rebuilt through the same checks the driver's
//! commands get (resource sizes and the host-memory limit, backing ranges
//! against guest memory, scanout rectangles against their resource), so
//! a damaged or forged file cannot give the device what a guest could
//! not. The restored device then hands every shown scanout and the cursor
//! to its sink, so the host's picture is back before the guest draws.

use serde::{Deserialize, Serialize};

use super::protocol::{CursorCommand, MemEntry, Rect};
use super::resources::Resources;
use super::{Gpu, Refusal, valid_size};
use crate::snapshot::{self, StateError};

const NAME: &str = "virtio-gpu";

#[derive(Serialize, Deserialize)]
struct SavedResource {
    id: u32,
    format: u32,
    width: u32,
    height: u32,
    /// (guest address, length) of each backing piece, when attached.
    backing: Option<Vec<(u64, u32)>>,
    pixels: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SavedScanout {
    connected: bool,
    width: u32,
    height: u32,
    /// Resource id and (x, y, width, height) shown.
    shown: Option<(u32, [u32; 4])>,
}

#[derive(Serialize, Deserialize)]
struct SavedCursor {
    scanout: u32,
    resource: u32,
    position: (u32, u32),
    hotspot: (u32, u32),
}

#[derive(Serialize, Deserialize)]
struct SavedGpu {
    events_read: u32,
    scanouts: Vec<SavedScanout>,
    resources: Vec<SavedResource>,
    cursor: Option<SavedCursor>,
}

fn refused(what: String) -> impl Fn(Refusal) -> StateError {
    move |r| snapshot::invalid(NAME, format!("{what}: {}", r.reason))
}

impl Gpu {
    pub(super) fn saved_state(&self) -> Result<Vec<u8>, StateError> {
        let server = &self.server;
        let resources = server
            .resources
            .each()
            .into_iter()
            .map(|(id, resource, backing)| SavedResource {
                id,
                format: resource.format.to_virtio(),
                width: resource.width,
                height: resource.height,
                backing: backing.map(|b| b.iter().map(|e| (e.addr, e.length)).collect()),
                pixels: resource.pixels.clone(),
            })
            .collect();
        let scanouts = server
            .scanouts
            .iter()
            .map(|s| SavedScanout {
                connected: s.connected,
                width: s.width,
                height: s.height,
                shown: s.shown.map(|(id, r)| (id, [r.x, r.y, r.width, r.height])),
            })
            .collect();
        let cursor = server.cursor.map(|c| SavedCursor {
            scanout: c.scanout_id,
            resource: c.resource_id,
            position: (c.x, c.y),
            hotspot: (c.hot_x, c.hot_y),
        });
        snapshot::encode(
            NAME,
            &SavedGpu {
                events_read: server.events_read,
                scanouts,
                resources,
                cursor,
            },
        )
    }

    pub(super) fn restore_saved(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let saved: SavedGpu = snapshot::decode(NAME, bytes)?;
        let invalid = |what: String| snapshot::invalid(NAME, what);
        if saved.scanouts.len() != self.server.scanouts.len() {
            return Err(invalid(format!(
                "it had {} scanouts when saved and has {} now",
                saved.scanouts.len(),
                self.server.scanouts.len()
            )));
        }
        let mem = self
            .core
            .active()
            .map(|a| a.mem.clone())
            .ok_or_else(|| invalid("the device is not active".to_string()))?;

        // Everything is rebuilt aside and checked before the device changes.
        let mut resources = Resources::new(self.server.resources.limit());
        for r in saved.resources {
            let what = format!("resource {}", r.id);
            resources
                .create(r.id, r.format, r.width, r.height)
                .map_err(refused(what.clone()))?;
            if let Some(backing) = &r.backing {
                let entries: Vec<MemEntry> = backing
                    .iter()
                    .map(|&(addr, length)| MemEntry { addr, length })
                    .collect();
                resources
                    .attach(&mem, r.id, &entries)
                    .map_err(refused(what.clone()))?;
            }
            resources
                .set_pixels(r.id, r.pixels)
                .map_err(refused(what))?;
        }
        let mut scanouts = self.server.scanouts.clone();
        for (index, (saved, scanout)) in saved.scanouts.iter().zip(&mut scanouts).enumerate() {
            if !valid_size(saved.width, saved.height) {
                return Err(invalid(format!("scanout {index} has a bad size")));
            }
            scanout.connected = saved.connected;
            scanout.width = saved.width;
            scanout.height = saved.height;
            scanout.shown = match saved.shown {
                None => None,
                Some((id, [x, y, width, height])) => {
                    let rect = Rect::new(x, y, width, height);
                    let resource = resources
                        .get(id)
                        .map_err(refused(format!("scanout {index}")))?;
                    if rect.is_empty() || !rect.fits(resource.width, resource.height) {
                        return Err(invalid(format!(
                            "scanout {index} shows a rectangle outside its resource"
                        )));
                    }
                    Some((id, rect))
                }
            };
        }

        let server = &mut self.server;
        server.resources = resources;
        server.scanouts = scanouts;
        server.events_read = saved.events_read;
        server.cursor = None;
        for (id, rect) in server.scanouts.clone().iter().filter_map(|s| s.shown) {
            // Checked above: the resource exists and the rectangle fits.
            let _ = server.flush(rect, id);
        }
        if let Some(c) = saved.cursor {
            let command = CursorCommand {
                scanout_id: c.scanout,
                x: c.position.0,
                y: c.position.1,
                resource_id: c.resource,
                hot_x: c.hotspot.0,
                hot_y: c.hotspot.1,
            };
            // A cursor the checks refuse stays hidden, as for the driver.
            let _ = server.update_cursor(&command);
        }
        Ok(())
    }
}
