//! The control plane: what should serve, and the one writer of changes to
//! it.
//!
//! ```text
//! policy directory ─► reload (watch, debounce, compile off the request path,
//!  (manifests, modules,   validate, smoke call) ─► registry (one atomically
//!   routes.toml,                                    swapped Snapshot, read by
//!   rollout.json)                                   serving)
//! admin API ─► manager (apply a Change under the directory lock, write
//!              rollout.json and the audit entry together, reconcile)
//! ```
//!
//! | module     | concern                                                        |
//! |------------|----------------------------------------------------------------|
//! | `manifest` | per-policy TOML manifests and `routes.toml`                    |
//! | `registry` | the atomically swapped snapshot of policies, routes and plans  |
//! | `reload`   | reconciling the directory into the registry                    |
//! | `module_digests` | module files unchanged since their last read (not read again) |
//! | `rollout`  | rollout state (`rollout.json`): pins, canary, shadows, kill    |
//! | `versions` | the version store (every loaded version, by digest)            |
//! | `manager`  | the one writer of rollout state and versions, audited          |
//! | `audit`    | the append-only audit log                                      |
//! | `persist`  | atomic files and the directory lock                            |
//! | `source`   | where modules come from: files, or an OCI registry (polled)    |
//! | `store`    | the control store: rollout document, revision, audit, heartbeats (directory or Redis) |
//! | `generation` | what a replica serves, as one comparable name, and its refusals |
//! | `bundle`   | policy-set bundles: a whole directory as one OCI artifact, followed |
//!
//! Rules: control returns domain errors
//! ([`ChangeError`](manager::ChangeError),
//! [`ResolveError`](registry::ResolveError)), never HTTP types; it imports
//! nothing from serving or the transports (serving reaches it through the
//! registry snapshot and the rollback queue, [`manager::RollbackRequests`]).

pub mod audit;
pub mod bundle;
pub mod generation;
pub mod manager;
pub mod manifest;
pub(crate) mod module_digests;
pub mod persist;
pub mod registry;
pub mod reload;
pub mod rollout;
pub mod source;
pub mod store;
pub mod versions;
