//! A pseudo-terminal for one web-shell command: the child gets the terminal side as its
//! controlling terminal (so Ctrl-C typed in the browser is a SIGINT from the line discipline,
//! and `exec -it` puts it in raw mode and forwards every key), the gateway reads and writes
//! the other side without blocking.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The two sides of a new pseudo-terminal.
pub struct Pty {
    pub master: AsyncFd<OwnedFd>,
    /// The terminal side, given to the child (and closed here once it runs).
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal of `cols` x `rows`.
pub fn open(cols: u16, rows: u16) -> std::io::Result<Pty> {
    // SAFETY: plain libc calls on fds this function owns; every result is checked.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if master < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let master = OwnedFd::from_raw_fd(master);
        if libc::grantpt(master.as_raw_fd()) != 0 || libc::unlockpt(master.as_raw_fd()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if slave < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let slave = OwnedFd::from_raw_fd(slave);
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY (register): an OwnedFd keeps its one fd open for as long as the AsyncFd owns it.
        let master =
            AsyncFd::register_with_interest(master, Interest::READABLE | Interest::WRITABLE)
                .map_err(std::io::Error::from)?;
        let pty = Pty { master, slave };
        resize(&pty.master, cols, rows)?;
        Ok(pty)
    }
}

/// Sets the terminal's size; the kernel sends SIGWINCH to the command.
pub fn resize(master: &AsyncFd<OwnedFd>, cols: u16, rows: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows.max(1),
        ws_col: cols.max(1),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads what the command wrote; `Ok(0)` once the terminal side is closed by everyone (the
/// kernel answers EIO then, which is the end, not an error).
pub async fn read(master: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = master.readable().await?;
        match guard.try_io(|fd| {
            // SAFETY: reads into a buffer of the given length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(Ok(n)) => return Ok(n),
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// Writes all of `data` (keystrokes) to the command's terminal.
pub async fn write_all(master: &AsyncFd<OwnedFd>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|fd| {
            // SAFETY: writes from a buffer of the given length.
            let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

/// Makes the child's terminal its controlling terminal, in a session of its own (so that
/// the whole command can be signalled as a process group), with every signal at its default.
/// Runs between fork and exec, after the terminal was put on fd 1.
pub fn take_terminal() -> std::io::Result<()> {
    // SAFETY: signal, sigprocmask, setsid and ioctl are async-signal-safe.
    unsafe {
        // A gateway started with signals ignored or blocked (`nohup … &` ignores SIGINT in a
        // non-interactive shell) would pass that on: Ctrl-C would not stop the command.
        for sig in [
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGPIPE,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGWINCH,
            libc::SIGCHLD,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::ioctl(1, libc::TIOCSCTTY, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;

    #[tokio::test]
    async fn a_child_on_the_terminal_writes_follows_its_size_and_gets_ctrl_c() {
        let pty = open(100, 30).unwrap();
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args(["-c", "stty size; trap 'stty size' WINCH; trap 'echo interrupted; exit 7' INT; echo ready; while :; do sleep 0.05; done"])
            .stdin(std::process::Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(std::process::Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(pty.slave.try_clone().unwrap()));
        unsafe {
            cmd.as_std_mut().pre_exec(take_terminal);
        }
        let mut child = cmd.spawn().unwrap();
        // The command keeps its copies of the terminal side until dropped.
        drop(cmd);
        let Pty { master, slave } = pty;
        drop(slave);
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        while !seen.contains("ready") {
            let n = read(&master, &mut buf).await.unwrap();
            assert!(n > 0, "{seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.contains("30 100"), "{seen:?}");
        // A resize reaches the command (SIGWINCH) with the new size.
        resize(&master, 120, 40).unwrap();
        while !seen.contains("40 120") {
            let n = read(&master, &mut buf).await.unwrap();
            assert!(n > 0, "{seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        write_all(&master, b"\x03").await.unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(7));
        loop {
            let n = read(&master, &mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.contains("interrupted"), "{seen:?}");
    }
}
