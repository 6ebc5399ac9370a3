//! The whole cluster in the seeded simulator: every member runs the production node core
//! under a simulated network, disk and clock, with crashes, partitions and retrying clients
//! (see `facto::simulation`).
//!
//! `cargo run --release --example simulate_cluster -- --algorithm raft --nodes 5 --seeds 10000 [--first-seed S]`
//! prints a summary and, last, `violations: K`; it exits non-zero when K > 0. A failing seed
//! is printed with its trace, and drawn to `target/artifacts/simulate-ALGORITHM-seed-S.html`;
//! `--seed S --trace` replays it exactly, and `--seed S --trace FILE.html` draws one run: a
//! lane per member with its role and epoch, an arrow per message, the step where an
//! invariant broke.
//! `--bug ack-before-durable`, `done-before-replicated`, `coordinate-before-epoch-durable`,
//! `fence-apart-from-election` or `promise-in-memory` runs a deliberately broken core, to
//! show that the simulator catches the bug.

use facto::node_core::Bugs;
use facto::simulation::{self, RunReport, SimConfig};
use facto_elections::Algorithm;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use structopt::StructOpt;

#[derive(StructOpt)]
#[structopt(about = "Runs facto's whole cluster in the seeded simulator")]
struct Args {
    #[structopt(long, default_value = "raft")]
    algorithm: Algorithm,
    #[structopt(long, default_value = "5")]
    nodes: usize,
    #[structopt(long, default_value = "1000")]
    seeds: u64,
    #[structopt(long, default_value = "0")]
    first_seed: u64,
    /// One seed only: the same as --first-seed S --seeds 1.
    #[structopt(long, value_name = "S")]
    seed: Option<u64>,
    /// ack-before-durable, done-before-replicated, coordinate-before-epoch-durable,
    /// fence-apart-from-election or promise-in-memory: a deliberately broken node core.
    #[structopt(long)]
    bug: Option<String>,
    /// Print the trace of every run (use with one seed); with a file name, draw it there as
    /// a self-contained HTML page instead.
    #[structopt(long, value_name = "FILE.html")]
    #[allow(clippy::option_option)]
    trace: Option<Option<String>>,
    /// Also fail when a finished result had to be computed again (no reachable member held
    /// it after every read) in a crashes or promise run (one member down at a time), or in 10
    /// storms or more per 10,000 seeds. Rogue runs are counted, not bounded: a member silenced
    /// for good may hold the only copy a takeover could have copied.
    #[structopt(long)]
    check_results_kept: bool,
}

/// Failing seeds whose traces are printed.
const TRACES_MAX: usize = 1;

fn main() {
    let args = Args::from_args();
    let bugs = match args.bug.as_deref() {
        None => Bugs::default(),
        Some("ack-before-durable") => Bugs { ack_before_durable: true, ..Bugs::default() },
        Some("done-before-replicated") => Bugs { done_before_replicated: true, ..Bugs::default() },
        Some("coordinate-before-epoch-durable") => Bugs { coordinate_before_epoch_durable: true, ..Bugs::default() },
        Some("fence-apart-from-election") => Bugs { fence_apart_from_election: true, ..Bugs::default() },
        Some("promise-in-memory") => Bugs { promise_in_memory: true, ..Bugs::default() },
        Some(other) => {
            eprintln!(
                "error: unknown --bug '{other}' (ack-before-durable, done-before-replicated, \
                 coordinate-before-epoch-durable, fence-apart-from-election or promise-in-memory)"
            );
            std::process::exit(2);
        }
    };
    if !(2..=100).contains(&args.nodes) {
        eprintln!("error: --nodes must be 2 to 100");
        std::process::exit(2);
    }
    let (first_seed, seeds) = args.seed.map_or((args.first_seed, args.seeds), |s| (s, 1));
    if let Some(Some(path)) = &args.trace {
        let config = SimConfig { algorithm: args.algorithm, nodes: args.nodes, bugs, trace: true };
        let report = run_one(&config, first_seed);
        draw(&config, &report, Path::new(path));
        println!("seed {first_seed} ({}): drawn to {path}", report.kind);
        println!("violations: {}", usize::from(!report.violations.is_empty()));
        std::process::exit(i32::from(!report.violations.is_empty()));
    }
    let config = SimConfig { algorithm: args.algorithm, nodes: args.nodes, bugs, trace: args.trace.is_some() };
    let started = std::time::Instant::now();
    let (failures, lost, lost_seeds) = run_seeds(&config, first_seed, seeds);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds of {} with {} nodes in {secs:.1} s ({:.0} seeds/s)",
        seeds,
        args.algorithm,
        args.nodes,
        seeds as f64 / secs.max(1e-9)
    );
    for failure in failures.iter().take(10) {
        println!("seed {} ({}): {}", failure.seed, failure.kind, failure.violations.join("; "));
    }
    if let Some(first) = failures.first() {
        println!(
            "replay: cargo run --release --example simulate_cluster -- --algorithm {} --nodes {} --seed {} --trace",
            args.algorithm, args.nodes, first.seed
        );
        let traced = SimConfig { trace: true, ..config.clone() };
        for failure in failures.iter().take(TRACES_MAX) {
            println!("--- trace of seed {} ---", failure.seed);
            let report = run_one(&traced, failure.seed);
            for line in &report.trace {
                println!("{line}");
            }
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("target/artifacts/simulate-{}-seed-{}.html", args.algorithm, failure.seed));
            draw(&traced, &report, &path);
            println!("drawn to {}", path.display());
        }
    }
    let results_kept = !args.check_results_kept || results_kept(&lost, &lost_seeds, seeds);
    println!("violations: {}", failures.len());
    if !failures.is_empty() || !results_kept {
        std::process::exit(1);
    }
}

