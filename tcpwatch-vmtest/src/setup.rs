//! Environment set-up of the runner: its own network namespace on the host; as PID 1 of a
//! test VM, file systems (devtmpfs, proc, sysfs, bpffs, tracefs), console, kernel modules and loopback; power-off at the end.

use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use socket2::{Domain, Socket, Type};

use crate::one_line;

/// Kernel modules to load in the VM, one path per line, dependencies first.
const VM_MODULES: &str = "/etc/vmtest-modules";

/// On the host: a network namespace of our own (children inherit it), with `lo` up.
pub(crate) fn host_setup(args: &[String]) -> Result<()> {
    if !args.iter().any(|a| a == "--host") {
        bail!("not PID 1: run as `tcpwatch-vmtest --host --tcpwatch <binary>` (root)");
    }
    // SAFETY: plain syscall; the process is still single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET) (needs root)");
    }
    loopback_up()
}

/// As PID 1 in the VM: file systems, console, modules, loopback. Failures are reported and
/// the scenarios run anyway (they will say what is missing).
pub(crate) fn vm_setup() {
    let _ = std::fs::create_dir_all("/dev");
    let dev = mount("devtmpfs", "/dev", "devtmpfs");
    reopen_console();
    let steps = [
        dev,
        mount("proc", "/proc", "proc"),
        mount("sysfs", "/sys", "sysfs"),
        mount("bpf", "/sys/fs/bpf", "bpf"),
        // The format of tcp:tcp_send_reset (its `reason`, Linux 6.10+) is read from tracefs.
        mount("tracefs", "/sys/kernel/tracing", "tracefs"),
    ];
    for e in steps.into_iter().filter_map(Result::err) {
        println!("VMTEST-LOG {}", one_line(&format!("{e:#}")));
    }
    // SAFETY: plain setenv-free calls; PID 1 is single-threaded here.
    unsafe {
        libc::setenv(
            c"PATH".as_ptr(),
            c"/bin:/sbin:/usr/bin:/usr/sbin".as_ptr(),
            1,
        );
    }
    if let Ok(list) = std::fs::read_to_string(VM_MODULES) {
        for m in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Err(e) = load_module(Path::new(m)) {
                println!("VMTEST-LOG module {m}: {}", one_line(&format!("{e:#}")));
            }
        }
    }
    if let Err(e) = loopback_up() {
        println!("VMTEST-LOG {}", one_line(&format!("{e:#}")));
    }
}

fn mount(source: &str, target: &str, fstype: &str) -> Result<()> {
    let _ = std::fs::create_dir_all(target);
    let c = |s: &str| std::ffi::CString::new(s).map_err(|e| anyhow!("{e}"));
    let (src, tgt, fs) = (c(source)?, c(target)?, c(fstype)?);
    // SAFETY: NUL-terminated strings valid for the call; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mount {fstype} {target}"));
    }
    Ok(())
}

/// Makes /dev/console stdin/stdout/stderr (the initramfs may lack a console node).
fn reopen_console() {
    // SAFETY: NUL-terminated path; the fd is only dup'ed then closed.
    let fd = unsafe { libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if fd < 0 {
        return;
    }
    for target in 0..3 {
        // SAFETY: fd is open; replacing the standard descriptors is the point.
        unsafe { libc::dup2(fd, target) };
    }
    if fd > 2 {
        // SAFETY: fd is ours and no longer needed.
        unsafe { libc::close(fd) };
    }
}

fn load_module(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).context("open")?;
    // SAFETY: finit_module(fd, "", 0): valid fd and empty NUL-terminated parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e).context("finit_module");
        }
    }
    Ok(())
}

/// `ip link set lo up` through SIOCGIFFLAGS/SIOCSIFFLAGS.
fn loopback_up() -> Result<()> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None).context("socket for ioctl")?;
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: valid socket and ifreq for SIOCGIFFLAGS, which fills ifru_flags.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut ifr) } != 0 {
        return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS lo");
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "IFF_UP is 1, fits the short flags"
    )]
    // SAFETY: union field written by SIOCGIFFLAGS above.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: valid socket and ifreq for SIOCSIFFLAGS.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &raw mut ifr) } != 0 {
        return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS lo up");
    }
    Ok(())
}

pub(crate) fn power_off() {
    // SAFETY: flushing file systems and powering off is what PID 1 does last.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Not reached unless reboot failed; PID 1 must not exit quietly.
    loop {
        std::thread::sleep(Duration::from_mins(1));
    }
}
