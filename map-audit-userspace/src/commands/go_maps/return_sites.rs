//! The return instructions of a function, found by decoding its machine code with
//! iced-x86 (a byte scan would also match 0xc3 inside other instructions). Go mode puts
//! a uprobe on each: uretprobes replace the return address on the goroutine stack,
//! which the Go runtime moves and inspects, and crash Go programs.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// Virtual addresses of the `ret` instructions in `code`, which starts at `address`.
pub fn find(code: &[u8], address: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut returns = Vec::new();
    for instruction in &mut decoder {
        if instruction.mnemonic() == Mnemonic::Ret {
            returns.push(instruction.ip());
        }
    }
    returns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rets_not_c3_bytes_inside_other_instructions() {
        let code = [
            0xb8, 0xc3, 0x00, 0x00, 0x00, // mov eax, 0xc3
            0x74, 0x01, // je +1
            0xc3, // ret
            0x48, 0x83, 0xc4, 0x18, // add rsp, 0x18
            0xc2, 0x08, 0x00, // ret 8
            0xcc, // int3 padding
        ];
        assert_eq!(find(&code, 0x1000), [0x1007, 0x100c]);
    }
}
