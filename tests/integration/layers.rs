//! The host library's import graph keeps its shape: four layers over the
//! library core, no upward import, no cycle between files, and the two
//! transports independent of each other.
//!
//! Files of `host/src` are the nodes; every `crate::…` path in a file (in a
//! `use` or inline, outside comments) is an edge to the file that defines
//! it, following `pub use` re-exports of a `mod.rs`/`lib.rs` to the file
//! behind them. The binary (`main.rs`, `cli/`) reaches the library as
//! `oasis::…` and is not part of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers and their floors, lowest first; a file may import its own
/// floor and those below it. `replay` (offline evaluation) stands beside
/// serving: both read the control plane's formats, neither the other.
const LAYERS: [(&str, usize); 7] = [
    ("core", 0),
    ("telemetry", 1),
    ("control", 2),
    ("serving", 3),
    ("replay", 3),
    ("api", 4),
    ("server", 5),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library file, by its module path (`api/score.rs` → `api::score`).
fn files() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = src();
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    let mut files = BTreeMap::new();
    for p in paths {
        let rel = p
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "main.rs" || rel.starts_with("cli/") {
            continue;
        }
        let module = rel
            .trim_end_matches(".rs")
            .trim_end_matches("/mod")
            .trim_end_matches("lib")
            .trim_end_matches('/')
            .replace('/', "::");
        files.insert(module, std::fs::read_to_string(&p).unwrap());
    }
    files
}

/// The text without comments (line comments and doc comments) and without
/// its unit tests (`#[cfg(test)] mod tests`, which may assert on wire text).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b::c` path in `text`, as segments; `crate::a::{b, c}`
/// gives `a::b` and `a::c`.
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(i) = text[at..].find("crate::") {
        let start = at + i + "crate::".len();
        at = start;
        if start >= 8 && (bytes[start - 8].is_ascii_alphanumeric() || bytes[start - 8] == b'_') {
            continue; // `oasis_crate::` and the like
        }
        let mut segs = Vec::new();
        let mut j = start;
        loop {
            let k = text[j..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |k| j + k);
            if k == j {
                break;
            }
            segs.push(text[j..k].to_string());
            if text[k..].starts_with("::{") {
                let close = text[k..].find('}').map_or(text.len(), |c| k + c);
                for item in text[k + 3..close].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != "self" {
                        let mut p = segs.clone();
                        p.push(name);
                        out.push(p);
                    }
                }
                segs.clear();
                break;
            }
            if text[k..].starts_with("::") {
                j = k + 2;
            } else {
                break;
            }
        }
        if !segs.is_empty() {
            out.push(segs);
        }
    }
    out
}

/// The file that defines `segs`: the longest module prefix that is a file,
/// then through a `pub use child::…Name` of that file to the child.
fn resolve(files: &BTreeMap<String, String>, segs: &[String]) -> Option<String> {
    for n in (0..=segs.len()).rev() {
        let module = segs[..n].join("::");
        let Some(text) = files.get(&module) else {
            continue;
        };
        if let Some(name) = segs.get(n) {
            for line in text.lines().filter(|l| l.starts_with("pub use ")) {
                let rest = &line["pub use ".len()..];
                let child = rest.split("::").next().unwrap_or("");
                let names_it = rest
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|w| w == name);
                let child_module = if module.is_empty() {
                    child.to_string()
                } else {
                    format!("{module}::{child}")
                };
                if names_it && files.contains_key(&child_module) {
                    return Some(child_module);
                }
            }
        }
        return Some(module);
    }
    None
}

/// The layer of a module.
fn layer(module: &str) -> &'static str {
    let top = module.split("::").next().unwrap_or("");
    LAYERS
        .iter()
        .map(|(l, _)| *l)
        .find(|l| *l == top)
        .unwrap_or("core")
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = files();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &files {
        let out = edges.entry(module.clone()).or_default();
        for segs in paths(&code(text)) {
            if let Some(to) = resolve(&files, &segs)
                && to != *module
                && !to.is_empty()
            {
                out.insert(to);
            }
        }
    }
    edges
}

#[test]
fn no_layer_imports_a_layer_above_it() {
    let rank = |m: &str| LAYERS.iter().find(|(l, _)| *l == layer(m)).unwrap().1;
    let mut upward = Vec::new();
    for (from, tos) in graph() {
        for to in tos {
            if rank(&to) > rank(&from) || (rank(&to) == rank(&from) && layer(&to) != layer(&from)) {
                upward.push(format!(
                    "{from} ({}) -> {to} ({})",
                    layer(&from),
                    layer(&to)
                ));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn the_file_graph_has_no_cycle() {
    let g = graph();
    // Depth-first search with colours; report the first cycle found.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let i = stack.iter().position(|s| s == m).unwrap();
                    let mut cycle = stack[i..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(n, &g, &mut state, &mut stack) {
                panic!("import cycle: {}", cycle.join(" -> "));
            }
        }
    }
}

#[test]
fn the_transports_share_serving_and_import_nothing_from_each_other() {
    let g = graph();
    let http = &g["api::score"];
    let grpc = &g["api::grpc"];
    assert!(!http.contains("api::grpc"), "{http:?}");
    assert!(!grpc.contains("api::score"), "{grpc:?}");
    // Both call the one scorer (held in the transports' state) and encode
    // with serving's encoders.
    for t in [http, grpc] {
        assert!(t.contains("api::state"), "{t:?}");
        assert!(t.contains("serving::encode"), "{t:?}");
        assert!(t.contains("serving::intake"), "{t:?}");
    }
    assert!(g["api::state"].contains("serving::scorer"));
}

#[test]
fn serving_and_control_speak_no_http() {
    let files = files();
    let mut found = Vec::new();
    for (module, text) in &files {
        if !matches!(layer(module), "serving" | "control") {
            continue;
        }
        let code = code(text);
        for needle in ["ApiError", "StatusCode", "axum::", "tonic::"] {
            if code.contains(needle) {
                found.push(format!("{module}: {needle}"));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Strings equal to an error kind's name that are not error kinds.
const NOT_ERROR_KINDS: [(&str, &str); 1] = [
    // The outcome log's `refused` state (queue full), a metric label.
    ("telemetry::metrics::state", "refused"),
];

#[test]
fn error_kinds_are_spelled_only_in_their_enum() {
    let files = files();
    let mut found = Vec::new();
    for kind in oasis::api::error::ErrorKind::ALL {
        let quoted = format!("\"{}\"", kind.as_str());
        for (module, text) in &files {
            if module == "api::error" || NOT_ERROR_KINDS.contains(&(module.as_str(), kind.as_str()))
            {
                continue;
            }
            for (i, line) in code(text).lines().enumerate() {
                if line.contains(&quoted) {
                    found.push(format!("{module}:{}: {}", i + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_graph_sees_imports() {
    // The checks above are only as good as the parser: it must see these.
    let g = graph();
    assert!(g["api::state"].contains("serving::scorer"));
    assert!(g["serving::chain"].contains("control::registry"));
    assert!(g["serving::scorer"].contains("serving::intake"));
    assert!(g["api::grpc"].contains("api::error"));
    assert_eq!(
        paths("use crate::api::{admin, grpc::serve};"),
        vec![
            vec!["api".to_string(), "admin".to_string()],
            vec!["api".to_string(), "grpc".to_string()],
        ]
    );
}
