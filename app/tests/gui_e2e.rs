// SPDX-License-Identifier: Apache-2.0
//! The desktop app end to end, as a person uses it, under a private Xvfb:
//! driven only by xdotool (clicks and keys) and checked by screenshots.
//!
//! With empty private XDG directories, `nestbox` (no arguments) opens; the
//! New VM wizard makes a generic-BIOS VM with a new empty disk; Start runs
//! it and the console shows SeaBIOS; Esc typed into the console opens its
//! boot menu (a screenshot of that becomes the README's,
//! `docs/screenshot.png`, when `NESTBOX_REFRESH_SCREENSHOT=1` asks);
//! Ctrl+Q quits with the VM still running in its worker; a new window
//! attaches to it again; Shut down (ignored by SeaBIOS) then Force off
//! stop it. Shorter tests each: Shut down says "Shutting down…" and then
//! offers Force it off; a VM is deleted from its row's right-click menu
//! after the question; an ISO is picked by a typed path when no file
//! dialog answers; a guest that halts for good is shown stopped, why and
//! when in plain words, with its last screen; a snapshot is taken by
//! name and reverted after the question.
//!
//! The app tells the test where its widgets are: with `NESTBOX_UI_MAP` set
//! it writes `{ "label": [x, y, w, h] }` (window pixels) after each frame
//! that changed it, and the test clicks the centres of those rectangles.
//! Screenshots are kept under the target's temporary directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Env, wait_for};
use nestbox_tests::require_file;
use nestbox_tests::xvfb::Xvfb;

/// A label's rectangle in window pixels: x, y, width, height.
type Rect = [i32; 4];

/// QEMU's image tool that writes and reads through a qcow2 chain.
const QEMU_IO: &str = "/usr/bin/qemu-io";

/// How long a widget may take to appear (a loaded 2-core machine renders
/// with llvmpipe).
const WIDGET_TIMEOUT: Duration = Duration::from_secs(60);

/// What SeaBIOS's text looks like through a scaled view: a light grey.
fn is_text_grey(p: &[u8]) -> bool {
    let (r, g, b) = (i32::from(p[0]), i32::from(p[1]), i32::from(p[2]));
    (r - g).abs() <= 6 && (g - b).abs() <= 6 && (0x70..=0xd0).contains(&g)
}

impl Env {
    fn vms(&self) -> PathBuf {
        self.0.join("data/nestbox/vms")
    }

