//! Where the runtime keeps the goroutine a thread switched away from. A thread on its
//! system stack (after `systemstack` or `mcall`) runs `g0`; the goroutine that switched
//! is `g0.m.curg`, with the registers it switched at in `curg.sched`. `go_unwind`
//! follows that switch as the runtime's own traceback does. Offsets from DWARF, else
//! from a table of the releases checked here; when unknown, the walk ends at the switch.

use super::{go_binary::GoBinary, goid_offset::member_offsets};

/// Byte offsets of the fields the switch is read through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchLayout {
    pub g_m: u32,
    pub g_sched: u32,
    pub m_curg: u32,
    pub gobuf_sp: u32,
    pub gobuf_pc: u32,
    pub gobuf_bp: u32,
}

const MEMBERS: [(&str, &str); 6] = [
    ("runtime.g", "m"),
    ("runtime.g", "sched"),
    ("runtime.m", "curg"),
    ("runtime.gobuf", "sp"),
    ("runtime.gobuf", "pc"),
    ("runtime.gobuf", "bp"),
];

pub fn find(binary: &GoBinary) -> Option<SwitchLayout> {
    match member_offsets(binary, &MEMBERS).as_deref() {
        Ok(
            &[
                Some(g_m),
                Some(g_sched),
                Some(m_curg),
                Some(gobuf_sp),
                Some(gobuf_pc),
                Some(gobuf_bp),
            ],
        ) => {
            let layout = SwitchLayout {
                g_m,
                g_sched,
                m_curg,
                gobuf_sp,
                gobuf_pc,
                gobuf_bp,
            };
            log::debug!("stack switch offsets from DWARF: {layout:?}");
            return Some(layout);
        }
        Ok(_) => log::debug!("the DWARF does not describe g.m, g.sched, m.curg and gobuf"),
        Err(err) => log::debug!("stack switch offsets not read from DWARF: {err:#}"),
    }
    from_table(binary.info.release)
}

/// Read from the DWARF of Debian's builds of 1.19 and 1.24 (`m.curg` 192, `gobuf.bp`
/// 48; the releases between taken to match both ends) and of 1.25, 1.26 and 1.27 (184
/// and 40: `gobuf.ret` is gone); a newer release takes 1.27's, as for the goid offset.
fn from_table(release: (u32, u32)) -> Option<SwitchLayout> {
    let (m_curg, gobuf_bp) = match release {
        (1, 19..=24) => (192, 48),
        (1, 25..) | (2.., _) => (184, 40),
        _ => return None,
    };
    Some(SwitchLayout {
        g_m: 48,
        g_sched: 56,
        m_curg,
        gobuf_sp: 0,
        gobuf_pc: 8,
        gobuf_bp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_are_the_layouts_read_from_dwarf() {
        assert_eq!(
            from_table((1, 19)).map(|l| (l.m_curg, l.gobuf_bp)),
            Some((192, 48))
        );
        assert_eq!(
            from_table((1, 24)).map(|l| (l.m_curg, l.gobuf_bp)),
            Some((192, 48))
        );
        assert_eq!(
            from_table((1, 25)).map(|l| (l.m_curg, l.gobuf_bp)),
            Some((184, 40))
        );
        assert_eq!(from_table((1, 28)), from_table((1, 27)));
        assert_eq!(
            from_table((1, 18)),
            None,
            "not checked: the walk ends at the switch"
        );
    }
}
