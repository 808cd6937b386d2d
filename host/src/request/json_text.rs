//! A strict byte-level reader of JSON text: the tokens the one-pass decoder
//! ([`super::json`]) reads itself, without serde.
//!
//! Why: at 1000 candidates × 30 features the request is ~30,000 feature
//! pairs, and serde_json's visitor machinery (a `MapAccess` call, a key
//! deserializer and an `Option<f64>` deserializer per pair) cost ~30 ns a
//! pair: three quarters of the JSON request's server time (BENCHMARKS.md,
//! session 16). Read here, a pair is a key scanned eight bytes at a time,
//! one comparison with the name seen at the same position in the previous
//! candidate, and a number parsed in place.
//!
//! The reader only has to be *at least as strict* as serde_json: anything it
//! does not take (an escape in a string it must borrow, a number it cannot
//! convert exactly as serde_json does, any other shape) is [`Refused`], and
//! the caller hands the body to the general path, which gives the error, if
//! there is one. Values the decoder does not read itself (the context, a
//! campaign, the rights holders) are found here ([`Reader::object`]) and
//! given to serde_json as they are.

use super::json::Refused;

/// What a reader step gives: a token, or [`Refused`].
pub(super) type Read<T> = Result<T, Refused>;

/// 10^0 … 10^22: the powers of ten an `f64` holds exactly.
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A cursor over JSON text.
pub(super) struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

