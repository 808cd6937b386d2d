//! Logging into the host's logs: the one capability a policy has.
//!
//! On wasm the lines go through the contract's `log` import; the host tags
//! them with the policy and request and caps their number and size. In native
//! unit tests they go to stderr.
//!
//! ```
//! oasis_sdk::log::info!("scored {} candidates", 3);
//! oasis_sdk::warn!("the macros are also at the crate root");
//! oasis_sdk::log::event(oasis_sdk::log::Level::Debug, "pacing", &[("campaign", "7")]);
//! ```

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing, normally filtered out by the host.
    Trace,
    /// Details useful while developing a policy.
    Debug,
    /// Noteworthy events.
    Info,
    /// Something unexpected that the policy worked around.
    Warn,
    /// A failure.
    Error,
}

/// Emits one log line.
pub fn log(level: Level, message: &str) {
    event(level, message, &[]);
}

/// Emits one structured log line: a message and key/value fields, which the
/// host records as fields of its own (JSON) log event.
///
/// ```
/// use oasis_sdk::log::{Level, event};
/// event(Level::Info, "pacing throttled", &[("campaign", "7"), ("multiplier", "0.42")]);
/// ```
pub fn event(level: Level, message: &str, fields: &[(&str, &str)]) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::oasis::policy::log as wit;
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        let fields: Vec<wit::Field> = fields
            .iter()
            .map(|(k, v)| wit::Field {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        wit::log(level, message, &fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message} {fields:?}");
}

/// `info!("x = {}", x)`: formats and logs at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Info, &format!($($arg)*)) };
}

/// `warn!("...")`: formats and logs at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Warn, &format!($($arg)*)) };
}

/// `error!("...")`: formats and logs at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Error, &format!($($arg)*)) };
}

/// `trace!("...")`: formats and logs at trace level.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Trace, &format!($($arg)*)) };
}

// The macros live at the crate root (`oasis_sdk::info!`); these make
// `oasis_sdk::log::info!` work too.
#[doc(inline)]
pub use crate::{debug, error, info, trace, warn};

/// `debug!("...")`: formats and logs at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Debug, &format!($($arg)*)) };
}
