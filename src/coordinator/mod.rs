//! The coordinator's planning and scheduling: pure state machines, no I/O.

pub mod conversion;
pub mod fingerprint;
pub mod plan;
pub mod scheduler;

pub use fingerprint::Fingerprint;
pub use plan::{OpId, Plan, Task, TaskInputs, MAX_OPERANDS};
pub use scheduler::{Action, JobCounts, JobId, JobProgress, OpRef, Scheduler, Timing, WorkItem};