/// A string token: its text between the quotes, and whether that text has
/// escapes (then it is not the string's value; see [`Reader::unescape`]).
#[derive(Clone, Copy)]
pub(super) struct Str<'a> {
    pub raw: &'a str,
    pub escaped: bool,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `text`.
    pub fn new(text: &'a str) -> Self {
        Reader { text, pos: 0 }
    }

    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte after whitespace, not taken.
    #[inline(always)]
    pub fn peek(&mut self) -> Option<u8> {
        let b = self.bytes();
        // Compact JSON: no whitespace, one comparison.
        match b.get(self.pos) {
            Some(&c) if c > b' ' => return Some(c),
            None => return None,
            _ => {}
        }
        while let Some(&c) = b.get(self.pos) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(c);
            }
            self.pos += 1;
        }
        None
    }

    /// Takes `c` if it comes next (after whitespace).
    #[inline]
    pub fn eat(&mut self, c: u8) -> bool {
        let next = self.peek() == Some(c);
        self.pos += usize::from(next);
        next
    }

    /// Takes `c`, which must come next.
    #[inline]
    pub fn expect(&mut self, c: u8) -> Read<()> {
        if self.eat(c) { Ok(()) } else { Err(Refused) }
    }

    /// After an element or member: `true` on `,` (another follows), `false`
    /// on `close` (taken).
    #[inline]
    pub fn more(&mut self, close: u8) -> Read<bool> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(c) if c == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(Refused),
        }
    }

    /// Opens an object or array (`open` is `{` or `[`): `true` when it has
    /// members, `false` when it is empty (and closed).
    #[inline]
    pub fn open(&mut self, open: u8) -> Read<bool> {
        self.expect(open)?;
        Ok(!self.eat(if open == b'{' { b'}' } else { b']' }))
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Read<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Refused),
        }
    }

    /// Takes `null` if it comes next.
    #[inline]
    pub fn null(&mut self) -> Read<bool> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.literal(b"null")?;
        Ok(true)
    }

    /// `true` or `false`.
    pub fn boolean(&mut self) -> Read<bool> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| true),
            Some(b'f') => self.literal(b"false").map(|()| false),
            _ => Err(Refused),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Read<()> {
        if self.bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// A member's key and the `:` after it; keys the decoder matches are
    /// plain (an escaped one is refused).
    #[inline]
    pub fn key(&mut self) -> Read<&'a str> {
        let s = self.string()?;
        self.expect(b':')?;
        if s.escaped { Err(Refused) } else { Ok(s.raw) }
    }

    /// Takes `key` and the `:` after it if they come next, written
    /// compactly (`"key":`); `false` leaves the reader where it was.
    #[inline(always)]
    pub fn known_key(&mut self, key: &Key<'_>) -> bool {
        if self.peek() != Some(b'"') {
            return false;
        }
        let b = self.bytes();
        let start = self.pos + 1;
        let len = key.raw.len();
        let same = match b.get(start..start + 24) {
            Some(w) if len <= 22 => (0..3).all(|k| {
                let x = u64::from_le_bytes(w[8 * k..8 * k + 8].try_into().expect("eight bytes"));
                x & key.masks[k] == key.words[k]
            }),
            _ => {
                b.get(start..start + len) == Some(key.raw.as_bytes())
                    && b.get(start + len..start + len + 2) == Some(b"\":")
            }
        };
        if same {
            self.pos = start + len + 2;
        }
        same
    }

    /// A string without escapes, borrowed from the text.
    #[inline]
    pub fn plain(&mut self) -> Read<&'a str> {
        let s = self.string()?;
        if s.escaped { Err(Refused) } else { Ok(s.raw) }
    }

    /// A string token. A control character in it, or the end of the text,
    /// is refused (serde_json refuses both); an escape is not checked here
    /// (see [`Reader::unescape`]).
    #[inline]
    pub fn string(&mut self) -> Read<Str<'a>> {
        self.expect(b'"')?;
        let b = self.bytes();
        let start = self.pos;
        let mut escaped = false;
        let mut i = start;
        loop {
            i += b.get(i..).and_then(stop).ok_or(Refused)?;
            match b[i] {
                b'"' => break,
                b'\\' => {
                    // The escaped byte is skipped (`\"` does not end the
                    // string); what the escape means is serde_json's to say.
                    escaped = true;
                    i += 2;
                }
                _ => return Err(Refused),
            }
        }
        self.pos = i + 1;
        // The quotes are ASCII, so both ends are character boundaries of
        // the (UTF-8) text.
        let raw = self.text.get(start..i).ok_or(Refused)?;
        Ok(Str { raw, escaped })
    }

    /// The value of a string token with escapes, as serde_json reads it.
    pub fn unescape(s: Str<'_>) -> Read<String> {
        let quoted = format!("\"{}\"", s.raw);
        serde_json::from_str(&quoted).map_err(|_| Refused)
    }

    /// A number, converted to `f64` exactly as serde_json converts it (the
    /// forms it converts with one exact operation are done here, any other
    /// is given to serde_json itself).
    #[inline(always)]
    pub fn number(&mut self) -> Read<f64> {
        let n = self.scan_number()?;
        self.value(&n)
    }

    /// Whether the number here is of magnitude at most
    /// [`oasis_contract::MAX_MAGNITUDE`], as
    /// [`oasis_contract::within_magnitude`] finds its value. A feature no
    /// policy declared needs no value: with at most nine integer digits and
    /// no exponent it is below 10^9, whatever its fraction, so only its
    /// form is checked here (the conversion and its division were a fifth
    /// of the decode); any other number is converted and its value checked.
    #[inline(always)]
    pub fn number_within(&mut self) -> Read<bool> {
        // Nine integer digits are below the bound.
        const _: () = assert!(oasis_contract::MAX_MAGNITUDE >= 1e9);
        self.peek();
        let b = self.bytes();
        let start = self.pos;
        let first = start + usize::from(b.get(start) == Some(&b'-'));
        let mut i = match b.get(first) {
            // One leading zero only.
            Some(b'0') if !b.get(first + 1).is_some_and(u8::is_ascii_digit) => first + 1,
            Some(b'1'..=b'9') => digits_end(b, first),
            _ => return Err(Refused),
        };
        let int_digits = i - first;
        if b.get(i) == Some(&b'.') {
            let fraction = i + 1;
            i = digits_end(b, fraction);
            if i == fraction {
                return Err(Refused);
            }
        }
        if int_digits <= 9 && !matches!(b.get(i), Some(b'e' | b'E')) {
            self.pos = i;
            return Ok(true);
        }
        Ok(oasis_contract::within_magnitude(self.number()?))
    }

    /// The value of the number `n` just scanned.
    #[inline(always)]
    fn value(&self, n: &Number) -> Read<f64> {
        let v = if n.digits > 19 {
            None
        } else if !n.float {
            // An integer: serde_json reads it as a u64 or an i64 and the
            // f64 visitor converts it (rounding to nearest, symmetric in the
            // sign; `-0` is -0.0 both ways).
            Some(n.significand as f64)
        } else if n.significand <= 1 << 53 && (-22..=22).contains(&n.exponent) {
            // Both operands exact, one correctly rounded operation: what
            // serde_json computes, with or without `float_roundtrip`.
            let (m, p) = (
                n.significand as f64,
                EXACT_POW10[n.exponent.unsigned_abs() as usize],
            );
            Some(if n.exponent >= 0 { m * p } else { m / p })
        } else {
            None
        };
        match v {
            Some(v) => Ok(if n.negative { -v } else { v }),
            None => serde_json::from_str(&self.text[n.start..self.pos]).map_err(|_| Refused),
        }
    }

    /// A non-negative integer no larger than `u32::MAX`, as serde_json
    /// reads a `u32` (anything else, a fraction or exponent included, is
    /// refused: serde_json refuses it or converts it differently).
    pub fn count(&mut self) -> Read<u32> {
        let n = self.scan_number()?;
        if n.negative || n.float || n.digits > 10 {
            return Err(Refused);
        }
        u32::try_from(n.significand).map_err(|_| Refused)
    }

    /// Scans a number token per JSON's grammar (`-?(0|[1-9][0-9]*)
    /// (\.[0-9]+)?([eE][+-]?[0-9]+)?`), accumulating up to 19 significant
    /// digits; more are counted (the caller then asks serde_json).
    #[inline(always)]
    fn scan_number(&mut self) -> Read<Number> {
        self.peek();
        let b = self.bytes();
        let start = self.pos;
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        i += usize::from(negative);
        let mut n = Number {
            start,
            negative,
            significand: 0,
            digits: 0,
            exponent: 0,
            float: false,
        };
        let digit = |i: usize| b.get(i).filter(|c| c.is_ascii_digit()).map(|c| c - b'0');
        match b.get(i) {
            Some(b'0') => {
                i += 1;
                // One leading zero only.
                if digit(i).is_some() {
                    return Err(Refused);
                }
            }
            Some(b'1'..=b'9') => i = digit_run(b, i, &mut n, false),
            _ => return Err(Refused),
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            n.float = true;
            let first = i;
            i = digit_run(b, i, &mut n, true);
            if i == first {
                return Err(Refused);
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            n.float = true;
            let negative_exp = b.get(i) == Some(&b'-');
            if let Some(b'-' | b'+') = b.get(i) {
                i += 1;
            }
            let first = i;
            let mut exp: i32 = 0;
            while let Some(d) = digit(i) {
                // Beyond four digits the exponent is serde_json's to read.
                if i - first >= 4 {
                    n.digits = 20;
                } else {
                    exp = exp * 10 + i32::from(d);
                }
                i += 1;
            }
            if i == first {
                return Err(Refused);
            }
            n.exponent += if negative_exp { -exp } else { exp };
        }
        self.pos = i;
        Ok(n)
    }

    /// An object or array starting here, whole (brackets matched, strings
    /// skipped), for serde_json to read; it is not checked here.
    pub fn object(&mut self) -> Read<&'a str> {
        let b = self.bytes();
        if !matches!(self.peek(), Some(b'{' | b'[')) {
            return Err(Refused);
        }
        let start = self.pos;
        let mut depth = 0usize;
        let mut i = start;
        while let Some(skip) = b.get(i..).and_then(structural) {
            i += skip;
            match b[i] {
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.pos = i + 1;
                        return self.text.get(start..=i).ok_or(Refused);
                    }
                }
                b'"' => {
                    // To the closing quote (an escaped byte skipped; a
                    // control character refused, as serde_json would).
                    i += 1;
                    loop {
                        i += b.get(i..).and_then(stop).ok_or(Refused)?;
                        match b[i] {
                            b'"' => break,
                            b'\\' => i += 2,
                            _ => return Err(Refused),
                        }
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Err(Refused)
    }

    /// Skips the value here, whatever it is: an object or array whole (not
    /// checked, as [`Reader::object`]), a string, a number, a literal.
    pub fn skip(&mut self) -> Read<()> {
        match self.peek() {
            Some(b'{' | b'[') => self.object().map(drop),
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => self.scan_number().map(drop),
        }
    }
}

/// A member key the reader has seen before (no escapes), matched where it
/// comes next by whole-word comparisons instead of a scan: the features of
/// every candidate come in one order, so most keys are one of these.
#[derive(Clone, Copy)]
pub(super) struct Key<'a> {
    raw: &'a str,
    /// The key, its closing quote and a colon, little-endian, zero-padded
    /// to 24 bytes.
    words: [u64; 3],
    /// Which bytes of `words` are the key's.
    masks: [u64; 3],
}

