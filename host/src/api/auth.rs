//! Who may call the admin API: bearer tokens, checked in constant time.
//!
//! The admin API changes what scores production traffic (canary, promote,
//! rollback, kill switch), so every call must be attributable to a named
//! operator and unforgeable by anyone who can merely reach the port.
//!
//! Tokens come from a file (`--admin-token-file`), one `name token` pair a
//! line, or from an environment variable holding a single token (named
//! [`ENV_TOKEN_NAME`]). A file lets each operator or automation have its own
//! token, so the audit log says *who* did it and one token can be revoked
//! without rotating the others.
//!
//! Why the verification looks the way it does:
//!
//! * **Digests, not tokens, are kept and compared.** Only the SHA-256 of each
//!   token stays in memory, and the presented token is hashed before the
//!   comparison, so every comparison is over 32 bytes whatever the presented
//!   length: neither the stored tokens' lengths nor a matching prefix can be
//!   learned from response times.
//! * **The comparison is constant time** (`subtle::ConstantTimeEq`, not `==`,
//!   which stops at the first differing byte), and **every stored digest is
//!   checked**, with the match recorded through `subtle`'s conditional
//!   selection, so timing does not reveal which entry matched or how many
//!   entries were tried.
//! * **A token never reaches a log.** [`AdminTokens`]' `Debug` shows names
//!   only, and parse errors name the line but never quote it: a line with its
//!   columns swapped would otherwise put a token into the startup error.
//!
//! The middleware [`require_admin`] answers 401 (with `WWW-Authenticate:
//! Bearer`) when no bearer credentials were sent and 403 when the token is not
//! an admin token, in the API's one JSON error shape; on success it inserts an
//! [`Actor`] request extension for handlers to record in the audit log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::api::error::{ApiError, ErrorKind};

/// Shortest accepted token, in bytes (256 bits of a hex or base64 secret is
/// 43 to 64 characters; 32 characters is the floor).
pub const MIN_TOKEN_BYTES: usize = 32;

/// Longest accepted token name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// The name given to the single token read from an environment variable.
pub const ENV_TOKEN_NAME: &str = "admin";

/// The optional request header in which a caller says who it acts for
/// (e.g. the human behind a shared automation token); recorded next to the
/// token's name, never trusted on its own.
pub const ACTOR_HEADER: &str = "x-oasis-actor";

/// Longest kept `X-Oasis-Actor` value, in bytes (after sanitizing).
pub const MAX_ACTOR_HEADER_BYTES: usize = 64;

/// Why a set of admin tokens could not be loaded.
///
/// `at` names the place: `path:line` for a token file, `path` for the file as
/// a whole, or `the admin token environment value`. Messages never quote the
/// offending text, which may be a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("admin token file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not exactly `name token`.
    #[error("{at}: expected `name token` (two fields), found {fields} field(s)")]
    Malformed {
        /// Where.
        at: String,
        /// How many whitespace-separated fields the line has.
        fields: usize,
    },
    /// A name is not 1 to 64 of `A-Z a-z 0-9 . _ -`.
    #[error(
        "{at}: invalid token name (expected 1 to {MAX_NAME_BYTES} of A-Z, a-z, 0-9, `.`, `_`, `-`)"
    )]
    BadName {
        /// Where.
        at: String,
    },
    /// A token is shorter than [`MIN_TOKEN_BYTES`].
    #[error("{at}: the token is {len} bytes; at least {MIN_TOKEN_BYTES} are required")]
    TooShort {
        /// Where.
        at: String,
        /// The token's length in bytes.
        len: usize,
    },
    /// A token has a character outside visible ASCII, so it could never be
    /// sent in an HTTP header.
    #[error(
        "{at}: the token has a character outside visible ASCII (it could not be sent in an HTTP header)"
    )]
    NotVisibleAscii {
        /// Where.
        at: String,
    },
    /// A name appears twice.
    #[error("{at}: the name `{name}` is already used on line {first}")]
    DuplicateName {
        /// Where.
        at: String,
        /// The repeated name (validated, so not a token-shaped secret).
        name: String,
        /// The line that used it first.
        first: usize,
    },
    /// A token appears twice (under two names, which would make the audit
    /// log's attribution ambiguous).
    #[error("{at}: the token is the same as the one on line {first}")]
    DuplicateToken {
        /// Where.
        at: String,
        /// The line that has it first.
        first: usize,
    },
    /// No token at all: the admin API would be unusable.
    #[error("{at}: no admin tokens defined")]
    Empty {
        /// Where.
        at: String,
    },
}

