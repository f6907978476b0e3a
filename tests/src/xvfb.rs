// SPDX-License-Identifier: Apache-2.0
//! GUI tests as a person uses the app: a private Xvfb server, xdotool for
//! clicks and keys, ImageMagick's `import` for screenshots.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::require_file;

/// A private X server for one test.
pub struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    /// Starts Xvfb on a free display, or returns None (with the reason
    /// printed) when the tools are missing and not required.
    pub fn start(test: &str) -> Option<Self> {
        for tool in ["/usr/bin/Xvfb", "/usr/bin/xdotool", "/usr/bin/import"] {
            require_file(
                test,
                Path::new(tool),
                "install xvfb, xdotool and imagemagick",
            )?;
        }
        // One start at a time in this process: two tests starting servers
        // at once would both take the same free number.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let base = 100 + std::process::id() % 400;
        for number in (base..base + 50).chain(500..550) {
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
            let lock = PathBuf::from(format!("/tmp/.X{number}-lock"));
            if socket.exists() || lock.exists() {
                continue;
            }
            let display = format!(":{number}");
            let child = Command::new("/usr/bin/Xvfb")
                .args([
                    &display,
                    "-screen",
                    "0",
                    "1280x800x24",
                    "-nolisten",
                    "tcp",
                    "-noreset",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot start Xvfb");
            let mut server = Self { child, display };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if socket.exists() {
                    return Some(server);
                }
                if let Ok(Some(_)) = server.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = server.child.kill();
        }
        panic!("{test}: cannot start Xvfb on any display");
    }

    /// The DISPLAY value for clients.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Runs xdotool with `args` on this display.
    pub fn xdotool(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/xdotool")
            .args(args)
            .env("DISPLAY", &self.display)
            .output()
            .expect("cannot run xdotool")
    }

    /// Waits for a window whose title contains `name`; returns its id.
    pub fn wait_for_window(&self, name: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let out = self.xdotool(&["search", "--onlyvisible", "--name", name]);
            let ids = String::from_utf8_lossy(&out.stdout);
            if let Some(id) = ids.split_whitespace().next() {
                return Some(id.to_string());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// Focuses `window` and types the xdotool key names in `keys`.
    pub fn key(&self, window: &str, keys: &[&str]) {
        let focus = self.xdotool(&["windowfocus", "--sync", window]);
        assert!(
            focus.status.success(),
            "xdotool windowfocus failed: {focus:?}"
        );
        let mut args = vec!["key", "--delay", "60"];
        args.extend_from_slice(keys);
        let typed = self.xdotool(&args);
        assert!(typed.status.success(), "xdotool key failed: {typed:?}");
    }

    /// Saves a PNG of `window` (or the whole screen for "root"), always as
    /// 8-bit RGB so tests can read pixels the same way.
    pub fn screenshot(&self, window: &str, path: &Path) {
        let out = Command::new("/usr/bin/import")
            .args(["-window", window])
            .arg(format!("PNG24:{}", path.display()))
            .env("DISPLAY", &self.display)
            .output()
            .expect("cannot run import");
        assert!(out.status.success(), "import failed: {out:?}");
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
