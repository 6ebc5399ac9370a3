//! The coordinator's planning and scheduling: pure state machines, no I/O.

pub mod conversion;
pub mod fingerprint;
pub mod plan;
pub mod primes;
pub mod scheduler;

pub use fingerprint::Fingerprint;
pub use plan::{OpId, Plan, Product, Task, TaskInputs, MAX_OPERANDS};
pub use scheduler::{Action, JobCounts, JobId, JobProgress, OpRef, Scheduler, Timing, WorkItem};
