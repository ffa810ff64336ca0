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
#[path = "btf_tests.rs"]
mod tests;
