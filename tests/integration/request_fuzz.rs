//! Untrusted request bodies: thousands of mutated versions of the example
//! request never panic the parser, the validator or the columnar builder,
//! and whatever is accepted yields a batch whose columns line up; the JSON
//! fast path (`request::json::decode`) takes a mutated body only if the
//! general path accepts it, and then gives the same batch.

use oasis::columnar;
use oasis::request::{self, Validate};

/// xorshift64*: a tiny deterministic generator, enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Replacement snippets that keep JSON plausible but values hostile.
const SNIPPETS: &[&[u8]] = &[
    b"null",
    b"\"Sweden\"",
    b"-5",
    b"-1",
    b"1e309",
    b"\"\"",
    b"[]",
    b"{}",
    b"0",
    b"\"SE\"",
    b"true",
    b"\"\\u0000\"",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\"radio\"",
    b"1.5",
    b"\"x\"",
];

fn mutate(rng: &mut Rng, body: &[u8], colons: &[usize]) -> Vec<u8> {
    let mut out = body.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(out.len());
        match rng.below(10) {
            0 => out[at] = rng.next() as u8,
            1 => {
                out.remove(at);
            }
            2 => out.truncate(at),
            _ => {
                // Replace a value (the token after some `:`) by a hostile
                // snippet: the JSON stays well formed, the value does not.
                let start = (colons[rng.below(colons.len())] + 1).min(out.len());
                let end = out[start..]
                    .iter()
                    .position(|b| b",}]".contains(b))
                    .map_or(out.len(), |p| start + p);
                let snippet = SNIPPETS[rng.below(SNIPPETS.len())];
                out.splice(start..end, snippet.iter().copied());
            }
        }
    }
    out
}

#[test]
fn mutated_requests_never_panic_and_accepted_ones_are_consistent() {
    let body = crate::harness::example_body();
    let columns = vec!["p_skip".to_string(), "popularity".to_string()];
    let context = vec!["local_hour".to_string()];
    let colons: Vec<usize> = (0..body.len()).filter(|&i| body[i] == b':').collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut accepted, mut malformed, mut invalid) = (0, 0, 0);
    let declared = ["p_skip", "popularity"];
    for _ in 0..1000 {
        let bytes = mutate(&mut rng, &body, &colons);
        let fast = request::json::decode(&bytes, &declared, 2000).ok();
        let general = request::parse(&bytes)
            .ok()
            .and_then(|r| r.validate(2000).ok());
        match (&fast, &general) {
            (Some(f), Some(g)) => assert_eq!(
                format!("{:?}", columnar::batch(f, &columns, &context)),
                format!("{:?}", columnar::batch(g, &columns, &context)),
            ),
            (Some(_), None) => panic!("the fast path took a body the general path refuses"),
            _ => {}
        }
        let req = match request::parse(&bytes) {
            Ok(r) => r,
            Err(request::RequestError::Malformed { .. }) => {
                malformed += 1;
                continue;
            }
            Err(e) => panic!("parse returned a non-parse error: {e}"),
        };
        let Ok(req) = req.validate(2000) else {
            invalid += 1;
            continue;
        };
        accepted += 1;
        let w = columnar::batch(&req, &columns, &context);
        let n = req.candidates.len();
        assert_eq!(w.candidates.count as usize, n);
        assert_eq!(w.candidates.features.len(), n * columns.len());
        for col in [
            &w.candidates.artist,
            &w.candidates.rights_holder,
            &w.candidates.impressions_24h,
        ] {
            assert_eq!(col.len(), n);
        }
        assert!(
            w.candidates
                .campaign
                .iter()
                .all(|&c| c < w.campaigns.len() as i32)
        );
        assert!(w.candidates.relevance.iter().all(|r| r.is_finite()));
    }
    // The mutations exercise all three outcomes.
    assert!(
        accepted > 20 && malformed > 20 && invalid > 3,
        "{accepted} {malformed} {invalid}"
    );
}
