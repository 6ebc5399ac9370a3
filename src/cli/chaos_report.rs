//! `facto chaos --report FILE.html`: the campaign as one self-contained page. A timeline (one
//! row per member with the faults it took, a row for the coordinator the members agreed on,
//! a row per workload lane with its jobs), the leadership changes with their times to
//! agreement, and the summary as printed. Every fault, change and job is one element whose
//! class names it (`fault`, `change`, `job`), so the page can be checked against the JSON.

use super::chaos::{summary, Change, FaultKind, Report};
use crate::html::{duration, escape, page, tick_step_ms, time_axis};
use std::fmt::Write;

const WIDTH: f64 = 1100.0;
const LABEL_WIDTH: f64 = 170.0;
const ROW_HEIGHT: f64 = 26.0;
const AXIS_HEIGHT: f64 = 24.0;
/// The narrowest coordinator band that gets a written label.
const LABEL_FITS_WIDTH: f64 = 70.0;

const STYLE: &str = "
.fault.crash { stroke: var(--bad); stroke-width: 2.5; }
.fault.stall { fill: var(--warn); opacity: 0.8; }
.fault.partition { fill: var(--part); opacity: 0.8; }
.reign { stroke: var(--card); }
.change { fill: var(--accent); stroke: var(--card); }
.job.correct { fill: var(--ok); } .job.wrong, .job.lost { fill: var(--bad); } .job.pending { fill: var(--warn); }
.healed { stroke: var(--muted); stroke-dasharray: 4 3; }
.pass { color: var(--ok); } .fail { color: var(--bad); }
";

/// Where a time falls on the timeline.
struct Scale {
    span_ms: u64,
}

impl Scale {
    fn x(&self, at_ms: u64) -> f64 {
        LABEL_WIDTH + (WIDTH - LABEL_WIDTH - 20.0) * at_ms as f64 / self.span_ms.max(1) as f64
    }
}

/// The report as a page.
pub(super) fn html(r: &Report) -> String {
    let verdict = if r.passed { "<span class=\"pass\">PASS</span>" } else { "<span class=\"fail\">FAIL</span>" };
    let mut body = format!(
        "<h1>facto chaos: seed {}, {} members — {verdict}</h1>\n<h2>Timeline</h2>\n{}\n<p class=\"muted\">\
         Crosses: crashes; orange: stalls; purple: partitions; dots: changes of coordinator (hover for the \
         time to agreement); green bars: jobs from acknowledgement to checked answer (red: wrong or lost). \
         The dashed line: the attack ends and every member is healed.</p>\n",
        r.seed,
        r.members,
        timeline(r)
    );
    body.push_str(&changes_table(r));
    let _ = write!(body, "<h2>Summary</h2>\n<pre>{}</pre>\n", escape(&summary(r)));
    page(&format!("facto chaos, seed {}", r.seed), STYLE, &body)
}

fn timeline(r: &Report) -> String {
    let lanes = r.job_log.iter().map(|j| j.lane + 1).max().unwrap_or(1);
    let rows = r.members + 1 + lanes;
    let height = AXIS_HEIGHT + rows as f64 * ROW_HEIGHT + 10.0;
    let ends = r.job_log.iter().map(|j| j.finished_at_ms).chain(r.leadership_changes.iter().map(|c| c.at_ms));
    let scale = Scale { span_ms: ends.fold(r.duration_ms, u64::max) };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" \
         height=\"{height}\" role=\"img\" aria-label=\"the campaign's timeline\">\n"
    );
    let step_ms = tick_step_ms(scale.span_ms, 12);
    svg.push_str(&time_axis(scale.span_ms, step_ms, |at| scale.x(at), AXIS_HEIGHT - 4.0, height));
    let row_y = |row: usize| AXIS_HEIGHT + row as f64 * ROW_HEIGHT;
    for (i, addr) in r.addresses.iter().enumerate() {
        let _ = writeln!(svg, "<text x=\"6\" y=\"{}\">{}</text>", row_y(i) + 16.0, escape(addr));
    }
    for f in &r.fault_log {
        svg.push_str(&fault(f, &scale, row_y(f.member)));
    }
    let _ = writeln!(svg, "<text x=\"6\" y=\"{}\">coordinator</text>", row_y(r.members) + 16.0);
    svg.push_str(&reigns(r, &scale, row_y(r.members)));
    for lane in 0..lanes {
        let _ =
            writeln!(svg, "<text x=\"6\" y=\"{}\">jobs, lane {}</text>", row_y(r.members + 1 + lane) + 16.0, lane + 1);
    }
    for j in &r.job_log {
        let (x0, x1) = (scale.x(j.submitted_at_ms), scale.x(j.finished_at_ms));
        let _ = writeln!(
            svg,
            "<rect class=\"job {}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"12\" rx=\"2\"><title>job {}: {}! {}, \
             {}–{}</title></rect>",
            j.outcome,
            row_y(r.members + 1 + j.lane) + 6.0,
            (x1 - x0).max(1.5),
            escape(&j.id),
            j.n,
            j.outcome,
            duration(j.submitted_at_ms),
            duration(j.finished_at_ms)
        );
    }
    let healed = scale.x(r.duration_ms);
    let _ = writeln!(
        svg,
        "<line class=\"healed\" x1=\"{healed:.1}\" y1=\"{AXIS_HEIGHT}\" x2=\"{healed:.1}\" y2=\"{height}\"/>"
    );
    svg.push_str("</svg>");
    svg
}

