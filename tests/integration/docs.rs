//! The README and the `docs/` chapters stay a valid map of the repository.
//!
//! Read: `README.md` and every `docs/*.md`. Checked:
//!
//! - **Links**: every relative Markdown link, inline `[text](path)` or
//!   `[text](path#anchor)` and reference definitions `[label]: path`, points
//!   to an existing file or directory inside the repository; `#anchor` alone
//!   or after a link to a `.md` file must be a heading of that file, by
//!   GitHub's slug rules (lowercase; letters, digits, `-` and `_` kept,
//!   spaces become `-`, every other character dropped; a repeated heading
//!   gets `-1`, `-2`, ...). Links with a scheme (`https://`, `mailto:`) are
//!   not followed. Inline code and fenced blocks are not searched for links.
//! - **Command paths**: in fenced blocks tagged `sh`, `bash`, `shell` or
//!   `console` (and untagged blocks whose first line starts with `$ `), every
//!   token that looks like a repository path (it starts with one of
//!   [`REPO_DIRS`] followed by `/`) exists. In `console` blocks only the
//!   command lines (`$ ...`) are read; in the others every line, comments
//!   included. Tokens are split on whitespace and `=`, and stripped of
//!   quotes, brackets, a leading `@` (curl's `@file`) and trailing
//!   punctuation. Tokens with a placeholder (`<`, `$`, `*`, `...`, `…`,
//!   `{`, `[`, `|`) are skipped. Paths that commands create at run time are
//!   in [`SEEDED`] and [`CREATED_AT_RUN_TIME`].
//! - **The map**: `README.md` has at most [`README_MAX_LINES`] lines and
//!   links every chapter in `docs/`.
//!
//! A failure names the file, the line and the bad link or path.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The README is the newcomer's map; the reference lives in `docs/`.
const README_MAX_LINES: usize = 400;

/// Top-level directories whose paths are checked in command blocks.
const REPO_DIRS: &[&str] = &[
    ".ci",
    "contract",
    "deploy",
    "docs",
    "examples",
    "guest-sdk",
    "guest-sdk-python",
    "host",
    "policies",
    "policies-python",
    "proto",
    "scripts",
    "state",
    "tests",
    "tools",
    "wit",
];

/// `deploy/policies/` is the served directory: `scripts/serve` creates it
/// and seeds it from `examples/policies/` (plus the built components), so a
/// path under it is checked against `examples/policies/`.
const SEEDED: (&str, &str) = ("deploy/policies", "examples/policies");

/// Paths a command creates earlier in the same block (prefixes).
const CREATED_AT_RUN_TIME: &[&str] = &[
    // docs/python.md: `oasis new my-boost --lang python --path policies-python/my_boost`
    "policies-python/my_boost",
];

/// Languages of fenced blocks whose lines are commands.
const COMMAND_LANGS: &[&str] = &["sh", "bash", "shell", "console"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// `README.md` and `docs/*.md`, as paths relative to the repository root.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs = vec![PathBuf::from("README.md")];
    let mut chapters: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ is readable")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| Path::new("docs").join(p.file_name().unwrap()))
        .collect();
    chapters.sort();
    docs.extend(chapters);
    docs
}

fn read(root: &Path, doc: &Path) -> String {
    fs::read_to_string(root.join(doc)).unwrap_or_else(|e| panic!("{}: {e}", doc.display()))
}

/// A fenced block: its info string's first word and its lines (1-based).
struct Fence {
    lang: String,
    lines: Vec<(usize, String)>,
}

/// What a Markdown file is made of, for these checks: the text outside
/// fenced blocks (one entry per line, fenced lines blanked so numbering
/// holds) and the fenced blocks.
struct Parsed {
    prose: Vec<String>,
    fences: Vec<Fence>,
}

fn parse(text: &str) -> Parsed {
    let mut prose = Vec::new();
    let mut fences = Vec::new();
    // (fence character, fence length) of the open block
    let mut open: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = fence_char.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        match open {
            None if run >= 3 => {
                let c = fence_char.unwrap();
                let info = trimmed[run * c.len_utf8()..].trim();
                let lang = info.split_whitespace().next().unwrap_or("").to_lowercase();
                open = Some((c, run));
                fences.push(Fence {
                    lang,
                    lines: Vec::new(),
                });
                prose.push(String::new());
            }
            None => prose.push(line.to_string()),
            Some((c, n)) => {
                let closes = fence_char == Some(c)
                    && run >= n
                    && trimmed[run * c.len_utf8()..].trim().is_empty();
                if closes {
                    open = None;
                } else {
                    fences
                        .last_mut()
                        .unwrap()
                        .lines
                        .push((i + 1, line.to_string()));
                }
                prose.push(String::new());
            }
        }
    }
    Parsed { prose, fences }
}

