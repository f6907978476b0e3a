// SPDX-License-Identifier: Apache-2.0
//! The VM's event loop: one thread per VM that waits, with epoll, on the
//! host-side file descriptors of its devices (the passt socket, wake fds,
//! timers) and the virtio queue-notify ioeventfds KVM signals, and hands
//! each readable one to the [`EventHandler`] that asked for it. So both
//! what the host starts and the guest's queue notifications are served
//! here; MMIO and port accesses other than notifies stay on the vCPU
//! threads (as do notifies where KVM refused the ioeventfd).
//!
//! A handler says, before every wait, which of its fds it wants watched
//! ([`EventHandler::interest`]), so a device can stop reading a back-end
//! it has no room for (virtio-net with no receive buffers) without a busy
//! loop, and resume when its wake fd fires. The loop ends when
//! [`EventLoopHandle`] is dropped; the handlers (and whatever they own,
//! such as a passt process) are dropped on the loop's thread as it ends.
//!
//! A [`LoopGate`] holds the loop between two dispatches (no handler runs,
//! no request is half-served) for as long as a [`GateHold`] lives: a
//! machine-state save holds it so that no device serves its queues, plays
//! a timer or takes host input while the machine is captured.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::control::VmControl;

/// The token of the loop's own stop event.
const STOP_TOKEN: u64 = u64::MAX;
/// The token of its gate's wake event.
const GATE_TOKEN: u64 = u64::MAX - 1;
/// Events taken from epoll per wait.
const EVENTS_PER_WAIT: usize = 16;

/// Something a device waits for: host-side fds (a back-end's socket, a
/// wake fd, a timer) or the queue-notify ioeventfds KVM signals for the
/// guest ([`NotifyHandler`](crate::devices::virtio::pci::NotifyHandler)).
pub trait EventHandler: Send {
    /// Appends the fds to watch for input during the next wait. Every
    /// handler is asked again before every wait, whichever handler the
    /// last events went to.
    fn interest(&self, fds: &mut Vec<RawFd>);
    /// `fd`, one of those it asked for before this wait, is readable, hung
    /// up or in error (`events` says which). The watch is level-triggered:
    /// a handler that neither drains the fd nor drops it from its interest
    /// is called again after the next wait.
    fn ready(&mut self, fd: RawFd, events: EventSet);
}

/// The event loop before it runs: add handlers, then [`start`](Self::start).
pub struct EventLoop {
    epoll: Epoll,
    stop: Arc<EventFd>,
    gate: Arc<LoopGate>,
    handlers: Vec<Box<dyn EventHandler>>,
    /// The (handler, fd) pairs registered with epoll.
    watched: Vec<(usize, RawFd)>,
}

