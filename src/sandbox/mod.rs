//! A sandbox for untrusted Python programs: code rewards and STILL-3-style tool calls
//! (docs/METHODS.md §7.3: "exec in a fresh process; capture stdout; timeout").
//!
//! Each [`run_python`] call runs `python3 -I main.py` in a fresh subprocess with:
//! - limits: wall clock (the whole process group is SIGKILLed), CPU time (RLIMIT_CPU, SIGXCPU),
//!   address space (RLIMIT_AS, so a big allocation raises MemoryError), file size
//!   (RLIMIT_FSIZE), process count (RLIMIT_NPROC), no core dumps;
//! - a private working directory (`HOME`, `TMPDIR` and the cwd), deleted afterwards;
//! - a scrubbed environment: only `PATH`, `LANG`, `HOME`, `TMPDIR`; `-I` makes Python ignore
//!   `PYTHON*` variables, the user site directory and the script's directory;
//! - stdout and stderr captured and cut in the middle ([`Limits::head_chars`] +
//!   [`Limits::tail_chars`]).
//!
//! Isolation, strongest first ([`Isolation`] in every result says which one ran):
//! - **Namespaces** (Linux with unprivileged user namespaces and `mount_setattr`, 5.12+).
//!   A stage mount namespace makes every mount read-only and nosuid and puts a size-limited
//!   tmpfs on the work directory; the program then runs in fresh user, mount, network, pid,
//!   ipc and uts namespaces. Because the sandbox's mount namespace belongs to a less
//!   privileged user namespace, the kernel locks the read-only flags: the program cannot undo
//!   them, and it has no capabilities anyway (bounding set emptied, no_new_privs). Contained:
//!   every write outside the work directory (EROFS), network (only a down loopback exists),
//!   signals to outside processes (pid namespace), and stragglers (when pid 1 dies the kernel
//!   kills the whole pid namespace). As root the process also becomes `nobody` before the
//!   sandbox user namespace, so RLIMIT_NPROC is enforced (the kernel never enforces it for
//!   uid 0) and counted per sandbox (per user namespace), and root-owned files are guarded
//!   by ordinary permissions too. An interpreter under a directory `nobody` cannot enter
//!   (pyenv in /root) is re-exposed by covering that directory with an empty tmpfs and
//!   binding the interpreter's tree back, which also hides the rest of it.
//! - **Fallback** (namespaces refused: containers without user namespaces, old kernels).
//!   Own session and process group, the same rlimits, and as root the uid `nobody`, so the
//!   kernel denies writes to root-owned paths. NOT contained: network, writes to
//!   world-writable places (/tmp, /dev/shm) or to the invoking user's files when not root,
//!   processes that leave the process group (setsid) after a timeout, and RLIMIT_NPROC is
//!   shared by all processes of that uid.
//!
//! Not contained in either mode: reads (the program can read whatever its uid can read),
//! CPU shared with the host, and the kernel itself (this is not a VM).
//! docs/SANDBOX.md has the full account. [`tool`] runs STILL-3-style tool calls on top.

mod capture;
#[cfg(target_os = "linux")]
mod child;
pub mod tool;

pub use capture::{omission_marker, truncate_middle};

use capture::Capture;
#[cfg(target_os = "linux")]
use child::{ChildPlan, Reveal};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The one message users see when there is no Python.
pub const PYTHON_MISSING_HELP: &str =
    "install Python 3 (e.g. apt-get install python3) to use the code verifier; other tasks still run";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{name} not found: {PYTHON_MISSING_HELP}")]
    PythonNotFound { name: String },
    #[error("{path} does not work as a Python interpreter ({detail}): {PYTHON_MISSING_HELP}")]
    PythonBroken { path: String, detail: String },
    #[error("sandbox directory {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error("cannot start {python} in the sandbox: {detail}")]
    Spawn { python: String, detail: String },
    #[error("sandbox: {context}: {source}")]
    Io { context: &'static str, source: std::io::Error },
}

