//! Prometheus metrics (`GET /metrics`), with the official `prometheus-client` crate: the only
//! module that names it. The driver and the HTTP edge count what happens; the node core's
//! state (role, epoch, jobs) is read at scrape time from the node's status.
//!
//! Names follow Prometheus conventions: one `facto_` prefix, base units (`_seconds`), `_total`
//! on counters (the encoder appends it), `facto_build_info`, and no label with unbounded values
//! (no job ids; `peer` is a member id, `route` a route template). Every metric is listed with
//! its meaning in the README.

use crate::api::NodeStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

type Labels = Vec<(&'static str, String)>;

/// Every metric of one node.
pub struct Metrics {
    registry: Mutex<Registry>,
    has_coordinator: Gauge,
    is_coordinator: Gauge,
    epoch: Gauge,
    leadership_changes: Counter,
    elections_started: Counter,
    messages_sent: Family<Labels, Counter>,
    messages_received: Family<Labels, Counter>,
    operations_computed: Counter,
    batches_reexecuted: Counter,
    operations_reexecuted: Counter,
    jobs: Family<Labels, Gauge>,
    checkpoint_write_seconds: Histogram,
    checkpoint_fsync_seconds: Histogram,
    replication_round_trip_seconds: Family<Labels, Histogram>,
    http_requests: Family<Labels, Counter>,
    tls_handshakes_refused: Counter,
    identity_refusals: Family<Labels, Counter>,
    /// What the scrape before saw of counters kept elsewhere (worker stats, the
    /// coordinator's re-execution count): the counters move by the difference.
    seen_operations_computed: AtomicU64,
    seen_operations_reexecuted: AtomicU64,
    /// The last leadership seen at a scrape: (leader, epoch).
    seen_leadership: Mutex<Option<(Option<u32>, u64)>>,
}

fn seconds_histogram() -> Histogram {
    // 0.1 ms to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

fn family_of_histograms() -> Family<Labels, Histogram> {
    Family::new_with_constructor(seconds_histogram)
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("facto")),
            has_coordinator: Gauge::default(),
            is_coordinator: Gauge::default(),
            epoch: Gauge::default(),
            leadership_changes: Counter::default(),
            elections_started: Counter::default(),
            messages_sent: Family::default(),
            messages_received: Family::default(),
            operations_computed: Counter::default(),
            batches_reexecuted: Counter::default(),
            operations_reexecuted: Counter::default(),
            jobs: Family::default(),
            checkpoint_write_seconds: seconds_histogram(),
            checkpoint_fsync_seconds: seconds_histogram(),
            replication_round_trip_seconds: family_of_histograms(),
            http_requests: Family::default(),
            tls_handshakes_refused: Counter::default(),
            identity_refusals: Family::default(),
            seen_operations_computed: AtomicU64::new(0),
            seen_operations_reexecuted: AtomicU64::new(0),
            seen_leadership: Mutex::new(None),
        };
        m.register();
        m
    }

    fn register(&self) {
        let Ok(mut r) = self.registry.lock() else { return };
        let info = Family::<Labels, Gauge>::default();
        info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())]).set(1);
        r.register("build_info", "facto's version (the value is always 1)", info);
        r.register(
            "has_coordinator",
            "1 when this node knows a coordinator (itself included)",
            self.has_coordinator.clone(),
        );
        r.register("is_coordinator", "1 when this node is the coordinator", self.is_coordinator.clone());
        r.register("epoch", "The election epoch this node is at", self.epoch.clone());
        r.register(
            "leadership_changes_seen",
            "Changes of coordinator (or epoch) this node saw",
            self.leadership_changes.clone(),
        );
        r.register(
            "elections_started",
            "Elections this node started (its election timed out)",
            self.elections_started.clone(),
        );
        r.register("messages_sent", "Messages this node sent to peers, by kind", self.messages_sent.clone());
        r.register(
            "messages_received",
            "Messages this node received from peers, by kind",
            self.messages_received.clone(),
        );
        r.register(
            "operations_computed",
            "Multiplications this node performed as a worker",
            self.operations_computed.clone(),
        );
        r.register(
            "batches_reexecuted",
            "Batches this node, coordinating, gave up on and handed out again",
            self.batches_reexecuted.clone(),
        );
        r.register(
            "operations_reexecuted",
            "Operations dispatched again by this node as coordinator",
            self.operations_reexecuted.clone(),
        );
        r.register("jobs", "Jobs this node coordinates, by state (queued, running, done)", self.jobs.clone());
        r.register(
            "checkpoint_write_duration_seconds",
            "From asking for a checkpoint write to it being durable",
            self.checkpoint_write_seconds.clone(),
        );
        r.register(
            "checkpoint_fsync_duration_seconds",
            "One flush of the store to disk",
            self.checkpoint_fsync_seconds.clone(),
        );
        r.register(
            "replication_round_trip_seconds",
            "A checkpoint write to a peer and its answer, by peer",
            self.replication_round_trip_seconds.clone(),
        );
        r.register("http_requests", "HTTP requests served, by route and status", self.http_requests.clone());
        r.register(
            "tls_handshakes_refused",
            "TLS handshakes this node refused (no certificate of the cluster's CA, expired, not TLS)",
            self.tls_handshakes_refused.clone(),
        );
        r.register(
            "identity_refusals",
            "Requests refused (403) for the caller's certificate, by reason: no_member_certificate, \
             not_a_peer, impersonation, not_admin",
            self.identity_refusals.clone(),
        );
    }

    pub fn tls_refused(&self) {
        self.tls_handshakes_refused.inc();
    }

    pub fn identity_refused(&self, reason: &'static str) {
        self.identity_refusals.get_or_create(&vec![("reason", reason.to_string())]).inc();
    }

    pub fn message_sent(&self, kind: &'static str) {
        self.messages_sent.get_or_create(&vec![("kind", kind.to_string())]).inc();
    }

    pub fn message_received(&self, kind: &'static str) {
        self.messages_received.get_or_create(&vec![("kind", kind.to_string())]).inc();
    }

    pub fn election_started(&self) {
        self.elections_started.inc();
    }

    pub fn batch_reexecuted(&self) {
        self.batches_reexecuted.inc();
    }

    pub fn checkpoint_written(&self, seconds: f64) {
        self.checkpoint_write_seconds.observe(seconds);
    }

    pub fn fsync(&self, seconds: f64) {
        self.checkpoint_fsync_seconds.observe(seconds);
    }

    pub fn replicated(&self, peer: u32, seconds: f64) {
        self.replication_round_trip_seconds.get_or_create(&vec![("peer", peer.to_string())]).observe(seconds);
    }

    pub fn http_request(&self, route: &'static str, status: u16) {
        let labels = vec![("route", route.to_string()), ("status", status.to_string())];
        self.http_requests.get_or_create(&labels).inc();
    }

    /// The exposition, with the node's state as of `status`.
    pub fn render(&self, status: &NodeStatus) -> String {
        self.observe(status);
        let mut text = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = encode(&mut text, &r);
        }
        let eof = text.rfind("# EOF").unwrap_or(text.len());
        text.insert_str(eof, &process_lines());
        text
    }

    fn observe(&self, status: &NodeStatus) {
        self.has_coordinator.set(i64::from(status.leader.is_some()));
        self.is_coordinator.set(i64::from(status.role == "coordinator"));
        self.epoch.set(status.epoch as i64);
        self.leadership(status.leader, status.epoch);
        move_by_difference(&self.operations_computed, &self.seen_operations_computed, status.operations_computed);
        let counts = status.job_counts.unwrap_or_default();
        move_by_difference(&self.operations_reexecuted, &self.seen_operations_reexecuted, counts.reexecuted);
        for (state, count) in [("queued", counts.queued), ("running", counts.running), ("done", counts.finished)] {
            self.jobs.get_or_create(&vec![("state", state.to_string())]).set(count as i64);
        }
    }

    /// A change of leadership the driver reports (`leader`, `epoch`).
    pub fn leadership(&self, leader: Option<u32>, epoch: u64) {
        let Ok(mut seen) = self.seen_leadership.lock() else { return };
        if *seen != Some((leader, epoch)) {
            if seen.is_some() {
                self.leadership_changes.inc();
            }
            *seen = Some((leader, epoch));
        }
    }
}

