//! Keys from the terminal, read on their own thread, and the check that the terminal is
//! still there.
//!
//! Why a thread and our own hang-up check: crossterm 0.29's reader loops forever, at full
//! CPU, when its terminal reaches end-of-file or fails with an I/O error (the tmux session
//! was killed, the SSH connection dropped): its inner read loop only leaves on `WouldBlock`.
//! So the dashboard never calls crossterm while the terminal is hung up (checked with
//! `poll(2)` first), and even in the instant between that check and a read, a reader stuck
//! inside crossterm only holds its own thread: the dashboard sees the hang-up itself and
//! stops the run.

use crossterm::event::{self as term_event, Event as TermEvent};
use crossbeam_channel::{Receiver, Sender};
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What the reader thread reports.
#[derive(Debug)]
pub enum Input {
    Event(TermEvent),
    /// The terminal is gone (hang-up, end of file or an I/O error), with the reason.
    Lost(String),
}

/// The file descriptor crossterm reads keys from: stdin when it is a terminal, else
/// `/dev/tty` (kept open for the life of the process, as crossterm does).
pub fn tty_fd() -> Option<RawFd> {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } == 1 {
        return Some(libc::STDIN_FILENO);
    }
    static DEV_TTY: OnceLock<Option<File>> = OnceLock::new();
    DEV_TTY.get_or_init(|| File::open("/dev/tty").ok()).as_ref().map(|f| f.as_raw_fd())
}

/// True when `fd` reports a hang-up or an error, or is no longer open: reading it would
/// give end-of-file or an error, never a key.
pub fn hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    if n < 0 {
        return std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted;
    }
    p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Stops the reader thread when dropped.
pub struct Reader {
    pub keys: Receiver<Input>,
    stop: Arc<AtomicBool>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Start reading keys and resizes on a thread of its own.
pub fn spawn_reader() -> std::io::Result<Reader> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new().name("keys".into()).spawn(move || read_keys(&tx, &flag))?;
    Ok(Reader { keys: rx, stop })
}

fn read_keys(tx: &Sender<Input>, stop: &AtomicBool) {
    let fd = tty_fd();
    while !stop.load(Ordering::SeqCst) {
        if fd.is_some_and(hung_up) {
            let _ = tx.send(Input::Lost("the terminal hung up".into()));
            return;
        }
        let event = match term_event::poll(Duration::from_millis(50)) {
            Ok(false) => continue,
            Ok(true) => term_event::read(),
            Err(e) => Err(e),
        };
        let message = match event {
            Ok(e) => Input::Event(e),
            Err(e) => Input::Lost(format!("cannot read the terminal: {e}")),
        };
        let lost = matches!(message, Input::Lost(_));
        if tx.send(message).is_err() || lost {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_reads_as_hung_up_and_an_open_one_does_not() {
        let mut fds = [0; 2];
        // SAFETY: a fresh pipe; both ends closed below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (read_end, write_end) = (fds[0], fds[1]);
        assert!(!hung_up(read_end), "writer still open");
        unsafe { libc::close(write_end) };
        assert!(hung_up(read_end), "writer gone: end of file");
        unsafe { libc::close(read_end) };
    }
}
