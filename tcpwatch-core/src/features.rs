//! Kernel feature analysis, the pure half of start-up probing (the daemon's
//! `tcpwatch/src/kernel/probe.rs` adds what needs syscalls and logs the result): what the
//! running kernel's BTF says tcpwatch can use, the one refusal message naming what is missing
//! and the minimum kernel (docs/kernels.md), the `/readyz` summary and the metric values.
//!
//! A tracepoint `tp` exists with BTF exactly when the typedef `btf_trace_<tp>` does, `iter/tcp`
//! when `struct bpf_iter__tcp` does. The final word on `tp_btf` versus `raw_tp` is the
//! loader's: [`Features::record_attached`].
use std::fmt::Write as _;

use serde::Serialize;

use crate::btf::{Btf, BtfError};
use crate::offsets;

/// The oldest kernel tcpwatch supports (and tests: `cargo xtask vm-test`).
pub const MIN_KERNEL: &str = "5.10";

/// The tracepoints tcpwatch attaches to (those of `tcpwatch_common::hooks::HOOKS`).
pub use tcpwatch_common::hooks::TRACEPOINTS;

/// Whether the kernel offers something.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    Yes,
    No,
    /// The probe itself failed (e.g. no `CAP_BPF`): see the feature's detail.
    Unknown,
}

impl Support {
    fn word(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "no",
            Self::Unknown => "unknown",
        }
    }

    /// Value of the `tcpwatch_kernel_feature` gauge: 1 yes, 0 no, -1 unknown.
    #[must_use]
    pub fn gauge(self) -> i64 {
        match self {
            Self::Yes => 1,
            Self::No => 0,
            Self::Unknown => -1,
        }
    }
}

/// One probed feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Feature {
    /// Short name, also the metric label (`btf`, `ringbuf`, `iter_tcp`, ...).
    pub name: &'static str,
    pub support: Support,
    /// tcpwatch refuses to start without it.
    pub required: bool,
    /// What it is and the first kernel that has it.
    pub what: &'static str,
    pub since: &'static str,
    /// Probe error or extra facts; empty when there is nothing to say.
    pub detail: String,
    /// What tcpwatch loses without it (detectors, signals), for optional features it uses;
    /// empty for the required ones and those it does not use by default.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub affects: &'static str,
}

/// One tracepoint tcpwatch attaches to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tracepoint {
    pub name: &'static str,
    /// `btf_trace_<name>` is in the kernel's BTF (the tracepoint exists, `tp_btf` can use it).
    pub in_btf: bool,
    /// How the loader attached it (`tp_btf` or `raw_tp`), once known.
    pub attached: Option<&'static str>,
}

/// Everything probed at start-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Features {
    /// `uname -r`.
    pub kernel_release: String,
    /// (major, minor) parsed from the release.
    pub kernel_version: Option<(u32, u32)>,
    /// Every probed feature, in probing order.
    pub items: Vec<Feature>,
    pub tracepoints: Vec<Tracepoint>,
    /// Kernel struct fields tcpwatch reads (`struct.path`) that this kernel lacks.
    pub missing_required_fields: Vec<String>,
    pub missing_optional_fields: Vec<String>,
    /// How many fields tcpwatch reads in all.
    pub fields_total: usize,
}

/// Options of the probe.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeOptions {
    /// Report BPF iterators as absent (`--pretend-no-iter`: tests the refusal path).
    pub pretend_no_iter: bool,
}

/// The BTF-derived part of the probe (pure: no syscalls), `btf` being the raw contents of
/// `/sys/kernel/btf/vmlinux` if readable. Parses them; [`from_parsed`] takes them parsed.
#[must_use]
pub fn from_btf(release: &str, btf: Option<&[u8]>, opts: ProbeOptions) -> Features {
    let parsed = btf.map(Btf::parse);
    from_parsed(
        release,
        btf.zip(parsed.as_ref()).map(|(raw, p)| (raw, p.as_ref())),
        opts,
    )
}

