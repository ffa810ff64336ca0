//! Parsing BTF bytes into a [`Btf`]: the header, the type and string sections, the name
//! indexes. Never panics: malformed or truncated input gives a [`BtfError`].
use std::collections::HashMap;

use super::{
    Btf, BtfError, HEADER_LEN, MAGIC, Member, TYPE_ENTRY_LEN, TypeEntry, VERSION, VOID, kind, us,
};

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
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