/// Which isolation ran; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    Namespaces,
    Fallback,
}

/// Which isolation [`run_python`] may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IsolationMode {
    /// Namespaces when the kernel allows them, else the fallback.
    Auto,
    /// Namespaces or an error.
    Namespaces,
    /// Never namespaces (for comparison and for tests of the fallback).
    Fallback,
}

/// Resource limits and interpreter choice for one program. Missing keys in a config take
/// the defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Interpreter name looked up on PATH, or a path.
    pub python: String,
    /// Pass `-S` (no site-packages; faster start, but numpy and friends become unimportable).
    pub no_site: bool,
    pub wall_s: f64,
    pub cpu_s: u64,
    /// RLIMIT_AS: virtual address space of each process.
    pub memory_bytes: u64,
    /// RLIMIT_FSIZE: largest file a process may write.
    pub file_bytes: u64,
    /// Size of the tmpfs work directory (namespace mode only).
    pub work_dir_bytes: u64,
    /// RLIMIT_NPROC: processes of the sandbox. In namespace mode two of them are helpers (the
    /// status relay and pid 1), so the program may have `max_processes - 2` more.
    pub max_processes: u64,
    pub head_chars: usize,
    pub tail_chars: usize,
    pub mode: IsolationMode,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            python: "python3".to_string(),
            no_site: false,
            wall_s: 5.0,
            cpu_s: 5,
            memory_bytes: 1 << 30,
            file_bytes: 16 << 20,
            work_dir_bytes: 64 << 20,
            max_processes: 32,
            head_chars: 2000,
            tail_chars: 2000,
            mode: IsolationMode::Auto,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecStatus {
    /// Exit code 0.
    Pass,
    /// Nonzero exit (an exception, a failed assert, `sys.exit(1)`).
    Fail,
    /// Killed by our wall-clock timeout or by the CPU limit.
    Timeout,
    /// MemoryError, or SIGKILL we did not send (the kernel's OOM killer).
    Memory,
    /// Any other signal (SIGSEGV, SIGABRT, ...).
    Crash,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    pub status: ExecStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub wall_s: f64,
    /// User + system CPU time of the program's processes that were waited for.
    pub cpu_s: f64,
    pub isolation: Isolation,
}

/// The uid/gid root drops to: `nobody` on Debian/Ubuntu/Fedora alike.
pub const NOBODY: u32 = 65534;

/// Interpreters already resolved: configured name -> real executable.
static RESOLVED: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

