//! Telemetry: what the server tells its operators.
//!
//! | module      | concern                                                    |
//! |-------------|------------------------------------------------------------|
//! | `logging`   | the `tracing` subscriber: human or JSON lines, a filter     |
//! | `metrics`   | Prometheus metrics, one group per subsystem                 |
//! | `promotion` | flags a version that promotes nothing                       |
//!
//! Rules: telemetry imports only the library core; the layers above count
//! into it.

pub mod logging;
pub mod metrics;
pub mod promotion;
