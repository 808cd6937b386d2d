//! Resource limits of a policy, and the limiter that enforces memory per call.
//!
//! Limits are always on: every policy has a CPU deadline, a memory cap, a
//! stack cap (engine-wide) and a cap on candidates. A manifest may tighten or
//! loosen them within the engine's hard ceilings ([`Limits::MAX_MEMORY_BYTES`]).
//! [`Concurrency`] bounds how many calls of one policy version run and wait
//! at once on a server. Every default and ceiling is stated here, once; the
//! CLI's flags and the manifest take theirs from these.

use std::time::Duration;

/// Per-policy limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deadline of one call, in the policy's own CPU time (its thread's
    /// CPU clock, checked every epoch tick), with a wall-clock ceiling
    /// ([`Limits::wall_ceiling`]) as a backstop.
    pub deadline: Duration,
    /// Linear memory a single instance may grow to.
    pub memory_bytes: usize,
    /// Candidates per request; larger requests are refused with 422.
    pub max_candidates: usize,
    /// Largest component accepted for compilation: compile time and memory
    /// grow with the module, so a huge one is refused before it is compiled.
    pub module_bytes: usize,
    /// Calls one instance may serve before it is discarded. 0 or 1 (the
    /// default): a fresh instance per call, so no state survives a request.
    /// N > 1 is an opt-in, **weaker isolation** for policies whose
    /// instantiation dominates their cost (Python: ~2 ms): the host keeps a
    /// few instances of the policy version ([`Limits::MAX_IDLE_INSTANCES`])
    /// and runs up to N calls on each. What a policy leaves in its globals is
    /// then visible to its later calls; any failed call (trap, timeout,
    /// memory limit, policy error, invalid output) discards its instance.
    /// The deadline and fuel are reset per call; the memory limit applies to
    /// the instance, whose memory only grows.
    pub reuse_instance_calls: u32,
    /// Whether [`Limits::deadline`] was chosen (a manifest's `[limits]
    /// deadline_ms`, `--deadline-ms`) rather than left at the default. A
    /// default deadline gives way to the language's at load: a Python
    /// component (componentize-py, CPython inside) gets
    /// [`Limits::PYTHON_DEFAULT_DEADLINE`] ([`Limits::for_language`]).
    pub deadline_explicit: bool,
}

impl Limits {
    /// The default deadline of a Python component whose deadline was not
    /// chosen. A fresh Python instance costs ~2-3 ms before the policy runs
    /// and a call at 1000 candidates 5-8 ms of CPU (BENCHMARKS.md), with
    /// a p99 several times the median on a busy machine: the Rust default
    /// (20 ms) failed 2 of 7 `oasis run`s and 1.2% of served calls (issue
    /// 20). 100 ms of CPU time is met with a wide margin and still ends a
    /// looping policy quickly.
    pub const PYTHON_DEFAULT_DEADLINE: Duration = Duration::from_millis(100);

    /// Hard ceiling of any policy's memory (the pooling allocator's slot size).
    pub const MAX_MEMORY_BYTES: usize = 256 << 20;
    /// Hard ceiling of any deadline.
    pub const MAX_DEADLINE: Duration = Duration::from_secs(5);
    /// Hard ceiling of candidates per request.
    pub const MAX_CANDIDATES: usize = 10_000;
    /// Hard ceiling of a component's size.
    pub const MAX_MODULE_BYTES: usize = 256 << 20;
    /// Elements a policy's tables may grow to (function references).
    pub const MAX_TABLE_ELEMENTS: usize = 100_000;
    /// Ceiling of [`Limits::reuse_instance_calls`].
    pub const MAX_REUSE_CALLS: u32 = 100_000;
    /// Idle instances kept per policy version when instances are reused;
    /// each holds a pooling-allocator slot and its memory while idle.
    pub const MAX_IDLE_INSTANCES: usize = 4;

    /// Fixed part of [`Limits::transfer_bytes_for`].
    pub const TRANSFER_BASE_BYTES: usize = 64 << 10;
    /// Per-candidate part of [`Limits::transfer_bytes_for`].
    pub const TRANSFER_BYTES_PER_CANDIDATE: usize = 448;

