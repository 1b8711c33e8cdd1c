//! Counters declared once. Each set is one macro call: the field (and, for the kernel's
//! per-CPU arrays, its index), whether it counts a loss, and its doc line. The agent's
//! stats, the metrics' loss list, the soak's loss total and the docs' counter tables
//! are all derived from these catalogues, so adding a counter touches its declaration
//! and the code that bumps it.

/// What a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// Something produced, delivered or chosen (filtered): not a loss.
    Count,
    /// Something the audit lost: the metrics' `losses` and the soak's total.
    Loss,
}

/// One counter of a catalogue.
#[derive(Clone, Copy, Debug)]
pub struct CounterInfo {
    /// The field name, as printed in `agent_stats`.
    pub name: &'static str,
    pub kind: CounterKind,
    /// The declaration's doc comment (lines joined).
    pub doc: &'static str,
}

/// A struct of `u64` counters declared by `named_counters!` or `indexed_counters!`.
pub trait CounterSet {
    /// Every counter, in declaration order.
    const CATALOGUE: &'static [CounterInfo];

    /// Calls `f` with each counter and its value, in declaration order.
    fn for_each(&self, f: impl FnMut(&'static CounterInfo, u64));
}

/// Declares a struct of `u64` counters and its `CounterSet` catalogue:
/// `/// doc` lines, then `field: Count;` or `field: Loss;`.
#[macro_export]
macro_rules! named_counters {
    (
        $(#[$meta:meta])*
        pub struct $set:ident {
            $( $(#[doc = $doc:literal])* $field:ident: $kind:ident; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        #[cfg_attr(feature = "user", derive(serde::Serialize, schemars::JsonSchema))]
        pub struct $set {
            $( $(#[doc = $doc])* pub $field: u64, )*
        }

        impl $set {
            /// Adds `other`'s counts to these.
            pub fn add(&mut self, other: &Self) {
                $( self.$field += other.$field; )*
            }
        }

        impl $crate::counter_catalogue::CounterSet for $set {
            const CATALOGUE: &'static [$crate::counter_catalogue::CounterInfo] = &[$(
                $crate::counter_catalogue::CounterInfo {
                    name: stringify!($field),
                    kind: $crate::counter_catalogue::CounterKind::$kind,
                    doc: concat!($($doc),*),
                },
            )*];

            fn for_each(
                &self,
                mut f: impl FnMut(&'static $crate::counter_catalogue::CounterInfo, u64),
            ) {
                let values = [$(self.$field),*];
                for (info, value) in Self::CATALOGUE.iter().zip(values) {
                    f(info, value);
                }
            }
        }
    };
}

/// `named_counters!` for a kernel per-CPU counter array: each counter also gets its
/// index constant (`NAME = index, field: Kind;`), asserted to be its position, and
/// `$count` is the array's length.
#[macro_export]
macro_rules! indexed_counters {
    (
        $(#[$meta:meta])*
        pub struct $set:ident, $count:ident {
            $( $(#[doc = $doc:literal])* $index_name:ident = $index:literal, $field:ident: $kind:ident; )*
        }
    ) => {
        $( $(#[doc = $doc])* pub const $index_name: u32 = $index; )*

        /// Number of counters.
        pub const $count: u32 = [$($index),*].len() as u32;

        // Indices are the declaration order: the array has no holes.
        const _: () = {
            let indices: [u32; $count as usize] = [$($index),*];
            let mut i = 0;
            while i < indices.len() {
                assert!(indices[i] == i as u32);
                i += 1;
            }
        };

        $crate::named_counters! {
            $(#[$meta])*
            pub struct $set {
                $( $(#[doc = $doc])* $field: $kind; )*
            }
        }

        impl $set {
            /// The counters read slot by slot (`slot(index)`).
            pub fn try_from_slots<E>(
                mut slot: impl FnMut(u32) -> core::result::Result<u64, E>,
            ) -> core::result::Result<Self, E> {
                Ok(Self { $( $field: slot($index_name)?, )* })
            }
        }
    };
}