fn find_on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    let path_var = std::env::var_os("PATH")?;
    std::env::split_paths(&path_var).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The real interpreter behind `name` (a PATH name, a path, or a shim such as pyenv's),
/// asked from the interpreter itself with the caller's environment, then cached.
pub fn resolve_python(name: &str) -> Result<PathBuf, SandboxError> {
    let mut cache = RESOLVED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = cache.get_or_insert_with(HashMap::new).get(name) {
        return Ok(path.clone());
    }
    let found = find_on_path(name).ok_or_else(|| SandboxError::PythonNotFound { name: name.to_string() })?;
    let broken = |detail: String| SandboxError::PythonBroken { path: found.display().to_string(), detail };
    let output = Command::new(&found)
        .args(["-I", "-c", "import sys; sys.stdout.write(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| broken(e.to_string()))?;
    let executable = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || executable.is_empty() {
        return Err(broken(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())));
    }
    let real = std::fs::canonicalize(&executable).map_err(|e| broken(format!("{executable}: {e}")))?;
    cache.get_or_insert_with(HashMap::new).insert(name.to_string(), real.clone());
    Ok(real)
}

/// Namespace support learned from the first attempt: 0 unknown, 1 works, 2 refused.
static NAMESPACES: AtomicU64 = AtomicU64::new(0);
static NAMESPACE_REFUSAL: Mutex<String> = Mutex::new(String::new());
static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why namespaces are not used, when a run found out that they are refused.
pub fn namespace_refusal() -> Option<String> {
    (NAMESPACES.load(Ordering::Relaxed) == 2)
        .then(|| NAMESPACE_REFUSAL.lock().map(|s| s.clone()).unwrap_or_default())
}

/// The host side of one run's directory: `main.py` and the (empty) `work` mount point.
struct RunDir {
    root: PathBuf,
}

impl RunDir {
    fn create(code: &str, is_root: bool) -> Result<RunDir, SandboxError> {
        let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let root = std::env::temp_dir().join(format!("retort-sandbox-{}-{n}-{nanos}", std::process::id()));
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxError::WorkDir { path, source }
        };
        // 0711: `nobody` may pass through to main.py and work/ but not list the directory.
        std::fs::DirBuilder::new().mode(0o711).create(&root).map_err(err(&root))?;
        let dir = RunDir { root };
        let script = dir.script();
        std::fs::write(&script, code).map_err(err(&script))?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).map_err(err(&script))?;
        let work = dir.work();
        std::fs::DirBuilder::new().mode(0o700).create(&work).map_err(err(&work))?;
        std::fs::DirBuilder::new().mode(0o700).create(dir.staging()).map_err(err(&dir.staging()))?;
        if is_root {
            // For the fallback: the work directory belongs to the uid the program runs as.
            std::os::unix::fs::chown(&work, Some(NOBODY), Some(NOBODY)).map_err(err(&work))?;
        }
        Ok(dir)
    }
    fn script(&self) -> PathBuf {
        self.root.join("main.py")
    }
    fn work(&self) -> PathBuf {
        self.root.join("work")
    }
    fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // Best effort: in namespace mode the program's files lived in a tmpfs that vanished
        // with its mount namespace; in the fallback they are in work/.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(target_os = "linux")]
fn cstring(path: &Path) -> Result<CString, SandboxError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SandboxError::Io {
        context: "path with a NUL byte",
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

#[cfg(target_os = "linux")]
fn cstr(text: String) -> CString {
    // Invariant: only called with formatted numbers and option names, which hold no NUL.
    CString::new(text).unwrap_or_default()
}

/// The single directory on the interpreter's path that `nobody` cannot traverse, and the
/// child of it to re-expose; `None` when every directory is traversable.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn blocked_ancestor(python: &Path) -> Option<(PathBuf, PathBuf)> {
    let ancestors: Vec<&Path> = python.ancestors().skip(1).collect();
    let mut blocked = ancestors
        .iter()
        .filter(|dir| std::fs::metadata(dir).map(|m| m.mode() & 0o001 == 0).unwrap_or(false));
    let first = blocked.next()?;
    let child = python.ancestors().find(|p| p.parent() == Some(*first))?;
    Some((first.to_path_buf(), child.to_path_buf()))
}

#[cfg(target_os = "linux")]
fn child_plan(limits: &Limits, dir: &RunDir, python: &Path, namespaces: bool) -> Result<ChildPlan, SandboxError> {
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let is_root = euid == 0;
    let inner_id = if is_root { NOBODY } else { 0 };
    let reveal = match (is_root && namespaces).then(|| blocked_ancestor(python)).flatten() {
        Some((blocked, reveal)) => Some(Reveal {
            blocked: cstring(&blocked)?,
            reveal: cstring(&reveal)?,
            staging: cstring(&dir.staging())?,
        }),
        None => None,
    };
    let cpu = limits.cpu_s.max(1);
    let nproc = limits.max_processes.max(3);
    Ok(ChildPlan {
        is_root,
        stage_uid_map: cstr(format!("0 {euid} 1")),
        stage_gid_map: cstr(format!("0 {egid} 1")),
        inner_uid_map: cstr(format!("0 {inner_id} 1")),
        inner_gid_map: cstr(format!("0 {inner_id} 1")),
        work_dir: cstring(&dir.work())?,
        tmpfs_options: cstr(format!(
            "size={},mode=0700,uid={inner_id},gid={inner_id}",
            limits.work_dir_bytes.max(4096)
        )),
        reveal,
        parent_pid: std::process::id() as libc::pid_t,
        rlimits: vec![
            // Soft CPU limit sends SIGXCPU; the hard limit one second later is SIGKILL.
            (libc::RLIMIT_CPU, cpu, cpu + 1),
            (libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
            (libc::RLIMIT_FSIZE, limits.file_bytes, limits.file_bytes),
            (libc::RLIMIT_NPROC, nproc, nproc),
            (libc::RLIMIT_CORE, 0, 0),
        ],
    })
}

fn command(python: &Path, limits: &Limits, dir: &RunDir) -> Command {
    let mut cmd = Command::new(python);
    cmd.arg("-I");
    if limits.no_site {
        cmd.arg("-S");
    }
    cmd.arg(dir.script())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .env("HOME", dir.work())
        .env("TMPDIR", dir.work())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[cfg(not(target_os = "linux"))]
fn spawn(_python: &Path, _limits: &Limits, _dir: &RunDir, _namespaces: bool) -> std::io::Result<std::process::Child> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "the Python sandbox needs Linux"))
}