/// The process's CPU time and memory, under the names Prometheus's own clients use (and the
/// peak resident set, which `facto bench --load` reports), read from `/proc/self` (Linux).
fn process_lines() -> String {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) close with ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(key));
        line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
    };
    format!(
        "# HELP process_cpu_seconds Total user and system CPU time spent in seconds.\n\
         # TYPE process_cpu_seconds counter\n\
         process_cpu_seconds_total {}\n\
         # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
         # TYPE process_resident_memory_bytes gauge\n\
         process_resident_memory_bytes {}\n\
         # HELP facto_peak_resident_memory_bytes The largest resident memory size this process had, in bytes.\n\
         # TYPE facto_peak_resident_memory_bytes gauge\n\
         facto_peak_resident_memory_bytes {}\n",
        ticks / ticks_per_s,
        kib("VmRSS:") * 1024,
        kib("VmHWM:") * 1024
    )
}

/// Moves `counter` by what `now` grew since `seen` (a source that starts over, such as a new
/// coordinator's count, moves it by nothing until it passes the old value).
fn move_by_difference(counter: &Counter, seen: &AtomicU64, now: u64) {
    let before = seen.fetch_max(now, Ordering::Relaxed);
    if now > before {
        counter.inc_by(now - before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_end_in_total_and_the_build_is_named() {
        let m = Metrics::new();
        m.message_sent("election");
        m.http_request("/jobs/:id", 200);
        m.replicated(2, 0.001);
        let text = m.render(&NodeStatus::default());
        for line in [
            "facto_messages_sent_total{kind=\"election\"} 1",
            "facto_http_requests_total{route=\"/jobs/:id\",status=\"200\"} 1",
            "facto_build_info{version=",
            "# TYPE facto_checkpoint_fsync_duration_seconds histogram",
            "facto_replication_round_trip_seconds_count{peer=\"2\"} 1",
            "facto_has_coordinator 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