/// Blanks inline code spans (CommonMark: a backtick run closed by the next
/// run of the same length, within a paragraph; an unclosed run is literal).
/// Newlines are kept, so offsets map back to lines.
fn mask_code_spans(paragraph: &str) -> String {
    let chars: Vec<char> = paragraph.chars().collect();
    let mut out = chars.clone();
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let mut j = i + n;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j + m);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                for c in &mut out[i..end] {
                    if *c != '\n' {
                        *c = ' ';
                    }
                }
                i = end;
            }
            None => i += n,
        }
    }
    out.into_iter().collect()
}

/// Link targets in the prose, with their line numbers.
fn links(parsed: &Parsed) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut start = 0;
    while start < parsed.prose.len() {
        if parsed.prose[start].trim().is_empty() {
            start += 1;
            continue;
        }
        let mut end = start;
        while end < parsed.prose.len() && !parsed.prose[end].trim().is_empty() {
            end += 1;
        }
        let masked = mask_code_spans(&parsed.prose[start..end].join("\n"));
        for (k, line) in masked.lines().enumerate() {
            let line_no = start + k + 1;
            // reference definition: `[label]: target`
            let t = line.trim_start();
            if t.starts_with('[')
                && let Some(close) = t.find("]:")
                && !t[..close].contains("](")
            {
                if let Some(target) = t[close + 2..].split_whitespace().next() {
                    found.push((line_no, target.to_string()));
                }
                continue;
            }
            // inline links: `[text](target)` or `[text](target "title")`
            let mut from = 0;
            while let Some(at) = line[from..].find("](") {
                let pos = from + at;
                from = pos + 2;
                if !line[..pos].contains('[') {
                    continue;
                }
                let rest = &line[pos + 2..];
                let Some(close) = rest.find(')') else {
                    continue;
                };
                let target = rest[..close].split_whitespace().next().unwrap_or("");
                let target = target.trim_start_matches('<').trim_end_matches('>');
                if !target.is_empty() {
                    found.push((line_no, target.to_string()));
                }
            }
        }
        start = end;
    }
    found
}

/// GitHub's anchor for a heading's text.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// A heading's rendered text: inline code keeps its content, a link its text.
fn heading_text(raw: &str) -> String {
    let mut text = String::new();
    let mut rest = raw.replace('`', "");
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](").map(|m| open + m) else {
            break;
        };
        let Some(close) = rest[mid..].find(')').map(|c| mid + c) else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..mid]);
        rest = rest[close + 1..].to_string();
    }
    text.push_str(&rest);
    text
}

/// The anchors of a Markdown file's ATX headings (repeats numbered as GitHub does).
fn anchors(parsed: &Parsed) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for line in &parsed.prose {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let t = line.trim_start_matches(' ');
        let level = t.chars().take_while(|c| *c == '#').count();
        if indent > 3 || !(1..=6).contains(&level) {
            continue;
        }
        let after = &t[level..];
        if !(after.is_empty() || after.starts_with(' ')) {
            continue;
        }
        let text = after.trim().trim_end_matches('#').trim();
        let base = slug(&heading_text(text));
        let n = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    anchors
}

