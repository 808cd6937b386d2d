//! Markets: ISO 3166-1 alpha-2 codes packed as the contract's `u16`,
//! `(b0 << 8) | b1` of the upper-cased ASCII letters.

/// Packs a two-letter market code ("SE") into the contract's `u16` form.
///
/// Returns `None` unless `code` is exactly two ASCII letters. Letters are
/// upper-cased, so "se" and "SE" pack the same.
///
/// ```
/// assert_eq!(oasis_contract::market_code("SE"), Some(0x5345));
/// assert_eq!(oasis_contract::market_code("se"), Some(0x5345));
/// assert_eq!(oasis_contract::market_code("SWE"), None);
/// ```
pub fn market_code(code: &str) -> Option<u16> {
    match code.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some(((a.to_ascii_uppercase() as u16) << 8) | b.to_ascii_uppercase() as u16)
        }
        _ => None,
    }
}

/// The two letters of a packed market code, if it is one.
///
/// ```
/// assert_eq!(oasis_contract::market::market_letters(0x5345), Some(*b"SE"));
/// assert_eq!(oasis_contract::market::market_letters(0), None);
/// ```
pub fn market_letters(code: u16) -> Option<[u8; 2]> {
    let [a, b] = code.to_be_bytes();
    (a.is_ascii_uppercase() && b.is_ascii_uppercase()).then_some([a, b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks() {
        for code in ["SE", "no", "Us"] {
            let packed = market_code(code).unwrap();
            let letters = market_letters(packed).unwrap();
            assert!(letters.eq_ignore_ascii_case(code.as_bytes()));
        }
        for bad in ["", "S", "S1", "SWE", "é"] {
            assert_eq!(market_code(bad), None, "{bad}");
        }
    }
}
