//! `--symbol NAME[:LEN]` and `--address ADDR[:LEN]`, checked before anything loads.

use anyhow::{Result, bail};

/// What one watch names, before it is resolved in the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    Symbol(String),
    Address(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    pub target: WatchTarget,
    /// Bytes watched; `None`: the symbol's size (an address's default is 8).
    pub length: Option<u8>,
}

/// The most watches: x86-64 has four debug address registers.
pub const MAX_WATCHES: usize = 4;

/// The watches the command line asks for, in order (symbols, then addresses).
pub fn parse_all(symbols: &[String], addresses: &[String]) -> Result<Vec<WatchSpec>> {
    let mut specs = Vec::new();
    for symbol in symbols {
        let (name, length) = split_length(symbol)?;
        if name.is_empty() {
            bail!("`--symbol {symbol}` names no symbol");
        }
        specs.push(WatchSpec {
            target: WatchTarget::Symbol(name.to_string()),
            length,
        });
    }
    for address in addresses {
        let (number, length) = split_length(address)?;
        let digits = number.trim_start_matches("0x").trim_start_matches("0X");
        let Ok(value) = u64::from_str_radix(digits, 16) else {
            bail!("`{number}` is not a hexadecimal address like 0x4c6f10");
        };
        let length = length.unwrap_or(8);
        if !value.is_multiple_of(u64::from(length)) {
            bail!(
                "address {value:#x} is not aligned to its length {length}: a watchpoint of LEN bytes must start at a multiple of LEN"
            );
        }
        specs.push(WatchSpec {
            target: WatchTarget::Address(value),
            length: Some(length),
        });
    }
    if specs.is_empty() {
        bail!("nothing to watch: give --symbol NAME or --address ADDR (up to {MAX_WATCHES})");
    }
    if specs.len() > MAX_WATCHES {
        bail!(
            "{} watches asked for, but the CPU has {MAX_WATCHES} debug registers: watch at most {MAX_WATCHES}",
            specs.len()
        );
    }
    Ok(specs)
}

/// "NAME:LEN" into the name and a length of 1, 2, 4 or 8.
fn split_length(value: &str) -> Result<(&str, Option<u8>)> {
    // Go names hold no ':' but C++ names do ("ns::var"): only a numeric tail is a length.
    match value.rsplit_once(':') {
        Some((name, len)) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
            match len.parse::<u8>() {
                Ok(n @ (1 | 2 | 4 | 8)) => Ok((name, Some(n))),
                _ => bail!("watch length {len} in `{value}` is not 1, 2, 4 or 8 bytes"),
            }
        }
        _ => Ok((value, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn parses_symbols_and_addresses() {
        let specs = parse_all(
            &strings(&["counter", "ns::flag:4"]),
            &strings(&["0x1000:2"]),
        )
        .unwrap();
        assert_eq!(specs[0].target, WatchTarget::Symbol("counter".into()));
        assert_eq!(specs[0].length, None);
        assert_eq!(specs[1].target, WatchTarget::Symbol("ns::flag".into()));
        assert_eq!(specs[1].length, Some(4));
        assert_eq!(specs[2].target, WatchTarget::Address(0x1000));
        assert_eq!(specs[2].length, Some(2));
    }

    #[test]
    fn rejects_bad_lengths_alignment_and_counts() {
        let err =
            |s: &[&str], a: &[&str]| parse_all(&strings(s), &strings(a)).unwrap_err().to_string();
        assert!(err(&["x:3"], &[]).contains("not 1, 2, 4 or 8"));
        assert!(err(&[], &["0x1004:8"]).contains("not aligned"));
        assert!(err(&[], &["zz"]).contains("not a hexadecimal address"));
        assert!(err(&["a", "b", "c", "d", "e"], &[]).contains("at most 4"));
        assert!(err(&[], &[]).contains("nothing to watch"));
    }
}
