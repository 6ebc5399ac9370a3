//! The encoded answers of finished jobs with large results, kept and shared: a thousand
//! clients long-polling one 1,000,000! job (5.5 MB of digits) cost one encoding, not a
//! thousand, and no client's answer is a copy of it.

use crate::api::JobInfo;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Results shorter than this are encoded for each client: cheaper than the bookkeeping.
const SHARED_DIGITS_MIN: usize = 64 * 1024;
/// Encoded answers kept: the jobs clients are most likely still reading.
const KEPT_MAX: usize = 4;

/// Bytes shared by every response that sends them.
#[derive(Clone)]
pub struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Shared {
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Answers of finished jobs by their digits (the same `Arc` is the same result).
#[derive(Default)]
pub struct Answers {
    kept: Mutex<VecDeque<(String, usize, Shared)>>,
}

impl Answers {
    /// The job's encoded answer: kept if it is, else encoded (on the blocking pool) and,
    /// for a large result, kept. `None` if encoding failed.
    pub async fn encoded(&self, job: JobInfo) -> Option<Shared> {
        let Some(digits) = job.result.clone().filter(|d| d.len() >= SHARED_DIGITS_MIN) else {
            return encode(job).await;
        };
        let key = (job.id.clone(), Arc::as_ptr(&digits) as *const u8 as usize);
        if let Some(found) = self.find(&key) {
            return Some(found);
        }
        let encoded = encode(job).await?;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.push_back((key.0, key.1, encoded.clone()));
        if kept.len() > KEPT_MAX {
            kept.pop_front();
        }
        Some(encoded)
    }

    fn find(&self, (id, digits): &(String, usize)) -> Option<Shared> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().find(|(i, d, _)| i == id && d == digits).map(|(_, _, encoded)| encoded.clone())
    }
}

async fn encode(job: JobInfo) -> Option<Shared> {
    let bytes = async_std::task::spawn_blocking(move || serde_json::to_vec(&job)).await.ok()?;
    Some(Shared(Arc::new(bytes)))
}
