// SPDX-License-Identifier: Apache-2.0
//! Parsing memory and disk sizes as people write them: `512`, `512M`,
//! `2G`, `2GiB`, `1T`.

/// Parses a size; a bare number means MiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (try 512M or 2G)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "K" | "KB" | "KIB" => 10,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("'{text}' has an unknown unit (use K, M, G or T)")),
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_size_bare_number_is_mib() {
        assert_eq!(parse_size("512"), Ok(512 << 20));
    }

    #[test]
    fn test_parse_size_units() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
    }

    #[test]
    fn test_parse_size_rejects_garbage() {
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5P").is_err());
    }

    #[test]
    fn test_parse_size_terabytes_for_disks() {
        assert_eq!(parse_size("1T"), Ok(1 << 40));
    }
}
