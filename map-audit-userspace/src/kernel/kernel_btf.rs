//! Reads struct member offsets from the kernel's BTF (/sys/kernel/btf/vmlinux), so the
//! eBPF programs can follow kernel pointers with `bpf_probe_read_kernel` on any kernel
//! without CO-RE. Only what that needs is decoded: the type table, struct and union
//! members (through anonymous members), and names. Every read is bounds-checked.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

struct Member {
    name: u32,
    type_id: u32,
    /// Offset in bits (bitfields are never looked up here).
    bit_offset: u32,
}

struct Type {
    kind: u32,
    name: u32,
    /// The referenced type for typedef/const/volatile/restrict/type_tag.
    referenced: u32,
    members: Vec<Member>,
}

/// The decoded type table.
pub struct KernelBtf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16> {
    let bytes = data
        .get(at..at + 2)
        .ok_or_else(|| anyhow!("BTF is truncated at byte {at}"))?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32> {
    let bytes = data
        .get(at..at + 4)
        .ok_or_else(|| anyhow!("BTF is truncated at byte {at}"))?;
    Ok(u32::from_le_bytes(bytes.try_into().unwrap()))
}

impl KernelBtf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux").context(
            "reading /sys/kernel/btf/vmlinux failed; the kernel needs CONFIG_DEBUG_INFO_BTF=y",
        )?;
        Self::parse(&data)
    }

    /// Decodes raw BTF (little-endian, as on every architecture map-audit runs on).
    pub fn parse(data: &[u8]) -> Result<Self> {
        if u16_at(data, 0)? != BTF_MAGIC {
            bail!("not little-endian BTF (bad magic)");
        }
        let header_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let section = |off: usize, len: usize| {
            let start = header_len
                .checked_add(off)
                .ok_or_else(|| anyhow!("BTF section offset overflows"))?;
            data.get(start..start + len)
                .ok_or_else(|| anyhow!("BTF section at {start} runs past the end"))
        };
        let type_data = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();

        // Type id 0 is void.
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            referenced: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < type_data.len() {
            let name = u32_at(type_data, at)?;
            let info = u32_at(type_data, at + 4)?;
            let size_or_type = u32_at(type_data, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // int, var, decl_tag
                3 => 12,          // array
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(type_data, m + 8)?;
                        members.push(Member {
                            name: u32_at(type_data, m)?,
                            type_id: u32_at(type_data, m + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,   // enum, func_proto
                15 | 19 => vlen * 12, // datasec, enum64
                0 | 2 | 7..=12 | 16 | 18 => 0,
                other => bail!("unknown BTF kind {other}"),
            };
            at += extra;
            types.push(Type {
                kind,
                name,
                referenced: size_or_type,
                members,
            });
        }
        let mut btf = Self {
            types,
            strings,
            structs_by_name: HashMap::new(),
        };
        for (id, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT && ty.name != 0 {
                let name = btf.name(ty.name).to_string();
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, offset: u32) -> &str {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.referenced
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// Byte offset of `member` in `struct name`, looking inside anonymous members.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let id = *self
            .structs_by_name
            .get(name)
            .ok_or_else(|| anyhow!("the kernel's BTF has no struct {name}"))?;
        let ty = &self.types[id as usize];
        self.find_member(ty, member, 0)
            .map(|bits| bits / 8)
            .ok_or_else(|| anyhow!("the kernel's struct {name} has no member {member}"))
    }

    /// `member` of `ty`, looking inside anonymous structs and unions down to
    /// `MAX_ANONYMOUS_NESTING` levels (crafted BTF can make them contain themselves).
    fn find_member(&self, ty: &Type, member: &str, depth: u32) -> Option<u32> {
        ty.members.iter().find_map(|m| {
            if m.name != 0 {
                return (self.name(m.name) == member).then_some(m.bit_offset);
            }
            let inner = self.resolve(m.type_id)?;
            if (inner.kind != KIND_STRUCT && inner.kind != KIND_UNION)
                || depth >= MAX_ANONYMOUS_NESTING
            {
                return None;
            }
            m.bit_offset
                .checked_add(self.find_member(inner, member, depth + 1)?)
        })
    }
}

/// Anonymous structs and unions nested deeper than this are not searched (the kernel
/// nests a few levels).
const MAX_ANONYMOUS_NESTING: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_offsets_in_this_kernel_including_anonymous_unions() {
        let btf = KernelBtf::from_sys_fs().expect("this kernel has BTF");
        assert_eq!(btf.member_offset("path", "mnt").unwrap(), 0);
        assert_eq!(btf.member_offset("path", "dentry").unwrap(), 8);
        assert_eq!(btf.member_offset("qstr", "name").unwrap(), 8);
        // In an anonymous struct in an anonymous union: the high half of `hash_len`.
        assert_eq!(btf.member_offset("qstr", "len").unwrap(), 4);
        assert!(btf.member_offset("file", "f_path").unwrap() > 0);
        assert!(btf.member_offset("task_struct", "files").unwrap() > 0);
        assert!(btf.member_offset("task_struct", "no_such_member").is_err());
        assert!(btf.member_offset("no_such_struct", "x").is_err());
    }

    #[test]
    fn self_containing_anonymous_members_end_the_search() {
        // Found by `cargo fuzz run kernel_btf_parse` (a stack overflow before the
        // nesting limit).
        let crash = include_bytes!("../../../fuzz/regressions/kernel_btf_parse-self-nesting");
        if let Ok(btf) = KernelBtf::parse(crash) {
            let _ = btf.member_offset("task_struct", "tgid");
            let _ = btf.member_offset("dentry", "d_name");
        }
    }

    #[test]
    fn truncated_btf_is_an_error() {
        let data = std::fs::read("/sys/kernel/btf/vmlinux").unwrap();
        assert!(KernelBtf::parse(&data[..100]).is_err());
        assert!(KernelBtf::parse(&[]).is_err());
        assert!(KernelBtf::parse(&[0u8; 64]).is_err());
    }
}