#[cfg(target_os = "linux")]
fn spawn(python: &Path, limits: &Limits, dir: &RunDir, namespaces: bool) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let plan = child_plan(limits, dir, python, namespaces)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut cmd = command(python, limits, dir);
    // SAFETY: the hooks only make async-signal-safe syscalls on data prepared above.
    unsafe {
        if namespaces {
            cmd.pre_exec(move || child::setup_namespaces(&plan));
        } else {
            cmd.pre_exec(move || child::setup_fallback(&plan));
        }
    }
    cmd.spawn()
}

/// Errors by which the kernel says "no namespaces here" (policy, limits, old kernel), as
/// opposed to a passing shortage (EAGAIN, ENOMEM) that should not disable them for good.
fn is_refusal(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::ENOSYS | libc::EACCES))
}

/// Start the program with the strongest isolation allowed, remembering a refusal.
fn spawn_isolated(python: &Path, limits: &Limits, dir: &RunDir) -> Result<(std::process::Child, Isolation), SandboxError> {
    let spawn_error = |detail: String| SandboxError::Spawn { python: python.display().to_string(), detail };
    let try_namespaces = match limits.mode {
        IsolationMode::Fallback => false,
        IsolationMode::Namespaces => true,
        IsolationMode::Auto => NAMESPACES.load(Ordering::Relaxed) != 2,
    };
    if try_namespaces {
        match spawn(python, limits, dir, true) {
            Ok(child) => {
                NAMESPACES.store(1, Ordering::Relaxed);
                return Ok((child, Isolation::Namespaces));
            }
            Err(ns_error) if limits.mode == IsolationMode::Auto => {
                let child = spawn(python, limits, dir, false).map_err(|fallback_error| {
                    spawn_error(format!("with namespaces: {ns_error}; without: {fallback_error}"))
                })?;
                // The fallback started, so the failure was the namespaces' own.
                if is_refusal(&ns_error) {
                    NAMESPACES.store(2, Ordering::Relaxed);
                    if let Ok(mut reason) = NAMESPACE_REFUSAL.lock() {
                        *reason = ns_error.to_string();
                    }
                }
                return Ok((child, Isolation::Fallback));
            }
            Err(ns_error) => return Err(spawn_error(format!("namespaces required: {ns_error}"))),
        }
    }
    let child = spawn(python, limits, dir, false).map_err(|e| spawn_error(e.to_string()))?;
    Ok((child, Isolation::Fallback))
}

/// How the process ended, from `wait4`.
struct Ended {
    exit_code: Option<i32>,
    signal: Option<i32>,
    cpu_s: f64,
}