impl<'a> Key<'a> {
    /// The key whose text (between the quotes, without escapes) is `raw`.
    pub fn new(raw: &'a str) -> Self {
        let mut pattern = [0u8; 24];
        let mut mask = [0u8; 24];
        let bytes = raw.as_bytes();
        if bytes.len() <= 22 {
            pattern[..bytes.len()].copy_from_slice(bytes);
            pattern[bytes.len()..bytes.len() + 2].copy_from_slice(b"\":");
            mask[..bytes.len() + 2].fill(0xff);
        }
        let word = |b: &[u8; 24], k: usize| {
            u64::from_le_bytes(b[8 * k..8 * k + 8].try_into().expect("eight bytes"))
        };
        Key {
            raw,
            words: [0, 1, 2].map(|k| word(&pattern, k)),
            masks: [0, 1, 2].map(|k| word(&mask, k)),
        }
    }
}

/// Where the run of digits at `i` ends, eight bytes at a time (as
/// [`digit_run`], without the values).
#[inline(always)]
fn digits_end(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    while let Some(w) = b.get(i..i + 8) {
        let t = u64::from_le_bytes(w.try_into().expect("eight bytes")).wrapping_sub(ONES * 0x30);
        let other = (t | t.wrapping_add(ONES * 0x76)) & HIGH;
        let len = (other.trailing_zeros() / 8) as usize;
        i += len;
        if len < 8 {
            return i;
        }
    }
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Reads the run of digits at `i` into `n` (in a `fraction`, each one also
/// scales the exponent down); returns where the run ends. Eight bytes at a
/// time where the text has them, with no branch per digit: a loop's exit
/// mispredicts on numbers of varying length (the digit-parsing trick of
/// simdjson and fast_float, `eight_digits`).
#[inline(always)]
fn digit_run(b: &[u8], mut i: usize, n: &mut Number, fraction: bool) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    while let Some(w) = b.get(i..i + 8) {
        let t = u64::from_le_bytes(w.try_into().expect("eight bytes")).wrapping_sub(ONES * 0x30);
        // A byte that is not a digit is below 0 or above 9 after the
        // subtraction; the lowest one flagged is a true one (a borrow or a
        // carry only runs upwards).
        let other = (t | t.wrapping_add(ONES * 0x76)) & HIGH;
        let len = (other.trailing_zeros() / 8) as usize;
        if len > 0 {
            if n.digits as usize + len <= 19 {
                // The digits moved to the top of the word (leading zeros
                // below them), the rest shifted out.
                n.significand = n.significand * POW10_U64[len] + eight_digits(t << (64 - 8 * len));
                n.digits += len as u32;
            } else {
                for &c in &w[..len] {
                    n.push(c - b'0');
                }
            }
            if fraction {
                n.exponent -= len as i32;
            }
            i += len;
        }
        if len < 8 {
            return i;
        }
    }
    // The text's last bytes.
    while let Some(d) = b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|d| *d <= 9) {
        n.push(d);
        if fraction {
            n.exponent -= 1;
        }
        i += 1;
    }
    i
}

