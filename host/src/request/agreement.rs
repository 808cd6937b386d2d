//! Agreement of the fast decoders with the general path (issue 21): for
//! valid requests (the example, and generated ones with varied features,
//! campaigns, holders and counts) the same validated request and the same
//! columnar batch; for invalid ones, a refusal by the fast path and the
//! general path's error unchanged.

use oasis_proto::prost::Message;
use oasis_proto::v1;

use super::json::{self, Refused};
use super::packed;
use super::proto_view::ProtoMessage;
use super::{RequestError, ValidRequest, Validate, parse};

/// Everything a later step reads of a validated request, features as the
/// batch for `cols` and `ctx` shows them.
fn view(r: &ValidRequest<'_>, cols: &[String], ctx: &[String]) -> String {
    let mut holders: Vec<String> = r
        .rights_holders
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.exposure_share_7d))
        .collect();
    holders.sort();
    let rows: Vec<String> = r
        .candidates
        .iter()
        .map(|c| {
            format!(
                "{}|{}|{}|{}|{:?}|{:?}|{:?}",
                c.id,
                c.relevance,
                c.artist,
                c.rights_holder,
                c.impressions_24h,
                c.session_promoted,
                c.campaign
            )
        })
        .collect();
    let campaigns: Vec<&str> = (0..r.campaigns().len()).map(|i| r.campaign_id(i)).collect();
    let holder_ids: Vec<&str> = (0..r.holder_count() as u32)
        .map(|k| r.holder_id(k))
        .collect();
    format!(
        "{:?}\n{:?}\n{:?} {:?} {}\n{rows:?}\n{holders:?}\n{campaigns:?} {:?}\n{holder_ids:?} {:?}\n{:?} {:?} {}\n{:?}",
        r.route,
        r.context,
        r.debug,
        r.market(),
        r.seed(),
        r.campaign_sent(),
        r.holders_sent(),
        r.impressions_24h(),
        r.session_promoted(),
        r.counts_missing(),
        crate::columnar::batch(r, cols, ctx),
    )
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A small deterministic generator (xorshift), so that failures reproduce.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMES: [&str; 9] = [
    "p_skip",
    // An escaped name ("escaped"): unescaped by the fast path.
    r"esc\u0061ped",
    "pop",
    "p_save",
    "release_age_days",
    "f\u{e9}",
    "x y",
    "holder_exposure_7d",
    "n",
];

