//! What the forked child does between `fork` and `exec` (the `pre_exec` hook).
//!
//! Everything here runs in a child forked from a possibly multi-threaded parent, so it may
//! only make async-signal-safe calls: raw syscalls on data the parent prepared in a
//! [`ChildPlan`] (C strings, numbers). No allocation, no locks, no formatting.
//!
//! Namespace sequence (see the module doc of `sandbox` for why each step exists):
//! 1. `setsid` so the parent can kill the whole process group on timeout.
//! 2. Stage namespace: root unshares a mount namespace; a non-root user first enters a user
//!    namespace of its own (uid -> 0) to be allowed to.
//! 3. Mounts: everything private and read-only + nosuid, a size-limited tmpfs on the work
//!    directory, optionally the interpreter's home re-exposed under a tmpfs.
//! 4. Root drops to `nobody` (uid/gid 65534), so that RLIMIT_NPROC applies and the kernel's
//!    ordinary permission checks deny root-owned files.
//! 5. Sandbox namespace: a new user namespace (its own RLIMIT_NPROC count), mount namespace
//!    (the staged mounts become locked: the program cannot make them writable again), network,
//!    pid, ipc and uts namespaces.
//! 6. Fork twice: pid 1 of the new pid namespace is a small reaping init, its child execs
//!    python; this process relays python's wait status so the parent sees python's.

use std::ffi::CString;
use std::io;

/// `mount_setattr(2)` flags and struct (not in the libc crate yet).
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const AT_RECURSIVE: libc::c_uint = 0x8000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

use super::NOBODY;

/// A mount-level trick for interpreters under a directory `nobody` cannot enter (pyenv under
/// /root, mode 0700): cover `blocked` with an empty tmpfs (which also hides the rest of it)
/// and bind `reveal` (the next path component, e.g. /root/.pyenv) back in.
pub struct Reveal {
    pub blocked: CString,
    pub reveal: CString,
    /// An empty directory in the sandbox's host directory used as a staging mount point.
    pub staging: CString,
}

/// Everything the child needs, prepared by the parent.
pub struct ChildPlan {
    pub is_root: bool,
    /// "0 <euid> 1" / "0 <egid> 1" for the stage user namespace (non-root only).
    pub stage_uid_map: CString,
    pub stage_gid_map: CString,
    /// "0 <uid> 1" / "0 <gid> 1" for the sandbox user namespace; uid is the one the process
    /// has in the stage namespace at that point (65534 for root, 0 for a non-root user).
    pub inner_uid_map: CString,
    pub inner_gid_map: CString,
    pub work_dir: CString,
    /// tmpfs options for the work directory ("size=...,mode=0700,uid=..,gid=..").
    pub tmpfs_options: CString,
    pub reveal: Option<Reveal>,
    /// The spawning process: when it dies, the sandbox dies with it.
    pub parent_pid: libc::pid_t,
    /// (resource, soft, hard).
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)>,
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_long(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

static PROC_SETGROUPS: &[u8] = b"/proc/self/setgroups\0";
static PROC_UID_MAP: &[u8] = b"/proc/self/uid_map\0";
static PROC_GID_MAP: &[u8] = b"/proc/self/gid_map\0";
static DENY: &[u8] = b"deny";
static ROOT_DIR: &[u8] = b"/\0";
static PROC_DIR: &[u8] = b"/proc\0";
static PROC_FS: &[u8] = b"proc\0";
static TMPFS: &[u8] = b"tmpfs\0";
static TMPFS_HIDE_OPTIONS: &[u8] = b"mode=0755,size=1m\0";

fn cptr(bytes: &'static [u8]) -> *const libc::c_char {
    bytes.as_ptr().cast()
}

/// Writes `data` to the file at `path` (a NUL-terminated static or plan string).
unsafe fn write_file(path: *const libc::c_char, data: &[u8]) -> io::Result<()> {
    let fd = libc::open(path, libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let written = libc::write(fd, data.as_ptr().cast(), data.len());
    let err = io::Error::last_os_error();
    libc::close(fd);
    if written != data.len() as isize {
        return Err(err);
    }
    Ok(())
}

unsafe fn write_id_maps(uid_map: &CString, gid_map: &CString) -> io::Result<()> {
    write_file(cptr(PROC_SETGROUPS), DENY)?;
    write_file(cptr(PROC_UID_MAP), uid_map.as_bytes())?;
    write_file(cptr(PROC_GID_MAP), gid_map.as_bytes())
}

unsafe fn mount_setattr(path: *const libc::c_char, flags: libc::c_uint, attr: &MountAttr) -> io::Result<()> {
    check_long(libc::syscall(
        libc::SYS_mount_setattr,
        libc::AT_FDCWD,
        path,
        flags,
        attr as *const MountAttr,
        std::mem::size_of::<MountAttr>(),
    ))
}

unsafe fn bind(source: &CString, target: &CString) -> io::Result<()> {
    check(libc::mount(
        source.as_ptr(),
        target.as_ptr(),
        std::ptr::null(),
        libc::MS_BIND | libc::MS_REC,
        std::ptr::null(),
    ))
}

/// Cover `blocked` with a tmpfs and bind `reveal` back (see [`Reveal`]).
unsafe fn reveal_interpreter(reveal: &Reveal) -> io::Result<()> {
    bind(&reveal.reveal, &reveal.staging)?;
    check(libc::mount(
        cptr(TMPFS),
        reveal.blocked.as_ptr(),
        cptr(TMPFS),
        libc::MS_NOSUID | libc::MS_NODEV,
        cptr(TMPFS_HIDE_OPTIONS).cast(),
    ))?;
    check(libc::mkdir(reveal.reveal.as_ptr(), 0o755))?;
    bind(&reveal.staging, &reveal.reveal)
}

/// Steps 2-3: the stage namespace and its mounts.
unsafe fn stage_mounts(plan: &ChildPlan) -> io::Result<()> {
    if plan.is_root {
        check(libc::unshare(libc::CLONE_NEWNS))?;
    } else {
        check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS))?;
        write_id_maps(&plan.stage_uid_map, &plan.stage_gid_map)?;
    }
    check(libc::mount(
        std::ptr::null(),
        cptr(ROOT_DIR),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ))?;
    if let Some(reveal) = &plan.reveal {
        reveal_interpreter(reveal)?;
    }
    let read_only = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    mount_setattr(cptr(ROOT_DIR), AT_RECURSIVE, &read_only)?;
    // /proc stays writable until the sandbox namespace has written its id maps (a write to
    // /proc/self/uid_map needs a writable mount); it is made read-only right after.
    let writable = MountAttr { attr_set: 0, attr_clr: MOUNT_ATTR_RDONLY, propagation: 0, userns_fd: 0 };
    mount_setattr(cptr(PROC_DIR), 0, &writable)?;
    check(libc::mount(
        cptr(TMPFS),
        plan.work_dir.as_ptr(),
        cptr(TMPFS),
        libc::MS_NOSUID | libc::MS_NODEV,
        plan.tmpfs_options.as_ptr().cast(),
    ))
}

