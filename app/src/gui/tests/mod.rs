// SPDX-License-Identifier: Apache-2.0
//! Headless tests of the app with egui_kittest: a fake backend, a fake file
//! picker, a temporary VM folder and a fake host; widgets are found by
//! their labels in the accessibility tree.

mod grab;
mod library;
mod snapshots;
mod wizard;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use display::framebuffer::SharedFramebuffer;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use engine::host::HostResources;

use super::NestboxApp;
use super::picker::{FilePicker, PickKind};
use crate::library::caps::Caps;
use crate::library::config::{Boot, Created, Disk, DiskBus, DiskFormat, Media, SCHEMA, VmFile};
use crate::library::prefs::Preferences;
use crate::library::store::VmStore;
use crate::library::testdir::TestDir;
use crate::worker::api::{RunState, VmBackend, VmCommand, VmEvent};

const GIB: u64 = 1 << 30;

/// What the fake backend was told and what it answers.
#[derive(Default)]
pub struct FakeState {
    pub states: HashMap<String, RunState>,
    pub started: Vec<String>,
    pub commands: Vec<(String, VmCommand)>,
    pub running_mib: u64,
    pub start_error: Option<String>,
    pub framebuffer: Option<Arc<SharedFramebuffer>>,
}

/// A backend whose state the test holds on to.
#[derive(Clone, Default)]
pub struct FakeBackend(pub Rc<RefCell<FakeState>>);

impl VmBackend for FakeBackend {
    fn state(&self, id: &str) -> RunState {
        self.0
            .borrow()
            .states
            .get(id)
            .cloned()
            .unwrap_or(RunState::Stopped)
    }

    fn start(&mut self, id: &str) -> Result<(), String> {
        let mut state = self.0.borrow_mut();
        if let Some(err) = &state.start_error {
            return Err(err.clone());
        }
        state.started.push(id.to_string());
        state.states.insert(id.to_string(), RunState::Running);
        Ok(())
    }

    fn command(&mut self, id: &str, command: VmCommand) -> Result<(), String> {
        self.0.borrow_mut().commands.push((id.to_string(), command));
        Ok(())
    }

    fn framebuffer(&mut self, _id: &str) -> Option<Arc<SharedFramebuffer>> {
        self.0.borrow().framebuffer.clone()
    }

    fn poll(&mut self) -> Vec<(String, VmEvent)> {
        Vec::new()
    }

    fn running_memory_mib(&self) -> u64 {
        self.0.borrow().running_mib
    }
}

/// A picker answering with preset files.
#[derive(Default)]
pub struct FakePicker(pub Vec<(PickKind, PathBuf)>);

impl FilePicker for FakePicker {
    fn pick(&mut self, kind: PickKind) -> Option<PathBuf> {
        self.0
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| p.clone())
    }
}

/// A host with this much RAM, CPUs and free disk space.
pub fn host(memory_gib: u64, cpus: u32, free_gib: u64) -> Caps {
    Caps::new(
        HostResources {
            memory_bytes: memory_gib * GIB,
            cpus,
        },
        free_gib * GIB,
    )
}

/// A test's temporary folder with a VM store in it.
pub struct Fixture {
    pub dir: TestDir,
    pub store: VmStore,
    pub backend: FakeBackend,
}

impl Fixture {
    pub fn new(tag: &str) -> Self {
        let dir = TestDir::new(tag);
        let store = VmStore::new(dir.path().join("vms"));
        Self {
            dir,
            store,
            backend: FakeBackend::default(),
        }
    }

    /// An empty file in the fixture's folder.
    pub fn file(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, b"x").unwrap();
        path
    }

    /// A VM booting a (fake) kernel, with these disks, created in the store.
    pub fn vm(&self, name: &str, memory_mib: u64, disks: &[&Path]) -> String {
        let vm = VmFile {
            schema: SCHEMA,
            name: name.to_string(),
            profile: "linux-kernel".to_string(),
            memory_mib,
            vcpus: 1,
            os: "Linux".to_string(),
            network: Default::default(),
            sound: Default::default(),
            allow_overcommit: false,
            suspend_on_host_shutdown: false,
            created: Created::UnixSeconds(1),
            boot: Boot::Kernel {
                kernel: self.file("vmlinuz"),
                initrd: None,
                cmdline: String::new(),
            },
            // A fixed size: the console offers none, so the commands the
            // tests look at are only those they caused (the tests of the
            // size that follows the window set it back).
            display: crate::library::config::Display {
                resolution: crate::library::config::Resolution::Fixed {
                    width: 1024,
                    height: 768,
                },
                ..Default::default()
            },
            disks: disks
                .iter()
                .map(|p| Disk {
                    path: p.to_path_buf(),
                    format: DiskFormat::Raw,
                    readonly: false,
                    media: Media::Disk,
                    bus: DiskBus::Virtio,
                    ejected: false,
                    backing: Vec::new(),
                    cache: Default::default(),
                })
                .collect(),
        };
        self.store.create(&vm).unwrap()
    }

    /// A VM (as [`vm`](Self::vm)) whose guest display follows the window.
    pub fn vm_following_the_window(&self, name: &str) -> String {
        let id = self.vm(name, 1024, &[]);
        let mut vm = self.store.get(&id).unwrap();
        vm.display.resolution = crate::library::config::Resolution::FollowWindow;
        self.store.update(&id, &vm).unwrap();
        id
    }

    /// The commands the fake backend was sent, in order (any VM).
    pub fn commands(&self) -> Vec<VmCommand> {
        self.backend
            .0
            .borrow()
            .commands
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// The app over this fixture on `caps`, with `picker`.
    pub fn app(&self, caps: Caps, picker: FakePicker) -> NestboxApp {
        NestboxApp::new(
            self.store.clone(),
            Preferences::default(),
            caps,
            Box::new(self.backend.clone()),
            Box::new(picker),
        )
    }
}

/// A harness drawing `app` in a 1200×800 window.
pub fn harness(app: NestboxApp) -> Harness<'static, NestboxApp> {
    let mut harness = Harness::builder()
        .with_size([1200.0, 800.0])
        .build_ui_state(|ui, app: &mut NestboxApp| app.ui(ui), app);
    harness.run();
    harness
}

/// Whether the button (or other widget) labelled `label` is enabled.
pub fn enabled(harness: &Harness<'_, NestboxApp>, label: &str) -> bool {
    !harness.get_by_label(label).accesskit_node().is_disabled()
}

/// Steps `harness` until `done` holds (at most about 10 s).
pub fn wait_for(harness: &mut Harness<'_, NestboxApp>, done: impl Fn(&NestboxApp) -> bool) {
    for _ in 0..1000 {
        if done(harness.state()) {
            return;
        }
        harness.step();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("timed out waiting");
}

/// Clicks into the console's screen, below its header.
pub fn click_console(harness: &mut Harness<'_, NestboxApp>) {
    use eframe::egui::{Event, Modifiers, PointerButton, vec2};
    let header = harness.get_all_by_label("running").last().unwrap().rect();
    let pos = header.left_bottom() + vec2(50.0, 150.0);
    harness.hover_at(pos);
    for pressed in [true, false] {
        harness.event(Event::PointerButton {
            pos,
            button: PointerButton::Primary,
            pressed,
            modifiers: Modifiers::NONE,
        });
        harness.step();
    }
    harness.run();
}
