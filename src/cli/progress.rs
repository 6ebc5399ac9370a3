//! Progress of `facto submit`'s jobs while it waits: a bar per job on a terminal (indicatif:
//! operations done of total, rate, elapsed, the coordinator), plain lines on stderr when
//! stderr is not a terminal, nothing with `--json` (its output stays machine-only). The only
//! module that names indicatif.

use crate::api::JobInfo;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain progress line is printed per job.
const LINE_EVERY: Duration = Duration::from_secs(2);

pub(crate) enum Progress {
    Off,
    Bars { _multi: MultiProgress, bars: HashMap<String, ProgressBar> },
    Lines { last: HashMap<String, Instant>, started: Instant },
}

impl Progress {
    /// Progress for `jobs` (`shown`: false under `--json`).
    pub(crate) fn new(jobs: &[JobInfo], shown: bool) -> Progress {
        if !shown {
            return Progress::Off;
        }
        if !std::io::stderr().is_terminal() {
            return Progress::Lines { last: HashMap::new(), started: Instant::now() };
        }
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{prefix:>10} [{bar:30.cyan/blue}] {pos}/{len} ops  {per_sec:>12}  {elapsed:>4}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bars = jobs
            .iter()
            .map(|job| {
                let bar = multi.add(ProgressBar::new(job.operations_total.max(1)));
                bar.set_style(style.clone());
                bar.set_prefix(format!("{}!", job.n));
                bar.enable_steady_tick(Duration::from_millis(200));
                (job.id.clone(), bar)
            })
            .collect();
        Progress::Bars { _multi: multi, bars }
    }

    /// The job as a member (`via`) reported it.
    pub(crate) fn update(&mut self, job: &JobInfo, via: &str) {
        let coordinator = job.coordinator.map_or_else(|| format!("via {via}"), |c| format!("coordinator: node {c}"));
        match self {
            Progress::Off => {}
            Progress::Bars { bars, .. } => {
                if let Some(bar) = bars.get(&job.id) {
                    bar.set_length(job.operations_total.max(1));
                    bar.set_position(job.operations_done);
                    bar.set_message(coordinator);
                }
            }
            Progress::Lines { last, started } => {
                let due = last.get(&job.id).is_none_or(|t| t.elapsed() >= LINE_EVERY);
                if due && !job.is_done() {
                    last.insert(job.id.clone(), Instant::now());
                    eprintln!(
                        "facto: {}!: {:.0}% ({}/{} operations) after {:.1} s, {coordinator}",
                        job.n,
                        job.progress * 100.0,
                        job.operations_done,
                        job.operations_total,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    /// The job is done.
    pub(crate) fn finish(&mut self, job: &JobInfo) {
        match self {
            Progress::Off => {}
            Progress::Bars { bars, .. } => {
                if let Some(bar) = bars.get(&job.id) {
                    bar.set_position(job.operations_total.max(1));
                    bar.finish_with_message("done");
                }
            }
            Progress::Lines { started, .. } => {
                eprintln!("facto: {}!: done after {:.1} s", job.n, started.elapsed().as_secs_f64());
            }
        }
    }
}