/// Step 4: root becomes `nobody`. Dumpable is restored so that the process may still write
/// its own /proc/self/uid_map (setuid makes /proc/self owned by root otherwise).
unsafe fn drop_to_nobody() -> io::Result<()> {
    check(libc::setgroups(0, std::ptr::null()))?;
    check(libc::setgid(NOBODY))?;
    check(libc::setuid(NOBODY))?;
    check(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0))
}

/// Step 5: the sandbox namespaces.
unsafe fn enter_sandbox_namespaces(plan: &ChildPlan) -> io::Result<()> {
    check(libc::unshare(
        libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS,
    ))?;
    write_id_maps(&plan.inner_uid_map, &plan.inner_gid_map)?;
    let read_only = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    mount_setattr(cptr(PROC_DIR), 0, &read_only)
}

/// Closes every descriptor except `keep`, so that the parent's pipes (stdout, stderr and
/// std's exec-error pipe) see EOF when the program's processes are gone, not the helpers.
unsafe fn close_all_except(keep: libc::c_int) {
    let keep = keep.max(0) as u32;
    let ranges = [(0u32, keep.checked_sub(1)), (keep + 1, Some(u32::MAX))];
    for (first, last) in ranges {
        let Some(last) = last else { continue };
        if libc::syscall(libc::SYS_close_range, first, last, 0u32) < 0 {
            for fd in first..last.min(1023) + 1 {
                libc::close(fd as libc::c_int);
            }
        }
    }
}

/// Terminates this process exactly as a process with wait status `status` ended.
unsafe fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFEXITED(status) {
        libc::_exit(libc::WEXITSTATUS(status));
    }
    let signal = libc::WTERMSIG(status);
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    libc::setrlimit(libc::RLIMIT_CORE, &no_core);
    libc::signal(signal, libc::SIG_DFL);
    let mut all: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut all);
    libc::sigprocmask(libc::SIG_UNBLOCK, &all, std::ptr::null_mut());
    libc::kill(libc::getpid(), signal);
    libc::_exit(128 + signal)
}

