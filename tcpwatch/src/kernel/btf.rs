//! The kernel's BTF (`/sys/kernel/btf/vmlinux`, several MB), read once at start-up and parsed
//! once by each parser that needs it: tcpwatch's own (`tcpwatch_core::btf`) for the feature
//! probe and the struct offsets, then aya's for the loader's relocations and for attaching the
//! `tp_btf` and `iter/tcp` programs. The raw bytes and tcpwatch's parse are dropped before
//! aya's parse is made, which keeps the start-up memory peak low.
use anyhow::{Context as _, anyhow};
use tcpwatch_core::btf::{Btf, BtfError, VMLINUX_BTF_PATH};

/// The kernel's BTF as read once.
pub struct KernelBtf {
    /// The bytes, or why they could not be read.
    raw: std::io::Result<Vec<u8>>,
    /// tcpwatch's parse of them (None when they could not be read).
    parsed: Option<Result<Btf, BtfError>>,
}

impl KernelBtf {
    /// Reads and parses `/sys/kernel/btf/vmlinux`. Never fails: errors are kept for the probe
    /// (which reports them) and for [`KernelBtf::offsets_btf`] (which refuses with them).
    #[must_use]
    pub fn read() -> Self {
        Self::from_bytes(std::fs::read(VMLINUX_BTF_PATH))
    }

    /// As [`KernelBtf::read`], from bytes already read (tests).
    #[must_use]
    pub fn from_bytes(raw: std::io::Result<Vec<u8>>) -> Self {
        let parsed = raw.as_deref().ok().map(Btf::parse);
        Self { raw, parsed }
    }

    /// Why the bytes could not be read, if they could not.
    #[must_use]
    pub fn read_error(&self) -> Option<&std::io::Error> {
        self.raw.as_ref().err()
    }

    /// The raw bytes with tcpwatch's parse of them, for the feature probe.
    #[must_use]
    pub fn for_probe(&self) -> Option<(&[u8], Result<&Btf, &BtfError>)> {
        let raw = self.raw.as_deref().ok()?;
        Some((raw, self.parsed.as_ref()?.as_ref()))
    }

    /// tcpwatch's parse, to resolve the struct offsets; an error says what failed.
    pub fn offsets_btf(&self) -> anyhow::Result<&Btf> {
        match (&self.raw, &self.parsed) {
            (Err(e), _) => Err(anyhow!(
                "reading {VMLINUX_BTF_PATH} (kernel BTF) failed: {e}. tcpwatch needs a kernel \
                 built with CONFIG_DEBUG_INFO_BTF=y and permission to read that file"
            )),
            (Ok(_), Some(Ok(btf))) => Ok(btf),
            (Ok(_), Some(Err(e))) => Err(anyhow!(
                "parsing the kernel's BTF from {VMLINUX_BTF_PATH} failed: {e}"
            )),
            (Ok(_), None) => Err(anyhow!(
                "the kernel's BTF from {VMLINUX_BTF_PATH} was not parsed"
            )),
        }
    }

    /// Consumes the BTF into aya's parse of the same bytes (tcpwatch's parse is dropped first,
    /// the raw bytes right after).
    pub fn into_aya(self) -> anyhow::Result<aya::Btf> {
        let Self { raw, parsed } = self;
        drop(parsed);
        let raw = raw.with_context(|| format!("reading {VMLINUX_BTF_PATH} (kernel BTF)"))?;
        aya::Btf::parse(&raw, aya::Endianness::default()).map_err(|e| {
            anyhow!(
                "parsing the kernel's BTF from {VMLINUX_BTF_PATH} for program attach failed: {e}"
            )
        })
    }
}
