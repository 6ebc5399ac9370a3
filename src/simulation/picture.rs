//! One simulated run as a picture (`simulate_cluster --seed S --trace FILE.html`): a lane per
//! member with its role and epoch over time (coordinator, worker, down), an arrow for every
//! message from its send to its receipt, partitions and heals, and the moment an invariant
//! broke when one did. The simulator has one clock, so unlike the live diagram (whose hosts'
//! clocks are not compared) arrows are placed by simulated time.

use super::driver::Msg;
use crate::html::{duration, escape, page, tick_step_ms};
use facto_elections::NodeId;
use std::fmt::Write;

/// What a traced run records for its picture.
#[derive(Clone, Debug, Default)]
pub struct Picture {
    pub messages: Vec<Message>,
    pub roles: Vec<RoleMark>,
    /// Partitions and heals: when, and what.
    pub marks: Vec<(u64, String)>,
    /// When an invariant broke, and which.
    pub violation: Option<(u64, String)>,
}

/// A message: one per delivery (a duplicated message is two), or one that never arrived.
#[derive(Clone, Debug)]
pub struct Message {
    pub kind: &'static str,
    pub from: NodeId,
    pub to: NodeId,
    pub epoch: Option<u64>,
    pub sent_ms: u64,
    /// `None`: lost, refused, or its receiver crashed first.
    pub received_ms: Option<u64>,
}

/// A member's role from `at_ms` on.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleMark {
    pub node: NodeId,
    pub at_ms: u64,
    /// `coordinator`, `worker` or `down`.
    pub role: &'static str,
    pub epoch: u64,
}

impl Msg {
    /// Its kind as the picture names it: an election message's from its algorithm.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Msg::Election(m) => m.kind(),
            Msg::Work { .. } => "work",
            Msg::WorkAnswer { .. } => "work_answer",
            Msg::Apply { .. } => "checkpoint_write",
            Msg::Applied { .. } => "checkpoint_write_answer",
            Msg::Query { .. } => "checkpoint_query",
            Msg::QueryAnswer { .. } => "checkpoint_query_answer",
        }
    }

    pub(super) fn epoch(&self) -> Option<u64> {
        match self {
            Msg::Election(m) => Some(m.epoch()),
            Msg::Work { epoch, .. } | Msg::Apply { epoch, .. } | Msg::Query { epoch, .. } => Some(*epoch),
            _ => None,
        }
    }
}

impl Picture {
    /// Records a message sent at `now_ms`; its index, to mark its receipt.
    pub(super) fn sent(&mut self, msg: &Msg, from: NodeId, to: NodeId, now_ms: u64) -> usize {
        let kind = msg.kind();
        self.messages.push(Message { kind, from, to, epoch: msg.epoch(), sent_ms: now_ms, received_ms: None });
        self.messages.len() - 1
    }

    /// Records `node`'s role if it changed.
    pub(super) fn role(&mut self, node: NodeId, at_ms: u64, role: &'static str, epoch: u64) {
        let last = self.roles.iter().rev().find(|r| r.node == node);
        if last.is_none_or(|r| r.role != role || r.epoch != epoch) {
            self.roles.push(RoleMark { node, at_ms, role, epoch });
        }
    }
}

const LABEL_WIDTH: f64 = 70.0;
const LANE_GAP: f64 = 56.0;
const TOP: f64 = 40.0;
/// Simulated milliseconds per pixel: a run of a few seconds is a few thousand pixels wide
/// (the page scrolls sideways), and messages a few milliseconds apart stay apart...
const MS_PER_PX: f64 = 0.5;
/// ...up to this width; a longer run (a storm's 30 s of settling) is drawn narrower.
const WIDTH_MAX_PX: f64 = 20_000.0;