impl EventLoop {
    /// An empty loop.
    pub fn new() -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let stop = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP_TOKEN),
        )?;
        let gate = Arc::new(LoopGate::new()?);
        epoll.ctl(
            ControlOperation::Add,
            gate.wake.as_raw_fd(),
            EpollEvent::new(EventSet::IN, GATE_TOKEN),
        )?;
        Ok(Self {
            epoll,
            stop,
            gate,
            handlers: Vec::new(),
            watched: Vec::new(),
        })
    }

    /// Adds a handler.
    pub fn add(&mut self, handler: Box<dyn EventHandler>) {
        self.handlers.push(handler);
    }

    /// The gate that holds this loop between dispatches.
    pub fn gate(&self) -> Arc<LoopGate> {
        self.gate.clone()
    }

    /// Whether no handler was added (then there is nothing to run).
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// Runs the loop on a thread of `control`'s VM (a panic stops the VM).
    pub fn start(self, control: Arc<VmControl>) -> io::Result<EventLoopHandle> {
        let stop = self.stop.clone();
        let thread = crate::threads::spawn_vm_thread("events".to_string(), control, move || {
            self.run();
        })?;
        Ok(EventLoopHandle {
            stop,
            thread: Some(thread),
        })
    }

    /// Waits and dispatches until stopped. Errors end the loop (logged);
    /// the VM runs on without its host-side events.
    pub fn run(mut self) {
        let _ended = GateEnd(self.gate.clone());
        let mut events = [EpollEvent::default(); EVENTS_PER_WAIT];
        loop {
            self.sync_interest();
            let count = match self.epoll.wait(-1, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("event loop: epoll_wait failed: {e}; host events stop");
                    return;
                }
            };
            for event in events.iter().take(count) {
                let token = event.data();
                if token == STOP_TOKEN {
                    return;
                }
                if token == GATE_TOKEN {
                    self.gate.wait_while_held();
                    continue;
                }
                let (index, fd) = split_token(token);
                if let Some(handler) = self.handlers.get_mut(index) {
                    handler.ready(fd, event.event_set());
                }
            }
        }
    }

    /// Registers the fds the handlers want and unregisters the rest.
    fn sync_interest(&mut self) {
        let mut wanted = Vec::new();
        let mut fds = Vec::new();
        for (index, handler) in self.handlers.iter().enumerate() {
            fds.clear();
            handler.interest(&mut fds);
            wanted.extend(fds.iter().map(|&fd| (index, fd)));
        }
        for &(index, fd) in &self.watched {
            if !wanted.contains(&(index, fd)) {
                // A closed fd has left epoll by itself.
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    fd,
                    EpollEvent::new(EventSet::empty(), 0),
                );
            }
        }
        for &(index, fd) in &wanted {
            if self.watched.contains(&(index, fd)) {
                continue;
            }
            let event = EpollEvent::new(EventSet::IN, make_token(index, fd));
            let added = self
                .epoll
                .ctl(ControlOperation::Add, fd, event)
                .or_else(|e| match e.raw_os_error() {
                    // Still registered under a closed fd's number.
                    Some(libc::EEXIST) => self.epoll.ctl(ControlOperation::Modify, fd, event),
                    _ => Err(e),
                });
            if let Err(e) = added {
                log::error!("event loop: cannot watch fd {fd}: {e}");
            }
        }
        self.watched = wanted;
    }
}

/// Holds an event loop between two dispatches on request (see
/// [`LoopGate::hold`]).
pub struct LoopGate {
    /// Makes the loop look at the gate.
    wake: EventFd,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// Holds asked for and not yet released.
    holds: u32,
    /// The loop is waiting at the gate.
    parked: bool,
    /// The loop has ended (it will never park).
    ended: bool,
}

/// While it lives, the loop it came from dispatches nothing.
pub struct GateHold {
    gate: Arc<LoopGate>,
}