/// One stored credential: a name and the SHA-256 of its token.
struct Entry {
    name: String,
    digest: [u8; 32],
}

/// The admin tokens: names and token digests (the tokens themselves are not
/// kept). Build with [`AdminTokens::from_file`] or
/// [`AdminTokens::from_env_value`]; check with [`AdminTokens::verify`].
pub struct AdminTokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTokens")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl AdminTokens {
    /// Reads a token file: one `name token` pair a line (separated by
    /// whitespace); blank lines and lines starting with `#` are ignored.
    /// Names are 1 to 64 of `A-Z a-z 0-9 . _ -`; tokens are at least
    /// [`MIN_TOKEN_BYTES`] of visible ASCII. Logs a warning when the file is
    /// readable by group or others.
    ///
    /// # Errors
    /// [`TokenError`] naming the file and line: unreadable file, malformed
    /// line, bad name, short or non-ASCII token, duplicate name or token, or
    /// no token at all.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        warn_if_exposed(path);
        let shown = path.display().to_string();
        let tokens = Self::parse(&text, &shown)?;
        tracing::info!(
            path = %shown,
            names = ?tokens.names().collect::<Vec<_>>(),
            "admin tokens loaded"
        );
        Ok(tokens)
    }

    /// One token from an environment variable's value (surrounding
    /// whitespace, such as a trailing newline, is trimmed), named
    /// [`ENV_TOKEN_NAME`].
    ///
    /// # Errors
    /// [`TokenError`] if the token is short, empty, or not visible ASCII.
    pub fn from_env_value(value: &str) -> Result<Self, TokenError> {
        let at = "the admin token environment value";
        let token = value.trim();
        if token.is_empty() {
            return Err(TokenError::Empty { at: at.into() });
        }
        check_token(token, at)?;
        Ok(AdminTokens {
            entries: vec![Entry {
                name: ENV_TOKEN_NAME.into(),
                digest: sha256(token),
            }],
        })
    }

    /// Parses the token file format; `origin` names the source in errors.
    fn parse(text: &str, origin: &str) -> Result<Self, TokenError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut digests: HashMap<[u8; 32], usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{origin}:{lineno}");
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, token] = fields[..] else {
                return Err(TokenError::Malformed {
                    at,
                    fields: fields.len(),
                });
            };
            if !valid_name(name) {
                return Err(TokenError::BadName { at });
            }
            check_token(token, &at)?;
            if let Some(&first) = names.get(name) {
                return Err(TokenError::DuplicateName {
                    at,
                    name: name.into(),
                    first,
                });
            }
            let digest = sha256(token);
            if let Some(&first) = digests.get(&digest) {
                return Err(TokenError::DuplicateToken { at, first });
            }
            names.insert(name.into(), lineno);
            digests.insert(digest, lineno);
            entries.push(Entry {
                name: name.into(),
                digest,
            });
        }
        if entries.is_empty() {
            return Err(TokenError::Empty { at: origin.into() });
        }
        Ok(AdminTokens { entries })
    }

    /// The name of the presented token, or `None` if it is no admin token.
    ///
    /// Constant time in the sense that matters: the presented token is hashed,
    /// then its digest is compared with every stored digest using
    /// `subtle::ConstantTimeEq`, with no early exit, and the matching index
    /// is picked by constant-time selection. What the time depends on is the
    /// presented length (hashing) and the number of stored tokens, neither of
    /// which is secret.
    pub fn verify(&self, presented: &str) -> Option<&str> {
        let presented = sha256(presented);
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, entry) in self.entries.iter().enumerate() {
            let hit = entry.digest[..].ct_eq(&presented[..]);
            index.conditional_assign(&(i as u64), hit);
            found |= hit;
        }
        // Tokens are unique (checked at load), so at most one entry matched.
        if bool::from(found) {
            Some(&self.entries[index as usize].name)
        } else {
            None
        }
    }

    /// The token names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// How many tokens there are (at least one).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: loading refuses an empty set (kept for clippy's
    /// `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_token(token: &str, at: &str) -> Result<(), TokenError> {
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::NotVisibleAscii { at: at.into() });
    }
    if token.len() < MIN_TOKEN_BYTES {
        return Err(TokenError::TooShort {
            at: at.into(),
            len: token.len(),
        });
    }
    Ok(())
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the admin token file is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path) {}

