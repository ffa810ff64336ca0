//! Running external commands: echoed before they run, errors that name the command, and
//! root privileges through `sudo -n` when the user is not root.

use std::cell::OnceCell;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context as _, Result, bail};

/// A command line under construction.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(String, OsString)>,
    dir: Option<PathBuf>,
    null_stdin: bool,
}

/// Output of a finished command.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            dir: None,
            null_stdin: false,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.envs.push((key.to_owned(), value.into()));
        self
    }

    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    /// No stdin: nothing may wait for input (CI has none).
    pub fn no_stdin(mut self) -> Self {
        self.null_stdin = true;
        self
    }

    /// The command as a shell-like line, for messages.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.envs {
            let _ = write!(s, "{k}={} ", v.to_string_lossy());
        }
        s.push_str(&self.program.to_string_lossy());
        for a in &self.args {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains([' ', '\'', '"']) {
                let _ = write!(s, " '{a}'");
            } else {
                let _ = write!(s, " {a}");
            }
        }
        s
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        if let Some(dir) = &self.dir {
            c.current_dir(dir);
        }
        if self.null_stdin {
            c.stdin(Stdio::null());
        }
        c
    }

    /// Runs with inherited stdout/stderr, after echoing the command line; fails on a non-zero
    /// exit status.
    pub fn run(&self) -> Result<()> {
        eprintln!("+ {}", self.display());
        let status = self
            .command()
            .status()
            .with_context(|| self.spawn_failed())?;
        if !status.success() {
            bail!("`{}` failed ({status})", self.display());
        }
        Ok(())
    }

    /// Runs like [`Cmd::run`] (stderr inherited), but also keeps a copy of stdout while
    /// passing it through line by line. Returns the exit status and stdout, whatever the
    /// status; fails only when the program cannot be started.
    pub fn run_tee(&self) -> Result<(ExitStatus, String)> {
        use std::io::{BufRead as _, Write as _};
        eprintln!("+ {}", self.display());
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| self.spawn_failed())?;
        let mut kept = String::new();
        if let Some(out) = child.stdout.take() {
            let mut reader = std::io::BufReader::new(out);
            let mut line = String::new();
            let mut stdout = std::io::stdout();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = stdout.write_all(line.as_bytes());
                        let _ = stdout.flush();
                        kept.push_str(&line);
                    }
                }
            }
        }
        let status = child
            .wait()
            .with_context(|| format!("waiting for `{}`", self.display()))?;
        Ok((status, kept))
    }

    /// Runs quietly and captures the output, whatever the exit status. Fails only when the
    /// program cannot be started (e.g. not installed).
    pub fn output(&self) -> Result<Output> {
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .with_context(|| self.spawn_failed())?;
        Ok(Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs quietly; the captured stdout if the exit status is 0, else an error with stderr.
    pub fn stdout(&self) -> Result<String> {
        let out = self.output()?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                self.display(),
                out.status,
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }

    /// Replaces this process with the command (signals then go straight to it). Returns only
    /// on failure.
    pub fn exec(&self) -> anyhow::Error {
        use std::os::unix::process::CommandExt as _;
        eprintln!("+ exec {}", self.display());
        let err = self.command().exec();
        anyhow::Error::new(err).context(self.spawn_failed())
    }

    fn spawn_failed(&self) -> String {
        format!("cannot start `{}`", self.program.to_string_lossy())
    }

    /// The same command run through `sudo -n` (environment passed with `env`).
    fn under_sudo(&self) -> Self {
        let mut args: Vec<OsString> = vec!["-n".into()];
        if !self.envs.is_empty() {
            args.push("env".into());
            for (k, v) in &self.envs {
                let mut kv = OsString::from(format!("{k}="));
                kv.push(v);
                args.push(kv);
            }
        }
        args.push(self.program.clone());
        args.extend(self.args.iter().cloned());
        Self {
            program: "sudo".into(),
            args,
            envs: Vec::new(),
            dir: self.dir.clone(),
            null_stdin: self.null_stdin,
        }
    }
}

/// How this process can run commands that need root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    Root,
    /// Not root, but `sudo -n` works (passwordless).
    Sudo,
    None,
}

/// Privilege detection, done at most once and only when first needed (`sudo -n true` costs a
/// process).
#[derive(Default)]
pub struct Privileges(OnceCell<Privilege>);

impl Privileges {
    pub fn get(&self) -> Privilege {
        *self.0.get_or_init(|| {
            if is_root() {
                Privilege::Root
            } else if Cmd::new("sudo")
                .args(["-n", "true"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                Privilege::Sudo
            } else {
                Privilege::None
            }
        })
    }

    /// `cmd` made to run as root (as is, or under `sudo -n`); an error naming the command when
    /// that is impossible.
    pub fn as_root(&self, cmd: &Cmd) -> Result<Cmd> {
        match self.get() {
            Privilege::Root => Ok(cmd.clone()),
            Privilege::Sudo => Ok(cmd.under_sudo()),
            Privilege::None => bail!(
                "`{}` needs root, and this user is not root and has no passwordless sudo \
                 (`sudo -n true` fails): run it as root, or re-run `cargo xtask` as root",
                cmd.display()
            ),
        }
    }
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_uid(&s))
        .is_some_and(|uid| uid == 0)
}

/// The effective uid from the text of `/proc/self/status` (`Uid: real effective saved fs`).
pub fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Looks a program up in `PATH`.
pub use tcpwatch_testkit::find_program as find_in_path;

/// The cargo that runs this xtask (`$CARGO`), else `cargo` from `PATH`.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_effective_uid() {
        let status = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nUid:\t1000\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1001\t1000\t1000\n"), Some(1001));
        assert_eq!(effective_uid("Name:\tx\n"), None);
        assert_eq!(effective_uid("Uid:\t1000\n"), None);
    }

    #[test]
    fn sudo_wrapping_keeps_environment() {
        let c = Cmd::new("apt-get")
            .args(["install", "-y"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        assert_eq!(
            c.under_sudo().display(),
            "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y"
        );
        assert_eq!(Cmd::new("mount").arg("a b").display(), "mount 'a b'");
    }
}
