//! Queries on parsed BTF: struct sizes, member offsets and sizes along dot-separated paths.
use super::{Btf, BtfError, Hit, MAX_DEPTH, Member, TypeEntry, kind, kind_name, us};

impl Btf {
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

    pub(super) fn find_composite(&self, strukt: &str) -> Result<u32, BtfError> {
        let key = strukt.as_bytes();
        self.structs
            .get(key)
            .or_else(|| self.unions.get(key))
            .copied()
            .ok_or_else(|| BtfError::NoStruct {
                strukt: strukt.into(),
            })
    }

    pub(super) fn ty(&self, id: u32) -> Result<&TypeEntry, BtfError> {
        self.types.get(us(id)).ok_or(BtfError::BadTypeId {
            type_id: id,
            count: self.types.len(),
        })
    }

    pub(super) fn name(&self, off: u32) -> Result<&[u8], BtfError> {
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

    pub(super) fn members_of(&self, t: &TypeEntry) -> Result<&[Member], BtfError> {
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
    pub(super) fn strip(&self, mut id: u32) -> Result<(u32, u8), BtfError> {
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
    pub(super) fn type_size(
        &self,
        id: u32,
        depth: usize,
    ) -> Result<Result<Option<u32>, u8>, BtfError> {
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
    pub(super) fn bitfield_bits(
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
    pub(super) fn find_in(
        &self,
        id: u32,
        name: &[u8],
        depth: usize,
    ) -> Result<Option<Hit>, BtfError> {
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

    pub(super) fn resolve(&self, strukt: &str, path: &str) -> Result<Hit, BtfError> {
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
#[path = "lookup_tests.rs"]
mod tests;
