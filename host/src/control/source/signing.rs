//! Signed modules: cosign-compatible key-based signatures.
//!
//! `oasis push --sign-key K` signs the artifact's manifest digest the way
//! `cosign sign --key` does, and stores the signature where cosign looks for
//! it:
//!
//! ```text
//! REGISTRY/REPO:sha256-<hex>.sig       an OCI manifest in the module's repository
//!   layer  application/vnd.dev.cosign.simplesigning.v1+json
//!          = the payload (simple signing JSON, below)
//!          annotation dev.cosignproject.cosign/signature
//!          = base64(ECDSA P-256 / SHA-256 signature of the payload, ASN.1 DER)
//!
//! payload: {"critical":{"identity":{"docker-reference":"REGISTRY/REPO"},
//!           "image":{"docker-manifest-digest":"sha256:<hex>"},
//!           "type":"cosign container image signature"},"optional":null}
//! ```
//!
//! Verification ([`verify`]) accepts a module when one signature layer is a
//! valid signature, by one of the configured public keys (PEM
//! `PUBLIC KEY`, as `cosign generate-key-pair` writes `cosign.pub`), of a
//! payload of the cosign type naming the module's manifest digest. Private
//! keys are unencrypted PKCS#8 PEM (`PRIVATE KEY`); cosign's own encrypted
//! `cosign.key` format is not read.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use serde_json::Value;

/// Media type of a signature layer (the payload).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The `critical.type` of a cosign signature payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read key {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("{path}: not a {expected}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What was expected.
        expected: &'static str,
        /// What the parser said.
        message: String,
    },
}

fn read_pem(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|error| KeyError::Io {
        path: path.display().to_string(),
        error,
    })
}

/// A public key that signatures are checked against.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The file it was read from (named in refusals).
    pub path: PathBuf,
    key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.path.display())
    }
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) of a P-256 key.
    ///
    /// # Errors
    /// [`KeyError`]: unreadable, or not a P-256 public key.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = read_pem(path)?;
        let key = VerifyingKey::from_public_key_pem(&pem).map_err(|e| KeyError::Invalid {
            path: path.display().to_string(),
            expected: "PEM P-256 public key (-----BEGIN PUBLIC KEY-----)",
            message: e.to_string(),
        })?;
        Ok(PublicKey {
            path: path.to_path_buf(),
            key,
        })
    }

    /// The key of `path`, named by that path.
    pub fn from_verifying_key(path: PathBuf, key: VerifyingKey) -> Self {
        PublicKey { path, key }
    }
}

/// A private key that signs.
pub struct PrivateKey {
    key: SigningKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

impl PrivateKey {
    /// Reads an unencrypted PEM PKCS#8 `PRIVATE KEY` of a P-256 key.
    ///
    /// # Errors
    /// [`KeyError`]: unreadable, or not a P-256 PKCS#8 private key.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = read_pem(path)?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::Invalid {
            path: path.display().to_string(),
            expected: "PEM PKCS#8 P-256 private key (-----BEGIN PRIVATE KEY-----, unencrypted)",
            message: e.to_string(),
        })?;
        Ok(PrivateKey { key })
    }

    /// Signs `payload`: the base64 of the ASN.1 DER ECDSA P-256/SHA-256
    /// signature (what cosign writes in [`SIGNATURE_ANNOTATION`]).
    pub fn sign(&self, payload: &[u8]) -> String {
        let sig: Signature = self.key.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }
}

/// The simple-signing payload for the manifest `digest` of `repository`
/// (`registry/repo`), as cosign writes it.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    let v = serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    });
    serde_json::to_vec(&v).expect("a JSON value serializes")
}

/// The tag where cosign keeps the signatures of manifest `digest`:
/// `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// One signature layer as pulled: the payload and the annotation's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// The payload blob (its digest checked when pulled).
    pub payload: Vec<u8>,
    /// The base64 signature; `None` when the layer has no annotation.
    pub signature: Option<String>,
}

/// Why a module's signatures are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No signature is stored for the digest.
    #[error("unsigned: no signature for {digest} (tag {tag}); a signature by {keys} is required")]
    Unsigned {
        /// The manifest digest.
        digest: String,
        /// Where it was looked for.
        tag: String,
        /// The keys, by file.
        keys: String,
    },
    /// Signatures exist, none is valid by a configured key over this digest.
    #[error(
        "not signed by a configured key: {checked} signature(s) for {digest}, none valid by {keys} ({reasons})"
    )]
    NoValidSignature {
        /// The manifest digest.
        digest: String,
        /// How many layers were checked.
        checked: usize,
        /// The keys, by file.
        keys: String,
        /// What was wrong with each.
        reasons: String,
    },
}