    /// The ids of the library's VMs.
    fn vm_ids(&self) -> Vec<String> {
        let Ok(read) = std::fs::read_dir(self.vms()) else {
            return Vec::new();
        };
        read.flatten()
            .filter(|e| e.path().join("vm.toml").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// The app's process, killed on drop.
struct App {
    child: Child,
    log: PathBuf,
}

impl App {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An 8-bit RGB(A) picture.
struct Picture {
    width: u32,
    height: u32,
    bpp: usize,
    pixels: Vec<u8>,
}

impl Picture {
    fn read(path: &Path) -> Self {
        let file = std::fs::File::open(path).unwrap();
        let decoder = png::Decoder::new(std::io::BufReader::new(file));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut pixels).unwrap();
        pixels.truncate(info.buffer_size());
        Self {
            width: info.width,
            height: info.height,
            bpp: info.color_type.samples(),
            pixels,
        }
    }

    /// The pixels inside `rect` (clipped to the picture).
    fn region(&self, rect: Rect) -> impl Iterator<Item = &[u8]> {
        let [x, y, w, h] = rect;
        let x0 = x.max(0) as u32;
        let y0 = y.max(0) as u32;
        let x1 = ((x + w).max(0) as u32).min(self.width);
        let y1 = ((y + h).max(0) as u32).min(self.height);
        (y0..y1).flat_map(move |row| {
            let start = (row * self.width + x0) as usize * self.bpp;
            let end = (row * self.width + x1.max(x0)) as usize * self.bpp;
            self.pixels[start..end].chunks_exact(self.bpp)
        })
    }

    /// How many text-grey pixels `rect` holds.
    fn text_pixels(&self, rect: Rect) -> usize {
        self.region(rect).filter(|p| is_text_grey(p)).count()
    }

    /// How many pixels of `rect` are near black.
    fn dark_pixels(&self, rect: Rect) -> usize {
        self.region(rect)
            .filter(|p| p[..3].iter().all(|&c| c < 0x20))
            .count()
    }

    /// How many pixels of `rect` differ from `other`'s.
    fn changed_pixels(&self, other: &Picture, rect: Rect) -> usize {
        self.region(rect)
            .zip(other.region(rect))
            .filter(|(a, b)| a[..3] != b[..3])
            .count()
    }
}

/// The app's window as the test sees it: clicks by label, keys, screenshots.
struct Window<'a> {
    x: &'a Xvfb,
    id: String,
    map: PathBuf,
    shots: PathBuf,
    shot_count: std::cell::Cell<u32>,
}

impl<'a> Window<'a> {
    /// Waits for `app`'s window on `x`, whose UI map is `map`; screenshots
    /// go to `shots`.
    fn of(x: &'a Xvfb, app: &mut App, map: &Path, shots: &Path) -> Self {
        Self {
            x,
            id: wait_window(x, app),
            map: map.to_path_buf(),
            shots: shots.to_path_buf(),
            shot_count: Default::default(),
        }
    }

    /// The UI map as the app last wrote it (empty if unreadable).
    fn map(&self) -> BTreeMap<String, Rect> {
        std::fs::read(&self.map)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Saves a screenshot of the window as `<n>-<name>.png`.
    fn shot(&self, name: &str) -> PathBuf {
        let n = self.shot_count.get() + 1;
        self.shot_count.set(n);
        let path = self.shots.join(format!("{n:02}-{name}.png"));
        self.x.screenshot(&self.id, &path);
        path
    }

    /// Fails the test with `what`, the map's labels and a screenshot.
    fn fail(&self, what: &str) -> ! {
        let labels: Vec<String> = self.map().into_keys().collect();
        let shot = self.shot("failure");
        panic!(
            "{what}\n  labels in the UI map: {labels:?}\n  screenshot: {}",
            shot.display()
        );
    }

    /// Waits until `label` is in the map at the same place twice in a row
    /// (a new window or modal settles first); returns its rectangle.
    fn wait_label(&self, label: &str, timeout: Duration) -> Rect {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            let now = self.map().get(label).copied();
            if let Some(rect) = now
                && now == last
            {
                return rect;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(150));
        }
        self.fail(&format!("'{label}' did not appear within {timeout:?}"));
    }

    /// Waits until a label starting with `prefix` is drawn; returns it.
    fn wait_label_starting(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(label) = self.map().into_keys().find(|l| l.starts_with(prefix)) {
                return label;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        self.fail(&format!("no label starting '{prefix}' within {timeout:?}"));
    }

    /// Right-clicks the centre of the widget labelled `label`.
    fn right_click(&self, label: &str) {
        self.click_button(label, "3");
    }

    /// Waits until `label` is no longer drawn.
    fn wait_gone(&self, label: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.map().contains_key(label) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.fail(&format!("'{label}' was still shown after {timeout:?}"));
    }

    /// Clicks the centre of the widget labelled `label`.
    fn click(&self, label: &str) {
        self.click_button(label, "1");
    }

    /// Clicks mouse button `button` (xdotool's number) on the centre of
    /// the widget labelled `label`.
    fn click_button(&self, label: &str, button: &str) {
        let [x, y, w, h] = self.wait_label(label, WIDGET_TIMEOUT);
        let (cx, cy) = ((x + w / 2).to_string(), (y + h / 2).to_string());
        let out = self
            .x
            .xdotool(&["mousemove", "--window", &self.id, &cx, &cy, "click", button]);
        assert!(out.status.success(), "xdotool click failed: {out:?}");
    }

    /// Clicks `label` and waits for `then` to appear, clicking again if a
    /// click was lost (the app may still be starting up).
    fn click_until(&self, label: &str, then: &str) -> Rect {
        for _ in 0..3 {
            self.click(label);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Some(rect) = self.map().get(then) {
                    return *rect;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.fail(&format!("clicking '{label}' did not bring '{then}'"));
    }

    /// Types xdotool key names into the window.
    fn key(&self, keys: &[&str]) {
        self.x.key(&self.id, keys);
    }
}

fn kvm_usable(test: &str) -> bool {
    nestbox_tests::kvm_available(test)
}

/// Prints how far the test got, and when.
fn note(started: Instant, what: &str) {
    eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
}

/// A fresh folder for a test's screenshots, under the test target's.
fn shots_dir(name: &str) -> PathBuf {
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    shots
}

/// Starts the app over `env` on `x`, writing its UI map to `map`.
fn start_app(env: &Env, x: &Xvfb, map: &Path, log: PathBuf) -> App {
    start_app_with(env, x, map, log, &[])
}

/// [`start_app`] with command-line arguments.
fn start_app_with(env: &Env, x: &Xvfb, map: &Path, log: PathBuf, args: &[&str]) -> App {
    let _ = std::fs::remove_file(map);
    let stderr = std::fs::File::create(&log).unwrap();
    let child = env
        .command(args)
        .env("RUST_BACKTRACE", "1")
        .env("DISPLAY", x.display())
        .env("NESTBOX_UI_MAP", map)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("cannot start nestbox");
    App { child, log }
}

/// Waits for the app's window; fails with the app's log if none comes.
fn wait_window(x: &Xvfb, app: &mut App) -> String {
    match x.wait_for_window("Nestbox", Duration::from_secs(90)) {
        Some(id) => id,
        None => {
            let _ = app.child.kill();
            panic!(
                "the Nestbox window did not appear; nestbox said: {}",
                app.log()
            );
        }
    }
}

/// A screenshot of `window` whose console shows at least `min_text` pixels
/// of SeaBIOS text on black (and, with `unlike`, differs from that picture
/// inside the console); None (and no file) if it does not.
fn console_shot(
    window: &Window<'_>,
    name: &str,
    min_text: usize,
    unlike: Option<&Picture>,
) -> Option<(PathBuf, Picture)> {
    let console = window.map().get("Console").copied()?;
    let path = window.shot(name);
    let picture = Picture::read(&path);
    let text = picture.text_pixels(console);
    let dark = picture.dark_pixels(console);
    let area = (console[2] * console[3]) as usize;
    let changed = unlike.map_or(usize::MAX, |u| picture.changed_pixels(u, console));
    if text >= min_text && dark > area / 2 && changed > 500 {
        return Some((path, picture));
    }
    std::fs::remove_file(&path).unwrap();
    None
}

/// Waits until the console in `window` shows a screen of SeaBIOS text;
/// returns that screenshot. With `unlike`, the screen must also differ
/// from that picture inside the console.
fn wait_console_text(window: &Window<'_>, name: &str, unlike: Option<&Picture>) -> PathBuf {
    let console = window.wait_label("Console", WIDGET_TIMEOUT);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        let path = window.shot(name);
        let picture = Picture::read(&path);
        let text = picture.text_pixels(console);
        let dark = picture.dark_pixels(console);
        let area = (console[2] * console[3]) as usize;
        let changed = unlike.map_or(usize::MAX, |u| picture.changed_pixels(u, console));
        if text > 1500 && dark > area / 2 && changed > 500 {
            return path;
        }
        last = format!(
            "{text} text pixels, {dark} dark of {area}, {changed} changed: {}",
            path.display()
        );
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    window.fail(&format!("the console never showed SeaBIOS text ({last})"));
}

#[test]
fn test_gui_end_to_end_wizard_seabios_boot_menu_quit_reattach_force_off() {
    let test = "test_gui_end_to_end_wizard_seabios_boot_menu_quit_reattach_force_off";
    if !kvm_usable(test) {
        return;
    }
    for file in ["bios.bin", "vgabios-virtio.bin"] {
        let path = Path::new("/usr/share/seabios").join(file);
        if require_file(test, &path, "install seabios").is_none() {
            return;
        }
    }
    let started = Instant::now();
    let env = Env::new("gui");
    let Some(x) = Xvfb::start(test) else { return };
    let shots = shots_dir("gui-e2e");
    let map = env.0.join("ui-map.json");

    // An empty library: only New makes sense.
    let mut app = start_app(&env, &x, &map, shots.join("app-1.log"));
    let window = Window::of(&x, &mut app, &map, &shots);
    window.wait_label("New", Duration::from_secs(90));
    window.shot("empty-library");
    note(started, "the window is up");
    assert!(env.vm_ids().is_empty());

    // The wizard: a new empty disk, the generic BIOS profile, the defaults.
    window.click_until("New", "Step 1 of 4: Source");
    window.click("New empty disk");
    window.wait_gone("Choose ISO…", WIDGET_TIMEOUT);
    window.click_until("Next", "Step 2 of 4: Profile");
    window.click("Other (PC with BIOS)");
    window.shot("wizard-profile");
    window.click_until("Next", "Step 3 of 4: Resources");
    window.click_until("Next", "Step 4 of 4: Review");
    window.shot("wizard-review");
    window.click("Create");
    window.wait_gone("Step 4 of 4: Review", Duration::from_secs(120));
    note(started, "the wizard created the VM");

    // The VM is in the library; select it and start it.
    window.click_until("New VM", "stopped");
    let ids = env.vm_ids();
    assert_eq!(ids.len(), 1, "one VM was created: {ids:?}");
    let id = ids[0].clone();
    assert_eq!(env.list_state(&id), "stopped");
    let console = window.click_until("Start", "Console");
    window.wait_label("running", Duration::from_secs(60));
    assert_eq!(env.list_state(&id), "running");
    note(started, "the VM runs");

    // The console has the keyboard once clicked. The window gets the X
    // keyboard focus first, as a window manager would give it.
    let out = x.xdotool(&["windowfocus", "--sync", &window.id]);
    assert!(out.status.success(), "{out:?}");
    let hint = "Press Ctrl+Alt to release the keyboard and mouse";
    let (cx, cy) = (console[0] + console[2] / 2, console[1] + console[3] / 2);
    for _ in 0..3 {
        let out = x.xdotool(&[
            "mousemove",
            "--window",
            &window.id,
            &cx.to_string(),
            &cy.to_string(),
            "click",
            "1",
        ]);
        assert!(out.status.success(), "{out:?}");
        if wait_for(Duration::from_secs(10), || window.map().contains_key(hint)) {
            break;
        }
    }
    window.wait_label(hint, Duration::from_secs(5));

    // SeaBIOS on the console, then Esc while its prompt is up opens the
    // boot menu. The prompt lasts about 2.5 s, and on a loaded machine one
    // screenshot can take a second: while the prompt is up the test only
    // presses Esc (one xdotool call, every ~300 ms); before it, it takes
    // the picture of SeaBIOS, or in the prompt's first half second. SeaBIOS
    // reboots, and asks again, when nothing boots.
    let mut bios: Option<(PathBuf, Picture)> = None;
    let mut prompt_seen: Option<(usize, Instant)> = None;
    let mut presses = 0;
    let mut clicks = 0;
    let opened = wait_for(Duration::from_secs(330), || {
        let serial = env.serial(&id);
        if serial.contains("Select boot device") {
            return true;
        }
        if !serial.contains("SeaBIOS") {
            return false;
        }
        let prompt = serial.rfind("Press ESC for boot menu");
        let past = ["Booting from", "No bootable device"]
            .iter()
            .filter_map(|m| serial.rfind(m))
            .max();
        if prompt.is_none() || prompt < past {
            if bios.is_none() {
                bios = console_shot(&window, "seabios", 800, None);
            }
            return false;
        }
        let at = prompt.unwrap_or(0);
        let since = match prompt_seen {
            Some((seen, when)) if seen == at => when,
            _ => prompt_seen.insert((at, Instant::now())).1,
        };
        if bios.is_none() && since.elapsed() < Duration::from_millis(500) {
            bios = console_shot(&window, "seabios", 800, None);
        }
        if !window.map().contains_key(hint) {
            window.click("Console");
            clicks += 1;
        }
        let out = x.xdotool(&["key", "Escape"]);
        assert!(out.status.success(), "xdotool key failed: {out:?}");
        presses += 1;
        // A late Esc in the open menu would close it again: give each one
        // time to arrive before the next.
        wait_for(Duration::from_millis(300), || {
            env.serial(&id).contains("Select boot device")
        })
    });
    for log in ["serial.log", "worker.log"] {
        let _ = std::fs::copy(env.vm_dir(&id).join(log), shots.join(log));
    }
    if !opened {
        window.fail(&format!(
            "Esc typed into the console did not open the boot menu: {}",
            env.serial(&id)
        ));
    }
    note(
        started,
        &format!(
            "the boot menu opened after {presses} Esc ({clicks} clicks to get the keyboard back)"
        ),
    );
    // The menu's screen: SeaBIOS's text, changed from the picture before.
    let menu = wait_console_text(&window, "boot-menu", bios.as_ref().map(|(_, p)| p));
    match &bios {
        Some((path, _)) => note(
            started,
            &format!(
                "SeaBIOS was on the console before the menu: {}",
                path.display()
            ),
        ),
        None => note(
            started,
            "the prompt came before a picture of SeaBIOS could be taken",
        ),
    }

    // Hand the keyboard back (Ctrl+Alt), for the app's own shortcuts.
    // (xdotool's --window would send synthetic events, which are ignored.)
    let out = x.xdotool(&["windowfocus", "--sync", &window.id]);
    assert!(out.status.success(), "{out:?}");
    let out = x.xdotool(&["keydown", "Control_L", "Alt_L"]);
    assert!(out.status.success(), "{out:?}");
    let released = wait_for(Duration::from_secs(20), || !window.map().contains_key(hint));
    let out = x.xdotool(&["keyup", "Alt_L", "Control_L"]);
    assert!(out.status.success(), "{out:?}");
    if !released {
        window.fail("Ctrl+Alt did not release the keyboard");
    }
    // The README's picture: the library with the VM, the whole boot menu
    // (two shots in a row alike, but for the blinking cursor).
    let console = window.wait_label("Console", WIDGET_TIMEOUT);
    let mut readme = wait_console_text(&window, "readme", None);
    let mut readme_pic = Picture::read(&readme);
    for _ in 0..20 {
        let next = wait_console_text(&window, "readme", None);
        let next_pic = Picture::read(&next);
        let settled = next_pic.changed_pixels(&readme_pic, console) < 300;
        std::fs::remove_file(&readme).unwrap();
        (readme, readme_pic) = (next, next_pic);
        if settled {
            break;
        }
    }
    let serial = env.serial(&id);
    let menu_at = serial.rfind("Select boot device").unwrap_or(0);
    assert!(
        !serial[menu_at..].contains("Booting from"),
        "the boot menu closed again (a late Esc?): {serial}\n  {} after {}",
        readme.display(),
        menu.display()
    );
    let changed = readme_pic.changed_pixels(&Picture::read(&menu), console);
    if changed > 500 {
        eprintln!(
            "note: {changed} console pixels changed between {} and {}",
            menu.display(),
            readme.display()
        );
    }
    // Tests never write tracked files: the README's picture is refreshed
    // only when asked (`NESTBOX_REFRESH_SCREENSHOT=1`, docs/TESTING.md).
    if std::env::var("NESTBOX_REFRESH_SCREENSHOT").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshot.png");
        std::fs::copy(&readme, &docs).unwrap();
    }

    // The VM's own screenshot says the same: SeaBIOS's 720x400 text mode.
    let own = shots.join("vm-own.png");
    let out = env.nestbox(&["screenshot", &id, own.to_str().unwrap()]);
    assert!(out.status.success(), "nestbox screenshot failed: {out:?}");
    let own_pic = Picture::read(&own);
    assert_eq!((own_pic.width, own_pic.height), (720, 400));
    let whole = [0, 0, 720, 400];
    assert!(
        own_pic.text_pixels(whole) > 1500,
        "the VM's own screenshot has no text: {}",
        own.display()
    );

    // Ctrl+Q quits; the VM keeps running in its worker.
    window.key(&["ctrl+q"]);
    match app.wait_exit(Duration::from_secs(30)) {
        Some(status) => assert!(status.success(), "nestbox exited with {status}"),
        None => window.fail("Ctrl+Q did not close the app"),
    }
    assert_eq!(env.list_state(&id), "running", "the VM outlived the app");
    assert!(env.socket(&id).exists());
    drop(app);
    note(started, "the app quit, the VM runs on");

    // A new window attaches to it: running in the library, its screen.
    let mut app = start_app(&env, &x, &map, shots.join("app-2.log"));
    let window = Window {
        id: wait_window(&x, &mut app),
        ..window
    };
    window.wait_label("New VM", Duration::from_secs(90));
    window.wait_label("running", Duration::from_secs(60));
    let again = wait_console_text(&window, "reattached", None);
    note(started, "a new window attached to the VM");
    // The panels may be sized a little differently: compare the amount of
    // text (the boot menu's), not pixels.
    let before = readme_pic.text_pixels(console) as f64;
    let after =
        Picture::read(&again).text_pixels(window.wait_label("Console", WIDGET_TIMEOUT)) as f64;
    assert!(
        (after / before - 1.0).abs() < 0.25,
        "the reattached console shows another screen ({after} vs {before} text pixels): {} vs {}",
        again.display(),
        readme.display()
    );

    // Shut down presses the power button, which SeaBIOS ignores.
    window.click("Shut down");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.list_state(&id), "running", "SeaBIOS has no ACPI OS");
    // Force off pulls the plug.
    window.click_until("Force off", "Force it off now");
    window.click_until("Force it off now", "stopped");
    window.shot("stopped");
    note(started, "Force off stopped the VM");
    assert_eq!(env.list_state(&id), "stopped");
    assert!(
        wait_for(Duration::from_secs(10), || !env.socket(&id).exists()),
        "the socket outlived its worker"
    );
    window.wait_gone("Console", WIDGET_TIMEOUT);

    window.key(&["ctrl+q"]);
    if app.wait_exit(Duration::from_secs(30)).is_none() {
        window.fail("Ctrl+Q did not close the app with no VM running");
    }
    eprintln!(
        "{test}: passed in {:.0} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
}

#[test]
fn test_gui_opens_the_new_vm_wizard_on_a_file_from_the_command_line() {
    // What a file manager's "Open with Nestbox" runs (the desktop entry's
    // `Exec=nestbox %f`): the wizard starts on the file, as for a drop.
    let test = "test_gui_opens_the_new_vm_wizard_on_a_file_from_the_command_line";
    let env = Env::new("gui-open");
    let Some(x) = Xvfb::start(test) else { return };
    let shots = shots_dir("gui-open");
    let iso = env.0.join("installer.iso");
    std::fs::write(&iso, vec![0u8; 64 << 10]).unwrap();
    let map = env.0.join("ui-map.json");
    let iso_arg = iso.to_str().unwrap();
    let mut app = start_app_with(&env, &x, &map, shots.join("app.log"), &[iso_arg]);
    let window = Window::of(&x, &mut app, &map, &shots);
    // No click on New: the wizard is open, on the ISO.
    window.wait_label("Step 1 of 4: Source", Duration::from_secs(90));
    window.shot("wizard-on-file");
    window.click_until("Next", "Step 2 of 4: Profile");
    window.click_until("Next", "Step 3 of 4: Resources");
    window.click_until("Next", "Step 4 of 4: Review");
    window.click("Create");
    window.wait_gone("Step 4 of 4: Review", Duration::from_secs(120));
    let ids = env.vm_ids();
    assert_eq!(ids.len(), 1, "one VM was created: {ids:?}");
    let config = std::fs::read_to_string(env.vm_dir(&ids[0]).join("vm.toml")).unwrap();
    assert!(
        config.contains(iso_arg),
        "the VM does not use {iso_arg}:\n{config}"
    );
    window.key(&["ctrl+q"]);
    if app.wait_exit(Duration::from_secs(30)).is_none() {
        window.fail("Ctrl+Q did not close the app");
    }
}

/// The `key=value` fields of the complete line starting with `prefix` in
/// `text`, once the line has ended.
fn line_fields(text: &str, prefix: &str) -> Option<BTreeMap<String, String>> {
    let at = text.find(prefix)?;
    let line = text[at..].split_once('\n')?.0;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect(),
    )
}

#[test]
fn test_gui_console_size_becomes_the_linux_guests_display_size() {
    let test = "test_gui_console_size_becomes_the_linux_guests_display_size";
    if !kvm_usable(test) {
        return;
    }
    let Some((kernel, initrd)) = nestbox_tests::linux_guest::small_guest_files(test) else {
        return;
    };
    let started = Instant::now();
    let env = Env::new("gui-resize");
    let Some(x) = Xvfb::start(test) else { return };
    let shots = shots_dir("gui-resize");
    let map = env.0.join("ui-map.json");
    // The small kernel's gpu check: it draws colour bands on virtio-gpu's
    // console, then waits up to a minute for its preferred mode to change.
    let cmdline =
        nestbox_tests::linux_guest::AGENT_CMDLINE.replace("nestbox.test=agent", "nestbox.test=gpu");
    let id = env.create_vm(&[
        "--name",
        "Desktop",
        "--profile",
        "linux-kernel",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--cmdline",
        &cmdline,
        "--memory",
        "256M",
        "--cpus",
        "2",
    ]);

    let mut app = start_app(&env, &x, &map, shots.join("app.log"));
    let window = Window::of(&x, &mut app, &map, &shots);
    let resize = |w: &str, h: &str| {
        let out = x.xdotool(&["windowsize", "--sync", &window.id, w, h]);
        assert!(out.status.success(), "xdotool windowsize failed: {out:?}");
    };
    resize("1024", "768");
    window.click_until("Desktop", "stopped");
    window.click_until("Start", "Console");
    window.wait_label("running", Duration::from_secs(60));
    let before = window.wait_label("Console", WIDGET_TIMEOUT);
    note(started, "the VM runs");
    let drawn = wait_for(nestbox_tests::linux_guest::BOOT_TIMEOUT, || {
        env.serial(&id).contains("NESTBOX-GPU-DRAWN")
    });
    if !drawn {
        window.fail(&format!("the guest never drew:\n{}", env.serial(&id)));
    }
    note(started, "the guest drew on virtio-gpu");
    window.shot("drawn");

    // The window grows: the console grows, and the guest follows it.
    resize("1280", "800");
    let mut after = before;
    wait_for(WIDGET_TIMEOUT, || {
        after = window.map().get("Console").copied().unwrap_or(before);
        after[2] > before[2]
    });
    let after = window.wait_label("Console", WIDGET_TIMEOUT);
    let mut fields = None;
    wait_for(Duration::from_secs(120), || {
        fields = line_fields(&env.serial(&id), "NESTBOX-RESULT gpu-mode");
        fields.is_some()
    });
    window.shot("resized");
    for log in ["serial.log", "worker.log"] {
        let _ = std::fs::copy(env.vm_dir(&id).join(log), shots.join(log));
    }
    note(started, "the guest saw its new size");

    let fields = fields.unwrap_or_else(|| window.fail("no gpu-mode result in serial.log"));
    let size = |r: Rect| format!("{}x{}", r[2], r[3]);
    assert!(
        after[2] > before[2] && after[3] > before[3],
        "{before:?} -> {after:?}"
    );
    // virtio_gpu's framebuffer console takes the preferred mode it finds
    // when it starts: the size the console offered before the guest ran.
    let serial = env.serial(&id);
    let drawn = serial
        .lines()
        .find(|l| l.starts_with("NESTBOX-GPU-DRAWN"))
        .and_then(|l| line_fields(&format!("{l}\n"), "NESTBOX-GPU-DRAWN"))
        .map(|f| format!("{}x{}", f["w"], f["h"]));
    assert_eq!(
        drawn,
        Some(size(before)),
        "the guest's first mode is the console's size"
    );
    assert_eq!(
        fields.get("mode").map(String::as_str),
        Some(size(after).as_str()),
        "the guest's new mode is the resized console's: {fields:?}"
    );
}

#[test]
fn test_gui_snapshot_taken_by_name_and_reverted_after_asking() {
    // A stopped VM's snapshots, clicked and typed: take "clean", write
    // into the VM's disk, revert (asked first), and the disk the VM uses
    // reads as it did at the snapshot.
    let test = "test_gui_snapshot_taken_by_name_and_reverted_after_asking";
    if require_file(test, Path::new(QEMU_IO), "install Debian's qemu-utils").is_none() {
        return;
    }
    let env = Env::new("gui-snapshots");
    let Some(x) = Xvfb::start(test) else { return };
    let shots = shots_dir("gui-snapshots");
    let disk = env.blank_image("disk.img", 1 << 20);
    let id = env.create_bios_vm("Snappy", &disk);
    let map = env.0.join("ui-map.json");
    let mut app = start_app(&env, &x, &map, shots.join("app.log"));
    let window = Window::of(&x, &mut app, &map, &shots);

    window.click("New snapshot's name:");
    window.key(&["c", "l", "e", "a", "n"]);
    window.click_until("Take snapshot", "Snapshot \"clean\" taken.");
    window.wait_label("Revert to clean", WIDGET_TIMEOUT);
    window.shot("taken");
    let overlay = std::fs::read_to_string(env.vm_dir(&id).join("vm.toml")).unwrap();
    assert!(overlay.contains("snapshots/disk0-1.qcow2"), "{overlay}");
    // What the VM wrote after the snapshot, into the image it uses now.
    let qemu_io = |image: &Path, command: &str| {
        std::process::Command::new(QEMU_IO)
            .args(["-f", "qcow2", "-c", command])
            .arg(image)
            .output()
            .unwrap()
    };
    let written = qemu_io(
        &env.vm_dir(&id).join("snapshots/disk0-1.qcow2"),
        "write -P 0x5a 0 64k",
    );
    assert!(written.status.success(), "{written:?}");

    window.click_until("Revert to clean", "Yes, revert");
    window.shot("asked");
    window.click_until("Yes, revert", "Back at \"clean\".");
    window.shot("reverted");
    let now = std::fs::read_to_string(env.vm_dir(&id).join("vm.toml")).unwrap();
    assert!(
        now.contains("snapshots/disk0-2.qcow2")
            && !env.vm_dir(&id).join("snapshots/disk0-1.qcow2").exists(),
        "the VM goes on from a new image on top of the snapshot:\n{now}"
    );
    let read = qemu_io(
        &env.vm_dir(&id).join("snapshots/disk0-2.qcow2"),
        "read -P 0 0 64k",
    );
    let said = String::from_utf8_lossy(&read.stdout);
    assert!(
        read.status.success() && !said.contains("Pattern"),
        "the write after the snapshot is still there: {said}"
    );
    window.key(&["ctrl+q"]);
    if app.wait_exit(Duration::from_secs(30)).is_none() {
        window.fail("Ctrl+Q did not close the app");
    }
}

/// Starts the app over `env` for test `name` on `x`; its window.
fn open_app<'a>(env: &Env, x: &'a Xvfb, shots: &Path, app: &mut Option<App>) -> Window<'a> {
    let map = env.0.join("ui-map.json");
    let started = app.insert(start_app(env, x, &map, shots.join("app.log")));
    Window::of(x, started, &map, shots)
}

/// Quits the app with Ctrl+Q.
fn quit(window: &Window<'_>, app: &mut Option<App>) {
    window.key(&["ctrl+q"]);
    if app
        .as_mut()
        .and_then(|a| a.wait_exit(Duration::from_secs(30)))
        .is_none()
    {
        window.fail("Ctrl+Q did not close the app");
    }
}

#[test]
fn test_gui_a_guest_that_stops_itself_says_so_in_plain_words_with_its_last_screen() {
    let test = "test_gui_a_guest_that_stops_itself_says_so_in_plain_words_with_its_last_screen";
    if !common::seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("gui-halt");
    let Some(x) = Xvfb::start(test) else { return };
    let shots = shots_dir("gui-halt");
    // A boot sector that writes a line on the screen, then halts with
    // interrupts off.
    let disk = env.boot_disk("halt_boot");
    let id = env.create_bios_vm("Halts", &disk);
    // No network: SeaBIOS boots the disk without trying iPXE first.
    let config = env.vm_dir(&id).join("vm.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        toml.replace("network = \"nat\"", "network = \"none\""),
    )
    .unwrap();
    let mut app = None;
    let window = open_app(&env, &x, &shots, &mut app);
    window.click_until("Start", "Console");
    let plain = window.wait_label_starting("The guest stopped itself", Duration::from_secs(180));
    assert!(plain.contains("(after "), "says when: {plain}");
    window.wait_label("Its screen when it stopped:", WIDGET_TIMEOUT);
    let shot = window.shot("stopped");
    // The last screen kept is the guest's line on the VGA text screen.
    let last = Picture::read(&env.vm_dir(&id).join("last-screen.png"));
    let lit = last
        .region([0, 0, last.width as i32, 16])
        .filter(|p| p[..3].iter().any(|&c| c > 0x80))
        .count();
    assert!(lit > 100, "the kept screen is blank: {}", shot.display());
    assert!(env.serial(&id).contains("NESTBOX-HALT-TEST"));
    assert!(
        window.map().contains_key("Start"),
        "it can be started again"
    );
    quit(&window, &mut app);
}

