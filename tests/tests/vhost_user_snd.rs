// SPDX-License-Identifier: Apache-2.0
//! Tier 4: Linux 6.12's snd-virtio driver (with ALSA's aplay and arecord)
//! as the client of Nestbox's virtio sound device, served over vhost-user
//! to QEMU/TCG (`vhost-user-snd-pci`, QEMU ≥ 9).
//!
//! - Playback: the guest plays a 2 s 440 Hz tone (48 kHz stereo S16) into
//!   the WAV backend; the file must hold 440 Hz ± 2 % for 2 s ± 5 %
//!   (measured by zero crossings), and `aplay` must have taken about 2 s
//!   of the guest's time, which it only does if the device paces.
//! - Capture: the host feeds a 1 kHz tone; the guest records 1 s with
//!   arecord and reports the pitch it counted.

use std::time::{Duration, Instant};

use engine::audio::wav::parse_wav;
use engine::audio::{NullSink, NullSource, SoundControl, ToneSource};
use engine::devices::virtio::snd::{Snd, SndConfig};
use nestbox_tests::qemu::{
    VhostUserServer, boot_guest, result_fields, sound_guest_files, temp_path,
};

/// The harness's serial log is per process: one guest at a time.
static ONE_GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The first channel's samples from the first to the last one louder
/// than -40 dBFS, and the pitch from their rising zero crossings.
fn tone_span(samples: &[f32], channels: usize, rate: u32) -> (f64, f64) {
    let left: Vec<f32> = samples.iter().step_by(channels).copied().collect();
    let loud = |s: &f32| s.abs() > 0.01;
    let first = left.iter().position(loud).unwrap_or(0);
    let last = left.iter().rposition(loud).unwrap_or(0);
    let span = &left[first..=last.max(first)];
    let rising = span
        .windows(2)
        .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
        .count();
    let seconds = span.len() as f64 / f64::from(rate);
    (seconds, rising as f64 / seconds.max(1e-9))
}

#[test]
fn test_linux_aplay_plays_a_paced_440_hz_tone_into_the_wav_backend() {
    let test = "test_linux_aplay_plays_a_paced_440_hz_tone_into_the_wav_backend";
    let Some((kernel, initrd)) = sound_guest_files(test) else {
        return;
    };
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let wav = temp_path("snd-play.wav");
    let sink = engine::audio::wav::WavSink::create(&wav).unwrap();
    let control = SoundControl::new(false);
    let snd = Snd::new(
        SndConfig::default(),
        Box::new(sink),
        Box::new(NullSource),
        control.clone(),
    )
    .unwrap();
    let server = VhostUserServer::start("vhost-snd-play", snd);
    let started = Instant::now();
    let serial = boot_guest(
        &kernel,
        &initrd,
        &server.qemu_args("snd"),
        "nestbox.test=snd-play",
        Duration::from_secs(180),
    );
    eprintln!("guest ran for {:.1} s", started.elapsed().as_secs_f64());
    let served = server.finish();
    let fields =
        result_fields(&serial, "snd-play").unwrap_or_else(|| panic!("no result:\n{serial}"));
    assert_eq!(field(&fields, "rc"), Some("0"), "{serial}");
    let start: f64 = field(&fields, "start").unwrap().parse().unwrap();
    let end: f64 = field(&fields, "end").unwrap().parse().unwrap();
    let wall = end - start;

    let data = parse_wav(&std::fs::read(&wav).unwrap()).unwrap();
    let _ = std::fs::remove_file(&wav);
    assert_eq!(data.format.rate, 48000);
    assert_eq!(data.format.channels, 2);
    let (seconds, pitch) = tone_span(&data.samples, 2, 48000);
    eprintln!(
        "tone: {seconds:.3} s at {pitch:.1} Hz; aplay took {wall:.2} s; {:?}",
        control.stats().snapshot()
    );
    assert!((pitch - 440.0).abs() <= 440.0 * 0.02, "pitch {pitch}");
    assert!((seconds - 2.0).abs() <= 2.0 * 0.05, "length {seconds}");
    // Paced: not much faster than real time (unpaced, it takes a few
    // hundred ms), and not far slower.
    assert!((1.9..=3.5).contains(&wall), "aplay took {wall} s");
    assert!(served, "the vhost-user server failed");
}

#[test]
fn test_linux_arecord_captures_the_hosts_1_khz_tone() {
    let test = "test_linux_arecord_captures_the_hosts_1_khz_tone";
    let Some((kernel, initrd)) = sound_guest_files(test) else {
        return;
    };
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let control = SoundControl::new(true);
    let snd = Snd::new(
        SndConfig { capture: true },
        Box::new(NullSink),
        Box::new(ToneSource::new(1000.0)),
        control.clone(),
    )
    .unwrap();
    let server = VhostUserServer::start("vhost-snd-capture", snd);
    let serial = boot_guest(
        &kernel,
        &initrd,
        &server.qemu_args("snd"),
        "nestbox.test=snd-capture",
        Duration::from_secs(180),
    );
    let served = server.finish();
    let fields =
        result_fields(&serial, "snd-capture").unwrap_or_else(|| panic!("no result:\n{serial}"));
    eprintln!("{fields:?} {:?}", control.stats().snapshot());
    assert_eq!(field(&fields, "rc"), Some("0"), "{serial}");
    let samples: u64 = field(&fields, "samples").unwrap().parse().unwrap();
    let pitch: f64 = field(&fields, "pitch").unwrap().parse().unwrap();
    let peak: i64 = field(&fields, "peak").unwrap().parse().unwrap();
    assert_eq!(samples, 48000, "1 s at 48 kHz");
    assert!((pitch - 1000.0).abs() <= 20.0, "pitch {pitch}");
    assert!(peak > 8000, "the tone is half scale, got a peak of {peak}");
    assert!(served, "the vhost-user server failed");
}
