// SPDX-License-Identifier: Apache-2.0
//! MSI-X (PCI Local Bus 3.0, 6.8.2): the capability's message control
//! word, the vector table (message address, message data and vector
//! control per vector) and the pending bit array, as a function keeps them
//! in one of its memory BARs.
//!
//! A vector that fires while it or the whole function is masked sets its
//! pending bit instead of sending its message; the message goes out when
//! the vector is unmasked. Every guest access is checked: any offset and
//! any length (the spec only allows aligned dword and qword accesses) reads
//! or writes at most the bytes that exist, and reserved bits stay zero.
//!
//! Messages leave through an [`MsiSink`]: `KVM_SIGNAL_MSI` in a VM
//! ([`crate::devices::irq::KvmMsi`]), a recorder in tests.

use std::sync::Arc;

/// Capability ID of MSI-X.
pub const CAP_ID: u8 = 0x11;
/// Size of the capability in configuration space.
pub const CAP_LEN: usize = 12;
/// Bytes per table entry.
pub const ENTRY_LEN: u64 = 16;
/// The most vectors a function may have.
pub const MAX_VECTORS: u16 = 2048;
/// Message control: MSI-X enable.
pub const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: the vector is masked.
const VECTOR_MASKED: u32 = 1;
/// Interrupt messages must target the local APICs' window.
const MSI_ADDRESS_MASK: u64 = 0xfff0_0000;
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;

/// One interrupt message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// The message address (0xFEEx_xxxx for a local APIC).
    pub address: u64,
    /// The message data (vector and delivery mode).
    pub data: u32,
}

/// Where MSI messages go.
pub trait MsiSink: Send + Sync {
    /// Sends `message`; called from any thread.
    fn signal(&self, message: MsiMessage);
}

/// What a saved machine state holds of a function's MSI-X.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MsixState {
    entries: Vec<[u32; 4]>,
    pending: Vec<bool>,
    enabled: bool,
    function_mask: bool,
}

/// A function's MSI-X state: table, pending bits, enable and function mask.
pub struct Msix {
    /// Per vector: address low, address high, data, vector control.
    entries: Vec<[u32; 4]>,
    pending: Vec<bool>,
    enabled: bool,
    function_mask: bool,
    sink: Arc<dyn MsiSink>,
}

impl Msix {
    /// `vectors` vectors (1 to 2048), all masked as after reset, sending
    /// through `sink`.
    pub fn new(vectors: u16, sink: Arc<dyn MsiSink>) -> Self {
        let count = usize::from(vectors.clamp(1, MAX_VECTORS));
        Self {
            entries: vec![[0, 0, 0, VECTOR_MASKED]; count],
            pending: vec![false; count],
            enabled: false,
            function_mask: false,
            sink,
        }
    }

    /// The number of vectors.
    pub fn vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    /// The table's length in bytes.
    pub fn table_len(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_LEN
    }

    /// The pending bit array's length in bytes (whole qwords).
    pub fn pba_len(&self) -> u64 {
        (self.entries.len() as u64).div_ceil(64) * 8
    }

    /// The capability's bytes (ID first) for a table at `table_offset` and
    /// a PBA at `pba_offset` (both 8-byte aligned) in BAR `bar`. The
    /// enable and function-mask bits (byte 3, bits 7 and 6) are the only
    /// ones the guest may write.
    pub fn capability(&self, bar: u8, table_offset: u32, pba_offset: u32) -> Vec<u8> {
        let control = self.vectors() - 1;
        let mut cap = vec![CAP_ID, 0];
        cap.extend_from_slice(&control.to_le_bytes());
        cap.extend_from_slice(&((table_offset & !7) | u32::from(bar & 7)).to_le_bytes());
        cap.extend_from_slice(&((pba_offset & !7) | u32::from(bar & 7)).to_le_bytes());
        cap
    }

    /// The table, pending bits, enable and function mask, for a saved
    /// machine state.
    pub fn saved(&self) -> MsixState {
        MsixState {
            entries: self.entries.clone(),
            pending: self.pending.clone(),
            enabled: self.enabled,
            function_mask: self.function_mask,
        }
    }

    /// Puts back what [`saved`](Self::saved) returned; refused (and
    /// nothing changed) for a table of another size.
    pub fn restore(&mut self, state: &MsixState) -> Result<(), String> {
        if state.entries.len() != self.entries.len() || state.pending.len() != self.pending.len() {
            return Err(format!(
                "an MSI-X table of {} vectors, not {}",
                state.entries.len(),
                self.entries.len()
            ));
        }
        self.entries.clone_from(&state.entries);
        self.pending.clone_from(&state.pending);
        self.enabled = state.enabled;
        self.function_mask = state.function_mask;
        Ok(())
    }

