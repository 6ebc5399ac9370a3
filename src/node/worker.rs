//! The worker's side: multiply the operations of a batch. Pure apart from counters.

use crate::api::{WorkRequestItem, WorkResult};
use crate::bignum::Big;
use crate::coordinator::MAX_OPERANDS;
use std::sync::atomic::{AtomicU64, Ordering};

/// What this node computed as a worker (shown in `/status`).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub operations_computed: AtomicU64,
    pub max_operands: AtomicU64,
}

/// Checks a batch before any work: every operation multiplies 1 to 4 values. A batch that
/// breaks this is refused whole (a peer's bug or a hostile message, never a panic).
pub fn check(items: &[WorkRequestItem]) -> Result<(), String> {
    match items.iter().find(|i| i.operands.is_empty() || i.operands.len() as u64 > MAX_OPERANDS) {
        Some(bad) => Err(format!(
            "operation {}:{}:{} has {} operands; 1 to {MAX_OPERANDS} are allowed",
            bad.op.job,
            bad.op.level,
            bad.op.index,
            bad.operands.len()
        )),
        None => Ok(()),
    }
}

/// Multiplies every operation of a checked batch.
pub fn compute(items: Vec<WorkRequestItem>, stats: &WorkerStats) -> Vec<WorkResult> {
    items
        .into_iter()
        .map(|item| {
            let product = Big::product(&item.operands);
            stats.operations_computed.fetch_add(1, Ordering::Relaxed);
            stats.max_operands.fetch_max(item.operands.len() as u64, Ordering::Relaxed);
            WorkResult { op: item.op, product }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WireOp;

    fn item(values: &[u64]) -> WorkRequestItem {
        WorkRequestItem {
            op: WireOp { job: "1-1".into(), level: 0, index: 0 },
            operands: values.iter().map(|&v| Big::from(v)).collect(),
        }
    }

    #[test]
    fn multiplies_and_counts() {
        let stats = WorkerStats::default();
        let items = vec![item(&[2, 3, 4, 5]), item(&[6, 7])];
        check(&items).unwrap();
        let results = compute(items, &stats);
        assert_eq!(results[0].product, Big::from(120));
        assert_eq!(results[1].product, Big::from(42));
        assert_eq!(stats.operations_computed.load(Ordering::Relaxed), 2);
        assert_eq!(stats.max_operands.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn refuses_more_than_four_or_no_operands() {
        assert!(check(&[item(&[1, 2, 3, 4, 5])]).unwrap_err().contains("5 operands"));
        assert!(check(&[item(&[])]).is_err());
    }
}
