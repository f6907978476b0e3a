// SPDX-License-Identifier: Apache-2.0
//! Tier 4: Linux's virtio_gpu driver (its fbdev emulation) as the client of
//! Nestbox's virtio-gpu, served over vhost-user to QEMU/TCG's
//! `vhost-user-gpu-pci`. The guest's framebuffer console draws eight
//! colour bands on virtio_gpu's fbdev;
//! Nestbox's shared framebuffer (fed by the device's sink, teed with the
//! frames forwarded to QEMU's display) must show exactly those bands. Then
//! the host asks for a new display size, through QEMU's display (its D-Bus
//! display's SetUIInfo: the vhost-user front-end owns the displays), and the
//! guest's connector must list the new size as its preferred mode, which
//! it learns from the device's GET_DISPLAY_INFO and GET_EDID answers.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use display::framebuffer::SharedFramebuffer;
use engine::devices::virtio::gpu::vhost_user_display::FrontendSink;
use engine::devices::virtio::gpu::{Gpu, GpuConfig};
use nestbox_tests::gpu::{DbusDisplay, FramebufferSink, marker_field, mismatches};
use nestbox_tests::qemu::{
    VhostUserServer, boot_guest_watching, guest_files, result_fields, temp_path,
};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const NEW_WIDTH: u32 = 800;
const NEW_HEIGHT: u32 = 600;
/// How long the guest's fbdev may take to flush what it drew.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

fn save_png(fb: &SharedFramebuffer, name: &str) {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    match display::screenshot::save(fb, &path) {
        Ok(_) => eprintln!("framebuffer saved to {}", path.display()),
        Err(err) => eprintln!("cannot save the framebuffer: {err}"),
    }
}

#[test]
fn test_linux_virtio_gpu_draws_bands_into_nestbox_framebuffer_and_sees_resize() {
    let test = "test_linux_virtio_gpu_draws_bands_into_nestbox_framebuffer_and_sees_resize";
    let Some((kernel, initrd)) = guest_files(test) else {
        return;
    };
    let started = Instant::now();
    let fb = Arc::new(SharedFramebuffer::with_default_capacity().unwrap());
    let local = Arc::new(FramebufferSink::new(Arc::clone(&fb)));
    let frontend = Arc::new(FrontendSink::new(local.clone()));
    let config = GpuConfig {
        width: WIDTH,
        height: HEIGHT,
        ..GpuConfig::default()
    };
    let gpu = Gpu::new(config, frontend.clone()).unwrap();
    let display = Arc::clone(&frontend);
    let server = VhostUserServer::start_with("vhost-gpu", move |socket| {
        engine::vhost_user::serve_gpu(socket, gpu, display)
    });
    let Some(bus) = DbusDisplay::start(test, &temp_path("gpu-dbus.sock")) else {
        return;
    };
    let mut args = vec![
        "-chardev".to_string(),
        format!("socket,id=vu,path={}", server.socket().display()),
        "-device".to_string(),
        format!("vhost-user-gpu-pci,chardev=vu,xres={WIDTH},yres={HEIGHT}"),
    ];
    args.extend(bus.qemu_args());

    // What the watcher saw: the drawn size, when the framebuffer first
    // showed the bands (or the last mismatch count), the resize request.
    let mut drawn: Option<(u32, u32, Instant)> = None;
    let mut shown: Option<Duration> = None;
    let mut last_mismatch = (0u32, 0u32, usize::MAX);
    let mut resized = false;
    let mut resize_error = None;
    let serial = boot_guest_watching(
        &kernel,
        &initrd,
        &args,
        "nestbox.test=gpu",
        Duration::from_secs(240),
        |serial| {
            if drawn.is_none() {
                let w = marker_field(serial, "NESTBOX-GPU-DRAWN", "w");
                let h = marker_field(serial, "NESTBOX-GPU-DRAWN", "h");
                if let (Some(w), Some(h)) = (w, h) {
                    drawn = Some((w, h, Instant::now()));
                }
            }
            let Some((w, h, at)) = drawn else {
                return;
            };
            if shown.is_none() && !resized {
                if let Ok((fw, fh, rgba)) = fb.screenshot_rgba() {
                    let bad = if (fw, fh) == (w, h) {
                        mismatches(w, h, &rgba)
                    } else {
                        usize::MAX
                    };
                    last_mismatch = (fw, fh, bad);
                    if bad == 0 {
                        shown = Some(at.elapsed());
                    }
                }
                if shown.is_none() && at.elapsed() < FLUSH_WAIT {
                    return;
                }
                save_png(&fb, "vhost_user_gpu_bands.png");
                resized = true;
                resize_error = bus.set_ui_info(NEW_WIDTH, NEW_HEIGHT).err();
            }
        },
    );
    drop(bus);
    let served = server.finish();
    eprintln!("{test}: {:.1} s", started.elapsed().as_secs_f64());

    let (w, h, _) = drawn.unwrap_or_else(|| panic!("the guest never drew:\n{serial}"));
    assert_eq!((w, h), (WIDTH, HEIGHT), "{serial}");
    assert!(
        shown.is_some(),
        "Nestbox's framebuffer never showed the bands (last: {}x{}, {} pixels off)\n{serial}",
        last_mismatch.0,
        last_mismatch.1,
        last_mismatch.2
    );
    assert_eq!(local.mode(), (WIDTH, HEIGHT));
    assert!(
        frontend.is_connected(),
        "QEMU never sent its display socket"
    );
    assert!(
        resize_error.is_none(),
        "resize request failed: {resize_error:?}"
    );
    let fields = result_fields(&serial, "gpu-mode")
        .unwrap_or_else(|| panic!("no gpu-mode result:\n{serial}"));
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("first"), format!("{WIDTH}x{HEIGHT}"), "{serial}");
    assert_eq!(
        field("mode"),
        format!("{NEW_WIDTH}x{NEW_HEIGHT}"),
        "{serial}"
    );
    assert!(served, "the vhost-user server failed");
}