    /// Factor of the deadline that is a call's wall-clock ceiling.
    pub const WALL_CEILING_FACTOR: u32 = 10;
    /// Least margin of the wall-clock ceiling over the deadline.
    pub const MIN_WALL_MARGIN: Duration = Duration::from_millis(100);

    /// The wall-clock ceiling of one call: [`Limits::WALL_CEILING_FACTOR`] ×
    /// the deadline, and at least the deadline + [`Limits::MIN_WALL_MARGIN`].
    /// The deadline counts CPU time so that a busy machine does not fail
    /// calls that did not overrun; the ceiling still ends a call that cannot
    /// get its CPU time in, rather than holding its instance indefinitely.
    pub fn wall_ceiling(&self) -> Duration {
        (self.deadline * Self::WALL_CEILING_FACTOR).max(self.deadline + Self::MIN_WALL_MARGIN)
    }

    /// These limits for a component of the given kind: a Python component
    /// whose deadline is the unchosen default gets
    /// [`Limits::PYTHON_DEFAULT_DEADLINE`]; anything else is unchanged.
    ///
    /// # Examples
    /// ```
    /// use oasis::Limits;
    /// let python = Limits::default().for_language(true);
    /// assert_eq!(python.deadline, Limits::PYTHON_DEFAULT_DEADLINE);
    /// let chosen = Limits { deadline: std::time::Duration::from_millis(30), deadline_explicit: true, ..Limits::default() };
    /// assert_eq!(chosen.for_language(true).deadline.as_millis(), 30);
    /// ```
    pub fn for_language(self, python: bool) -> Self {
        if python && !self.deadline_explicit && self.deadline == Limits::default().deadline {
            Limits {
                deadline: Self::PYTHON_DEFAULT_DEADLINE,
                ..self
            }
        } else {
            self
        }
    }

    /// Whether calls share instances ([`Limits::reuse_instance_calls`] > 1).
    pub fn reuses_instances(&self) -> bool {
        self.reuse_instance_calls > 1
    }

    /// Bytes a policy may make the host copy out of its memory in one
    /// transfer (the arguments of one import call, such as a `log` line, or
    /// the results of one export call: the decisions, or its error) while
    /// answering a request of `candidates` candidates:
    /// [`Limits::TRANSFER_BASE_BYTES`] + [`Limits::TRANSFER_BYTES_PER_CANDIDATE`]
    /// per candidate. Sized for the largest answer the contract allows —
    /// the columns (19 bytes per candidate as the host holds them) and up to
    /// `4n + 64` debug values with 64-byte names (about 416 bytes per
    /// candidate) — so it is proportional to the request, not to the guest's
    /// memory: under 1 MiB for 2,000 candidates, 64 KiB and a little for a
    /// few, and one copy ends well within an epoch tick. Without it wasmtime
    /// allows 128 MiB per transfer, and the canonical ABI lets many list
    /// elements alias the same guest bytes, so a policy using 2 MB of memory
    /// could make the host allocate gigabytes. A transfer beyond it traps the
    /// call before anything is copied.
    pub fn transfer_bytes_for(&self, candidates: usize) -> usize {
        Self::TRANSFER_BASE_BYTES.saturating_add(
            candidates
                .min(self.max_candidates)
                .saturating_mul(Self::TRANSFER_BYTES_PER_CANDIDATE),
        )
    }

    /// The transfer budget of a call without a request (`describe`,
    /// `validate-settings`): that of a request of `max_candidates`.
    pub fn transfer_bytes(&self) -> usize {
        self.transfer_bytes_for(self.max_candidates)
    }

    /// Checks the limits against the hard ceilings.
    ///
    /// # Errors
    /// A message naming the limit and its allowed range (the first of
    /// [`Limits::problems`]).
    pub fn validate(&self) -> Result<(), String> {
        match self.problems().into_iter().next() {
            Some((_, message)) => Err(message),
            None => Ok(()),
        }
    }

