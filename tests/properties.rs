//! Property tests (proptest): arbitrary bytes and arbitrary well-typed but hostile messages
//! fed to every decoder, to the checks in front of the node's state, to the checkpoint merge
//! and to the scheduler. Nothing panics, and a refused fact changes nothing.

use facto::bignum::Big;
use facto::checkpoint::{decode_facts, Checkpoint, Fact};
use facto::coordinator::fingerprint::{check_answer, Fingerprint};
use facto::coordinator::{OpId, OpRef, Plan, Scheduler, Timing, WorkItem};
use facto::node_core::validate;
use facto_elections::{AnyMsg, Leadership};
use proptest::prelude::*;

const CASES: u32 = 2_000;

fn op() -> impl Strategy<Value = OpId> {
    (0u32..40, prop_oneof![0u64..64, any::<u64>()]).prop_map(|(level, index)| OpId { level, index })
}

fn small_n() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..64, 0u64..200_000, Just(1_000_000)]
}

fn big() -> impl Strategy<Value = Big> {
    prop_oneof![any::<u64>().prop_map(Big::from), (0u64..3_000).prop_map(Big::factorial)]
}

fn job_id() -> impl Strategy<Value = String> {
    prop_oneof![Just("1-1".to_string()), Just("1-2".to_string()), "[0-9a-z-]{0,8}"]
}

/// Facts as a compromised member could write them: any job, any n, any operation, any number.
fn fact() -> impl Strategy<Value = Fact> {
    prop_oneof![
        (job_id(), prop_oneof![small_n(), any::<u64>()]).prop_map(|(id, n)| Fact::Job { id, n, request: None }),
        (job_id(), op()).prop_map(|(job, op)| Fact::Dispatched { job, op }),
        (job_id(), op(), big()).prop_map(|(job, op, product)| Fact::Product { job, op, product }),
        job_id().prop_map(|job| Fact::Finished { job }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn decoders_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = facto::frame::decode::<serde_json::Value>(&bytes);
        let _ = facto::api::decode_work(&bytes);
        let _ = facto::api::decode_products(&bytes);
        let _ = decode_facts::<facto::api::CheckpointWrite>(&bytes);
        let _ = serde_json::from_slice::<facto::api::ElectionEnvelope>(&bytes);
        let _ = serde_json::from_slice::<facto::api::SubmitRequest>(&bytes);
    }

    #[test]
    fn damaged_frames_of_real_facts_are_errors_or_facts(facts in proptest::collection::vec(fact(), 0..6), at in any::<usize>(), flip in 1u8..) {
        let mut bytes = facto::checkpoint::encode_facts((), &facts).unwrap();
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] ^= flip;
        }
        let _ = decode_facts::<()>(&bytes);
    }

    #[test]
    fn hostile_facts_are_checked_and_merged_without_panic(facts in proptest::collection::vec(fact(), 0..12), max_n in small_n()) {
        let mut checkpoint = Checkpoint::default();
        let _ = validate::replicated_facts(1, &facts, max_n, |job| checkpoint.jobs.get(job).map(|j| j.n));
        for fact in facts {
            let before = checkpoint.clone();
            if !checkpoint.apply(fact) {
                prop_assert_eq!(&before, &checkpoint, "a refused fact changed the checkpoint");
            }
        }
        let _ = checkpoint.facts();
    }

    #[test]
    fn epochs_and_senders_are_bounded(known in any::<u64>(), epoch in any::<u64>(), from in any::<u32>(), leader in any::<u32>()) {
        let _ = validate::epoch_ahead(known, epoch);
        let following = Leadership::Following { leader, epoch: known };
        if validate::checkpoint_writer(following, known, from, epoch).is_ok() {
            prop_assert!(epoch >= known && epoch - known <= validate::EPOCH_AHEAD_MAX && epoch <= validate::EPOCH_MAX);
        }
        let msg = format!(r#"{{"raft":{{"Heartbeat":{{"term":{epoch}}}}}}}"#);
        if let Ok(m) = serde_json::from_str::<AnyMsg>(&msg) {
            prop_assert_eq!(m.epoch(), epoch);
        }
    }

    #[test]
    fn plans_answer_for_any_operation(n in prop_oneof![small_n(), 0u64..(1 << 40)], op in op()) {
        let plan = Plan::new(n);
        let _ = (plan.is_task(op), plan.root(), plan.task_parent(op), plan.product_of(op), plan.squares_first(op));
        if plan.is_task(op) {
            let _ = (plan.task_inputs(op), plan.task_ops(op), plan.subtree_ops(op));
        }
    }

    /// Answers a hostile worker could send: wrong numbers, wrong operations, wrong counts.
    #[test]
    fn worker_answers_are_checked_without_panic(n in small_n(), ops in proptest::collection::vec(op(), 0..4), products in proptest::collection::vec(big(), 0..4), seed in any::<u64>()) {
        let fp = Fingerprint::new(seed);
        let items: Vec<WorkItem> = ops.iter().map(|&op| WorkItem { op: OpRef { job: "1-1".into(), op }, n, operands: vec![] })
            .filter(|i| Plan::new(n).is_task(i.op.op)).collect();
        let answer: Vec<(OpRef, Big)> = ops.iter().map(|&op| OpRef { job: "1-1".into(), op }).zip(products).collect();
        let _ = check_answer(&fp, &items, &answer);
        let _ = fp.of_decimal(&format!("{n}x"));
    }

    /// The scheduler, fed answers, failures and facts for batches and operations it never
    /// handed out, neither panics nor finishes a job it has no product for.
    #[test]
    fn the_scheduler_survives_hostile_events(
        n in 0u64..100_000,
        events in proptest::collection::vec((0u8..5, 0u64..8, job_id(), op(), big()), 0..40),
    ) {
        let mut s = Scheduler::new("1".into(), Timing { worker_delay_ms: 0, batch_timeout_ms: 100 });
        s.add_worker(2);
        let (id, _) = s.submit(n);
        for (now_ms, (kind, batch, job, op, product)) in events.into_iter().enumerate() {
            let now_ms = now_ms as u64 * 10;
            let products = vec![(OpRef { job, op }, product)];
            let _ = match kind {
                0 => s.batch_answered(batch, products, now_ms),
                1 => s.batch_done(batch, products, now_ms),
                2 => s.batch_failed(batch, now_ms),
                3 => s.learn(products, now_ms),
                _ => s.tick(now_ms),
            };
        }
        let p = s.job_progress(&id).unwrap();
        prop_assert!(p.ops_done <= p.ops_total);
    }
}