/// 10^0 … 10^19.
const POW10_U64: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// The value of eight decimal digits, one per byte (0-9), the first in the
/// lowest byte: three multiplications (fast_float's
/// `parse_eight_digits_unrolled`).
#[inline(always)]
fn eight_digits(t: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064; // 100 + (1000000 << 32)
    const MUL2: u64 = 0x0000_2710_0000_0001; // 1 + (10000 << 32)
    let t = t.wrapping_mul(10).wrapping_add(t >> 8);
    let high = (t & MASK).wrapping_mul(MUL1);
    let low = ((t >> 16) & MASK).wrapping_mul(MUL2);
    u64::from((high.wrapping_add(low) >> 32) as u32)
}

/// A scanned number.
struct Number {
    start: usize,
    negative: bool,
    /// The first 19 significant digits (leading zeros included), as an
    /// integer.
    significand: u64,
    /// Digits seen; over 19, `significand` is not the number's.
    digits: u32,
    /// The power of ten `significand` is scaled by.
    exponent: i32,
    /// A fraction or an exponent was written (serde_json reads a float).
    float: bool,
}

impl Number {
    #[inline]
    fn push(&mut self, d: u8) {
        self.digits += 1;
        if self.digits <= 19 {
            self.significand = self.significand * 10 + u64::from(d);
        }
    }
}