fn key_list(keys: &[PublicKey]) -> String {
    keys.iter()
        .map(|k| k.path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that one of `layers` (pulled from [`signature_tag`]`(digest)`) is a
/// valid signature by one of `keys` of a cosign payload naming `digest`.
/// Returns the file of the key that verified.
///
/// # Errors
/// [`VerifyError`]: no layers, or none valid (each layer's reason given).
pub fn verify(
    layers: &[SignatureLayer],
    digest: &str,
    keys: &[PublicKey],
) -> Result<PathBuf, VerifyError> {
    if layers.is_empty() {
        return Err(VerifyError::Unsigned {
            digest: digest.to_string(),
            tag: signature_tag(digest),
            keys: key_list(keys),
        });
    }
    let mut reasons = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        match verify_layer(layer, digest, keys) {
            Ok(path) => return Ok(path),
            Err(why) => reasons.push(format!("#{}: {why}", i + 1)),
        }
    }
    Err(VerifyError::NoValidSignature {
        digest: digest.to_string(),
        checked: layers.len(),
        keys: key_list(keys),
        reasons: reasons.join("; "),
    })
}

fn verify_layer(
    layer: &SignatureLayer,
    digest: &str,
    keys: &[PublicKey],
) -> Result<PathBuf, String> {
    let b64 = layer
        .signature
        .as_deref()
        .ok_or_else(|| format!("no `{SIGNATURE_ANNOTATION}` annotation"))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let sig = Signature::from_der(&raw)
        .or_else(|_| Signature::from_slice(&raw))
        .map_err(|_| "signature is not an ECDSA P-256 signature".to_string())?;
    let key = keys
        .iter()
        .find(|k| k.key.verify(&layer.payload, &sig).is_ok())
        .ok_or_else(|| "signature does not verify with any configured key".to_string())?;
    // Signed by a trusted key: now what it says must be this digest.
    let v: Value =
        serde_json::from_slice(&layer.payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    let critical = &v["critical"];
    if critical["type"] != PAYLOAD_TYPE {
        return Err(format!(
            "payload type is {}, not `{PAYLOAD_TYPE}`",
            critical["type"]
        ));
    }
    let signed = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or("");
    if signed != digest {
        return Err(format!("payload signs {signed:?}, not {digest}"));
    }
    Ok(key.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(seed: u8) -> (PrivateKey, PublicKey) {
        let key = SigningKey::from_slice(&[seed; 32]).unwrap();
        let public =
            PublicKey::from_verifying_key(format!("k{seed}.pub").into(), *key.verifying_key());
        (PrivateKey { key }, public)
    }

    #[test]
    fn a_signature_verifies_only_by_its_key_and_for_its_digest() {
        let (sk, pk) = pair(7);
        let (_, other) = pair(9);
        let d = format!("sha256:{}", "a".repeat(64));
        let p = payload("127.0.0.1:5000/oasis/gb", &d);
        let layer = SignatureLayer {
            signature: Some(sk.sign(&p)),
            payload: p.clone(),
        };
        assert_eq!(
            verify(std::slice::from_ref(&layer), &d, std::slice::from_ref(&pk)).unwrap(),
            pk.path
        );
        let e = verify(std::slice::from_ref(&layer), &d, &[other])
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not verify with any configured key"), "{e}");
        let d2 = format!("sha256:{}", "b".repeat(64));
        let e = verify(std::slice::from_ref(&layer), &d2, std::slice::from_ref(&pk))
            .unwrap_err()
            .to_string();
        assert!(e.contains("payload signs"), "{e}");
        let e = verify(&[], &d, &[pk]).unwrap_err().to_string();
        assert!(
            e.starts_with("unsigned") && e.contains(&format!("sha256-{}.sig", "a".repeat(64))),
            "{e}"
        );
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(
            v["critical"]["identity"]["docker-reference"],
            "127.0.0.1:5000/oasis/gb"
        );
        assert_eq!(v["optional"], Value::Null);
    }
}