/// Who made an admin request: the token's name, plus the `X-Oasis-Actor`
/// header's value when one was sent, as `name (header)`. Inserted as a
/// request extension by [`require_admin`]; handlers take
/// `Extension<Actor>` and record `name` in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `token-name` or `token-name (claimed actor)`.
    pub name: String,
}

impl Actor {
    /// The actor for a verified token `token_name` and the request's
    /// optional `X-Oasis-Actor` header. The header is sanitized: characters
    /// outside printable ASCII are dropped, the rest is cut at
    /// [`MAX_ACTOR_HEADER_BYTES`] and trimmed; an empty result is ignored.
    pub fn new(token_name: &str, claimed: Option<&HeaderValue>) -> Self {
        let name = match claimed.and_then(|v| sanitize_actor(v.as_bytes())) {
            Some(claimed) => format!("{token_name} ({claimed})"),
            None => token_name.to_owned(),
        };
        Actor { name }
    }
}

fn sanitize_actor(raw: &[u8]) -> Option<String> {
    let mut kept: String = raw
        .iter()
        .filter(|b| matches!(b, b' '..=b'~'))
        .map(|&b| b as char)
        .collect();
    // Printable ASCII only, so any byte index is a char boundary.
    kept.truncate(MAX_ACTOR_HEADER_BYTES);
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_owned())
}

/// The bearer token of a request, or why there is none.
fn bearer_token(headers: &HeaderMap) -> Result<&str, &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("no Authorization header")?;
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not visible ASCII")?;
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or("the Authorization scheme is not Bearer")?;
    // Auth schemes are case-insensitive (RFC 9110 §11.1).
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization scheme is not Bearer");
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Err("the bearer token is empty");
    }
    Ok(token)
}

/// [`require_admin`] for a listener of its own, where every path but the
/// dashboard's assets needs the token (unknown paths too, so the listener
/// tells nothing to a caller without one). The assets hold no data; the
/// page sends the token on each call it makes.
pub async fn require_admin_but_the_dashboard(
    tokens: State<Arc<AdminTokens>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if path == "/dashboard" || path.starts_with("/dashboard/") {
        return next.run(req).await;
    }
    require_admin(tokens, req, next).await
}