/// Whether the runs kept finished results within `--check-results-kept`'s bounds (`lost`:
/// per kind of run: crashes, rogue, promise, storm; `lost_seeds`: the runs that computed one
/// again).
fn results_kept(lost: &[u64; 4], lost_seeds: &[u64], seeds: u64) -> bool {
    let calm = lost[0] + lost[2];
    let storms = lost[3];
    // Fewer than 10 per 10,000 seeds.
    let kept = calm == 0 && storms * 1_000 < seeds.max(1);
    println!(
        "results kept: {} ({calm} finished results computed again in crashes and promise runs, at most 0; {storms} in \
         storms, fewer than 10 per 10,000 seeds; {} in rogue runs, not bounded)",
        if kept { "yes" } else { "NO" },
        lost[1],
    );
    if !kept {
        let shown: Vec<String> = lost_seeds.iter().take(10).map(u64::to_string).collect();
        println!("seeds that computed a finished result again: {}", shown.join(", "));
    }
    kept
}

/// Runs every seed on all cores; returns the failing runs, by seed, and the finished results
/// computed again per kind of run (crashes, rogue, promise, storm) and the seeds that did.
fn run_seeds(config: &SimConfig, first: u64, count: u64) -> (Vec<RunReport>, [u64; 4], Vec<u64>) {
    let lost_seeds = Mutex::new(Vec::new());
    let next = AtomicU64::new(first);
    let failures = Mutex::new(Vec::new());
    let totals = Mutex::new((0u64, 0u64, 0u64, [0u64; 4], [0u64; 4]));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + count {
                    break;
                }
                let report = run_one(config, seed);
                if config.trace {
                    report.trace.iter().for_each(|l| println!("{l}"));
                }
                let mut t = totals.lock().unwrap();
                t.0 += report.events;
                t.1 += report.tasks_computed;
                t.2 += report.tasks_recomputed;
                let kind = match report.kind {
                    "crashes" => 0,
                    "rogue" => 1,
                    "promise" => 2,
                    _ => 3,
                };
                t.3[kind] += 1;
                t.4[kind] += report.results_lost;
                if report.results_lost > 0 {
                    lost_seeds.lock().unwrap().push(report.seed);
                }
                drop(t);
                if !report.violations.is_empty() {
                    failures.lock().unwrap().push(report);
                }
            });
        }
    });
    let (events, computed, recomputed, kinds, lost) = *totals.lock().unwrap();
    println!(
        "{} crash runs, {} rogue runs, {} promise runs, {} storm runs; {events} events; {computed} tasks computed, \
         {recomputed} of them again; finished results recomputed (no reachable copy): {} in crash runs, {} in rogue \
         runs, {} in promise runs, {} in storm runs",
        kinds[0], kinds[1], kinds[2], kinds[3], lost[0], lost[1], lost[2], lost[3]
    );
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|r| r.seed);
    let mut lost_seeds = lost_seeds.into_inner().unwrap();
    lost_seeds.sort_unstable();
    (failures, lost, lost_seeds)
}

/// Writes a traced run's picture to `path` (exits with a one-line reason if it cannot).
fn draw(config: &SimConfig, report: &RunReport, path: &Path) {
    let title = format!(
        "facto simulator: {} with {} nodes, seed {} ({})",
        config.algorithm, config.nodes, report.seed, report.kind
    );
    let picture = report.picture.clone().unwrap_or_default();
    let page = simulation::picture_html(&title, &picture, config.nodes, report.sim_ms, &report.violations);
    let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(path, page));
    if let Err(e) = written {
        eprintln!("error: cannot write {}: {e}", path.display());
        std::process::exit(2);
    }
}

/// One seed; a panic is a violation too.
fn run_one(config: &SimConfig, seed: u64) -> RunReport {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| simulation::run(config, seed)));
    run.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        RunReport { seed, kind: "?", violations: vec![format!("panic: {why}")], ..RunReport::default() }
    })
}
