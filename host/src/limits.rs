//! Resource limits of a policy, and the limiter that enforces memory per call.
//!
//! Limits are always on: every policy has a CPU deadline, a memory cap, a
//! stack cap (engine-wide) and a cap on candidates. A manifest may tighten or
//! loosen them within the engine's hard ceilings ([`Limits::MAX_MEMORY_BYTES`]).

use std::time::Duration;

/// Per-policy limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU deadline of one call, enforced by epoch interruption.
    pub deadline: Duration,
    /// Linear memory a single instance may grow to.
    pub memory_bytes: usize,
    /// Candidates per request; larger requests are refused with 422.
    pub max_candidates: usize,
}

impl Limits {
    /// Hard ceiling of any policy's memory (the pooling allocator's slot size).
    pub const MAX_MEMORY_BYTES: usize = 256 << 20;
    /// Hard ceiling of any deadline.
    pub const MAX_DEADLINE: Duration = Duration::from_secs(5);
    /// Hard ceiling of candidates per request.
    pub const MAX_CANDIDATES: usize = 10_000;

    /// Checks the limits against the hard ceilings.
    ///
    /// # Errors
    /// A message naming the limit and its allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if self.deadline.is_zero() || self.deadline > Self::MAX_DEADLINE {
            return Err(format!(
                "deadline_ms must be in 1..={}, got {}",
                Self::MAX_DEADLINE.as_millis(),
                self.deadline.as_millis()
            ));
        }
        if self.memory_bytes < (1 << 20) || self.memory_bytes > Self::MAX_MEMORY_BYTES {
            return Err(format!(
                "memory_mb must be in 1..={}, got {}",
                Self::MAX_MEMORY_BYTES >> 20,
                self.memory_bytes >> 20
            ));
        }
        if self.max_candidates == 0 || self.max_candidates > Self::MAX_CANDIDATES {
            return Err(format!(
                "max_candidates must be in 1..={}, got {}",
                Self::MAX_CANDIDATES,
                self.max_candidates
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    /// 20 ms deadline, 64 MiB memory, 2000 candidates.
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(20),
            memory_bytes: 64 << 20,
            max_candidates: 2000,
        }
    }
}

/// Enforces the memory limit of one store and remembers whether it refused a
/// growth, so that the resulting trap is reported as a memory-limit error
/// rather than as the guest's own "allocation failed" abort.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: usize,
    /// Largest size the guest asked for beyond the limit, if any.
    pub(crate) refused: Option<usize>,
    /// High-water mark of linear memory, for resource reports.
    pub(crate) peak: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: usize) -> Self {
        MemoryLimiter {
            limit,
            refused: None,
            peak: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(self.refused.map_or(desired, |r| r.max(desired)));
            // Refuse with a trap: a guest that cannot allocate aborts anyway,
            // and trapping here keeps the cause unambiguous.
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes exceeded",
                self.limit
            ));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