/// [`from_btf`] on BTF read and parsed once by the caller: `btf` is the raw contents of
/// `/sys/kernel/btf/vmlinux` (if readable) with the result of [`Btf::parse`] on them.
#[must_use]
pub fn from_parsed(
    release: &str,
    btf: Option<(&[u8], Result<&Btf, &BtfError>)>,
    opts: ProbeOptions,
) -> Features {
    let strings = btf.and_then(|(raw, _)| btf_strings(raw));
    let parsed = btf.map(|(_, p)| p);
    let mut f = Features {
        kernel_release: release.to_owned(),
        kernel_version: parse_release(release),
        items: Vec::new(),
        tracepoints: TRACEPOINTS
            .iter()
            .map(|&name| Tracepoint {
                name,
                in_btf: strings.is_some_and(|s| has_name(s, &format!("btf_trace_{name}"))),
                attached: None,
            })
            .collect(),
        missing_required_fields: Vec::new(),
        missing_optional_fields: Vec::new(),
        fields_total: offsets::FIELDS.len(),
    };
    let (btf_support, btf_detail, parsed) = match parsed {
        None => (Support::No, String::new(), None),
        Some(Err(e)) => (Support::No, format!("unparsable: {e}"), None),
        Some(Ok(b)) => (Support::Yes, format!("{} types", b.type_count()), Some(b)),
    };
    f.push(Feature {
        name: "btf",
        support: btf_support,
        required: true,
        what: "kernel BTF (CONFIG_DEBUG_INFO_BTF=y, /sys/kernel/btf/vmlinux)",
        since: "5.5",
        detail: btf_detail,
        affects: "",
    });
    let known = |yes: bool| match (&parsed, yes) {
        (None, _) => Support::Unknown,
        (Some(_), true) => Support::Yes,
        (Some(_), false) => Support::No,
    };
    let iter = parsed.is_some_and(|b| b.has_struct("bpf_iter__tcp"));
    f.push(Feature {
        name: "iter_tcp",
        support: if opts.pretend_no_iter {
            Support::No
        } else {
            known(iter)
        },
        required: true,
        what: "BPF iterator over TCP sockets (iter/tcp)",
        since: "5.9",
        detail: if opts.pretend_no_iter {
            "treated as absent (--pretend-no-iter)".into()
        } else {
            String::new()
        },
        affects: "",
    });
    let in_btf = f.tracepoints.iter().filter(|t| t.in_btf).count();
    let missing: Vec<&str> = f
        .tracepoints
        .iter()
        .filter(|t| !t.in_btf)
        .map(|t| t.name)
        .collect();
    f.push(Feature {
        name: "tracepoints",
        support: known(missing.is_empty()),
        required: true,
        what: "tracepoints sock:inet_sock_set_state, tcp:tcp_retransmit_skb, \
               tcp:tcp_send_reset, tcp:tcp_receive_reset",
        since: "5.5",
        detail: if missing.is_empty() {
            format!("{in_btf}/{} in BTF", TRACEPOINTS.len())
        } else {
            format!("missing: {}", missing.join(", "))
        },
        affects: "",
    });
    f.push(Feature {
        name: "tp_btf",
        support: known(missing.is_empty()),
        required: false,
        what: "BTF-typed tracepoint programs (tp_btf; raw_tp otherwise)",
        since: "5.5",
        detail: String::new(),
        affects: "",
    });
    push_fields(&mut f, parsed);
    f
}

/// The `fields` feature: every field of `offsets::FIELDS` looked up in the BTF.
fn push_fields(f: &mut Features, parsed: Option<&Btf>) {
    if let Some(b) = parsed {
        for (_, spec) in offsets::FIELDS {
            if b.member_offset(spec.strukt, spec.path).is_err() {
                let name = format!("{}.{}", spec.strukt, spec.path);
                if spec.required {
                    f.missing_required_fields.push(name);
                } else {
                    f.missing_optional_fields.push(name);
                }
            }
        }
    }
    let fields = match parsed {
        None => Support::Unknown,
        Some(_) if f.missing_required_fields.is_empty() => Support::Yes,
        Some(_) => Support::No,
    };
    let detail = if f.missing_required_fields.is_empty() {
        String::new()
    } else {
        format!("missing: {}", f.missing_required_fields.join(", "))
    };
    f.push(Feature {
        name: "fields",
        support: fields,
        required: true,
        what: "kernel struct fields tcpwatch reads (tcpwatch-core/src/offsets.rs)",
        since: "5.10",
        detail,
        affects: "",
    });
}

impl Features {
    /// Appends a probed feature.
    pub fn push(&mut self, f: Feature) {
        self.items.push(f);
    }

    /// Sets the detail of the feature `name`, if probed.
    pub fn set_detail(&mut self, name: &str, detail: String) {
        if let Some(f) = self.items.iter_mut().find(|f| f.name == name) {
            f.detail = detail;
        }
    }

