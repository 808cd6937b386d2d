//! Registry credentials from a docker `config.json`: the file given with
//! `--registry-auth`, else `$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`.
//!
//! ```json
//! { "auths": {
//!     "registry.example.com": { "auth": "<base64 of user:password>" },
//!     "127.0.0.1:5000": { "username": "ci", "password": "…" },
//!     "ghcr.io": { "registrytoken": "<bearer token>" } } }
//! ```
//!
//! Keys may carry a scheme and a path (`https://index.docker.io/v1/`): the
//! host (and port) is what counts. Credential helpers (`credsStore`,
//! `credHelpers`) are not run; a registry without an entry is accessed
//! anonymously.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// One registry's credential.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// HTTP basic: user and password (or an identity token as password).
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A bearer token.
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        match self {
            Credential::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Credential::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// Credentials by registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    by_host: BTreeMap<String, Credential>,
    /// The file they were read from, if any.
    pub file: Option<PathBuf>,
}

/// Why a credentials file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// It cannot be read.
    #[error("registry credentials {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// It is not a docker config.
    #[error("registry credentials {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: BTreeMap<String, RawAuth>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct RawAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

impl Credentials {
    /// No credentials: every registry anonymously.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads `file` when given (it must exist), else the standard docker
    /// config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`;
    /// none there means no credentials).
    ///
    /// # Errors
    /// [`CredentialsError`] naming the file and what is wrong.
    pub fn load(file: Option<&Path>) -> Result<Self, CredentialsError> {
        let (path, required) = match file {
            Some(f) => (f.to_path_buf(), true),
            None => match standard_config() {
                Some(p) => (p, false),
                None => return Ok(Self::none()),
            },
        };
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::none());
            }
            Err(error) => {
                return Err(CredentialsError::Io {
                    path: path.display().to_string(),
                    error,
                });
            }
        };
        let mut creds = Self::parse(&path, &text)?;
        creds.file = Some(path);
        Ok(creds)
    }

    /// Parses a docker config read from `path`.
    ///
    /// # Errors
    /// [`CredentialsError::Invalid`] naming the entry that is wrong.
    pub fn parse(path: &Path, text: &[u8]) -> Result<Self, CredentialsError> {
        let invalid = |message: String| CredentialsError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let raw: RawConfig = serde_json::from_slice(text)
            .map_err(|e| invalid(format!("not a docker config.json: {e}")))?;
        if raw.creds_store.is_some() || !raw.cred_helpers.is_empty() {
            tracing::warn!(file = %path.display(), "docker credential helpers (credsStore, credHelpers) are not run; registries without an `auths` entry are accessed anonymously");
        }
        let mut by_host = BTreeMap::new();
        for (key, a) in raw.auths {
            let host = host_of(&key);
            let credential = if let Some(token) = a.registrytoken.filter(|t| !t.is_empty()) {
                Credential::Bearer(token)
            } else if let (Some(user), Some(password)) = (&a.username, &a.password) {
                Credential::Basic {
                    user: user.clone(),
                    password: password.clone(),
                }
            } else if let Some(auth) = a.auth.as_deref().filter(|s| !s.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| invalid(format!("auths.{key:?}.auth is not base64: {e}")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| invalid(format!("auths.{key:?}.auth is not UTF-8")))?;
                let (user, password) = decoded.split_once(':').ok_or_else(|| {
                    invalid(format!(
                        "auths.{key:?}.auth must be base64 of `user:password`"
                    ))
                })?;
                Credential::Basic {
                    user: user.to_string(),
                    password: password.to_string(),
                }
            } else if let Some(token) = a.identitytoken.filter(|t| !t.is_empty()) {
                // Docker sends an identity token as the password of the
                // special user `<token>`.
                Credential::Basic {
                    user: "<token>".into(),
                    password: token,
                }
            } else {
                continue;
            };
            by_host.insert(host, credential);
        }
        Ok(Credentials {
            by_host,
            file: None,
        })
    }

    /// The credential of registry `host` (`host` or `host:port`), if any.
    pub fn for_host(&self, host: &str) -> Option<&Credential> {
        self.by_host.get(host).or_else(|| {
            // Docker Hub's historical key.
            (host == "docker.io" || host == "registry-1.docker.io")
                .then(|| self.by_host.get("index.docker.io"))
                .flatten()
        })
    }

    /// The registries with a credential.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.by_host.keys().map(String::as_str)
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn standard_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|d| !d.is_empty())?;
    Some(PathBuf::from(home).join(".docker").join("config.json"))
}

/// The host (and port) of a docker config key: `https://h:5000/v1/` → `h:5000`.
fn host_of(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_user_password_and_tokens_by_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with:colons");
        let text = format!(
            r#"{{"auths": {{
                "https://registry.example.com/v1/": {{"auth": "{auth}"}},
                "127.0.0.1:5000": {{"username": "ci", "password": "pw"}},
                "ghcr.io": {{"registrytoken": "tok"}},
                "empty.example": {{}}
            }}, "credsStore": "desktop"}}"#
        );
        let c = Credentials::parse(Path::new("config.json"), text.as_bytes()).unwrap();
        assert_eq!(
            c.for_host("registry.example.com"),
            Some(&Credential::Basic {
                user: "alice".into(),
                password: "s3cret:with:colons".into()
            })
        );
        assert_eq!(
            c.for_host("127.0.0.1:5000"),
            Some(&Credential::Basic {
                user: "ci".into(),
                password: "pw".into()
            })
        );
        assert_eq!(
            c.for_host("ghcr.io"),
            Some(&Credential::Bearer("tok".into()))
        );
        assert_eq!(c.for_host("empty.example"), None);
        assert_eq!(c.for_host("127.0.0.1:5001"), None);
        assert!(!format!("{c:?}").contains("pw"), "secrets never printed");
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it_and_a_missing_given_file_too() {
        let e = Credentials::parse(
            Path::new("/x/config.json"),
            br#"{"auths": {"h": {"auth": "%%"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/x/config.json") && e.contains("auths.\"h\".auth is not base64"),
            "{e}"
        );
        let e = Credentials::parse(Path::new("/x/config.json"), br#"{"auths": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a docker config.json"), "{e}");
        let e = Credentials::load(Some(Path::new("/nonexistent/oasis/config.json")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/oasis/config.json"), "{e}");
    }
}
