//! `/status`: the core's view of this node with the driver's own counters.

use super::Handle;
use crate::api::NodeStatus;
use crate::node_core::CoreStatus;
use std::sync::atomic::Ordering;

/// This node's status, from the core's (`core`) and the handle's counters.
pub(super) fn node_status(handle: &Handle, core: CoreStatus, uptime_ms: u64, started_unix_ms: u64) -> NodeStatus {
    let cfg = &handle.config;
    NodeStatus {
        id: cfg.id,
        address: cfg.members.addr(cfg.id).unwrap_or(&cfg.listen).to_string(),
        role: core.role.into(),
        leader: core.leader,
        epoch: core.epoch,
        election: cfg.algorithm.to_string(),
        operations_computed: handle.stats.operations_computed.load(Ordering::Relaxed),
        max_operands: handle.stats.max_operands.load(Ordering::Relaxed),
        last_leader_contact_ms: core.last_leader_contact_ms,
        uptime_ms,
        started_unix_ms,
        restarts: cfg.restarts,
        checkpoint_version: core.checkpoint_version,
        partitioned: handle.gate.partitioned(),
        peer_bytes: handle.client.bytes_moved(),
        conversion_tasks_running: handle.stats.conversion_tasks_running.load(Ordering::Relaxed),
        conversion_tasks_done: handle.stats.conversion_tasks_done.load(Ordering::Relaxed),
        conversion_tasks_redone: handle.conversion_tasks_redone.load(Ordering::Relaxed),
        converter_peak_rss_bytes: handle.converter_peak_rss_bytes.load(Ordering::Relaxed),
        refused_messages: handle.refusals.count(),
        taking_over: core.taking_over,
        jobs: core.jobs,
        job_counts: core.job_counts,
        leadership_log: core.leadership_log,
        member_list: format!("{:016x}", cfg.members.fingerprint()),
        settings: handle.settings.text(),
    }
}