    /// A feature by name.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Feature> {
        self.items.iter().find(|f| f.name == name)
    }

    /// Records how the loader attached a tracepoint (`tp_btf` or `raw_tp`).
    pub fn record_attached(&mut self, tracepoint: &str, variant: &'static str) {
        if let Some(t) = self.tracepoints.iter_mut().find(|t| t.name == tracepoint) {
            t.attached = Some(variant);
        }
    }

    /// Required features this kernel lacks (`unknown` is not `missing`: the loader decides).
    #[must_use]
    pub fn missing_required(&self) -> Vec<&Feature> {
        self.items
            .iter()
            .filter(|f| f.required && f.support == Support::No)
            .collect()
    }

    /// The one message to refuse to start with, when something required is missing: what,
    /// since when, and the minimum kernel.
    #[must_use]
    pub fn refusal(&self) -> Option<String> {
        let missing = self.missing_required();
        if missing.is_empty() {
            return None;
        }
        let list: Vec<String> = missing
            .iter()
            .map(|f| {
                let detail = if f.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", f.detail)
                };
                format!("{} (Linux {}+{detail})", f.what, f.since)
            })
            .collect();
        Some(format!(
            "this kernel ({}) lacks what tcpwatch needs: {}. Minimum kernel: {MIN_KERNEL} built \
             with CONFIG_DEBUG_INFO_BTF=y (see docs/kernels.md)",
            self.kernel_release,
            list.join("; ")
        ))
    }

    /// One line for the log and `/readyz`:
    /// `kernel 6.1.0-56-cloud-amd64: btf=yes iter_tcp=yes ... hooks=tp_btf:4 fields=35/35`.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut s = format!("kernel {}:", self.kernel_release);
        for f in &self.items {
            s.push(' ');
            s.push_str(f.name);
            s.push('=');
            s.push_str(f.support.word());
        }
        let attached: Vec<&str> = self.tracepoints.iter().filter_map(|t| t.attached).collect();
        if !attached.is_empty() {
            let tp_btf = attached.iter().filter(|&&v| v == "tp_btf").count();
            let raw = attached.len() - tp_btf;
            let _ = write!(s, " hooks=tp_btf:{tp_btf},raw_tp:{raw}");
        }
        let missing = self.missing_required_fields.len() + self.missing_optional_fields.len();
        let _ = write!(
            s,
            " fields={}/{}",
            self.fields_total.saturating_sub(missing),
            self.fields_total
        );
        if !self.missing_optional_fields.is_empty() {
            let _ = write!(
                s,
                " (optional missing: {})",
                self.missing_optional_fields.join(",")
            );
        }
        s
    }

    /// (label, value) pairs for the gauge `tcpwatch_kernel_feature{feature="..."}`: 1 yes,
    /// 0 no, -1 unknown; one per feature plus `tp_btf_attached` / `raw_tp_attached` counts
    /// once [`Features::record_attached`] was called.
    #[must_use]
    pub fn metric_values(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .items
            .iter()
            .map(|f| (f.name.to_owned(), f.support.gauge()))
            .collect();
        for variant in ["tp_btf", "raw_tp"] {
            let n = self
                .tracepoints
                .iter()
                .filter(|t| t.attached == Some(variant))
                .count();
            out.push((
                format!("{variant}_attached"),
                i64::try_from(n).unwrap_or(i64::MAX),
            ));
        }
        out
    }
}

/// `(major, minor)` of a kernel release (`6.1.0-56-cloud-amd64` gives (6, 1)).
#[must_use]
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(['.', '-', '+']);
    let major = it.next()?.parse().ok()?;
    let minor: String = it
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// The string section of raw BTF (header: magic 0xeb9f, version, flags, `hdr_len`, type
/// offset and length, string offset and length; offsets relative to the header's end).
#[must_use]
pub fn btf_strings(raw: &[u8]) -> Option<&[u8]> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(raw.get(at..at + 4)?.try_into().ok()?))
    };
    if raw.get(0..2)? != [0x9f, 0xeb] {
        return None;
    }
    let hdr_len = usize::try_from(u32_at(4)?).ok()?;
    let str_off = usize::try_from(u32_at(16)?).ok()?;
    let str_len = usize::try_from(u32_at(20)?).ok()?;
    let start = hdr_len.checked_add(str_off)?;
    raw.get(start..start.checked_add(str_len)?)
}

/// Whether `name` is one of the NUL-terminated strings of a BTF string section.
#[must_use]
pub fn has_name(strings: &[u8], name: &str) -> bool {
    strings.split(|&b| b == 0).any(|s| s == name.as_bytes())
}

#[cfg(test)]
#[path = "features_tests.rs"]
mod tests;
