//! Failure injection (`--fail-prob`, `--slow-prob`, `--slow`, `--corrupt-prob`): the node
//! crashes, stalls or answers wrong products on purpose, so that tests and `facto chaos` can
//! check what the cluster promises.
//!
//! A crash is `_exit` with [`CRASH_EXIT_CODE`]: no destructor runs, no buffer is flushed, sled
//! gets no chance to write anything it has not already made durable; exactly what a power cut
//! or SIGKILL leaves behind. A stall holds one reply (worker) or the whole runtime
//! (coordinator) for `--slow` seconds, longer than every timeout in the cluster.

use crate::bignum::Big;
use facto_elections::rng::Rng;
use std::sync::Mutex;

/// Exit status of an injected crash.
pub const CRASH_EXIT_CODE: i32 = 86;

pub struct Faults {
    crash_prob: f64,
    slow_prob: f64,
    slow_ms: u64,
    corrupt_prob: f64,
    rng: Mutex<Rng>,
}

impl Faults {
    pub fn new(crash_prob: f64, slow_prob: f64, slow_ms: u64) -> Faults {
        // Not reproducible on purpose: every restart of a node must draw different crashes.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let seed = nanos ^ (u64::from(std::process::id()) << 32);
        Faults { crash_prob, slow_prob, slow_ms, corrupt_prob: 0.0, rng: Mutex::new(Rng::new(seed)) }
    }

    /// With probability `corrupt_prob` per task, the worker answers a wrong product (one more
    /// than the true one: same size, so only the residue check can catch it).
    pub fn corrupting(self, corrupt_prob: f64) -> Faults {
        Faults { corrupt_prob, ..self }
    }

    /// The product a worker answers: `product`, or a wrong one with `--corrupt-prob`.
    pub fn maybe_corrupt(&self, product: Big) -> Big {
        if self.roll(self.corrupt_prob) {
            log::warn!("injected fault: answering a wrong product");
            return product.plus_one();
        }
        product
    }

    /// No faults at all.
    pub fn none() -> Faults {
        Faults::new(0.0, 0.0, 0)
    }

    fn roll(&self, prob: f64) -> bool {
        if prob <= 0.0 {
            return false;
        }
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).chance(prob)
    }

    /// Crashes the process with probability `--fail-prob`.
    pub fn maybe_crash(&self, during: &str) {
        if self.roll(self.crash_prob) {
            crash(during);
        }
    }

    /// With probability `--slow-prob`, how long to stall.
    pub fn maybe_stall_ms(&self) -> Option<u64> {
        self.roll(self.slow_prob).then_some(self.slow_ms)
    }
}

/// Ends the process at once, as a crash would.
pub fn crash(during: &str) -> ! {
    eprintln!("facto: injected crash during {during}");
    // SAFETY: _exit only ends the process; skipping destructors and buffers is the point.
    unsafe { libc::_exit(CRASH_EXIT_CODE) }
}