/// The position of the first bracket (`{`, `}`, `[`, `]`) or quote in
/// `b`: what [`Reader::object`] stops at. Eight bytes at a time (setting
/// bit 5 folds `[` onto `{` and `]` onto `}`; then "has a zero byte"), so
/// that skipping the candidates to find a route written after them costs
/// a pass over their bytes, not a parse.
#[inline]
fn structural(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut at = 0;
    while let Some(w) = b.get(at..at + 8) {
        let x = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        let folded = x | (ONES * 0x20);
        let flags = zero(folded ^ (ONES * u64::from(b'{')))
            | zero(folded ^ (ONES * u64::from(b'}')))
            | zero(x ^ (ONES * u64::from(b'"')));
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|c| matches!(c, b'{' | b'}' | b'[' | b']' | b'"'))
        .map(|p| at + p)
}

/// The position of the first byte of `b` that ends or interrupts a string:
/// `"`, `\` or a control character. Eight bytes at a time, as one `u64`
/// (the SWAR tests "has a zero byte" and "has a byte less than n" of *Bit
/// Twiddling Hacks*: the lowest flagged byte is always a true match).
#[inline]
fn stop(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let mut at = 0;
    while let Some(w) = b.get(at..at + 8) {
        let x = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let flags = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | x.wrapping_sub(ONES * 0x20) & !x)
            & HIGH;
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| at + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every number form, read here and by serde_json: the same bits, or
    /// a refusal where serde_json refuses too.
    #[test]
    fn numbers_convert_as_serde_json_converts_them() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "-1",
            "0.1",
            "0.2",
            "0.3",
            "1.5e3",
            "1E-3",
            "1e+2",
            "2.5E+0",
            "123456789012345678",
            "1234567890123456789",
            "12345678901234567890",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "9007199254740993",
            "9007199254740993.0",
            "0.1234567890123456789",
            "1e22",
            "1e23",
            "1e-22",
            "1e-23",
            "4.9e-324",
            "1e-400",
            "1e308",
            "1.7976931348623157e308",
            "1e309",
            "0.000001",
            "123.456e-7",
            "1e00001",
            "00",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "--1",
            "+1",
            "1.e5",
            "0x10",
            "1ee2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Generated: decimals of every length and scale.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 22) as usize + 1;
            let m = (x >> 8) % 10u64.pow(digits.min(19) as u32);
            let point = (x >> 40) as usize % (digits + 1);
            let mut s = format!("{m:0digits$}");
            if point > 0 && point < s.len() {
                s.insert(point, '.');
                if s.starts_with("0") && !s.starts_with("0.") {
                    s = s.trim_start_matches('0').to_string();
                    if s.starts_with('.') {
                        s.insert(0, '0');
                    }
                }
            } else {
                s = m.to_string();
            }
            if x & 1 == 1 {
                s.insert(0, '-');
            }
            if (x >> 2) % 4 == 0 {
                s += &format!("e{}", ((x >> 50) % 60) as i64 - 30);
            }
            cases.push(s);
        }
        for case in &cases {
            let theirs = serde_json::from_str::<f64>(case).ok();
            // Near the end of the text and with room after it (the digits
            // read eight at a time).
            for text in [format!("{case},"), format!("{case},{:20}", "")] {
                let mut r = Reader::new(&text);
                let ours = r.number().ok().filter(|_| r.more(b']').is_ok());
                assert_eq!(
                    ours.map(f64::to_bits),
                    theirs.map(f64::to_bits),
                    "{text:?}: {ours:?} vs serde_json {theirs:?}"
                );
            }
        }
    }

    /// The magnitude check on digits agrees with the check on the value.
    #[test]
    fn magnitudes_are_checked_as_on_the_value() {
        for case in [
            "0",
            "1e9",
            "1000000000",
            "1000000000.0",
            "999999999.9999999999",
            "1000000000.1",
            "-1000000000",
            "-1000000000.5",
            "1000000000.00000001",
            "0.000000001e18",
            "1e10",
            "12345678901234567890",
            "0.5",
            "-0.0",
            "1E+9",
            "1.0000000001e9",
        ] {
            let text = format!("{case},");
            let v: f64 = serde_json::from_str(case).unwrap();
            for text in [text.clone(), format!("{text}{:20}", "")] {
                let mut r = Reader::new(&text);
                let within = r.number_within().unwrap();
                assert_eq!(within, oasis_contract::within_magnitude(v), "{case}");
                assert!(r.more(b']').is_ok(), "{case}: read to its end");
            }
        }
    }

    #[test]
    fn counts_are_plain_u32s() {
        for (text, want) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("4294967295", Some(u32::MAX)),
            ("4294967296", None),
            ("99999999999", None),
            ("-1", None),
            ("-0", None),
            ("1.0", None),
            ("1e2", None),
            ("01", None),
        ] {
            let got = Reader::new(text).count().ok();
            assert_eq!(got, want, "{text}");
            if let Some(w) = want {
                assert_eq!(serde_json::from_str::<u32>(text).ok(), Some(w), "{text}");
            }
        }
    }

    #[test]
    fn strings_stop_at_quotes_escapes_and_control_characters() {
        for (text, want) in [
            (r#""""#, Some(("", false))),
            (r#""abc""#, Some(("abc", false))),
            (r#""exactly8""#, Some(("exactly8", false))),
            (
                r#""a much longer string of text""#,
                Some(("a much longer string of text", false)),
            ),
            (r#""fé ünï""#, Some(("fé ünï", false))),
            (r#""a\"b""#, Some((r#"a\"b"#, true))),
            (r#""0123456789\\""#, Some((r#"0123456789\\"#, true))),
            ("\"tab\there\"", None),
            ("\"a long string with a\u{1}control\"", None),
            ("\"unterminated", None),
            ("\"ends in a backslash\\", None),
        ] {
            let mut r = Reader::new(text);
            let got = r.string().ok().map(|s| (s.raw, s.escaped));
            assert_eq!(got, want, "{text}");
            if let Some((raw, true)) = got {
                let s = Str { raw, escaped: true };
                assert_eq!(
                    Reader::unescape(s).ok(),
                    serde_json::from_str::<String>(text).ok()
                );
            }
        }
    }

    /// The structural search agrees with a byte-by-byte one on every
    /// byte value at every position of a word.
    #[test]
    fn brackets_and_quotes_are_found_at_every_position() {
        for at in 0..20 {
            for c in 0..=255u8 {
                let mut b = vec![b'a'; 24];
                b[at] = c;
                let want = b.iter().position(|c| b"{}[]\"".contains(c));
                assert_eq!(structural(&b), want, "byte {c:#x} at {at}");
            }
        }
    }

    #[test]
    fn objects_are_found_whole() {
        let text = r#" {"a": [1, {"b": "}]\"{"}], "c": {}} , 5"#;
        let mut r = Reader::new(text);
        let o = r.object().unwrap();
        assert_eq!(o, r#"{"a": [1, {"b": "}]\"{"}], "c": {}}"#);
        assert!(r.more(b']').unwrap());
        assert_eq!(r.number().unwrap(), 5.0);
        assert!(Reader::new(r#"{"a": [1}"#).object().is_err());
        assert!(Reader::new(r#"{"a": 1"#).object().is_err());
        assert!(Reader::new("5").object().is_err());
    }
}
