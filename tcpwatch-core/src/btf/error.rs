//! What can go wrong reading BTF or resolving a member.
/// Everything that can go wrong reading BTF or resolving a member. Every message says what
/// failed and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error(
        "BTF data is truncated: {what} needs bytes {start}..{end} but the data has only {len} \
         bytes (pass the complete contents of /sys/kernel/btf/vmlinux)"
    )]
    Truncated {
        what: String,
        start: usize,
        end: usize,
        len: usize,
    },

    #[error(
        "not BTF data: magic is {found:#06x}, expected 0xeb9f (pass the contents of \
         /sys/kernel/btf/vmlinux, which needs a kernel built with CONFIG_DEBUG_INFO_BTF=y; \
         big-endian BTF is not supported)"
    )]
    BadMagic { found: u16 },

    #[error(
        "unsupported BTF version {0}, this tcpwatch build reads version 1 (the kernel is newer \
         than tcpwatch: upgrade tcpwatch)"
    )]
    UnsupportedVersion(u8),

    #[error(
        "corrupt BTF header: the {what} section (offset {start}, {len} bytes) lies outside the \
         {total}-byte data (pass the unmodified contents of /sys/kernel/btf/vmlinux)"
    )]
    BadSection {
        what: &'static str,
        start: u64,
        len: u64,
        total: usize,
    },

    #[error(
        "BTF type #{type_id} has kind {kind}, unknown to this tcpwatch build (it knows kinds \
         1..=19) so the rest of the type section cannot be read: the kernel's BTF is newer than \
         tcpwatch, upgrade tcpwatch"
    )]
    UnknownKind { type_id: u32, kind: u8 },

    #[error(
        "corrupt BTF: string offset {offset} is outside the {len}-byte string section or not \
         NUL-terminated (pass the unmodified contents of /sys/kernel/btf/vmlinux)"
    )]
    BadString { offset: u32, len: usize },

    #[error(
        "corrupt BTF: a reference to type #{type_id}, but there are only {count} types (pass the \
         unmodified contents of /sys/kernel/btf/vmlinux)"
    )]
    BadTypeId { type_id: u32, count: usize },

    #[error(
        "corrupt BTF: following types from #{type_id} goes more than 64 levels deep (a cycle?); \
         pass the unmodified contents of /sys/kernel/btf/vmlinux"
    )]
    TooDeep { type_id: u32 },

    #[error(
        "invalid member path `{path}`: use dot-separated member names such as \
         `icsk_ack.lrcvtime` (this is a bug in tcpwatch's field table)"
    )]
    BadPath { path: String },

    #[error(
        "struct {strukt} is not in the running kernel's BTF (kernel too old or too new for this \
         tcpwatch build)"
    )]
    NoStruct { strukt: String },

    #[error(
        "struct {strukt} has no member `{path}` in the running kernel's BTF{} (kernel too old or \
         too new for this tcpwatch build)",
        missing_detail(.path, .missing)
    )]
    NoMember {
        strukt: String,
        path: String,
        missing: String,
    },

    #[error(
        "struct {strukt}: `{prefix}` is not a struct or union (its type is: {kind}), so member \
         path `{path}` \
         cannot be followed in the running kernel's BTF (kernel layout differs from what this \
         tcpwatch build expects)"
    )]
    NotComposite {
        strukt: String,
        path: String,
        prefix: String,
        kind: &'static str,
    },

    #[error(
        "struct {strukt} member `{path}` is a bitfield (bit offset {bit_offset}, {bits} bits) in \
         the running kernel's BTF: tcpwatch reads whole bytes and cannot use it (kernel layout \
         not supported by this tcpwatch build)"
    )]
    Bitfield {
        strukt: String,
        path: String,
        bit_offset: u64,
        bits: u64,
    },

    #[error(
        "struct {strukt} member `{path}` has a type without a size ({kind}) in the running \
         kernel's BTF, so its size cannot be checked (kernel layout not supported by this \
         tcpwatch build)"
    )]
    NoSize {
        strukt: String,
        path: String,
        kind: &'static str,
    },

    #[error(
        "corrupt BTF: struct {strukt} member `{path}` lies beyond 4 GiB (pass the unmodified \
         contents of /sys/kernel/btf/vmlinux)"
    )]
    TooLarge { strukt: String, path: String },
}

fn missing_detail(path: &str, missing: &str) -> String {
    if path == missing {
        String::new()
    } else {
        format!(": `{missing}` not found")
    }
}

impl BtfError {
    /// True when the BTF is fine but the kernel lacks the struct or member: the caller may
    /// treat the field as optional. False for corrupt data and unusable layouts.
    #[must_use]
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::NoStruct { .. } | Self::NoMember { .. })
    }
}
