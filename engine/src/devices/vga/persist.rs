// SPDX-License-Identifier: Apache-2.0
//! The VGA model's registers in a saved machine state: every register
//! file (sequencer, graphics controller, attribute controller, CRTC, DAC
//! and palette), the DISPI registers and the plane latches. Video memory
//! is saved by the adapter that owns it.

use serde::{Deserialize, Serialize};

use super::Vga;
use super::dispi::Dispi;
use super::regs::{ATTR_COUNT, CRTC_COUNT, GC_COUNT, SEQ_COUNT};
use crate::snapshot::{self, StateError};

const NAME: &str = "VGA";

#[derive(Serialize, Deserialize)]
struct VgaState {
    misc: u8,
    feature: u8,
    video_enable: u8,
    seq_index: u8,
    seq: Vec<u8>,
    gc_index: u8,
    gc: Vec<u8>,
    attr_index: u8,
    attr_data_next: bool,
    attr: Vec<u8>,
    crtc_index: u8,
    crtc: Vec<u8>,
    dac_mask: u8,
    dac_read_index: u8,
    dac_write_index: u8,
    dac_component: u8,
    dac_reading: bool,
    dac: Vec<u8>,
    retrace: bool,
    dispi: Dispi,
    latch: [u8; 4],
}

/// `saved` as an array of `N` bytes, or an error naming `what`.
fn exactly<const N: usize>(saved: Vec<u8>, what: &str) -> Result<[u8; N], StateError> {
    let len = saved.len();
    saved
        .try_into()
        .map_err(|_| snapshot::invalid(NAME, format!("{len} {what} registers, not {N}")))
}

impl Vga {
    /// The registers, DISPI state and latches (not video memory).
    pub fn save_registers(&self) -> Result<Vec<u8>, StateError> {
        let r = &self.regs;
        snapshot::encode(
            NAME,
            &VgaState {
                misc: r.misc,
                feature: r.feature,
                video_enable: r.video_enable,
                seq_index: r.seq_index,
                seq: r.seq.to_vec(),
                gc_index: r.gc_index,
                gc: r.gc.to_vec(),
                attr_index: r.attr_index,
                attr_data_next: r.attr_data_next,
                attr: r.attr.to_vec(),
                crtc_index: r.crtc_index,
                crtc: r.crtc.to_vec(),
                dac_mask: r.dac_mask,
                dac_read_index: r.dac_read_index,
                dac_write_index: r.dac_write_index,
                dac_component: r.dac_component,
                dac_reading: r.dac_reading,
                dac: r.dac.to_vec(),
                retrace: r.retrace,
                dispi: self.dispi.clone(),
                latch: self.latch,
            },
        )
    }

    /// Puts back what [`save_registers`](Self::save_registers) returned;
    /// the adapter is left as it was when the state is refused.
    pub fn restore_registers(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let s: VgaState = snapshot::decode(NAME, bytes)?;
        if s.dispi.vram_len() != self.vram.len() {
            return Err(snapshot::invalid(
                NAME,
                format!(
                    "saved with {} bytes of video memory, not {}",
                    s.dispi.vram_len(),
                    self.vram.len()
                ),
            ));
        }
        let seq = exactly::<SEQ_COUNT>(s.seq, "sequencer")?;
        let gc = exactly::<GC_COUNT>(s.gc, "graphics controller")?;
        let attr = exactly::<ATTR_COUNT>(s.attr, "attribute controller")?;
        let crtc = exactly::<CRTC_COUNT>(s.crtc, "CRT controller")?;
        let dac = exactly::<768>(s.dac, "palette")?;
        let r = &mut self.regs;
        r.misc = s.misc;
        r.feature = s.feature;
        r.video_enable = s.video_enable;
        r.seq_index = s.seq_index;
        r.seq = seq;
        r.gc_index = s.gc_index;
        r.gc = gc;
        r.attr_index = s.attr_index;
        r.attr_data_next = s.attr_data_next;
        r.attr = attr;
        r.crtc_index = s.crtc_index;
        r.crtc = crtc;
        r.dac_mask = s.dac_mask;
        r.dac_read_index = s.dac_read_index;
        r.dac_write_index = s.dac_write_index;
        r.dac_component = s.dac_component;
        r.dac_reading = s.dac_reading;
        r.dac = dac;
        r.retrace = s.retrace;
        self.dispi = s.dispi;
        self.latch = s.latch;
        // Every viewer repaints.
        self.generation = self.generation.wrapping_add(1);
        Ok(())
    }
}
