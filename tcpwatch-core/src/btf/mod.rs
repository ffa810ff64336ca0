//! Reader of the kernel's BTF (the bytes of `/sys/kernel/btf/vmlinux`), just enough to find
//! byte offsets and sizes of struct members.
//!
//! Rust eBPF programs have no CO-RE relocations, so tcpwatch resolves the offsets of the
//! `struct sock` / `tcp_sock` / ... fields it reads here, in userspace, and patches them into
//! the programs before loading them.
//!
//! Member paths are dot-separated (`"icsk_ack.lrcvtime"`, `"ns.inum"`). Each component is
//! looked up in the current struct or union, descending transparently into anonymous
//! structs/unions (as C does), and the path continues through the member's type after
//! following typedefs and `const`/`volatile`/`restrict`/type-tag modifiers.
//!
//! Parsing never panics: malformed or truncated input gives a [`BtfError`].
//! The format is described in <https://docs.kernel.org/bpf/btf.html>.

use std::collections::HashMap;
use std::fmt;

mod error;
mod lookup;
mod parse;

pub use error::BtfError;

/// Where the running kernel exposes its BTF (needs `CONFIG_DEBUG_INFO_BTF=y`).
pub const VMLINUX_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const VERSION: u8 = 1;
const HEADER_LEN: usize = 24;
const TYPE_ENTRY_LEN: usize = 12;
/// Longest chain of typedefs/modifiers, array nesting or anonymous-member nesting followed
/// before the BTF is declared cyclic. Real kernels need fewer than 10.
const MAX_DEPTH: usize = 64;

/// BTF kinds (`include/uapi/linux/btf.h`).
mod kind {
    pub const VOID: u8 = 0;
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const FWD: u8 = 7;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

fn kind_name(k: u8) -> &'static str {
    match k {
        kind::VOID => "void",
        kind::INT => "integer",
        kind::PTR => "pointer",
        kind::ARRAY => "array",
        kind::STRUCT => "struct",
        kind::UNION => "union",
        kind::ENUM => "enum",
        kind::FWD => "forward declaration",
        kind::TYPEDEF => "typedef",
        kind::VOLATILE => "volatile",
        kind::CONST => "const",
        kind::RESTRICT => "restrict",
        kind::FUNC => "function",
        kind::FUNC_PROTO => "function prototype",
        kind::VAR => "variable",
        kind::DATASEC => "data section",
        kind::FLOAT => "float",
        kind::DECL_TAG => "declaration tag",
        kind::TYPE_TAG => "type tag",
        kind::ENUM64 => "64-bit enum",
        _ => "unknown kind",
    }
}

#[derive(Clone, Copy, Debug)]
struct TypeEntry {
    name_off: u32,
    kind: u8,
    kind_flag: bool,
    vlen: u16,
    size_or_type: u32,
    /// STRUCT/UNION: index of the first member in [`Btf::members`]; ARRAY: element type id;
    /// INT: the encoding word.
    a: u32,
    /// ARRAY: number of elements.
    b: u32,
}

const VOID: TypeEntry = TypeEntry {
    name_off: 0,
    kind: kind::VOID,
    kind_flag: false,
    vlen: 0,
    size_or_type: 0,
    a: 0,
    b: 0,
};

#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    type_id: u32,
    offset: u32,
}

/// A member found by name: where it is and whether it is a bitfield.
struct Hit {
    bits: u64,
    type_id: u32,
    bitfield_bits: Option<u64>,
}

/// Parsed BTF. Owns its data: parse the bytes once, then query.
pub struct Btf {
    /// Index = type id; `types[0]` is `void`.
    types: Vec<TypeEntry>,
    members: Vec<Member>,
    strings: Vec<u8>,
    /// Struct names to the first struct of that name.
    structs: HashMap<Box<[u8]>, u32>,
    /// Union names to the first union of that name.
    unions: HashMap<Box<[u8]>, u32>,
    /// Size of a pointer: the size of `long` when the BTF has it, else 8.
    pointer_size: u32,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.types.len())
            .field("members", &self.members.len())
            .field("strings", &self.strings.len())
            .field("structs", &self.structs.len())
            .finish_non_exhaustive()
    }
}

fn us(v: u32) -> usize {
    // u32 always fits in usize on the (>= 32-bit) targets tcpwatch runs on.
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
#[path = "test_builder.rs"]
mod test_builder;
