//! Scenario `fallbacks_reported`: the start-up probe's fallback decisions are reported, and
//! agree with what the kernel really offers where the runner can check it itself.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, ensure};

use crate::{Ctx, Outcome};

/// The optional features tcpwatch falls back from (tcpwatch-core/src/fallbacks.rs).
const FALLBACKS: &[&str] = &[
    "netns_cookie",
    "socket_cookie",
    "reset_reason",
    "sk_storage",
];

/// `tcpwatch snapshot` logs `<feature>=yes|no` for every fallback in its `kernel features
/// probed` line, and one `falling back` warning for each `no`; `netns_cookie` matches the
/// runner's own `getsockopt(SO_NETNS_COOKIE)`.
pub(crate) fn fallbacks_reported(ctx: &Ctx) -> Result<Outcome> {
    let out = Command::new(&ctx.tcpwatch)
        .args(["snapshot", "--json"])
        .env("TCPWATCH_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {}", ctx.tcpwatch.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let log = strip_ansi(&log);
    ensure!(
        out.status.success(),
        "snapshot failed ({}): {log}",
        out.status
    );
    let summary = log
        .lines()
        .find(|l| l.contains("kernel features probed"))
        .context("no `kernel features probed` line in the log")?;
    let mut said = Vec::new();
    for name in FALLBACKS {
        let yes = summary.contains(&format!("{name}=yes"));
        let no = summary.contains(&format!("{name}=no"));
        ensure!(yes != no, "{name} is not reported yes or no: {summary}");
        let warned = log
            .lines()
            .any(|l| l.contains("falling back") && l.contains(&format!("feature=\"{name}\"")));
        ensure!(
            warned == no,
            "{name}={} but a `falling back` warning {}: {log}",
            if no { "no" } else { "yes" },
            if warned { "was logged" } else { "is missing" }
        );
        said.push(format!("{name}={}", if yes { "yes" } else { "no" }));
    }
    let truth = netns_cookies_work();
    ensure!(
        summary.contains(&format!(
            "netns_cookie={}",
            if truth { "yes" } else { "no" }
        )),
        "getsockopt(SO_NETNS_COOKIE) {} here, but tcpwatch says: {summary}",
        if truth { "works" } else { "fails" }
    );
    Ok(Outcome::Pass(format!(
        "{}; SO_NETNS_COOKIE {} (checked by the runner)",
        said.join(" "),
        if truth { "works" } else { "is refused" }
    )))
}

fn netns_cookies_work() -> bool {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let Ok(s) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None) else {
        return false;
    };
    let mut cookie: u64 = 0;
    let mut len: libc::socklen_t = 8;
    // SAFETY: valid socket; cookie and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    rc == 0
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colours() {
        assert_eq!(
            super::strip_ansi("\u{1b}[33m WARN\u{1b}[0m x=1"),
            " WARN x=1"
        );
    }
}