impl LoopGate {
    fn new() -> io::Result<Self> {
        Ok(Self {
            wake: EventFd::new(EFD_NONBLOCK)?,
            state: Mutex::new(GateState::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the loop at its next wait (after the handler it is in, if
    /// any, returns) and keeps it there until the hold is dropped. A loop
    /// that has ended counts as held. Fails when the loop has not stopped
    /// within `timeout` (a handler stuck in a blocking call).
    pub fn hold(self: &Arc<Self>, timeout: Duration) -> Result<GateHold, io::Error> {
        let mut state = self.lock();
        state.holds = state.holds.saturating_add(1);
        let hold = GateHold { gate: self.clone() };
        if state.ended || state.parked {
            return Ok(hold);
        }
        self.wake.write(1)?;
        let deadline = Instant::now() + timeout;
        while !state.parked && !state.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the VM's event loop did not stop for the save",
                ));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(hold)
    }

    /// On the loop's thread: waits for as long as a hold is kept.
    fn wait_while_held(&self) {
        let _ = self.wake.read();
        let mut state = self.lock();
        if state.holds == 0 {
            return;
        }
        state.parked = true;
        self.changed.notify_all();
        while state.holds > 0 {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.parked = false;
    }
}

impl Drop for GateHold {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.holds = state.holds.saturating_sub(1);
        self.gate.changed.notify_all();
    }
}

/// Marks the gate's loop as ended when its thread leaves `run`.
struct GateEnd(Arc<LoopGate>);

impl Drop for GateEnd {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.ended = true;
        self.0.changed.notify_all();
    }
}

/// The epoll token of `fd` of handler `index`.
fn make_token(index: usize, fd: RawFd) -> u64 {
    ((index as u64) << 32) | u64::from(fd as u32)
}

/// The handler index and fd of a token.
fn split_token(token: u64) -> (usize, RawFd) {
    ((token >> 32) as usize, token as u32 as RawFd)
}

/// A running event loop: dropping it stops the loop and waits for its
/// thread, which drops the handlers.
pub struct EventLoopHandle {
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for EventLoopHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop.write(1) {
            log::error!("event loop: cannot signal stop: {e}");
            return;
        }
        if let Some(thread) = self.thread.take() {
            // A panic already stopped the VM with its message.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Counts its fd's events; stops watching after `limit`.
    struct Counter {
        fd: EventFd,
        seen: Arc<Mutex<u32>>,
        limit: u32,
        tx: mpsc::Sender<u32>,
    }

    impl EventHandler for Counter {
        fn interest(&self, fds: &mut Vec<RawFd>) {
            if *self.seen.lock().unwrap() < self.limit {
                fds.push(self.fd.as_raw_fd());
            }
        }

        fn ready(&mut self, fd: RawFd, _events: EventSet) {
            assert_eq!(fd, self.fd.as_raw_fd());
            let _ = self.fd.read();
            let mut seen = self.seen.lock().unwrap();
            *seen += 1;
            self.tx.send(*seen).unwrap();
        }
    }

    /// A loop with one [`Counter`] of `limit` events: the loop, the fd to
    /// write, the count and where each count is sent.
    fn counting_loop(limit: u32) -> (EventLoop, EventFd, Arc<Mutex<u32>>, mpsc::Receiver<u32>) {
        let fd = EventFd::new(EFD_NONBLOCK).unwrap();
        let writer = fd.try_clone().unwrap();
        let seen = Arc::new(Mutex::new(0));
        let (tx, rx) = mpsc::channel();
        let mut event_loop = EventLoop::new().unwrap();
        event_loop.add(Box::new(Counter {
            fd,
            seen: seen.clone(),
            limit,
            tx,
        }));
        (event_loop, writer, seen, rx)
    }

    #[test]
    fn test_event_loop_dispatches_until_interest_ends_and_stops_on_drop() {
        // Arrange
        let (event_loop, writer, seen, rx) = counting_loop(2);
        let handle = event_loop.start(Arc::new(VmControl::new())).unwrap();

        // Act
        for _ in 0..3 {
            writer.write(1).unwrap();
            let _ = rx.recv_timeout(Duration::from_millis(300));
        }
        drop(handle);

        // Assert: the third write found the fd unwatched.
        assert_eq!(*seen.lock().unwrap(), 2);
    }

    #[test]
    fn test_gate_holds_the_loop_between_dispatches_until_released() {
        // Arrange
        let (event_loop, writer, _seen, rx) = counting_loop(10);
        let gate = event_loop.gate();
        let handle = event_loop.start(Arc::new(VmControl::new())).unwrap();

        // Act: an event while held waits; it is served once released.
        let hold = gate.hold(Duration::from_secs(5)).unwrap();
        let second = gate.hold(Duration::from_secs(5)).unwrap();
        writer.write(1).unwrap();
        let while_held = rx.recv_timeout(Duration::from_millis(200));
        drop(hold);
        let one_hold_left = rx.recv_timeout(Duration::from_millis(200));
        drop(second);
        let released = rx.recv_timeout(Duration::from_secs(5));
        drop(handle);

        // Assert
        assert!(while_held.is_err());
        assert!(one_hold_left.is_err());
        assert_eq!(released.unwrap(), 1);
    }

    #[test]
    fn test_gate_of_an_ended_loop_holds_at_once() {
        let event_loop = EventLoop::new().unwrap();
        let gate = event_loop.gate();
        drop(event_loop.start(Arc::new(VmControl::new())).unwrap());

        assert!(gate.hold(Duration::from_millis(10)).is_ok());
    }

    #[test]
    fn test_token_round_trips() {
        assert_eq!(split_token(make_token(3, 17)), (3, 17));
    }
}