fn try_reap(pid: libc::pid_t) -> Option<Ended> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; pid is our own unreaped child.
    let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
    if r != pid {
        return None;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    let cpu_s = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    Some(if libc::WIFEXITED(status) {
        Ended { exit_code: Some(libc::WEXITSTATUS(status)), signal: None, cpu_s }
    } else {
        Ended { exit_code: None, signal: Some(libc::WTERMSIG(status)), cpu_s }
    })
}

fn kill_group(pid: libc::pid_t) {
    // SAFETY: signalling our own child's process group (it called setsid, so pgid == pid).
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

fn set_nonblocking(fd: libc::c_int) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Pumps stdin in and stdout/stderr out until the process ends and the pipes close (or a
/// grace period after the end passes: a straggler that keeps a pipe open is not waited for).
struct Pump {
    stdin: Option<std::process::ChildStdin>,
    input: Vec<u8>,
    written: usize,
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
    out: Capture,
    err: Capture,
}

impl Pump {
    fn step(&mut self, wait: Duration) {
        let mut fds = Vec::with_capacity(3);
        if let Some(s) = &self.stdout {
            fds.push(libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        if let Some(s) = &self.stderr {
            fds.push(libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        if let Some(s) = &self.stdin {
            fds.push(libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLOUT, revents: 0 });
        }
        if fds.is_empty() {
            std::thread::sleep(wait);
            return;
        }
        // SAFETY: fds is a valid array of pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait.as_millis() as libc::c_int) };
        self.read_into(true);
        self.read_into(false);
        self.write_input();
    }

    fn read_into(&mut self, is_stdout: bool) {
        let mut buf = [0u8; 65536];
        loop {
            let (pipe, capture): (&mut dyn Read, &mut Capture) = match (is_stdout, &mut self.stdout, &mut self.stderr) {
                (true, Some(s), _) => (s, &mut self.out),
                (false, _, Some(s)) => (s, &mut self.err),
                _ => return,
            };
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => capture.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        // End of file or a broken pipe: this stream is done.
        if is_stdout {
            self.stdout = None;
        } else {
            self.stderr = None;
        }
    }

    fn write_input(&mut self) {
        let Some(stdin) = self.stdin.as_mut() else { return };
        loop {
            if self.written >= self.input.len() {
                self.stdin = None;
                return;
            }
            match stdin.write(&self.input[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.stdin = None;
                    return;
                }
            }
        }
    }

    fn pipes_open(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }
}

fn classify(ended: &Ended, timed_out: bool, stderr: &str, limits: &Limits) -> ExecStatus {
    if timed_out {
        return ExecStatus::Timeout;
    }
    match (ended.exit_code, ended.signal) {
        (Some(0), _) => ExecStatus::Pass,
        (Some(_), _) if stderr.contains("MemoryError") => ExecStatus::Memory,
        (Some(_), _) => ExecStatus::Fail,
        (None, Some(libc::SIGXCPU)) => ExecStatus::Timeout,
        (None, Some(libc::SIGKILL)) if ended.cpu_s + 0.05 >= limits.cpu_s as f64 => ExecStatus::Timeout,
        (None, Some(libc::SIGKILL)) => ExecStatus::Memory,
        _ => ExecStatus::Crash,
    }
}

/// Runs `code` with `stdin` under `limits` in a fresh, isolated Python process.
pub fn run_python(code: &str, stdin: &str, limits: &Limits) -> Result<ExecResult, SandboxError> {
    let python = resolve_python(&limits.python)?;
    // SAFETY: geteuid cannot fail.
    let is_root = unsafe { libc::geteuid() } == 0;
    let dir = RunDir::create(code, is_root)?;
    let start = Instant::now();
    let (mut child, isolation) = spawn_isolated(&python, limits, &dir)?;
    let pid = child.id() as libc::pid_t;
    let mut pump = Pump {
        stdin: child.stdin.take(),
        input: stdin.as_bytes().to_vec(),
        written: 0,
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        out: Capture::new(limits.head_chars, limits.tail_chars),
        err: Capture::new(limits.head_chars, limits.tail_chars),
    };
    for fd in [pump.stdout.as_ref().map(|s| s.as_raw_fd()), pump.stderr.as_ref().map(|s| s.as_raw_fd()), pump.stdin.as_ref().map(|s| s.as_raw_fd())].into_iter().flatten() {
        set_nonblocking(fd);
    }
    let deadline = Duration::from_secs_f64(limits.wall_s.max(0.01));
    let mut timed_out = false;
    let ended = loop {
        if let Some(ended) = try_reap(pid) {
            break ended;
        }
        if start.elapsed() >= deadline {
            timed_out = true;
            kill_group(pid);
        }
        pump.step(Duration::from_millis(if timed_out { 1 } else { 10 }));
    };
    let wall_s = start.elapsed().as_secs_f64();
    // Whatever is left of the group (only possible in the fallback) goes too.
    kill_group(pid);
    let grace = Instant::now();
    while pump.pipes_open() && grace.elapsed() < Duration::from_millis(200) {
        pump.step(Duration::from_millis(10));
    }
    let stdout = pump.out.finish();
    let stderr = pump.err.finish();
    let status = classify(&ended, timed_out, &stderr, limits);
    drop(dir);
    Ok(ExecResult { status, exit_code: ended.exit_code, signal: ended.signal, stdout, stderr, wall_s, cpu_s: ended.cpu_s, isolation })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(exit_code: Option<i32>, signal: Option<i32>, cpu_s: f64) -> Ended {
        Ended { exit_code, signal, cpu_s }
    }

    #[test]
    fn classification_follows_the_documented_rules() {
        let limits = Limits::default();
        assert_eq!(classify(&ended(Some(0), None, 0.1), false, "", &limits), ExecStatus::Pass);
        assert_eq!(classify(&ended(Some(1), None, 0.1), false, "AssertionError", &limits), ExecStatus::Fail);
        assert_eq!(classify(&ended(Some(1), None, 0.1), false, "MemoryError", &limits), ExecStatus::Memory);
        assert_eq!(classify(&ended(None, Some(libc::SIGKILL), 0.5), true, "", &limits), ExecStatus::Timeout);
        assert_eq!(classify(&ended(None, Some(libc::SIGXCPU), 5.0), false, "", &limits), ExecStatus::Timeout);
        assert_eq!(classify(&ended(None, Some(libc::SIGKILL), 6.0), false, "", &limits), ExecStatus::Timeout);
        assert_eq!(classify(&ended(None, Some(libc::SIGKILL), 0.2), false, "", &limits), ExecStatus::Memory);
        assert_eq!(classify(&ended(None, Some(libc::SIGSEGV), 0.2), false, "", &limits), ExecStatus::Crash);
    }

    #[test]
    fn missing_python_names_the_fix() {
        let err = resolve_python("python3-that-does-not-exist-anywhere").unwrap_err();
        assert_eq!(
            err.to_string(),
            "python3-that-does-not-exist-anywhere not found: install Python 3 (e.g. apt-get install python3) to use the code verifier; other tasks still run"
        );
    }

    #[test]
    fn blocked_ancestor_finds_the_first_closed_directory() {
        let top = std::env::temp_dir().join(format!("retort-sandbox-unit-{}", std::process::id()));
        let closed = top.join("closed");
        let inner = closed.join("inner");
        std::fs::create_dir_all(inner.join("bin")).unwrap();
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let python = inner.join("bin").join("python3");
        assert_eq!(blocked_ancestor(&python), Some((closed.clone(), inner.clone())));
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
        let open_result = blocked_ancestor(&python);
        std::fs::remove_dir_all(&top).unwrap();
        // The system temp dir itself is world-traversable, so nothing is blocked any more.
        assert_eq!(open_result, None);
    }
}
