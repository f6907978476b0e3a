// SPDX-License-Identifier: Apache-2.0
//! Tier 4, the cpal backend: Linux 6.12's snd-virtio driver plays a 2 s
//! 440 Hz tone with aplay; Nestbox's device sends it through cpal (ALSA's
//! default device, which the pulse plugin routes to PulseAudio) into a
//! private PulseAudio's null sink, which plays in real time; `parec`
//! records the sink's monitor. The recording must hold 440 Hz ± 2 % for
//! 2 s ± 5 %, and aplay must have taken about 2 s of the guest's time.
//!
//! This is the only test in its binary: it points the process's
//! environment at the private PulseAudio.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine::audio::host::HostSink;
use engine::audio::{NullSource, SoundControl};
use engine::devices::virtio::snd::{Snd, SndConfig};
use nestbox_tests::qemu::{
    VhostUserServer, boot_guest, result_fields, sound_guest_files, temp_path,
};
use nestbox_tests::skipped_missing;

/// Kills a helper process when the test ends.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(test: &str, name: &str) -> Option<PathBuf> {
    let path = Path::new("/usr/bin").join(name);
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} is missing (install pulseaudio and pulseaudio-utils)",
        path.display()
    );
    skipped_missing(test, &why);
    None
}

#[test]
fn test_linux_aplay_through_cpal_reaches_a_pulseaudio_sink_in_real_time() {
    let test = "test_linux_aplay_through_cpal_reaches_a_pulseaudio_sink_in_real_time";
    let Some((kernel, initrd)) = sound_guest_files(test) else {
        return;
    };
    let (Some(pulseaudio), Some(parec)) = (tool(test, "pulseaudio"), tool(test, "parec")) else {
        return;
    };
    let dir = temp_path("pulse");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("native");
    // SAFETY: this is the only test in this binary and no other thread of
    // it has started, so nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
        std::env::set_var("HOME", &dir);
        std::env::set_var("PULSE_SERVER", format!("unix:{}", socket.display()));
    }
    let _daemon = Kill(
        Command::new(pulseaudio)
            .args([
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
            ])
            .args([
                "-L",
                "module-null-sink sink_name=nestbox rate=48000 channels=2",
            ])
            .arg("-L")
            .arg(format!(
                "module-native-protocol-unix socket={} auth-anonymous=1",
                socket.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(socket.exists(), "PulseAudio did not start");
    let recording = dir.join("monitor.raw");
    let mut recorder = Kill(
        Command::new(parec)
            .args(["-d", "nestbox.monitor", "--raw", "--format=s16le"])
            .args(["--rate=48000", "--channels=2"])
            .stdout(std::fs::File::create(&recording).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );

    let control = SoundControl::new(false);
    let sink = HostSink::open().expect("cpal cannot open PulseAudio's sink");
    let snd = Snd::new(
        SndConfig::default(),
        Box::new(sink),
        Box::new(NullSource),
        control.clone(),
    )
    .unwrap();
    let server = VhostUserServer::start("vhost-snd-host", snd);
    let serial = boot_guest(
        &kernel,
        &initrd,
        &server.qemu_args("snd"),
        "nestbox.test=snd-play",
        Duration::from_secs(180),
    );
    let served = server.finish();
    std::thread::sleep(Duration::from_millis(500));
    let _ = recorder.0.kill();
    let _ = recorder.0.wait();

    let fields =
        result_fields(&serial, "snd-play").unwrap_or_else(|| panic!("no result:\n{serial}"));
    assert_eq!(
        fields
            .iter()
            .find(|(k, _)| k == "rc")
            .map(|(_, v)| v.as_str()),
        Some("0"),
        "{serial}"
    );
    let time = |key: &str| -> f64 {
        let value = fields.iter().find(|(k, _)| k == key).unwrap();
        value.1.parse().unwrap()
    };
    let wall = time("end") - time("start");
    let bytes = std::fs::read(&recording).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let left: Vec<i16> = bytes
        .chunks_exact(4)
        .map(|f| i16::from_le_bytes([f[0], f[1]]))
        .collect();
    let first = left.iter().position(|s| s.abs() > 300).expect("silence");
    let last = left.iter().rposition(|s| s.abs() > 300).unwrap();
    let span = &left[first..=last];
    let seconds = span.len() as f64 / 48000.0;
    let rising = span.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
    let pitch = rising as f64 / seconds;
    eprintln!(
        "recorded {seconds:.3} s at {pitch:.1} Hz; aplay took {wall:.2} s; {:?}",
        control.stats().snapshot()
    );
    assert!((pitch - 440.0).abs() <= 440.0 * 0.02, "pitch {pitch}");
    assert!((seconds - 2.0).abs() <= 2.0 * 0.05, "length {seconds}");
    assert!((1.9..=3.5).contains(&wall), "aplay took {wall} s");
    assert!(served, "the vhost-user server failed");
}