unsafe fn wait_for(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status: libc::c_int = 0;
    loop {
        let r = libc::waitpid(pid, &mut status, 0);
        if r == pid {
            return Some(status);
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// The helper outside the pid namespace: reads the program's wait status from the init
/// (which, being pid 1, cannot die of most signals itself) and ends the same way, so the
/// parent's `wait4` sees python's exit code or signal.
unsafe fn relay_status(init: libc::pid_t, status_pipe: libc::c_int) -> ! {
    close_all_except(status_pipe);
    let mut raw = [0u8; 4];
    let mut got = 0;
    while got < raw.len() {
        let n = libc::read(status_pipe, raw[got..].as_mut_ptr().cast(), raw.len() - got);
        if n > 0 {
            got += n as usize;
        } else if n == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    let init_status = wait_for(init);
    if got == raw.len() {
        exit_like(libc::c_int::from_ne_bytes(raw));
    }
    match init_status {
        Some(status) => exit_like(status),
        None => libc::_exit(125),
    }
}

/// Pid 1 of the sandbox: reaps every orphan (so zombies do not count against the process
/// limit) until the program itself ends, reports its status, and exits; the kernel then
/// kills whatever is left in the namespace.
unsafe fn run_init(program: libc::pid_t, status_pipe: libc::c_int) -> ! {
    close_all_except(status_pipe);
    loop {
        let mut status: libc::c_int = 0;
        let r = libc::waitpid(-1, &mut status, 0);
        if r == program {
            let raw = status.to_ne_bytes();
            libc::write(status_pipe, raw.as_ptr().cast(), raw.len());
            libc::_exit(0);
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            libc::_exit(125);
        }
    }
}

/// Drop every capability from the bounding set so that exec (as uid 0 of the sandbox user
/// namespace) grants none: the program cannot mount, remount or unshare further.
unsafe fn drop_capability_bounding_set() {
    for cap in 0..64 {
        // EINVAL past the last capability the kernel knows; nothing else can fail here
        // because the process holds CAP_SETPCAP in its own user namespace.
        libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
    }
}

unsafe fn apply_rlimits(plan: &ChildPlan) -> io::Result<()> {
    for &(resource, soft, hard) in &plan.rlimits {
        let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
        check(libc::setrlimit(resource, &limit))?;
    }
    Ok(())
}

/// Dies with the spawning process (after the last credential change, which clears it),
/// so that a killed `retort` leaves no program running.
unsafe fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
    if libc::getppid() != parent {
        libc::_exit(125);
    }
    Ok(())
}

/// Marks every descriptor above stderr close-on-exec: one that another thread of the parent
/// opened without O_CLOEXEC must not leak into the program.
unsafe fn no_inherited_descriptors() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
}

/// The program's own setup: enter the work directory, give up every privilege, limits.
unsafe fn prepare_program(plan: &ChildPlan) -> io::Result<()> {
    no_inherited_descriptors();
    check(libc::chdir(plan.work_dir.as_ptr()))?;
    drop_capability_bounding_set();
    check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
    apply_rlimits(plan)
}

/// Forks, returning the child's pid in the parent and 0 in the child.
unsafe fn fork() -> io::Result<libc::pid_t> {
    let pid = libc::fork();
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// The `pre_exec` hook for the namespace mode. Returns in the process that will exec.
///
/// Process tree: this process (outside the new pid namespace) relays the status; its child
/// is pid 1 of the namespace (an init that reaps); that one's child execs python, so python
/// is an ordinary process whose signals (SIGXCPU, SIGTERM, ...) act as usual.
///
/// # Safety
/// Must only be called in a freshly forked child (inside `Command::pre_exec`).
pub unsafe fn setup_namespaces(plan: &ChildPlan) -> io::Result<()> {
    check(libc::setsid())?;
    stage_mounts(plan)?;
    if plan.is_root {
        drop_to_nobody()?;
    }
    enter_sandbox_namespaces(plan)?;
    die_with_parent(plan.parent_pid)?;
    let mut pipe = [0 as libc::c_int; 2];
    check(libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC))?;
    let init = fork()?;
    if init > 0 {
        relay_status(init, pipe[0]);
    }
    // Pid 1. If the relay dies (the parent's timeout kill), so does the namespace.
    check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
    // A /proc that shows only the sandbox's processes (best effort: the kernel refuses it
    // when the host /proc has locked submounts; the host /proc then stays, read-only).
    libc::mount(
        cptr(PROC_FS),
        cptr(PROC_DIR),
        cptr(PROC_FS),
        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        std::ptr::null(),
    );
    let program = fork()?;
    if program > 0 {
        run_init(program, pipe[1]);
    }
    libc::close(pipe[0]);
    libc::close(pipe[1]);
    prepare_program(plan)
}

/// The `pre_exec` hook when namespaces are unavailable: own session, `nobody` when root
/// (so the kernel denies writes to root-owned paths and RLIMIT_NPROC applies), limits.
///
/// # Safety
/// Must only be called in a freshly forked child (inside `Command::pre_exec`).
pub unsafe fn setup_fallback(plan: &ChildPlan) -> io::Result<()> {
    check(libc::setsid())?;
    if plan.is_root {
        drop_to_nobody()?;
    }
    die_with_parent(plan.parent_pid)?;
    prepare_program(plan)
}