#[test]
fn test_gui_deletes_a_vm_from_its_row_menu_after_asking() {
    let test = "test_gui_deletes_a_vm_from_its_row_menu_after_asking";
    let env = Env::new("gui-delete");
    let Some(x) = Xvfb::start(test) else { return };
    let shots = shots_dir("gui-delete");
    let disk = env.blank_image("disk.img", 1 << 20);
    let id = env.create_bios_vm("Doomed", &disk);
    let mut app = None;
    let window = open_app(&env, &x, &shots, &mut app);
    window.right_click("Doomed");
    window.wait_label("Delete…", WIDGET_TIMEOUT);
    window.shot("row-menu");
    window.click_until("Delete…", "Delete the VM");
    window.shot("asked");
    assert!(
        env.vm_dir(&id).is_dir(),
        "nothing is deleted before the yes"
    );
    window.click("Delete the VM");
    window.wait_gone("Doomed", WIDGET_TIMEOUT);
    window.shot("deleted");
    assert!(!env.vm_dir(&id).exists(), "the VM's folder is gone");
    assert!(disk.is_file(), "a disk outside the VM's folder stays");
    quit(&window, &mut app);
}

#[test]
fn test_gui_iso_is_picked_by_typed_path_when_no_file_dialog_answers() {
    let test = "test_gui_iso_is_picked_by_typed_path_when_no_file_dialog_answers";
    let env = Env::new("gui-no-portal");
    let Some(x) = Xvfb::start(test) else { return };
    let shots = shots_dir("gui-no-portal");
    let iso = env.0.join("installer.iso");
    std::fs::write(&iso, vec![0u8; 64 << 10]).unwrap();
    let mut app = None;
    let window = open_app(&env, &x, &shots, &mut app);
    window.click_until("New", "Step 1 of 4: Source");
    // Under a bare Xvfb no desktop portal answers: the app says so.
    window.click("Choose ISO…");
    window.wait_label_starting("No file dialog opened", Duration::from_secs(60));
    window.shot("no-dialog");
    window.click("or its path:");
    let path = iso.to_str().unwrap().to_string();
    let keys: Vec<String> = path
        .chars()
        .map(|c| match c {
            '/' => "slash".to_string(),
            '.' => "period".to_string(),
            '-' => "minus".to_string(),
            '_' => "underscore".to_string(),
            c => c.to_string(),
        })
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    window.key(&keys);
    window.click("Use path (an ISO image)");
    window.wait_label(&path, Duration::from_secs(30));
    window.shot("typed");
    window.click_until("Next", "Step 2 of 4: Profile");
    quit(&window, &mut app);
}

#[test]
fn test_gui_shut_down_says_so_then_offers_force_off() {
    let test = "test_gui_shut_down_says_so_then_offers_force_off";
    if !common::seabios_vm_usable(test) {
        return;
    }
    let env = Env::new("gui-shutdown");
    let Some(x) = Xvfb::start(test) else { return };
    let shots = shots_dir("gui-shutdown");
    let disk = env.blank_image("disk.img", 1 << 20);
    let id = env.create_bios_vm("Stubborn", &disk);
    let mut app = None;
    let window = open_app(&env, &x, &shots, &mut app);
    window.click_until("Start", "Console");
    window.wait_label("running", Duration::from_secs(60));
    // SeaBIOS has no ACPI OS: the power button does nothing.
    window.click_until("Shut down", "Shutting down…");
    window.shot("shutting-down");
    window.wait_label("Force it off", Duration::from_secs(90));
    window.shot("offer");
    assert_eq!(env.list_state(&id), "running");
    window.click_until("Force it off", "stopped");
    window.shot("forced-off");
    assert!(
        wait_for(Duration::from_secs(10), || env.list_state(&id) == "stopped"),
        "the VM is still {}",
        env.list_state(&id)
    );
    quit(&window, &mut app);
}