fn fault(f: &super::chaos::FaultEvent, scale: &Scale, y: f64) -> String {
    let x = scale.x(f.at_ms);
    let title = format!(
        "{:?} at {}{}",
        f.kind,
        duration(f.at_ms),
        match f.kind {
            FaultKind::Crash => String::new(),
            _ => format!(" for {}", duration(f.duration_ms)),
        }
    );
    match f.kind {
        FaultKind::Crash => format!(
            "<path class=\"fault crash\" d=\"M{:.1} {:.1} l10 10 m0 -10 l-10 10\"><title>{title}</title></path>\n",
            x - 5.0,
            y + 8.0
        ),
        FaultKind::Stall | FaultKind::Partition => {
            let kind = if f.kind == FaultKind::Stall { "stall" } else { "partition" };
            let width = (scale.x(f.at_ms + f.duration_ms) - x).max(2.0);
            format!(
                "<rect class=\"fault {kind}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"10\"><title>{title}</title></rect>\n",
                y + 8.0
            )
        }
    }
}

/// The coordinator row: a band per coordinator from the moment all agreed on it, and a dot
/// at each change.
fn reigns(r: &Report, scale: &Scale, y: f64) -> String {
    let reigns: Vec<&Change> = r.first_agreed.iter().chain(r.leadership_changes.iter()).collect();
    let mut out = String::new();
    for (k, c) in reigns.iter().enumerate() {
        let end = reigns.get(k + 1).map_or(scale.span_ms, |next| next.at_ms);
        let (x0, x1) = (scale.x(c.at_ms), scale.x(end));
        let hue = (c.leader as u64 * 67) % 360;
        let _ = writeln!(
            out,
            "<rect class=\"reign\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"16\" fill=\"hsl({hue} 55% 55%)\" \
             opacity=\"0.5\"><title>node {} coordinates at epoch {}</title></rect>",
            y + 5.0,
            (x1 - x0).max(1.0),
            c.leader,
            c.epoch
        );
        // A label only where it fits; the band's title names it anyway.
        if x1 - x0 > LABEL_FITS_WIDTH {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\">node {} · e{}</text>",
                x0 + 8.0,
                y + 17.0,
                c.leader,
                c.epoch
            );
        }
    }
    for c in &r.leadership_changes {
        let after = c
            .after_fault_ms
            .map_or_else(|| "no fault before it".to_string(), |ms| format!("{} after the fault", duration(ms)));
        let _ = writeln!(
            out,
            "<circle class=\"change\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\"><title>epoch {}: node {} at {}, agreed {after}</title></circle>",
            scale.x(c.at_ms),
            y + 13.0,
            c.epoch,
            c.leader,
            duration(c.at_ms)
        );
    }
    out
}

fn changes_table(r: &Report) -> String {
    let mut out = String::from("<h2>Leadership changes</h2>\n");
    if r.leadership_changes.is_empty() {
        out.push_str("<p class=\"muted\">none</p>\n");
        return out;
    }
    out.push_str(
        "<table><tr><th>at</th><th>coordinator</th><th>epoch</th><th>time to agreement after the fault</th></tr>\n",
    );
    for c in &r.leadership_changes {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>node {}</td><td>{}</td><td>{}</td></tr>",
            duration(c.at_ms),
            c.leader,
            c.epoch,
            c.after_fault_ms.map_or("–".to_string(), duration)
        );
    }
    out.push_str("</table>\n");
    out
}