/// `base/rel` with `.` and `..` resolved lexically; `None` if it leaves the
/// repository.
fn resolve(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut parts: Vec<String> = Vec::new();
    for c in base.join(rel).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// Problems of the links of `doc` (a path relative to `root`, text `text`).
fn check_links(root: &Path, doc: &Path, text: &str) -> Vec<String> {
    let parsed = parse(text);
    let dir = doc.parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for (line, target) in links(&parsed) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let here = format!("{}:{line}: link `{target}`", doc.display());
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() {
            doc.to_path_buf()
        } else {
            match resolve(dir, path) {
                Some(f) => f,
                None => {
                    problems.push(format!("{here}: leaves the repository"));
                    continue;
                }
            }
        };
        // (a link to a heading of this document needs no file on disk)
        if file != doc && !root.join(&file).exists() {
            problems.push(format!("{here}: {} does not exist", file.display()));
            continue;
        }
        let Some(anchor) = anchor else { continue };
        if file.extension().is_none_or(|x| x != "md") {
            continue;
        }
        let target_text = if file == doc {
            text.to_string()
        } else {
            read(root, &file)
        };
        let known = anchors(&parse(&target_text));
        if !known.contains(anchor) {
            problems.push(format!(
                "{here}: no heading `#{anchor}` in {} (anchors: {})",
                file.display(),
                known.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    problems
}

/// The repository-path tokens of one command line.
fn path_tokens(line: &str) -> Vec<String> {
    const PLACEHOLDERS: &[&str] = &["<", ">", "$", "*", "...", "…", "{", "[", "|"];
    let mut tokens = Vec::new();
    for word in line.split_whitespace().flat_map(|w| w.split('=')) {
        let t = word
            .trim_start_matches(['@', '(', '"', '\'', '`'])
            .trim_end_matches([')', '"', '\'', '`', ',', ';', ':', '.']);
        if PLACEHOLDERS.iter().any(|p| t.contains(p)) {
            continue;
        }
        let is_repo_path = REPO_DIRS
            .iter()
            .any(|d| t.strip_prefix(d).is_some_and(|r| r.starts_with('/')));
        if is_repo_path {
            tokens.push(t.to_string());
        }
    }
    tokens
}

/// Problems of the repository paths named in `doc`'s command blocks.
fn check_command_paths(root: &Path, doc: &Path, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for fence in parse(text).fences {
        let first = fence.lines.iter().find(|(_, l)| !l.trim().is_empty());
        let untagged_console =
            fence.lang.is_empty() && first.is_some_and(|(_, l)| l.trim_start().starts_with("$ "));
        let console = fence.lang == "console" || untagged_console;
        if !COMMAND_LANGS.contains(&fence.lang.as_str()) && !untagged_console {
            continue;
        }
        for (line_no, line) in &fence.lines {
            let line = line.trim_start();
            let command = if console {
                match line.strip_prefix("$ ") {
                    Some(c) => c,
                    None => continue,
                }
            } else {
                line
            };
            for token in path_tokens(command) {
                if CREATED_AT_RUN_TIME
                    .iter()
                    .any(|p| token == *p || token.starts_with(&format!("{p}/")))
                {
                    continue;
                }
                let checked = match token.strip_prefix(SEEDED.0) {
                    Some(rest) => format!("{}{rest}", SEEDED.1),
                    None => token.clone(),
                };
                if !root.join(checked.trim_end_matches('/')).exists() {
                    let seeded = if checked != token {
                        format!(" (checked as {checked}: scripts/serve seeds it from there)")
                    } else {
                        String::new()
                    };
                    problems.push(format!(
                        "{}:{line_no}: path `{token}` in a command block does not exist{seeded}",
                        doc.display()
                    ));
                }
            }
        }
    }
    problems
}

fn report(problems: Vec<String>, what: &str) {
    assert!(
        problems.is_empty(),
        "{} {what}:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn links_resolve() {
    let root = repo_root();
    let mut problems = Vec::new();
    for doc in documents(&root) {
        problems.extend(check_links(&root, &doc, &read(&root, &doc)));
    }
    report(problems, "broken links in README.md and docs/");
}

#[test]
fn command_block_paths_exist() {
    let root = repo_root();
    let mut problems = Vec::new();
    for doc in documents(&root) {
        problems.extend(check_command_paths(&root, &doc, &read(&root, &doc)));
    }
    report(
        problems,
        "missing paths in command blocks of README.md and docs/",
    );
}

#[test]
fn readme_is_a_short_map_of_every_chapter() {
    let root = repo_root();
    let readme = read(&root, Path::new("README.md"));
    let mut problems = Vec::new();
    let lines = readme.lines().count();
    if lines > README_MAX_LINES {
        problems.push(format!(
            "README.md: {lines} lines, more than {README_MAX_LINES}: move reference into docs/"
        ));
    }
    let linked: BTreeSet<PathBuf> = links(&parse(&readme))
        .into_iter()
        .filter_map(|(_, t)| resolve(Path::new(""), t.split('#').next().unwrap()))
        .collect();
    for chapter in documents(&root).into_iter().skip(1) {
        if !linked.contains(&chapter) {
            problems.push(format!(
                "README.md: does not link the chapter {}",
                chapter.display()
            ));
        }
    }
    report(problems, "problems with the README map");
}

/// The checks catch what they are for (on text written here, so this test
/// does not depend on the real documents having a fault).
#[test]
fn the_checks_report_file_line_and_what_is_wrong() {
    let root = repo_root();
    let doc = Path::new("docs/example.md");
    let text = "# A `code` heading: with [a link](../README.md)\n\
                \n\
                See [ok](../README.md#the-two-commands), [self](#a-code-heading-with-a-link),\n\
                [missing](no-such-file.md), [bad anchor](../README.md#no-such-heading),\n\
                `[not a link](nowhere.md)` and [web](https://example.com/x).\n\
                \n\
                [outside]: ../../etc/passwd\n\
                \n\
                ```sh\n\
                scripts/serve --policies deploy/policies/pid-pacing.toml\n\
                cat @examples/request.json scripts/no-such-script <dir>/x tests/$X\n\
                oasis test policies-python/my_boost/fixtures deploy/policies/nope.toml\n\
                ```\n\
                \n\
                ```text\n\
                scripts/not-checked-in-text\n\
                ```\n";
    let links = check_links(&root, doc, text);
    assert_eq!(links.len(), 3, "{links:#?}");
    assert!(links[0].starts_with("docs/example.md:4: link `no-such-file.md`"));
    assert!(links[1].starts_with("docs/example.md:4: link `../README.md#no-such-heading`"));
    assert!(links[2].starts_with("docs/example.md:7: link `../../etc/passwd`: leaves"));
    let paths = check_command_paths(&root, doc, text);
    assert_eq!(paths.len(), 2, "{paths:#?}");
    assert!(paths[0].starts_with("docs/example.md:11: path `scripts/no-such-script`"));
    assert!(paths[1].starts_with("docs/example.md:12: path `deploy/policies/nope.toml`"));

    assert_eq!(slug("`POST /v1/score`"), "post-v1score");
    assert_eq!(
        slug("Rollouts: versions, canary, shadow, rollback, kill switch"),
        "rollouts-versions-canary-shadow-rollback-kill-switch"
    );
    assert_eq!(
        slug(&heading_text("gRPC: `oasis.v1.Scoring/Score`")),
        "grpc-oasisv1scoringscore"
    );
}

/// Every metric the server registers: (name as scraped, type, help).
fn exported_metrics() -> Vec<(String, String, String)> {
    oasis::telemetry::metrics::Metrics::new()
        .catalogue()
        .iter()
        .map(|m| (m.name.clone(), m.kind.to_string(), m.help.clone()))
        .collect()
}

/// The metric names in the README's metrics table (first column).
fn readme_metrics(root: &Path) -> BTreeSet<String> {
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `oasis_"))
        .filter_map(|l| l.split_once('`').map(|(n, _)| format!("oasis_{n}")))
        .collect()
}

#[test]
fn every_metric_is_in_the_readme_table_and_nothing_else_is() {
    let root = repo_root();
    let documented = readme_metrics(&root);
    let exported = exported_metrics();
    let missing: Vec<String> = exported
        .iter()
        .filter(|(n, _, _)| !documented.contains(n))
        .map(|(n, k, h)| format!("| `{n}` | {k} | | {h} |"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics missing from the README's table:\n{}",
        missing.join("\n")
    );
    let names: BTreeSet<&str> = exported.iter().map(|(n, _, _)| n.as_str()).collect();
    let stale: Vec<&String> = documented
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .collect();
    assert!(
        stale.is_empty(),
        "README documents metrics the server does not export: {stale:?}"
    );
}

#[test]
fn every_grafana_query_reads_an_exported_metric() {
    let root = repo_root();
    let path = root.join("deploy/grafana/oasis.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    for (n, kind, _) in exported_metrics() {
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{n}{suffix}"));
            }
        } else {
            names.insert(n);
        }
    }
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(
        exprs.len() >= 8,
        "the dashboard has {} queries",
        exprs.len()
    );
    let mut unknown = Vec::new();
    for e in &exprs {
        let used: Vec<&str> = e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("oasis_"))
            .collect();
        assert!(!used.is_empty(), "a query that reads no Oasis metric: {e}");
        unknown.extend(
            used.into_iter()
                .filter(|w| !names.contains(*w))
                .map(|w| format!("{w} in {e}")),
        );
    }
    assert!(
        unknown.is_empty(),
        "queries of metrics Oasis does not export:\n{}",
        unknown.join("\n")
    );
}
