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

fn read_u32(data: &[u8], at: usize, what: &dyn Fn() -> String) -> Result<u32, BtfError> {
    at.checked_add(4)
        .and_then(|end| data.get(at..end))
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| BtfError::Truncated {
            what: what(),
            start: at,
            end: at.saturating_add(4),
            len: data.len(),
        })
}

fn section<'d>(
    data: &'d [u8],
    hdr_len: u32,
    off: u32,
    len: u32,
    what: &'static str,
) -> Result<&'d [u8], BtfError> {
    let start = u64::from(hdr_len) + u64::from(off);
    let end = start + u64::from(len);
    usize::try_from(start)
        .ok()
        .zip(usize::try_from(end).ok())
        .and_then(|(s, e)| data.get(s..e))
        .ok_or(BtfError::BadSection {
            what,
            start,
            len: u64::from(len),
            total: data.len(),
        })
}

fn us(v: u32) -> usize {
    // u32 always fits in usize on the (>= 32-bit) targets tcpwatch runs on.
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl Btf {
    /// Parses BTF (e.g. the contents of [`VMLINUX_BTF_PATH`]).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let hdr = |field: &'static str| move || format!("the BTF header's {field}");
        if data.len() < 4 {
            return Err(BtfError::Truncated {
                what: "the BTF header".into(),
                start: 0,
                end: HEADER_LEN,
                len: data.len(),
            });
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic != MAGIC {
            return Err(BtfError::BadMagic { found: magic });
        }
        if data[2] != VERSION {
            return Err(BtfError::UnsupportedVersion(data[2]));
        }
        let hdr_len = read_u32(data, 4, &hdr("hdr_len"))?;
        let type_off = read_u32(data, 8, &hdr("type_off"))?;
        let type_len = read_u32(data, 12, &hdr("type_len"))?;
        let str_off = read_u32(data, 16, &hdr("str_off"))?;
        let str_len = read_u32(data, 20, &hdr("str_len"))?;
        if us(hdr_len) < HEADER_LEN {
            return Err(BtfError::BadSection {
                what: "header",
                start: 0,
                len: u64::from(hdr_len),
                total: data.len(),
            });
        }
        let type_sec = section(data, hdr_len, type_off, type_len, "type")?;
        let strings = section(data, hdr_len, str_off, str_len, "string")?.to_vec();

        let mut btf = Self {
            types: vec![VOID],
            members: Vec::new(),
            strings,
            structs: HashMap::new(),
            unions: HashMap::new(),
            pointer_size: 8,
        };
        btf.parse_types(type_sec)?;
        btf.build_index()?;
        Ok(btf)
    }

    fn parse_types(&mut self, sec: &[u8]) -> Result<(), BtfError> {
        // Real vmlinux BTF: ~40 bytes per type on average.
        self.types.reserve(sec.len() / 40);
        self.members.reserve(sec.len() / 40);
        let mut pos = 0usize;
        while pos < sec.len() {
            let id = u32::try_from(self.types.len()).map_err(|_| BtfError::BadTypeId {
                type_id: u32::MAX,
                count: self.types.len(),
            })?;
            let what = || format!("BTF type #{id}");
            let name_off = read_u32(sec, pos, &what)?;
            let info = read_u32(sec, pos + 4, &what)?;
            let size_or_type = read_u32(sec, pos + 8, &what)?;
            pos += TYPE_ENTRY_LEN;
            let vlen = u16::try_from(info & 0xffff).unwrap_or(u16::MAX);
            let k = u8::try_from((info >> 24) & 0x1f).unwrap_or(u8::MAX);
            let mut t = TypeEntry {
                name_off,
                kind: k,
                kind_flag: info >> 31 == 1,
                vlen,
                size_or_type,
                a: 0,
                b: 0,
            };
            let vlen = usize::from(vlen);
            let trailing = match k {
                kind::INT => {
                    t.a = read_u32(sec, pos, &what)?;
                    4
                }
                kind::ARRAY => {
                    t.a = read_u32(sec, pos, &what)?;
                    // pos + 4 is the index type, unused here.
                    t.b = read_u32(sec, pos + 8, &what)?;
                    12
                }
                kind::STRUCT | kind::UNION => {
                    t.a = u32::try_from(self.members.len()).map_err(|_| BtfError::BadTypeId {
                        type_id: id,
                        count: self.types.len(),
                    })?;
                    for i in 0..vlen {
                        let at = pos + i * 12;
                        self.members.push(Member {
                            name_off: read_u32(sec, at, &what)?,
                            type_id: read_u32(sec, at + 4, &what)?,
                            offset: read_u32(sec, at + 8, &what)?,
                        });
                    }
                    vlen * 12
                }
                kind::ENUM | kind::FUNC_PROTO => vlen * 8,
                kind::VAR | kind::DECL_TAG => 4,
                kind::DATASEC | kind::ENUM64 => vlen * 12,
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => 0,
                _ => {
                    return Err(BtfError::UnknownKind {
                        type_id: id,
                        kind: k,
                    });
                }
            };
            let end = pos + trailing;
            if end > sec.len() {
                return Err(BtfError::Truncated {
                    what: what(),
                    start: pos,
                    end,
                    len: sec.len(),
                });
            }
            pos = end;
            self.types.push(t);
        }
        Ok(())
    }

    fn build_index(&mut self) -> Result<(), BtfError> {
        let mut structs = HashMap::new();
        let mut unions = HashMap::new();
        for (id, t) in self.types.iter().enumerate() {
            if t.name_off == 0 {
                continue;
            }
            let map = match t.kind {
                kind::STRUCT => &mut structs,
                kind::UNION => &mut unions,
                kind::INT if t.size_or_type > 0 => {
                    let name = self.name(t.name_off)?;
                    if name == b"long int" || name == b"long unsigned int" {
                        self.pointer_size = t.size_or_type;
                    }
                    continue;
                }
                _ => continue,
            };
            let name: Box<[u8]> = self.name(t.name_off)?.into();
            // Ids fit in u32: parse_types checked it.
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            map.entry(name).or_insert(id);
        }
        self.structs = structs;
        self.unions = unions;
        Ok(())
    }

    /// Number of types, including `void` (type id 0).
    #[must_use]
    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    /// Whether a struct (or union) of that name exists.
    #[must_use]
    pub fn has_struct(&self, strukt: &str) -> bool {
        self.find_composite(strukt).is_ok()
    }

    /// Size in bytes of `struct <strukt>` (or of the union of that name if there is no such
    /// struct).
    pub fn struct_size(&self, strukt: &str) -> Result<u32, BtfError> {
        let id = self.find_composite(strukt)?;
        Ok(self.ty(id)?.size_or_type)
    }

    /// Byte offset of `path` (dot-separated member names) from the start of `struct <strukt>`.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let hit = self.resolve(strukt, path)?;
        let too_large = || BtfError::TooLarge {
            strukt: strukt.into(),
            path: path.into(),
        };
        u32::try_from(hit.bits / 8).map_err(|_| too_large())
    }

    /// Size in bytes of the type of member `path` of `struct <strukt>`, after following
    /// typedefs and modifiers (pointers have the size of `long`).
    pub fn member_size(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let hit = self.resolve(strukt, path)?;
        match self.type_size(hit.type_id, 0)? {
            Ok(Some(size)) => Ok(size),
            Ok(None) => Err(BtfError::TooLarge {
                strukt: strukt.into(),
                path: path.into(),
            }),
            Err(k) => Err(BtfError::NoSize {
                strukt: strukt.into(),
                path: path.into(),
                kind: kind_name(k),
            }),
        }
    }

    fn find_composite(&self, strukt: &str) -> Result<u32, BtfError> {
        let key = strukt.as_bytes();
        self.structs
            .get(key)
            .or_else(|| self.unions.get(key))
            .copied()
            .ok_or_else(|| BtfError::NoStruct {
                strukt: strukt.into(),
            })
    }

    fn ty(&self, id: u32) -> Result<&TypeEntry, BtfError> {
        self.types.get(us(id)).ok_or(BtfError::BadTypeId {
            type_id: id,
            count: self.types.len(),
        })
    }

    fn name(&self, off: u32) -> Result<&[u8], BtfError> {
        if off == 0 {
            return Ok(b"");
        }
        let bad = || BtfError::BadString {
            offset: off,
            len: self.strings.len(),
        };
        let rest = self.strings.get(us(off)..).ok_or_else(bad)?;
        let end = rest.iter().position(|&c| c == 0).ok_or_else(bad)?;
        Ok(&rest[..end])
    }

    fn members_of(&self, t: &TypeEntry) -> Result<&[Member], BtfError> {
        let start = us(t.a);
        start
            .checked_add(usize::from(t.vlen))
            .and_then(|end| self.members.get(start..end))
            .ok_or(BtfError::BadTypeId {
                type_id: t.a,
                count: self.types.len(),
            })
    }

    /// Follows typedefs and modifiers; returns the id and kind of the underlying type.
    fn strip(&self, mut id: u32) -> Result<(u32, u8), BtfError> {
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id)?;
            match t.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = t.size_or_type;
                }
                k => return Ok((id, k)),
            }
        }
        Err(BtfError::TooDeep { type_id: id })
    }

    /// `Ok(Some(size))`, `Ok(None)` on overflow, or `Err(kind)` for a type without a size.
    fn type_size(&self, id: u32, depth: usize) -> Result<Result<Option<u32>, u8>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { type_id: id });
        }
        let (id, k) = self.strip(id)?;
        let t = self.ty(id)?;
        Ok(match k {
            kind::INT | kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 | kind::FLOAT => {
                Ok(Some(t.size_or_type))
            }
            kind::PTR => Ok(Some(self.pointer_size)),
            kind::ARRAY => match self.type_size(t.a, depth + 1)? {
                Ok(Some(elem)) => Ok(elem.checked_mul(t.b)),
                other => other,
            },
            other => Err(other),
        })
    }

    /// Whether a member of type `type_id` at `bits` is a bitfield; `Some(width)` if so.
    fn bitfield_bits(
        &self,
        container: &TypeEntry,
        m: &Member,
        bits: u64,
    ) -> Result<Option<u64>, BtfError> {
        if container.kind_flag {
            let size = u64::from(m.offset >> 24);
            if size != 0 {
                return Ok(Some(size));
            }
        } else {
            // kind_flag = 0: the bitfield is described by the INT's encoding.
            let (id, k) = self.strip(m.type_id)?;
            if k == kind::INT {
                let t = self.ty(id)?;
                let nr_bits = u64::from(t.a & 0xff);
                let int_off = (t.a >> 16) & 0xff;
                if int_off != 0 || nr_bits != u64::from(t.size_or_type) * 8 {
                    return Ok(Some(nr_bits));
                }
            }
        }
        if !bits.is_multiple_of(8) {
            let width = match self.type_size(m.type_id, 0)? {
                Ok(Some(size)) => u64::from(size) * 8,
                _ => 0,
            };
            return Ok(Some(width));
        }
        Ok(None)
    }

    /// Looks `name` up among the members of struct/union `id`, descending into anonymous
    /// struct/union members. Bit offsets are relative to the start of `id`.
    fn find_in(&self, id: u32, name: &[u8], depth: usize) -> Result<Option<Hit>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { type_id: id });
        }
        let t = self.ty(id)?;
        for m in self.members_of(t)? {
            let bits = u64::from(if t.kind_flag {
                m.offset & 0x00ff_ffff
            } else {
                m.offset
            });
            if m.name_off == 0 {
                let (inner, k) = self.strip(m.type_id)?;
                if (k == kind::STRUCT || k == kind::UNION)
                    && let Some(hit) = self.find_in(inner, name, depth + 1)?
                {
                    return Ok(Some(Hit {
                        bits: bits + hit.bits,
                        ..hit
                    }));
                }
            } else if self.name(m.name_off)? == name {
                let bitfield_bits = self.bitfield_bits(t, m, bits)?;
                return Ok(Some(Hit {
                    bits,
                    type_id: m.type_id,
                    bitfield_bits,
                }));
            }
        }
        Ok(None)
    }

    fn resolve(&self, strukt: &str, path: &str) -> Result<Hit, BtfError> {
        if path.split('.').any(str::is_empty) {
            return Err(BtfError::BadPath { path: path.into() });
        }
        let root = self.find_composite(strukt)?;
        let mut hit = Hit {
            bits: 0,
            type_id: root,
            bitfield_bits: None,
        };
        let mut prefix_len = 0usize;
        for comp in path.split('.') {
            let prefix = &path[..prefix_len.saturating_sub(1)];
            let (id, k) = self.strip(hit.type_id)?;
            if k != kind::STRUCT && k != kind::UNION {
                return Err(BtfError::NotComposite {
                    strukt: strukt.into(),
                    path: path.into(),
                    prefix: prefix.into(),
                    kind: kind_name(k),
                });
            }
            prefix_len += comp.len() + 1;
            let Some(found) = self.find_in(id, comp.as_bytes(), 0)? else {
                return Err(BtfError::NoMember {
                    strukt: strukt.into(),
                    path: path.into(),
                    missing: comp.into(),
                });
            };
            let bits = hit.bits + found.bits;
            if let Some(width) = found.bitfield_bits {
                return Err(BtfError::Bitfield {
                    strukt: strukt.into(),
                    path: path[..prefix_len - 1].into(),
                    bit_offset: bits,
                    bits: width,
                });
            }
            hit = Hit {
                bits,
                type_id: found.type_id,
                bitfield_bits: None,
            };
        }
        Ok(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds BTF blobs for tests; types get ids 1, 2, ... in the order they are added.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    /// (name, type id, offset word as stored in the member: bits, or `kind_flag` encoding).
    type M<'a> = (&'a str, u32, u32);

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = u32::try_from(self.strings.len()).unwrap();
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn words(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }

        fn raw(&mut self, name: &str, k: u8, kf: bool, vlen: u16, sz: u32, tail: &[u32]) -> u32 {
            let name_off = self.str(name);
            let info = (u32::from(k) << 24) | u32::from(vlen) | if kf { 1 << 31 } else { 0 };
            self.words(&[name_off, info, sz]);
            self.words(tail);
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.raw(name, kind::INT, false, 0, size, &[size * 8])
        }

        fn modifier(&mut self, k: u8, name: &str, target: u32) -> u32 {
            self.raw(name, k, false, 0, target, &[])
        }

        fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
            self.raw("", kind::ARRAY, false, 0, 0, &[elem, index, n])
        }

        fn composite(&mut self, k: u8, kf: bool, name: &str, size: u32, members: &[M]) -> u32 {
            let mut tail = Vec::new();
            for &(n, ty, off) in members {
                tail.extend([self.str(n), ty, off]);
            }
            let vlen = u16::try_from(members.len()).unwrap();
            self.raw(name, k, kf, vlen, size, &tail)
        }

        /// Struct with `kind_flag` 0; member offsets given in BYTES.
        fn strukt(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
            let members: Vec<M> = members.iter().map(|&(n, t, o)| (n, t, o * 8)).collect();
            self.composite(kind::STRUCT, false, name, size, &members)
        }

        /// Union with `kind_flag` 0; member offsets given in BYTES.
        fn union(&mut self, name: &str, size: u32, members: &[M]) -> u32 {
            let members: Vec<M> = members.iter().map(|&(n, t, o)| (n, t, o * 8)).collect();
            self.composite(kind::UNION, false, name, size, &members)
        }

        fn build(&self) -> Vec<u8> {
            let type_len = u32::try_from(self.types.len()).unwrap();
            let str_len = u32::try_from(self.strings.len()).unwrap();
            let mut out = vec![0x9f, 0xeb, 1, 0];
            for w in [24, 0, type_len, type_len, str_len] {
                out.extend_from_slice(&u32::to_le_bytes(w));
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A small kernel look-alike: anonymous unions/structs, nested named members, a named
    /// member of anonymous struct type, typedef/modifier chains, bitfields of both encodings.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let u8t = b.int("unsigned char", 1);
        let u16t = b.int("short unsigned int", 2);
        let u32t = b.int("unsigned int", 4);
        let u64t = b.int("long long unsigned int", 8);
        let long = b.int("long unsigned int", 8);
        let td1 = b.modifier(kind::TYPEDEF, "__u32", u32t);
        let td2 = b.modifier(kind::TYPEDEF, "u32", td1);
        let cst = b.modifier(kind::CONST, "", td2);
        let vol_u8 = b.modifier(kind::VOLATILE, "", u8t);
        let tag = b.modifier(kind::TYPE_TAG, "rcu", cst);
        let restrict = b.modifier(kind::RESTRICT, "", tag);

        // struct sock_common
        let addrs = b.strukt("", 8, &[("skc_daddr", td2, 0), ("skc_rcv_saddr", td2, 4)]);
        let addr_u = b.union("", 8, &[("skc_addrpair", u64t, 0), ("", addrs, 0)]);
        let ports = b.strukt("", 4, &[("skc_dport", u16t, 0), ("skc_num", u16t, 2)]);
        let ports_u = b.union("", 4, &[("skc_portpair", u32t, 0), ("", ports, 0)]);
        let net_fwd = b.raw("net", kind::FWD, false, 0, 0, &[]);
        let net_ptr = b.modifier(kind::PTR, "", net_fwd);
        let possible = b.strukt("", 8, &[("net", net_ptr, 0)]);
        let possible_td = b.modifier(kind::TYPEDEF, "possible_net_t", possible);
        let v6 = b.array(u8t, u32t, 16);
        b.strukt(
            "sock_common",
            64,
            &[
                ("", addr_u, 0),
                ("skc_hash", u32t, 8),
                ("", ports_u, 12),
                ("skc_family", u16t, 16),
                ("skc_state", vol_u8, 18),
                ("skc_net", possible_td, 24),
                ("skc_v6_daddr", v6, 32),
                ("skc_v6_rcv_saddr", v6, 48),
            ],
        );

        // struct net { ...; struct ns_common ns; ...; u64 net_cookie; }
        let ns = b.strukt("ns_common", 24, &[("stashed", long, 0), ("inum", u32t, 16)]);
        b.strukt(
            "net",
            128,
            &[
                ("passive", u32t, 0),
                ("ns", ns, 64),
                ("net_cookie", u64t, 120),
            ],
        );

        // struct inet_connection_sock: kind_flag 1, bitfields, named member of anon type.
        let ack = b.strukt(
            "",
            16,
            &[("pending", u8t, 0), ("lrcvtime", u32t, 4), ("ato", long, 8)],
        );
        b.composite(
            kind::STRUCT,
            true,
            "inet_connection_sock",
            96,
            &[
                ("icsk_rto", u32t, 32 * 8),
                ("icsk_ca_state", u8t, (5 << 24) | (36 * 8)),
                ("icsk_ca_initialized", u8t, (1 << 24) | (36 * 8 + 5)),
                ("icsk_backoff", u8t, 37 * 8),
                ("icsk_ack", ack, 48 * 8),
                ("icsk_user_timeout", restrict, 64 * 8),
            ],
        );

        // struct tcp_sock: cacheline-group markers, anon struct > anon union, modifiers.
        let marker = b.array(u8t, u32t, 0);
        let una_u = b.union("", 4, &[("snd_una", td2, 0), ("snd_una_alias", u32t, 0)]);
        let group = b.strukt("", 8, &[("", una_u, 0), ("snd_nxt", cst, 4)]);
        b.strukt(
            "tcp_sock",
            256,
            &[
                ("__cacheline_group_begin__tcp_sock_read_tx", marker, 128),
                ("", group, 128),
                ("write_seq", td2, 136),
                ("__cacheline_group_end__tcp_sock_read_tx", marker, 140),
                ("rcv_nxt", u32t, 140),
            ],
        );

        // kind_flag 0 bitfields: INT encoding with 3 bits; a byte at a non-byte bit offset.
        let int3 = b.raw("unsigned int", kind::INT, false, 0, 4, &[3]);
        b.composite(
            kind::STRUCT,
            false,
            "bits0",
            8,
            &[("flag", int3, 0), ("odd", u8t, 3), ("whole", u32t, 32)],
        );
        b.build()
    }

    fn parsed() -> Btf {
        Btf::parse(&sample()).unwrap()
    }

    #[test]
    fn direct_and_anonymous_members() {
        let btf = parsed();
        assert_eq!(btf.member_offset("sock_common", "skc_daddr").unwrap(), 0);
        assert_eq!(
            btf.member_offset("sock_common", "skc_rcv_saddr").unwrap(),
            4
        );
        assert_eq!(btf.member_offset("sock_common", "skc_dport").unwrap(), 12);
        assert_eq!(btf.member_offset("sock_common", "skc_num").unwrap(), 14);
        assert_eq!(btf.member_offset("sock_common", "skc_family").unwrap(), 16);
        assert_eq!(btf.member_offset("sock_common", "skc_state").unwrap(), 18);
        assert_eq!(
            btf.member_offset("sock_common", "skc_v6_rcv_saddr")
                .unwrap(),
            48
        );
        assert_eq!(
            btf.member_size("sock_common", "skc_v6_rcv_saddr").unwrap(),
            16
        );
        assert_eq!(btf.member_size("sock_common", "skc_state").unwrap(), 1);
        assert_eq!(btf.member_size("sock_common", "skc_num").unwrap(), 2);
        assert_eq!(btf.struct_size("sock_common").unwrap(), 64);
        assert!(btf.has_struct("tcp_sock"));
        assert!(!btf.has_struct("tcp6_sock"));
    }

    #[test]
    fn nested_named_member() {
        let btf = parsed();
        assert_eq!(btf.member_offset("net", "ns").unwrap(), 64);
        assert_eq!(btf.member_offset("net", "ns.inum").unwrap(), 80);
        assert_eq!(btf.member_size("net", "ns.inum").unwrap(), 4);
        assert_eq!(btf.member_size("net", "ns").unwrap(), 24);
        assert_eq!(btf.member_offset("net", "net_cookie").unwrap(), 120);
        assert_eq!(btf.member_size("net", "net_cookie").unwrap(), 8);
    }

    #[test]
    fn named_member_of_anonymous_struct_type_with_kind_flag() {
        let btf = parsed();
        assert_eq!(
            btf.member_offset("inet_connection_sock", "icsk_ack.lrcvtime")
                .unwrap(),
            52
        );
        assert_eq!(
            btf.member_size("inet_connection_sock", "icsk_ack.lrcvtime")
                .unwrap(),
            4
        );
        assert_eq!(
            btf.member_offset("inet_connection_sock", "icsk_rto")
                .unwrap(),
            32
        );
        assert_eq!(
            btf.member_offset("inet_connection_sock", "icsk_backoff")
                .unwrap(),
            37
        );
        assert_eq!(
            btf.member_size("inet_connection_sock", "icsk_backoff")
                .unwrap(),
            1
        );
    }

    #[test]
    fn anonymous_union_inside_anonymous_struct_and_markers() {
        let btf = parsed();
        assert_eq!(btf.member_offset("tcp_sock", "snd_una").unwrap(), 128);
        assert_eq!(btf.member_offset("tcp_sock", "snd_una_alias").unwrap(), 128);
        assert_eq!(btf.member_offset("tcp_sock", "snd_nxt").unwrap(), 132);
        assert_eq!(btf.member_offset("tcp_sock", "write_seq").unwrap(), 136);
        assert_eq!(btf.member_offset("tcp_sock", "rcv_nxt").unwrap(), 140);
        let marker = "__cacheline_group_begin__tcp_sock_read_tx";
        assert_eq!(btf.member_size("tcp_sock", marker).unwrap(), 0);
    }

    #[test]
    fn typedef_and_modifier_chains() {
        let btf = parsed();
        // typedef struct {..} possible_net_t: descend through the typedef.
        assert_eq!(btf.member_offset("sock_common", "skc_net.net").unwrap(), 24);
        assert_eq!(btf.member_size("sock_common", "skc_net").unwrap(), 8);
        assert_eq!(btf.member_size("sock_common", "skc_net.net").unwrap(), 8);
        // const -> typedef u32 -> typedef __u32 -> unsigned int
        assert_eq!(btf.member_size("tcp_sock", "snd_nxt").unwrap(), 4);
        // restrict -> type_tag -> const -> typedef -> typedef -> int
        assert_eq!(
            btf.member_size("inet_connection_sock", "icsk_user_timeout")
                .unwrap(),
            4
        );
        assert_eq!(
            btf.member_offset("inet_connection_sock", "icsk_user_timeout")
                .unwrap(),
            64
        );
    }

    #[test]
    fn bitfields_are_errors_naming_the_field() {
        let btf = parsed();
        for (strukt, path) in [
            ("inet_connection_sock", "icsk_ca_state"),
            ("inet_connection_sock", "icsk_ca_initialized"),
            ("bits0", "flag"),
            ("bits0", "odd"),
        ] {
            let err = btf.member_offset(strukt, path).unwrap_err();
            assert!(
                matches!(err, BtfError::Bitfield { .. }),
                "{strukt}.{path}: {err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(strukt) && msg.contains(&format!("`{path}`")),
                "{msg}"
            );
            assert!(msg.contains("bitfield"), "{msg}");
            assert!(btf.member_size(strukt, path).is_err());
        }
        assert_eq!(btf.member_offset("bits0", "whole").unwrap(), 4);
    }

    #[test]
    fn missing_member_and_struct_errors() {
        let btf = parsed();
        let err = btf.member_offset("tcp_sock", "rcv_tstamp").unwrap_err();
        assert!(err.is_missing());
        assert_eq!(
            err.to_string(),
            "struct tcp_sock has no member `rcv_tstamp` in the running kernel's BTF (kernel too \
             old or too new for this tcpwatch build)"
        );
        let err = btf.member_offset("net", "ns.ino").unwrap_err();
        assert!(err.is_missing());
        assert!(err.to_string().contains("no member `ns.ino`"), "{err}");
        assert!(err.to_string().contains("`ino` not found"), "{err}");

        let err = btf.member_offset("tcp6_sock", "snd_una").unwrap_err();
        assert!(err.is_missing());
        assert!(
            err.to_string().contains("struct tcp6_sock is not in"),
            "{err}"
        );
        assert!(btf.struct_size("tcp6_sock").unwrap_err().is_missing());

        // Descending into a non-struct member.
        let err = btf.member_offset("net", "net_cookie.lo").unwrap_err();
        assert!(matches!(err, BtfError::NotComposite { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("`net_cookie` is not a struct or union (its type is: integer)"),
            "{err}"
        );
        assert!(!err.is_missing());

        for bad in ["", ".", "ns.", ".inum", "ns..inum"] {
            let err = btf.member_offset("net", bad).unwrap_err();
            assert!(matches!(err, BtfError::BadPath { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn member_sizes_without_a_size() {
        let mut b = Builder::new();
        let proto = b.raw("", kind::FUNC_PROTO, false, 0, 0, &[]);
        let fwd = b.raw("later", kind::FWD, false, 0, 0, &[]);
        b.strukt("s", 8, &[("f", proto, 0), ("g", fwd, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.member_offset("s", "f").unwrap(), 0);
        let err = btf.member_size("s", "f").unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::NoSize {
                    kind: "function prototype",
                    ..
                }
            ),
            "{err}"
        );
        let err = btf.member_size("s", "g").unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::NoSize {
                    kind: "forward declaration",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn every_kind_is_skipped_with_its_length() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let ptr = b.modifier(kind::PTR, "", int);
        let arr = b.array(int, int, 3);
        let e = b.raw("e", kind::ENUM, false, 2, 4, &[1, 0, 2, 1]);
        b.raw("fwd", kind::FWD, false, 0, 0, &[]);
        let td = b.modifier(kind::TYPEDEF, "td", int);
        let vol = b.modifier(kind::VOLATILE, "", td);
        let cst = b.modifier(kind::CONST, "", vol);
        let rst = b.modifier(kind::RESTRICT, "", ptr);
        let proto = b.raw("", kind::FUNC_PROTO, false, 2, int, &[0, int, 0, ptr]);
        b.raw("f", kind::FUNC, false, 0, proto, &[]);
        let var = b.raw("v", kind::VAR, false, 0, int, &[1]);
        b.raw(".data", kind::DATASEC, false, 1, 4, &[var, 0, 4]);
        let float = b.raw("double", kind::FLOAT, false, 0, 8, &[]);
        b.raw("tag", kind::DECL_TAG, false, 0, var, &[u32::MAX]);
        let tt = b.modifier(kind::TYPE_TAG, "user", cst);
        let e64 = b.raw("e64", kind::ENUM64, false, 1, 8, &[1, 0, 1]);
        let un = b.union("u", 8, &[("i", int, 0), ("d", float, 0)]);
        b.strukt(
            "all",
            64,
            &[
                ("p", rst, 0),
                ("a", arr, 8),
                ("e", e, 20),
                ("c", tt, 24),
                ("d", float, 32),
                ("e64", e64, 40),
                ("u", un, 48),
            ],
        );
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(btf.type_count(), 20);
        let sizes = [
            ("p", 8),
            ("a", 12),
            ("e", 4),
            ("c", 4),
            ("d", 8),
            ("e64", 8),
            ("u", 8),
        ];
        for (name, size) in sizes {
            assert_eq!(btf.member_size("all", name).unwrap(), size, "{name}");
        }
        assert_eq!(btf.member_offset("all", "u.d").unwrap(), 48);
        assert_eq!(btf.member_offset("all", "e64").unwrap(), 40);
        assert_eq!(btf.struct_size("u").unwrap(), 8);
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let mut b = Builder::new();
        b.int("int", 4);
        b.raw("x", 20, false, 0, 0, &[]);
        let err = Btf::parse(&b.build()).unwrap_err();
        assert_eq!(
            err,
            BtfError::UnknownKind {
                type_id: 2,
                kind: 20
            }
        );
        assert!(err.to_string().contains("upgrade tcpwatch"), "{err}");
    }

    #[test]
    fn header_errors() {
        let good = sample();
        let mut bad = good.clone();
        bad[0] = 0xeb;
        bad[1] = 0x9f;
        assert_eq!(
            Btf::parse(&bad).unwrap_err(),
            BtfError::BadMagic { found: 0x9feb }
        );
        let mut bad = good.clone();
        bad[2] = 2;
        assert_eq!(
            Btf::parse(&bad).unwrap_err(),
            BtfError::UnsupportedVersion(2)
        );
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&8u32.to_le_bytes()); // hdr_len < 24
        assert!(matches!(
            Btf::parse(&bad).unwrap_err(),
            BtfError::BadSection { .. }
        ));
        let mut bad = good;
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // str_off far away
        assert!(matches!(
            Btf::parse(&bad).unwrap_err(),
            BtfError::BadSection { .. }
        ));
        assert!(matches!(
            Btf::parse(&[]).unwrap_err(),
            BtfError::Truncated { .. }
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let good = sample();
        for len in 0..good.len() {
            let err = Btf::parse(&good[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    BtfError::Truncated { .. } | BtfError::BadSection { .. }
                ),
                "len {len}: {err}"
            );
        }
    }

    #[test]
    fn truncated_type_section_is_an_error() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        b.strukt("s", 8, &[("a", int, 0), ("b", int, 4)]);
        // Cut the type section in the middle of the struct's members.
        let cut = b.types.len() - 6;
        b.types.truncate(cut);
        let err = Btf::parse(&b.build()).unwrap_err();
        assert!(matches!(err, BtfError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("BTF type #2"), "{err}");
    }

    #[test]
    fn corrupt_references_are_errors_not_panics() {
        let mut b = Builder::new();
        // typedef cycle: #1 -> #2 -> #1
        b.modifier(kind::TYPEDEF, "a", 2);
        b.modifier(kind::TYPEDEF, "b", 1);
        // anonymous member that contains its own struct
        b.strukt("loop", 4, &[("", 3, 0)]);
        b.strukt("dangling", 4, &[("x", 999, 0)]);
        b.strukt("cyc", 4, &[("x", 1, 0)]);
        let btf = Btf::parse(&b.build()).unwrap();
        let err = btf.member_offset("loop", "x").unwrap_err();
        assert!(matches!(err, BtfError::TooDeep { .. }), "{err}");
        let err = btf.member_size("dangling", "x").unwrap_err();
        assert!(
            matches!(err, BtfError::BadTypeId { type_id: 999, .. }),
            "{err}"
        );
        let err = btf.member_size("cyc", "x").unwrap_err();
        assert!(matches!(err, BtfError::TooDeep { .. }), "{err}");
    }

    const SAMPLE_PATHS: &[(&str, &str)] = &[
        ("sock_common", "skc_daddr"),
        ("sock_common", "skc_net.net"),
        ("net", "ns.inum"),
        ("inet_connection_sock", "icsk_ack.lrcvtime"),
        ("inet_connection_sock", "icsk_ca_state"),
        ("tcp_sock", "snd_una"),
        ("bits0", "odd"),
    ];

    fn query_all(btf: &Btf) {
        for (s, p) in SAMPLE_PATHS {
            let _ = btf.member_offset(s, p);
            let _ = btf.member_size(s, p);
            let _ = btf.struct_size(s);
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(btf) = Btf::parse(&data) {
                query_all(&btf);
            }
        }

        #[test]
        fn random_type_section_never_panics(
            words in proptest::collection::vec(any::<u32>(), 0..96),
            kinds in proptest::collection::vec(0u32..21, 0..96),
            strings in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            // Valid header, type words with plausible kinds/vlens so that parsing gets deep.
            let mut types = Vec::new();
            for (i, w) in words.iter().enumerate() {
                let w = if i % 3 == 1 {
                    let k = kinds.get(i / 3).copied().unwrap_or(4);
                    (w & 0x8000_0003) | (k << 24)
                } else if i % 3 == 2 {
                    w % 24
                } else {
                    w % 70
                };
                types.extend_from_slice(&w.to_le_bytes());
            }
            let mut strs = vec![0u8];
            strs.extend_from_slice(&strings);
            let mut b = Builder::new();
            b.types = types;
            b.strings = strs;
            if let Ok(btf) = Btf::parse(&b.build()) {
                query_all(&btf);
            }
        }

        #[test]
        fn mutated_sample_never_panics(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut data = sample();
            for (at, v) in &edits {
                let i = at.index(data.len());
                data[i] ^= v;
            }
            if truncate {
                data.truncate(cut.index(data.len()));
            }
            if let Ok(btf) = Btf::parse(&data) {
                query_all(&btf);
            }
        }
    }

    /// The fields tcpwatch reads (`tcpwatch_common::KernelOffsets`), with their expected sizes
    /// (0: not checked).
    const KERNEL_FIELDS: &[(&str, &str, u32)] = &[
        ("sock_common", "skc_daddr", 4),
        ("sock_common", "skc_rcv_saddr", 4),
        ("sock_common", "skc_dport", 2),
        ("sock_common", "skc_num", 2),
        ("sock_common", "skc_family", 2),
        ("sock_common", "skc_state", 1),
        ("sock_common", "skc_net", 8),
        ("sock_common", "skc_v6_daddr", 16),
        ("sock_common", "skc_v6_rcv_saddr", 16),
        ("net", "ns.inum", 4),
        ("net", "net_cookie", 8),
        ("sock", "sk_ack_backlog", 4),
        ("sock", "sk_max_ack_backlog", 4),
        ("sock", "sk_socket", 8),
        ("sock", "sk_sndbuf", 4),
        ("sock", "sk_wmem_queued", 4),
        ("socket_alloc", "vfs_inode", 0),
        ("inode", "i_ino", 8),
        ("inet_connection_sock", "icsk_rto", 4),
        ("inet_connection_sock", "icsk_backoff", 1),
        ("inet_connection_sock", "icsk_retransmits", 1),
        ("inet_connection_sock", "icsk_probes_out", 1),
        ("inet_connection_sock", "icsk_user_timeout", 4),
        ("inet_connection_sock", "icsk_ack.lrcvtime", 4),
        ("tcp_sock", "write_seq", 4),
        ("tcp_sock", "snd_una", 4),
        ("tcp_sock", "snd_nxt", 4),
        ("tcp_sock", "rcv_nxt", 4),
        ("tcp_sock", "copied_seq", 4),
        ("tcp_sock", "snd_wnd", 4),
        ("tcp_sock", "srtt_us", 4),
        ("tcp_sock", "total_retrans", 4),
        ("tcp_sock", "lsndtime", 4),
        ("tcp_sock", "rcv_tstamp", 4),
    ];

    #[test]
    fn real_vmlinux_btf_resolves_kernel_offsets() {
        let data = match std::fs::read(VMLINUX_BTF_PATH) {
            Ok(data) => data,
            Err(e) => {
                eprintln!(
                    "\n!!!!! SKIPPED real_vmlinux_btf_resolves_kernel_offsets: cannot read \
                     {VMLINUX_BTF_PATH}: {e} (kernel without CONFIG_DEBUG_INFO_BTF?) !!!!!\n"
                );
                return;
            }
        };
        let start = std::time::Instant::now();
        let btf = Btf::parse(&data).unwrap();
        eprintln!(
            "parsed {} bytes of vmlinux BTF ({} types) in {:?}",
            data.len(),
            btf.type_count(),
            start.elapsed()
        );
        for &(strukt, path, size) in KERNEL_FIELDS {
            let off = btf.member_offset(strukt, path).unwrap();
            let got = btf.member_size(strukt, path).unwrap();
            eprintln!("{strukt}.{path}: offset {off}, size {got}");
            if size != 0 {
                assert_eq!(got, size, "{strukt}.{path}");
            }
            assert!(
                off + got <= btf.struct_size(strukt).unwrap(),
                "{strukt}.{path}"
            );
        }
        let sc = |p| btf.member_offset("sock_common", p).unwrap();
        assert_eq!(sc("skc_daddr"), 0);
        assert_eq!(sc("skc_rcv_saddr"), 4);
        assert_eq!(sc("skc_dport"), 12);
        assert_eq!(sc("skc_num"), 14);
        assert_eq!(sc("skc_family"), 16);
        assert_eq!(sc("skc_state"), 18);
        // struct sock starts with sock_common, inet_connection_sock with (inet_sock with) sock,
        // tcp_sock with inet_connection_sock.
        assert_eq!(btf.member_offset("sock", "__sk_common").unwrap(), 0);
        let sock = btf.struct_size("sock").unwrap();
        let icsk = btf.struct_size("inet_connection_sock").unwrap();
        assert!(
            btf.member_offset("sock", "sk_ack_backlog").unwrap()
                >= btf.struct_size("sock_common").unwrap()
        );
        for &(strukt, path, _) in KERNEL_FIELDS {
            let off = btf.member_offset(strukt, path).unwrap();
            match strukt {
                "inet_connection_sock" => assert!(off >= sock, "{path}"),
                "tcp_sock" => assert!(off >= icsk, "{path}"),
                _ => {}
            }
        }
    }
}