    /// Whether MSI-X is enabled (INTx is off then).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Applies the message control word the guest wrote; vectors it
    /// unmasks send what is pending.
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_mask = control & CONTROL_FUNCTION_MASK != 0;
        self.deliver_pending();
    }

    /// Vector `vector` fires: its message goes out, or its pending bit is
    /// set while it is masked. Ignored when MSI-X is disabled or the
    /// vector does not exist.
    pub fn fire(&mut self, vector: u16) {
        if !self.enabled {
            return;
        }
        let index = usize::from(vector);
        if index >= self.entries.len() {
            return;
        }
        if self.masked(index) {
            if let Some(bit) = self.pending.get_mut(index) {
                *bit = true;
            }
            return;
        }
        self.send(index);
    }

    /// Whether vector `vector` is pending.
    pub fn is_pending(&self, vector: u16) -> bool {
        self.pending
            .get(usize::from(vector))
            .copied()
            .unwrap_or(false)
    }

    /// Guest read of the table at `offset` (from the table's start).
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self
                .table_byte(offset.saturating_add(i as u64))
                .unwrap_or(0);
        }
    }

    /// Guest write of the table at `offset`; the vector control word keeps
    /// only its mask bit, and unmasking sends what is pending.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            let at = offset.saturating_add(i as u64);
            let entry = usize::try_from(at / ENTRY_LEN).unwrap_or(usize::MAX);
            let word = ((at % ENTRY_LEN) / 4) as usize;
            let shift = (at % 4) * 8;
            let Some(slot) = self
                .entries
                .get_mut(entry)
                .and_then(|words| words.get_mut(word))
            else {
                continue;
            };
            let mut updated = (*slot & !(0xff << shift)) | (u32::from(value) << shift);
            if word == 3 {
                updated &= VECTOR_MASKED;
            }
            *slot = updated;
        }
        self.deliver_pending();
    }

    /// Guest read of the pending bit array at `offset` (read-only).
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            let mut value = 0u8;
            if at < self.pba_len() {
                for bit in 0..8u64 {
                    let vector = usize::try_from(at * 8 + bit).unwrap_or(usize::MAX);
                    if self.pending.get(vector).copied().unwrap_or(false) {
                        value |= 1 << bit;
                    }
                }
            }
            *byte = value;
        }
    }

    fn table_byte(&self, at: u64) -> Option<u8> {
        let entry = usize::try_from(at / ENTRY_LEN).ok()?;
        let word = ((at % ENTRY_LEN) / 4) as usize;
        let value = *self.entries.get(entry)?.get(word)?;
        Some((value >> ((at % 4) * 8)) as u8)
    }

    fn masked(&self, index: usize) -> bool {
        let vector_mask = self
            .entries
            .get(index)
            .and_then(|e| e.get(3))
            .is_none_or(|control| control & VECTOR_MASKED != 0);
        self.function_mask || vector_mask
    }

    fn deliver_pending(&mut self) {
        if !self.enabled || self.function_mask {
            return;
        }
        for index in 0..self.entries.len() {
            let pending = self.pending.get(index).copied().unwrap_or(false);
            if pending && !self.masked(index) {
                self.send(index);
            }
        }
    }

    fn send(&mut self, index: usize) {
        if let Some(bit) = self.pending.get_mut(index) {
            *bit = false;
        }
        let Some(&[lo, hi, data, _]) = self.entries.get(index) else {
            return;
        };
        let address = (u64::from(hi) << 32) | u64::from(lo);
        // A message anywhere but the APICs' window would be a DMA write
        // into guest memory; this platform has no such target.
        if address & !0xffff_ffff != 0 || address & MSI_ADDRESS_MASK != MSI_ADDRESS_BASE {
            log::debug!("MSI-X: vector {index} has address {address:#x}; dropped");
            return;
        }
        self.sink.signal(MsiMessage { address, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<MsiMessage>>);

    impl MsiSink for Recorder {
        fn signal(&self, message: MsiMessage) {
            self.0.lock().unwrap().push(message);
        }
    }

    fn msix(vectors: u16) -> (Msix, Arc<Recorder>) {
        let sink = Arc::new(Recorder::default());
        (Msix::new(vectors, sink.clone()), sink)
    }

    fn program(msix: &mut Msix, vector: u64, data: u32, masked: bool) {
        let base = vector * ENTRY_LEN;
        msix.table_write(base, &0xfee0_0000u32.to_le_bytes());
        msix.table_write(base + 4, &0u32.to_le_bytes());
        msix.table_write(base + 8, &data.to_le_bytes());
        msix.table_write(base + 12, &u32::from(masked).to_le_bytes());
    }

    fn sent(sink: &Recorder) -> Vec<u32> {
        sink.0.lock().unwrap().iter().map(|m| m.data).collect()
    }

    #[test]
    fn test_msix_capability_encodes_size_bar_and_offsets() {
        let (msix, _) = msix(3);
        let cap = msix.capability(0, 0x4000, 0x6000);
        assert_eq!(cap.len(), CAP_LEN);
        assert_eq!(&cap[..4], &[CAP_ID, 0, 2, 0]);
        assert_eq!(u32::from_le_bytes(cap[4..8].try_into().unwrap()), 0x4000);
        assert_eq!(u32::from_le_bytes(cap[8..12].try_into().unwrap()), 0x6000);
    }

    #[test]
    fn test_msix_vectors_start_masked_and_table_reads_back() {
        let (mut msix, _) = msix(2);
        let mut control = [0u8; 4];
        msix.table_read(12, &mut control);
        assert_eq!(u32::from_le_bytes(control), 1);
        program(&mut msix, 1, 0x41, false);
        let mut entry = [0u8; 16];
        msix.table_read(16, &mut entry);
        assert_eq!(&entry[..4], &0xfee0_0000u32.to_le_bytes());
        assert_eq!(&entry[8..12], &0x41u32.to_le_bytes());
        assert_eq!(&entry[12..], &[0; 4]);
    }

    #[test]
    fn test_msix_vector_control_keeps_only_the_mask_bit() {
        let (mut msix, _) = msix(1);
        msix.table_write(12, &0xffff_ffffu32.to_le_bytes());
        let mut control = [0u8; 4];
        msix.table_read(12, &mut control);
        assert_eq!(u32::from_le_bytes(control), 1);
    }

    #[test]
    fn test_msix_disabled_fires_nothing() {
        let (mut msix, sink) = msix(1);
        program(&mut msix, 0, 0x41, false);
        msix.fire(0);
        assert!(sent(&sink).is_empty());
        assert!(!msix.is_pending(0));
    }

    #[test]
    fn test_msix_enabled_unmasked_vector_sends_its_message() {
        let (mut msix, sink) = msix(2);
        program(&mut msix, 1, 0x42, false);
        msix.set_control(CONTROL_ENABLE);
        msix.fire(1);
        let messages = sink.0.lock().unwrap().clone();
        assert_eq!(
            messages,
            vec![MsiMessage {
                address: 0xfee0_0000,
                data: 0x42
            }]
        );
    }

    #[test]
    fn test_msix_masked_vector_sets_pending_and_unmask_delivers() {
        let (mut msix, sink) = msix(2);
        program(&mut msix, 0, 0x43, true);
        msix.set_control(CONTROL_ENABLE);
        msix.fire(0);
        let mut pba = [0u8; 8];
        msix.pba_read(0, &mut pba);
        assert_eq!((sent(&sink).len(), pba[0]), (0, 1));
        msix.table_write(12, &0u32.to_le_bytes());
        msix.pba_read(0, &mut pba);
        assert_eq!((sent(&sink), pba[0]), (vec![0x43], 0));
    }

    #[test]
    fn test_msix_function_mask_holds_all_vectors_until_cleared() {
        let (mut msix, sink) = msix(2);
        program(&mut msix, 0, 0x44, false);
        program(&mut msix, 1, 0x45, false);
        msix.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        msix.fire(0);
        msix.fire(1);
        assert!(sent(&sink).is_empty());
        assert!(msix.is_pending(0) && msix.is_pending(1));
        msix.set_control(CONTROL_ENABLE);
        assert_eq!(sent(&sink), vec![0x44, 0x45]);
        assert!(!msix.is_pending(0) && !msix.is_pending(1));
    }

    #[test]
    fn test_msix_message_outside_apic_window_is_dropped() {
        let (mut msix, sink) = msix(1);
        program(&mut msix, 0, 0x46, false);
        msix.table_write(0, &0x1000u32.to_le_bytes());
        msix.set_control(CONTROL_ENABLE);
        msix.fire(0);
        msix.table_write(0, &0xfee0_0000u32.to_le_bytes());
        msix.table_write(4, &1u32.to_le_bytes());
        msix.fire(0);
        assert!(sent(&sink).is_empty());
    }

    #[test]
    fn test_msix_hostile_accesses_never_panic() {
        let (mut msix, sink) = msix(3);
        msix.set_control(0xffff);
        for offset in [0, 1, 15, 47, 48, 63, 0xfff, u64::MAX - 3, u64::MAX] {
            for len in [0, 1, 2, 3, 4, 8, 16, 64] {
                let mut data = vec![0xffu8; len];
                msix.table_write(offset, &data);
                msix.table_read(offset, &mut data);
                msix.pba_read(offset, &mut data);
            }
        }
        for vector in [0, 2, 3, 0xfffe, 0xffff] {
            msix.fire(vector);
        }
        // Past the table, reads are zero.
        let mut data = [0xffu8; 4];
        msix.table_read(48, &mut data);
        assert_eq!(data, [0; 4]);
        msix.pba_read(8, &mut data);
        assert_eq!(data, [0; 4]);
        assert!(sent(&sink).is_empty());
    }

    #[test]
    fn test_msix_vector_count_is_clamped() {
        assert_eq!(msix(0).0.vectors(), 1);
        assert_eq!(msix(u16::MAX).0.vectors(), MAX_VECTORS);
        assert_eq!(msix(65).0.pba_len(), 16);
    }
}