    /// Every limit beyond its ceiling: the manifest key (`deadline_ms`,
    /// `memory_mb`, ...) and a message that starts with it.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.deadline.is_zero() || self.deadline > Self::MAX_DEADLINE {
            out.push((
                "deadline_ms",
                format!(
                    "deadline_ms must be in 1..={}, got {}",
                    Self::MAX_DEADLINE.as_millis(),
                    self.deadline.as_millis()
                ),
            ));
        }
        if self.memory_bytes < (1 << 20) || self.memory_bytes > Self::MAX_MEMORY_BYTES {
            out.push((
                "memory_mb",
                format!(
                    "memory_mb must be in 1..={}, got {}",
                    Self::MAX_MEMORY_BYTES >> 20,
                    self.memory_bytes >> 20
                ),
            ));
        }
        if self.module_bytes < (1 << 20) || self.module_bytes > Self::MAX_MODULE_BYTES {
            out.push((
                "max_module_mb",
                format!(
                    "max_module_mb must be in 1..={}, got {}",
                    Self::MAX_MODULE_BYTES >> 20,
                    self.module_bytes >> 20
                ),
            ));
        }
        if self.max_candidates == 0 || self.max_candidates > Self::MAX_CANDIDATES {
            out.push((
                "max_candidates",
                format!(
                    "max_candidates must be in 1..={}, got {}",
                    Self::MAX_CANDIDATES,
                    self.max_candidates
                ),
            ));
        }
        if self.reuse_instance_calls > Self::MAX_REUSE_CALLS {
            out.push((
                "reuse_instance_calls",
                format!(
                    "reuse_instance_calls must be in 0..={}, got {}",
                    Self::MAX_REUSE_CALLS,
                    self.reuse_instance_calls
                ),
            ));
        }
        out
    }
}

impl Default for Limits {
    /// 20 ms deadline, 64 MiB memory, 2000 candidates, 32 MiB components
    /// (Rust policies are a few hundred KiB; a Python one is about 18 MiB),
    /// a fresh instance per call.
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(20),
            memory_bytes: 64 << 20,
            max_candidates: 2000,
            module_bytes: 32 << 20,
            reuse_instance_calls: 0,
            deadline_explicit: false,
        }
    }
}

/// Bounded concurrency per policy version on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    /// Instances of this policy that may run at once.
    pub max: usize,
    /// How long a request waits for a free instance before a 503.
    pub queue_timeout: Duration,
    /// Requests that may wait for an instance; more are refused at once.
    pub queue: usize,
}

impl Concurrency {
    /// Ceiling of `max`.
    pub const MAX_CONCURRENCY: usize = 1024;
    /// Ceiling of `queue`.
    pub const MAX_QUEUE: usize = 100_000;
    /// Ceiling of `queue_timeout`.
    pub const MAX_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Checks the values against the ceilings.
    ///
    /// # Errors
    /// A message naming the manifest key and its allowed range (the first
    /// of [`Concurrency::problems`]).
    pub fn validate(&self) -> Result<(), String> {
        match self.problems().into_iter().next() {
            Some((_, message)) => Err(message),
            None => Ok(()),
        }
    }

    /// Every value beyond its ceiling: the manifest key and a message that
    /// starts with it.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(1..=Self::MAX_CONCURRENCY).contains(&self.max) {
            out.push((
                "max_concurrency",
                format!(
                    "max_concurrency must be in 1..={}, got {}",
                    Self::MAX_CONCURRENCY,
                    self.max
                ),
            ));
        }
        if self.queue > Self::MAX_QUEUE {
            out.push((
                "max_queue",
                format!(
                    "max_queue must be at most {}, got {}",
                    Self::MAX_QUEUE,
                    self.queue
                ),
            ));
        }
        if self.queue_timeout > Self::MAX_QUEUE_TIMEOUT {
            out.push((
                "queue_timeout_ms",
                format!(
                    "queue_timeout_ms must be at most {}, got {}",
                    Self::MAX_QUEUE_TIMEOUT.as_millis(),
                    self.queue_timeout.as_millis()
                ),
            ));
        }
        out
    }
}

impl Default for Concurrency {
    /// 16 instances, 50 ms queue deadline, 64 waiting requests.
    fn default() -> Self {
        Concurrency {
            max: 16,
            queue_timeout: Duration::from_millis(50),
            queue: 64,
        }
    }
}
