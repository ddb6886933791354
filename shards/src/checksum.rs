//! Checksums: CRC-32C (Castagnoli), hardware-accelerated where the CPU has it.

/// The CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// The manifest's text form of a file checksum, `crc32c:xxxxxxxx`.
pub fn format_checksum(crc: u32) -> String {
    format!("crc32c:{crc:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(format_checksum(0xab), "crc32c:000000ab");
    }
}