/// Middleware guarding the admin API, for
/// `axum::middleware::from_fn_with_state(tokens, require_admin)`.
///
/// * no `Authorization: Bearer <token>` (missing header, other scheme,
///   empty token): 401 `unauthorized`, with `WWW-Authenticate: Bearer`;
/// * a token that is no admin token: 403 `forbidden`;
/// * otherwise the request goes on with an [`Actor`] extension.
///
/// Refusals are logged at `warn` with the method and path (never the token).
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use axum::{Extension, Router, routing::post};
/// use oasis::api::auth::{Actor, AdminTokens, require_admin};
///
/// let tokens = Arc::new(AdminTokens::from_env_value("0123456789abcdef0123456789abcdef").unwrap());
/// let admin: Router = Router::new()
///     .route("/v1/admin/kill", post(|Extension(actor): Extension<Actor>| async move { actor.name }))
///     .layer(axum::middleware::from_fn_with_state(tokens, require_admin));
/// ```
pub async fn require_admin(
    State(tokens): State<Arc<AdminTokens>>,
    mut req: Request,
    next: Next,
) -> Response {
    let name = match bearer_token(req.headers()) {
        Err(why) => {
            tracing::warn!(
                method = %req.method(),
                path = req.uri().path(),
                why,
                "admin request refused: no bearer credentials"
            );
            let mut resp = ApiError::new(
                ErrorKind::Unauthorized,
                format!("the admin API requires `Authorization: Bearer <token>`: {why}"),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
        Ok(token) => tokens.verify(token).map(str::to_owned),
    };
    let Some(name) = name else {
        tracing::warn!(
            method = %req.method(),
            path = req.uri().path(),
            "admin request refused: unknown bearer token"
        );
        return ApiError::new(
            ErrorKind::Forbidden,
            "the bearer token is not an admin token",
        )
        .into_response();
    };
    let actor = Actor::new(&name, req.headers().get(ACTOR_HEADER));
    tracing::debug!(
        actor = %actor.name,
        method = %req.method(),
        path = req.uri().path(),
        "admin request authenticated"
    );
    req.extensions_mut().insert(actor);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Extension;
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    const ALICE: &str = "alice-token-0123456789abcdef0123456789";
    const DEPLOY: &str = "deploy-bot-token-ABCDEFGHIJKLMNOPQRSTUV";

    fn tokens() -> AdminTokens {
        AdminTokens::parse(
            &format!("# operators\n\nalice {ALICE}\n  # the CD pipeline\ndeploy.bot_1 {DEPLOY}\n"),
            "tokens",
        )
        .unwrap()
    }

    #[test]
    fn parses_a_good_file_with_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-tokens");
        std::fs::write(
            &path,
            format!("# operators\n\nalice {ALICE}\n\t\n   # indented comment\ndeploy.bot_1\t {DEPLOY}  \n"),
        )
        .unwrap();
        let t = AdminTokens::from_file(&path).unwrap();
        assert_eq!(t.names().collect::<Vec<_>>(), ["alice", "deploy.bot_1"]);
        assert_eq!(t.len(), 2);
        assert!(!t.is_empty());
    }

    #[test]
    fn refuses_a_short_token_naming_the_line() {
        let e =
            AdminTokens::parse(&format!("alice {ALICE}\n# c\nbob short-token\n"), "f").unwrap_err();
        assert!(
            matches!(&e, TokenError::TooShort { at, len: 11 } if at == "f:3"),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("f:3") && msg.contains("32"), "{msg}");
        assert!(
            !msg.contains("short-token"),
            "errors never quote tokens: {msg}"
        );
    }

    #[test]
    fn refuses_duplicate_names_and_tokens() {
        let e = AdminTokens::parse(&format!("alice {ALICE}\nalice {DEPLOY}\n"), "f").unwrap_err();
        assert!(
            matches!(&e, TokenError::DuplicateName { at, name, first: 1 } if at == "f:2" && name == "alice"),
            "{e:?}"
        );
        let e = AdminTokens::parse(&format!("alice {ALICE}\n\nbob {ALICE}\n"), "f").unwrap_err();
        assert!(
            matches!(&e, TokenError::DuplicateToken { at, first: 1 } if at == "f:3"),
            "{e:?}"
        );
        assert!(!e.to_string().contains(ALICE));
    }

    #[test]
    fn refuses_bad_names_and_malformed_lines() {
        for bad in ["al ice", "al/ice", "élise", &"x".repeat(65)] {
            let e = AdminTokens::parse(&format!("{bad} {ALICE}\n"), "f").unwrap_err();
            assert!(
                matches!(e, TokenError::BadName { .. } | TokenError::Malformed { .. }),
                "{bad}: {e:?}"
            );
        }
        let e = AdminTokens::parse(&format!("al/ice {ALICE}\n"), "f").unwrap_err();
        assert!(matches!(&e, TokenError::BadName { at } if at == "f:1"));
        assert!(AdminTokens::parse(&format!("{} {ALICE}\n", "x".repeat(64)), "f").is_ok());
        let e = AdminTokens::parse("alice\n", "f").unwrap_err();
        assert!(
            matches!(e, TokenError::Malformed { fields: 1, .. }),
            "{e:?}"
        );
        let e = AdminTokens::parse(&format!("alice {ALICE} extra\n"), "f").unwrap_err();
        assert!(
            matches!(e, TokenError::Malformed { fields: 3, .. }),
            "{e:?}"
        );
        let e = AdminTokens::parse("# only comments\n\n", "f").unwrap_err();
        assert!(matches!(e, TokenError::Empty { .. }), "{e:?}");
        let e = AdminTokens::parse(&format!("alice {ALICE}é\n"), "f").unwrap_err();
        assert!(matches!(e, TokenError::NotVisibleAscii { .. }), "{e:?}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let e = AdminTokens::from_file(Path::new("/nonexistent/oasis-admin-tokens")).unwrap_err();
        assert!(matches!(e, TokenError::Read { .. }), "{e:?}");
    }

    #[test]
    fn env_value_is_one_token_named_admin() {
        let t = AdminTokens::from_env_value(&format!("  {ALICE}\n")).unwrap();
        assert_eq!(t.verify(ALICE), Some(ENV_TOKEN_NAME));
        assert!(matches!(
            AdminTokens::from_env_value("too-short"),
            Err(TokenError::TooShort { len: 9, .. })
        ));
        assert!(matches!(
            AdminTokens::from_env_value(" \n"),
            Err(TokenError::Empty { .. })
        ));
    }

    #[test]
    fn verify_names_the_caller_and_refuses_others() {
        let t = tokens();
        assert_eq!(t.verify(ALICE), Some("alice"));
        assert_eq!(t.verify(DEPLOY), Some("deploy.bot_1"));
        assert_eq!(t.verify(""), None);
        assert_eq!(t.verify("wrong"), None);
        assert_eq!(
            t.verify(&ALICE[..ALICE.len() - 1]),
            None,
            "a prefix is not the token"
        );
        assert_eq!(t.verify(&format!("{ALICE}x")), None);
    }

    #[test]
    fn debug_shows_names_never_tokens() {
        let shown = format!("{:?}", tokens());
        assert!(
            shown.contains("alice") && shown.contains("deploy.bot_1"),
            "{shown}"
        );
        assert!(!shown.contains(ALICE) && !shown.contains(DEPLOY), "{shown}");
    }

    #[test]
    fn actor_header_is_sanitized_and_cut() {
        assert_eq!(Actor::new("ops", None).name, "ops");
        let v = HeaderValue::from_static("  jane.doe@example.com ");
        assert_eq!(
            Actor::new("ops", Some(&v)).name,
            "ops (jane.doe@example.com)"
        );
        let v = HeaderValue::from_bytes(b"ja\tne\xc3\xa9!").unwrap();
        assert_eq!(Actor::new("ops", Some(&v)).name, "ops (jane!)");
        let v = HeaderValue::from_str(&"a".repeat(100)).unwrap();
        assert_eq!(
            Actor::new("ops", Some(&v)).name,
            format!("ops ({})", "a".repeat(64))
        );
        let v = HeaderValue::from_bytes(b"\t\xff ").unwrap();
        assert_eq!(Actor::new("ops", Some(&v)).name, "ops");
    }

    #[test]
    fn bearer_scheme_parsing() {
        let mut h = HeaderMap::new();
        assert!(bearer_token(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(bearer_token(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert!(bearer_token(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer   "));
        assert!(bearer_token(&h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  tok "),
        );
        assert_eq!(bearer_token(&h), Ok("tok"));
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/admin/whoami",
                get(|Extension(actor): Extension<Actor>| async move { actor.name }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(tokens()),
                require_admin,
            ))
    }

    async fn call(auth: Option<&str>, actor: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().uri("/admin/whoami");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        if let Some(a) = actor {
            req = req.header(ACTOR_HEADER, a);
        }
        let resp = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn error_of(body: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["error"].clone()
    }

    #[tokio::test]
    async fn middleware_without_credentials_is_401_with_www_authenticate() {
        for auth in [None, Some("Basic YWxpY2U6cHc="), Some("Bearer ")] {
            let (status, headers, body) = call(auth, None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
            let e = error_of(&body);
            assert_eq!(e["status"], 401);
            assert_eq!(e["kind"], "unauthorized");
            assert!(e["message"].as_str().unwrap().contains("Bearer"), "{body}");
        }
    }

    #[tokio::test]
    async fn middleware_with_a_wrong_token_is_403() {
        let (status, headers, body) = call(Some("Bearer not-an-admin-token"), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(headers.get(header::WWW_AUTHENTICATE).is_none());
        let e = error_of(&body);
        assert_eq!(e["status"], 403);
        assert_eq!(e["kind"], "forbidden");
        assert!(!body.contains("not-an-admin-token"), "{body}");
    }

    #[tokio::test]
    async fn middleware_with_the_right_token_passes_the_actor() {
        let (status, _, body) = call(Some(&format!("Bearer {ALICE}")), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "alice");
        let (status, _, body) = call(Some(&format!("bearer {DEPLOY}")), Some("\tjane\t")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "deploy.bot_1 (jane)");
    }
}