/// A valid request body: `seed` varies the candidate count, features
/// (absent, null, integers, negatives, exponents, escaped names), shared
/// campaigns, artists and holders (some unknown), counts, holders' table,
/// route, debug and slate size.
fn generated(seed: u64, duplicate_names: bool) -> String {
    let mut g = Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let n = g.below(40) as usize;
    let mut cands = Vec::new();
    let with_counts = g.below(2) == 0;
    for i in 0..n {
        let mut fields = vec![
            format!(r#""id": "t{i}é-{seed}""#),
            format!(r#""relevance": {}"#, g.below(1000) as f64 / 7.0),
        ];
        if g.below(4) > 0 {
            fields.push(format!(r#""artist": "a{}""#, g.below(5)));
        }
        if g.below(4) > 0 {
            fields.push(format!(r#""rights_holder": "h{}""#, g.below(4)));
        }
        if with_counts {
            fields.push(format!(
                r#""impressions_24h": {}, "session_promoted": {}"#,
                g.below(3),
                g.below(2)
            ));
        }
        match g.below(4) {
            0 => fields.push(
                r#""campaign": {"id": "c1", "start_ms": 0, "end_ms": 5000, "delivery_target": 10,
                    "markets": ["SE", "no"], "surfaces": ["radio", "daily_mix"]}"#
                    .into(),
            ),
            1 => fields.push(
                r#""campaign": {"id": "c2", "start_ms": 100, "end_ms": 9000, "delivery_target": 3.5,
                    "delivered": 1, "pacing_integral": -0.5, "pacing_last_error": 0.25,
                    "pacing_updated_ms": 50, "commission_bps": 1200}"#
                    .into(),
            ),
            _ => {}
        }
        if g.below(6) > 0 {
            let mut f = Vec::new();
            for name in NAMES {
                match g.below(5) {
                    0 => {}
                    1 => f.push(format!(r#""{name}": null"#)),
                    2 => f.push(format!(r#""{name}": {}"#, g.below(100))),
                    3 => f.push(format!(r#""{name}": -{}.5e-3"#, g.below(100))),
                    _ => f.push(format!(r#""{name}": {}"#, g.below(10_000) as f64 / 997.0)),
                }
            }
            if duplicate_names && g.below(3) == 0 {
                f.push(r#""pop": 42"#.into());
                f.push(r#""p_skip": null"#.into());
            }
            fields.push(format!(r#""features": {{{}}}"#, f.join(", ")));
        }
        cands.push(format!("{{{}}}", fields.join(", ")));
    }
    let mut top = Vec::new();
    if g.below(2) == 0 {
        top.push(r#""route": "radio""#.to_string());
    }
    top.push(format!(
        r#""context": {{"request_id": "r{seed}", "listener_id": "u1", "session_id": "s1",
            "surface": "daily_mix", "market": "se", "timestamp_ms": 1000{}{},
            "features": {{"local_hour": {}, "skip_rate": null}}}}"#,
        if g.below(2) == 0 {
            r#", "seed": 7"#
        } else {
            ""
        },
        if g.below(3) == 0 {
            r#", "slate_size": 3"#
        } else {
            ""
        },
        g.below(24)
    ));
    top.push(format!(r#""candidates": [{}]"#, cands.join(",\n")));
    if g.below(2) == 0 {
        top.push(
            r#""rights_holders": {"h1": {"exposure_share_7d": 0.25}, "zz": {"exposure_share_7d": 1}}"#
                .into(),
        );
    }
    if g.below(3) == 0 {
        top.push(r#""debug": true"#.into());
    }
    format!("{{{}}}", top.join(",\n"))
}

const COLS: [&str; 5] = ["pop", "p_skip", "absent", "f\u{e9}", "escaped"];

fn json_agrees(body: &str) {
    json_agrees_at(body, 100);
}

fn json_agrees_at(body: &str, max: usize) {
    let cols = strings(&COLS);
    let ctx = strings(&["local_hour", "skip_rate", "absent"]);
    let fast = json::decode(body.as_bytes(), &COLS, max).expect("the fast path takes it");
    let general = parse(body.as_bytes()).unwrap().validate(max).unwrap();
    assert!(fast.feature_columns().is_some());
    assert_eq!(
        view(&fast, &cols, &ctx),
        view(&general, &cols, &ctx),
        "{body}"
    );
    // A policy declaring a subset of the columns (a gather, not a copy).
    let some = strings(&["p_skip", "f\u{e9}"]);
    assert_eq!(
        view(&fast, &some, &ctx),
        view(&general, &some, &ctx),
        "{body}"
    );
    // The hint names the route the body names.
    assert_eq!(
        json::route_hint(body.as_bytes()).unwrap().as_deref(),
        general.route.as_deref()
    );
}

fn k(m: &mut v1::ScoreRequest) -> &mut v1::Candidates {
    m.candidates.as_mut().unwrap()
}

fn with_campaign(m: &mut v1::ScoreRequest) -> usize {
    m.campaigns.push(v1::Campaign {
        id: "cx".into(),
        start_ms: 0,
        end_ms: 10,
        delivery_target: 1.0,
        ..Default::default()
    });
    let j = m.campaigns.len() as i32 - 1;
    let n = m.candidates.as_ref().unwrap().ids.len();
    let c = &mut m.candidates.as_mut().unwrap().campaign;
    c.resize(n, -1);
    c[0] = j;
    j as usize
}

fn grpc_agrees(msg: &v1::ScoreRequest) {
    let cols = strings(&COLS);
    let ctx = strings(&["local_hour", "skip_rate", "absent"]);
    let direct = packed::direct(msg, 100).expect("the direct path takes it");
    let general = packed::from_proto(msg).unwrap().validate(100).unwrap();
    assert_eq!(view(&direct, &cols, &ctx), view(&general, &cols, &ctx));
    // The server's path: the bytes read in place.
    let bytes = msg.encode_to_vec();
    let msg = ProtoMessage::new(&bytes);
    let in_place = packed::direct_view(msg.view().expect("read in place"), 100)
        .expect("the direct path takes it");
    assert_eq!(view(&in_place, &cols, &ctx), view(&general, &cols, &ctx));
}

#[test]
fn generated_json_requests_agree_with_the_general_path() {
    for seed in 1..=300 {
        json_agrees(&generated(seed, seed % 2 == 0));
    }
}

#[test]
fn generated_grpc_requests_agree_with_the_general_path() {
    for seed in 1..=300 {
        let body = generated(seed, false);
        let msg = oasis_proto::json::request(body.as_bytes()).unwrap();
        grpc_agrees(&msg);
    }
}

#[test]
fn the_example_request_agrees_through_both() {
    let body = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/request.json"
    ))
    .unwrap();
    json_agrees_at(&body, 2000);
    let cols = strings(&["p_skip", "popularity", "holder_exposure_7d"]);
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let ctx = strings(&["local_hour", "session_position"]);
    let fast = json::decode(body.as_bytes(), &names, 2000).unwrap();
    let general = parse(body.as_bytes()).unwrap().validate(2000).unwrap();
    assert_eq!(view(&fast, &cols, &ctx), view(&general, &cols, &ctx));
    let msg = oasis_proto::json::request(body.as_bytes()).unwrap();
    let direct = packed::direct(&msg, 2000).unwrap();
    let general = packed::from_proto(&msg).unwrap().validate(2000).unwrap();
    assert!(view(&direct, &cols, &ctx) == view(&general, &cols, &ctx));
    let bytes = msg.encode_to_vec();
    let msg = ProtoMessage::new(&bytes);
    let in_place = packed::direct_view(msg.view().unwrap(), 2000).unwrap();
    assert!(view(&in_place, &cols, &ctx) == view(&general, &cols, &ctx));
}

#[test]
fn bodies_the_fast_path_leaves_to_the_general_one_are_still_served() {
    let good = generated(3, false);
    assert!(good.contains(r#""route": "radio""#) || !good.contains("route"));
    // A route after the candidates (keys sorted, as serde_json's `Value`
    // writes them): found by the hint, and decoded on the fast path.
    let late = good[..good.len() - 1].to_string() + r#", "route": "mixes"}"#;
    let late = late.replacen(r#""route": "radio","#, "", 1);
    assert_eq!(
        json::route_hint(late.as_bytes()).unwrap().as_deref(),
        Some("mixes")
    );
    let fast = json::decode(late.as_bytes(), &COLS, 100).unwrap();
    assert_eq!(fast.route.as_deref(), Some("mixes"));
    assert!(fast.feature_columns().is_some());
    // A route before and after: refused by the fast path, and the general
    // path names the duplicate.
    let twice = good[..good.len() - 1].to_string() + r#", "route": "mixes"}"#;
    if twice.contains(r#""route": "radio""#) {
        assert_eq!(
            json::decode(twice.as_bytes(), &COLS, 100).err(),
            Some(Refused)
        );
        assert!(json::decode_or_parse(twice.as_bytes(), &COLS, 100).is_err());
    }
}

/// Valid bodies the fast path does not read itself: served by the general
/// path, with its result.
#[test]
fn valid_bodies_outside_the_fast_path_get_the_general_result() {
    // A body with two candidates in campaign c1.
    let (seed, good) = (1..)
        .map(|seed| (seed, generated(seed, false)))
        .find(|(_, b)| b.matches(r#"{"id": "c1""#).count() >= 2)
        .unwrap();
    let id = format!(r#""id": "t0é-{seed}""#);
    assert!(good.contains(&id), "{good}");
    let cases = [
        // An escape in a string the fast path borrows.
        good.replacen(&id, &id.replace('é', r"\u00e9"), 1),
        // One campaign written two ways (equal values, different text).
        good.replace(
            r#""campaign": {"id": "c1", "start_ms": 0,"#,
            r#""campaign": {"start_ms": 0, "id": "c1","#,
        )
        .replacen(
            r#""campaign": {"start_ms": 0, "id": "c1","#,
            r#""campaign": {"id": "c1", "start_ms": 0,"#,
            1,
        ),
    ];
    let cols = strings(&COLS);
    let ctx = strings(&["local_hour", "skip_rate", "absent"]);
    for body in &cases {
        assert_ne!(body, &good);
        let general = parse(body.as_bytes()).unwrap().validate(100).unwrap();
        let served = json::decode_or_parse(body.as_bytes(), &COLS, 100).unwrap();
        assert_eq!(
            view(&served, &cols, &ctx),
            view(&general, &cols, &ctx),
            "{body}"
        );
    }
    assert_eq!(
        json::decode(cases[0].as_bytes(), &COLS, 100).err(),
        Some(Refused)
    );
    // Numbers the fast path has serde_json convert (20 digits, a long
    // exponent): taken, with the general path's values.
    let long = good.replacen(
        r#""features": {"#,
        r#""features": {"pop": 0.12345678901234567890e00001, "g": -12345678.9012345678901, "#,
        1,
    );
    assert_ne!(long, good);
    json_agrees(&long);
}

/// The general path's error for `body`.
fn general_error(body: &str, max: usize) -> RequestError {
    match parse(body.as_bytes()) {
        Err(e) => e,
        Ok(r) => r.validate(max).expect_err("the general path refuses it"),
    }
}

#[test]
fn invalid_json_is_refused_with_the_general_error() {
    const GOOD: &str = r#"{"context": {"request_id": "r1", "listener_id": "u1", "session_id": "s1",
        "surface": "daily_mix", "market": "se", "timestamp_ms": 1000,
        "features": {"local_hour": 20}},
      "candidates": [
        {"id": "t1", "relevance": 0.5, "artist": "a1", "rights_holder": "h1",
         "features": {"p_skip": 0.2, "other": 3},
         "campaign": {"id": "c1", "start_ms": 0, "end_ms": 2000, "delivery_target": 10}},
        {"id": "t2", "relevance": 0.4, "features": {"pop": 1}}
      ]}"#;
    json_agrees(GOOD);
    // Undeclared features at the edges of the magnitude are accepted, as
    // the general path accepts them (converted or not).
    for edge in [
        "999999999.99",
        "-999999999",
        "1000000000",
        "1e9",
        "-1E9",
        "0.5e-300",
        "null",
        "0",
    ] {
        json_agrees(&GOOD.replace(r#""other": 3"#, &format!(r#""other": {edge}"#)));
    }
    let long = "x".repeat(crate::request::MAX_ID_BYTES + 1);
    let many: Vec<String> = (0..=crate::request::MAX_FEATURES)
        .map(|i| format!(r#""g{i}": 1"#))
        .collect();
    let cases: Vec<(&str, String)> = vec![
        ("wrong type", GOOD.replace(r#""relevance": 0.4"#, r#""relevance": "high""#)),
        ("unknown field", GOOD.replace(r#""relevance": 0.4"#, r#""relevance": 0.4, "colour": 1"#)),
        ("missing id", GOOD.replace(r#""id": "t2", "#, "")),
        ("duplicate id", GOOD.replace(r#""id": "t2""#, r#""id": "t1""#)),
        ("undeclared feature too large", GOOD.replace(r#""other": 3"#, r#""other": 2e9"#)),
        ("undeclared feature a string", GOOD.replace(r#""other": 3"#, r#""other": "x""#)),
        ("undeclared feature a bool", GOOD.replace(r#""other": 3"#, r#""other": true"#)),
        ("undeclared feature an object", GOOD.replace(r#""other": 3"#, r#""other": {"a": 1}"#)),
        ("undeclared feature 10 digits", GOOD.replace(r#""other": 3"#, r#""other": -1000000000.5"#)),
        ("undeclared feature by its exponent", GOOD.replace(r#""other": 3"#, r#""other": 0.2e10"#)),
        ("undeclared feature beyond f64", GOOD.replace(r#""other": 3"#, r#""other": 1e400"#)),
        ("declared feature infinite-ish", GOOD.replace(r#""p_skip": 0.2"#, r#""p_skip": -1e300"#)),
        ("empty feature name", GOOD.replace(r#""other": 3"#, r#""": 3"#)),
        ("control character in a feature name", GOOD.replace(r#""other": 3"#, r#""o\u0001": 3"#)),
        ("too many features", GOOD.replace(r#""pop": 1"#, &many.join(", "))),
        ("market", GOOD.replace(r#""market": "se""#, r#""market": "SWE""#)),
        ("campaign window", GOOD.replace(r#""end_ms": 2000"#, r#""end_ms": 0"#)),
        ("campaign copies differ", GOOD.replace(
            r#"{"id": "t2", "relevance": 0.4,"#,
            r#"{"id": "t2", "relevance": 0.4, "campaign": {"id": "c1", "start_ms": 0, "end_ms": 2000, "delivery_target": 11},"#,
        )),
        ("trailing bytes", format!("{GOOD} x")),
        ("repeated field", GOOD.replace(r#""relevance": 0.4"#, r#""relevance": 0.4, "relevance": 0.3"#)),
        ("null features", GOOD.replace(r#""features": {"pop": 1}"#, r#""features": null"#)),
        ("negative relevance", GOOD.replace(r#""relevance": 0.4"#, r#""relevance": -0.5"#)),
        ("control character in an artist", GOOD.replace(r#""artist": "a1""#, r#""artist": "a\u001b[31m""#)),
        ("id too long", GOOD.replace(r#""id": "t2""#, &format!(r#""id": "{long}""#))),
        ("candidates not an array", GOOD.replace("\"candidates\": [", "\"candidates\": {\"a\": [").replace("]}", "]}}")),
        ("repeated context", GOOD.replace(r#""candidates": ["#, r#""context": {}, "candidates": ["#)),
        ("slate size 0", GOOD.replace(r#""timestamp_ms": 1000"#, r#""timestamp_ms": 1000, "slate_size": 0"#)),
        ("holder exposure out of range", GOOD.replace(r#""candidates": ["#, r#""rights_holders": {"h1": {"exposure_share_7d": 2}}, "candidates": ["#)),
        ("not JSON", "{\"candidates\": [".into()),
    ];
    for (what, body) in &cases {
        assert_ne!(body, GOOD, "{what}: the mutation applies");
        assert_eq!(
            json::decode(body.as_bytes(), &COLS, 100).err(),
            Some(Refused),
            "{what}"
        );
        let general = general_error(body, 100);
        let served = json::decode_or_parse(body.as_bytes(), &COLS, 100).unwrap_err();
        assert_eq!(served, general, "{what}");
    }
    // Bytes that are not UTF-8 in a string (the fast path checks the body
    // as UTF-8 once, then parses it as text): the general path's error.
    let body = GOOD
        .replace(r#""artist": "a1""#, r#""artist": "a?""#)
        .into_bytes();
    let at = body.iter().position(|&b| b == b'?').unwrap();
    for bad in [[0xffu8].as_slice(), &[0xc3], &[0xed, 0xa0, 0x80]] {
        let body = [&body[..at], bad, &body[at + 1..]].concat();
        assert_eq!(json::decode(&body, &COLS, 100).err(), Some(Refused));
        let general = parse(&body).unwrap_err();
        assert!(general.to_string().contains("invalid unicode"), "{general}");
        assert_eq!(
            json::decode_or_parse(&body, &COLS, 100).unwrap_err(),
            general
        );
    }
    // More candidates than the route allows.
    assert_eq!(json::decode(GOOD.as_bytes(), &COLS, 1).err(), Some(Refused));
    assert_eq!(
        json::decode_or_parse(GOOD.as_bytes(), &COLS, 1).unwrap_err(),
        general_error(GOOD, 1)
    );
}

#[test]
fn invalid_grpc_is_refused_with_the_general_error() {
    let good = (1..)
        .map(|seed| generated(seed, false))
        .find(|b| b.matches("\"id\": \"t").count() >= 3)
        .unwrap();
    let base = oasis_proto::json::request(good.as_bytes()).unwrap();
    assert!(base.candidates.as_ref().unwrap().ids.len() >= 3, "{good}");
    grpc_agrees(&base);
    type Mutation = Box<dyn Fn(&mut v1::ScoreRequest)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "infinite relevance",
            Box::new(|m| k(m).relevance[1] = f64::INFINITY),
        ),
        ("negative relevance", Box::new(|m| k(m).relevance[2] = -0.5)),
        (
            "duplicate id",
            Box::new(|m| k(m).ids[2] = k(m).ids[0].clone()),
        ),
        ("empty id", Box::new(|m| k(m).ids[1] = String::new())),
        (
            "feature too large",
            Box::new(|m| {
                let k = k(m);
                let last = k.features.len() - 1;
                k.features[last] = 2e9;
            }),
        ),
        (
            "empty feature name",
            Box::new(|m| k(m).feature_names[0] = String::new()),
        ),
        (
            "campaign window",
            Box::new(|m| {
                let j = with_campaign(m);
                m.campaigns[j].end_ms = -1;
            }),
        ),
        (
            "campaign index out of range",
            Box::new(|m| {
                with_campaign(m);
                k(m).campaign[1] = 99;
            }),
        ),
        (
            "two campaigns with one id that differ",
            Box::new(|m| {
                let a = with_campaign(m);
                let b = with_campaign(m);
                m.campaigns[b].delivery_target = 2.0;
                let c = &mut k(m).campaign;
                c[0] = a as i32;
                c[1] = b as i32;
            }),
        ),
        (
            "market",
            Box::new(|m| m.context.as_mut().unwrap().market = "Sweden".into()),
        ),
        ("no context", Box::new(|m| m.context = None)),
        (
            "unknown surface",
            Box::new(|m| m.context.as_mut().unwrap().surface = 0),
        ),
        (
            "short relevance column",
            Box::new(|m| {
                k(m).relevance.pop();
            }),
        ),
        (
            "short feature matrix",
            Box::new(|m| {
                k(m).features.pop();
            }),
        ),
        (
            "control character in an artist",
            Box::new(|m| {
                let k = k(m);
                let n = k.ids.len();
                k.artists.resize(n, String::new());
                k.artists[n - 1] = "a\u{1b}".into();
            }),
        ),
        (
            "holder exposure out of range",
            Box::new(|m| {
                m.rights_holders.insert(
                    "h1".into(),
                    v1::RightsHolder {
                        exposure_share_7d: -1.0,
                    },
                );
            }),
        ),
    ];
    for (what, mutate) in &cases {
        let mut m = base.clone();
        mutate(&mut m);
        assert!(packed::direct(&m, 100).is_none(), "{what}");
        let general = match packed::from_proto(&m) {
            Err(e) => e,
            Ok(r) => r.validate(100).expect_err(what),
        };
        assert_eq!(packed::validate(&m, 100).unwrap_err(), general, "{what}");
        let bytes = m.encode_to_vec();
        let msg = ProtoMessage::new(&bytes);
        assert!(
            packed::direct_view(msg.view().expect("read in place"), 100).is_none(),
            "{what}"
        );
        assert_eq!(
            packed::validate_message(&msg, 100).unwrap_err(),
            general,
            "{what}"
        );
    }
    assert!(packed::direct(&base, 1).is_none(), "over the route's limit");
    assert_eq!(
        packed::validate(&base, 1).unwrap_err(),
        packed::from_proto(&base).unwrap().validate(1).unwrap_err()
    );
    // Two of the message's campaigns with one id and the same content are
    // one campaign to the general path: left to it, and served the same.
    let mut m = base.clone();
    let a = with_campaign(&mut m);
    let b = with_campaign(&mut m);
    let c = &mut k(&mut m).campaign;
    (c[0], c[1]) = (a as i32, b as i32);
    assert!(packed::direct(&m, 100).is_none());
    let cols = strings(&COLS);
    assert_eq!(
        view(&packed::validate(&m, 100).unwrap(), &cols, &[]),
        view(
            &packed::from_proto(&m).unwrap().validate(100).unwrap(),
            &cols,
            &[]
        )
    );
}