const STYLE: &str = "
.scroll { overflow-x: auto; }
.scroll svg { max-width: none; }
.lane { stroke: var(--line); }
.role-coordinator { fill: #f5c542; opacity: 0.45; } .role-worker { fill: var(--accent); opacity: 0.08; }
.role-down { fill: var(--muted); opacity: 0.35; }
.arrow { stroke: var(--accent); stroke-width: 1.2; marker-end: url(#head); }
.arrow[data-kind^=heartbeat] { stroke: var(--muted); stroke-width: 0.6; }
.arrow.work, .arrow.work_answer { stroke: var(--ok); }
.arrow.checkpoint_write, .arrow.checkpoint_write_answer, .arrow.checkpoint_query, .arrow.checkpoint_query_answer { stroke: var(--part); }
.lost { stroke: var(--bad); stroke-dasharray: 3 2; }
.mark { stroke: var(--warn); stroke-dasharray: 2 3; }
.violation { stroke: var(--bad); stroke-width: 2; }
";

/// The run as a page: `title` (algorithm, nodes, seed), its verdict and the picture.
pub fn html(title: &str, picture: &Picture, nodes: usize, end_ms: u64, violations: &[String]) -> String {
    let verdict = match violations.first() {
        None => "no invariant broke".to_string(),
        Some(v) => format!("VIOLATION: {v}"),
    };
    let delivered = picture.messages.iter().filter(|m| m.received_ms.is_some()).count();
    let body = format!(
        "<h1>{}</h1>\n<p>{}</p>\n<p class=\"muted\">{} messages delivered, {} lost or refused. Lanes: members; bands: \
         their role (yellow: coordinator, grey: down) and epoch; arrows: messages from send to receipt (blue: elections, \
         grey: heartbeats, green: work, purple: checkpoints; dashed red: never arrived); dotted: partitions and heals; \
         red: the moment an invariant broke. Hover for details.</p>\n<div class=\"scroll\">{}</div>\n",
        escape(title),
        escape(&verdict),
        delivered,
        picture.messages.len() - delivered,
        svg(picture, nodes, end_ms)
    );
    page(title, STYLE, &body)
}

/// Where a time falls: pixels from the left.
#[derive(Clone, Copy)]
struct Scale {
    ms_per_px: f64,
}

impl Scale {
    fn for_run(end_ms: u64) -> Scale {
        Scale { ms_per_px: MS_PER_PX.max(end_ms as f64 / WIDTH_MAX_PX) }
    }

    fn x(self, at_ms: u64) -> f64 {
        LABEL_WIDTH + at_ms as f64 / self.ms_per_px
    }
}

fn lane_y(node: NodeId) -> f64 {
    TOP + (node as f64 - 1.0) * LANE_GAP
}

fn svg(picture: &Picture, nodes: usize, end_ms: u64) -> String {
    let scale = Scale::for_run(end_ms);
    let x = |at_ms| scale.x(at_ms);
    let (width, height) = (x(end_ms) + 20.0, TOP + nodes as f64 * LANE_GAP);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} \
         {height:.0}\"><defs><marker id=\"head\" viewBox=\"0 0 6 6\" refX=\"6\" refY=\"3\" markerWidth=\"6\" \
         markerHeight=\"6\" orient=\"auto\"><path d=\"M0 0 L6 3 L0 6 z\" fill=\"context-stroke\"/></marker></defs>\n"
    );
    let step = tick_step_ms(end_ms, ((x(end_ms) - LABEL_WIDTH) / 100.0).max(2.0) as u64);
    for at in (0..=end_ms).step_by(step as usize) {
        let _ = writeln!(
            out,
            "<text class=\"muted\" x=\"{:.1}\" y=\"14\" text-anchor=\"middle\">{}</text>",
            x(at),
            duration(at)
        );
    }
    out.push_str(&role_bands(picture, nodes, end_ms, scale));
    for node in 1..=nodes as NodeId {
        let y = lane_y(node);
        let _ = writeln!(
            out,
            "<text x=\"6\" y=\"{:.1}\">node {node}</text><line class=\"lane\" x1=\"{LABEL_WIDTH}\" y1=\"{y:.1}\" \
             x2=\"{width:.0}\" y2=\"{y:.1}\"/>",
            y + 4.0
        );
    }
    for (at, what) in &picture.marks {
        let _ = writeln!(
            out,
            "<line class=\"mark\" x1=\"{0:.1}\" y1=\"20\" x2=\"{0:.1}\" y2=\"{height:.0}\"><title>{1} at {2}</title></line>",
            x(*at),
            escape(what),
            duration(*at)
        );
    }
    for m in &picture.messages {
        out.push_str(&arrow(m, scale));
    }
    if let Some((at, what)) = &picture.violation {
        let _ = writeln!(
            out,
            "<g id=\"violation\"><line class=\"violation\" x1=\"{0:.1}\" y1=\"20\" x2=\"{0:.1}\" y2=\"{height:.0}\"/>\
             <text x=\"{1:.1}\" y=\"30\">VIOLATION at {2}: {3}</text></g>",
            x(*at),
            x(*at) + 4.0,
            duration(*at),
            escape(what)
        );
    }
    out.push_str("</svg>");
    out
}

/// A band per stretch of one role and epoch on each lane.
fn role_bands(picture: &Picture, nodes: usize, end_ms: u64, scale: Scale) -> String {
    let x = |at_ms| scale.x(at_ms);
    let mut out = String::new();
    for node in 1..=nodes as NodeId {
        let marks: Vec<&RoleMark> = picture.roles.iter().filter(|r| r.node == node).collect();
        for (k, r) in marks.iter().enumerate() {
            let until = marks.get(k + 1).map_or(end_ms, |next| next.at_ms);
            let (x0, x1) = (x(r.at_ms), x(until));
            let _ = write!(
                out,
                "<rect class=\"role-{}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"24\"><title>node {node}: {} at \
                 epoch {} from {}</title></rect>",
                r.role,
                lane_y(node) - 12.0,
                (x1 - x0).max(0.5),
                r.role,
                r.epoch,
                duration(r.at_ms)
            );
            if x1 - x0 > 40.0 && r.role != "down" {
                let _ = write!(
                    out,
                    "<text class=\"muted\" x=\"{:.1}\" y=\"{:.1}\">e{}</text>",
                    x0 + 2.0,
                    lane_y(node) - 14.0,
                    r.epoch
                );
            }
            out.push('\n');
        }
    }
    out
}

fn arrow(m: &Message, scale: Scale) -> String {
    let x = |at_ms| scale.x(at_ms);
    let (x1, y1, kind, from, to) = (x(m.sent_ms), lane_y(m.from), m.kind, m.from, m.to);
    let epoch = m.epoch.map_or(String::new(), |e| format!(" e{e}"));
    let sent = duration(m.sent_ms);
    match m.received_ms {
        Some(at) => format!(
            "<line class=\"arrow {kind}\" data-kind=\"{kind}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\">\
             <title>{kind}{epoch}: node {from} → node {to}, {sent} → {received}</title></line>\n",
            x2 = x(at),
            y2 = lane_y(to),
            received = duration(at)
        ),
        // Half way towards its receiver, then nothing.
        None => format!(
            "<line class=\"lost\" data-kind=\"{kind}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\">\
             <title>{kind}{epoch}: node {from} → node {to}, sent {sent}, never arrived</title></line>\n",
            x2 = x1 + 6.0,
            y2 = (y1 + lane_y(to)) / 2.0
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::node_core::Bugs;
    use crate::simulation::{run, SimConfig};
    use facto_elections::Algorithm;

    fn drawn(config: &SimConfig, seed: u64) -> (crate::simulation::RunReport, String) {
        let report = run(config, seed);
        let picture = report.picture.clone().expect("a traced run keeps its picture");
        let page = super::html("run", &picture, config.nodes, report.sim_ms, &report.violations);
        (report, page)
    }

    fn count(page: &str, class: &str) -> usize {
        let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
        let doc = roxmltree::Document::parse_with_options(page, options).expect("the page parses as XML");
        doc.descendants().filter(|n| n.attribute("class").is_some_and(|c| c.split(' ').next() == Some(class))).count()
    }

    #[test]
    fn every_message_of_a_run_is_one_arrow_and_every_lost_one_a_stub() {
        for algorithm in [Algorithm::Bully, Algorithm::Ring, Algorithm::Raft] {
            // Seed 1 is a storm (loss, partitions), seed 0 a crashes run.
            for seed in [0, 1] {
                let config = SimConfig { algorithm, nodes: 4, bugs: Bugs::default(), trace: true };
                let (report, page) = drawn(&config, seed);
                let picture = report.picture.unwrap();
                let delivered = picture.messages.iter().filter(|m| m.received_ms.is_some()).count();
                assert!(delivered > 0, "{algorithm} seed {seed}");
                assert_eq!(count(&page, "arrow"), delivered, "{algorithm} seed {seed}");
                assert_eq!(count(&page, "lost"), picture.messages.len() - delivered, "{algorithm} seed {seed}");
                assert!(page.contains("no invariant broke") && !page.contains("id=\"violation\""));
                let coordinators = picture.roles.iter().filter(|r| r.role == "coordinator").count();
                assert_eq!(count(&page, "role-coordinator"), coordinators, "{algorithm} seed {seed}");
            }
        }
    }

    #[test]
    fn a_broken_invariant_is_marked_where_it_broke() {
        let bugs = Bugs { ack_before_durable: true, ..Bugs::default() };
        let config = SimConfig { algorithm: Algorithm::Raft, nodes: 5, bugs, trace: true };
        let (report, page) = (0..200)
            .map(|seed| drawn(&config, seed))
            .find(|(report, _)| !report.violations.is_empty())
            .expect("the bug is caught within 200 seeds");
        let (at_ms, what) = report.picture.unwrap().violation.expect("the picture knows when");
        assert_eq!(what, report.violations[0]);
        assert!(at_ms <= report.sim_ms);
        assert!(page.contains("id=\"violation\""), "the page marks it");
        assert!(page.contains("VIOLATION"));
    }
}
