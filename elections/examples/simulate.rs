//! Runs the seeded network simulator over many seeds and prints what it measured.
//!
//! ```text
//! cargo run --release -p facto-elections --example simulate -- \
//!     --algorithm <bully|ring|raft|all> --nodes <N> --seeds <COUNT> [--first-seed <S>] \
//!     [--scenario random|cold-start|leader-crash]
//! ```
//!
//! The last line is always `violations: <K>`; with K > 0 the exit status is 1 and the first
//! failing seed is printed with the command that replays it and its event trace.

use facto_elections::sim::{self, RunReport, Scenario, SimConfig, Summary};
use facto_elections::{Algorithm, Config, HardState};
use std::process::ExitCode;
use std::thread;

struct Args {
    algorithms: Vec<Algorithm>,
    nodes: usize,
    seeds: u64,
    first_seed: u64,
    scenario: Scenario,
}

const USAGE: &str = "usage: simulate --algorithm <bully|ring|raft|all> --nodes <N> --seeds <COUNT> \
                     [--first-seed <S>] [--scenario random|cold-start|leader-crash]";

fn parse_args() -> Result<Args, String> {
    let (mut algorithms, mut nodes, mut seeds) = (None, None, None);
    let (mut first_seed, mut scenario) = (0, Scenario::Random);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|_| format!("{flag}: '{v}' is not a number"));
        match flag.as_str() {
            "--algorithm" if value == "all" => algorithms = Some(Algorithm::ALL.to_vec()),
            "--algorithm" => {
                let parsed: Result<Vec<Algorithm>, _> = value.split(',').map(str::parse).collect();
                algorithms = Some(parsed.map_err(|e| e.to_string())?);
            }
            "--nodes" => nodes = Some(number(&value)?),
            "--seeds" => seeds = Some(number(&value)?),
            "--first-seed" => first_seed = number(&value)?,
            "--scenario" => scenario = value.parse()?,
            _ => return Err(format!("unknown argument '{flag}'; {USAGE}")),
        }
    }
    let nodes = nodes.ok_or_else(|| format!("--nodes is required; {USAGE}"))?;
    if nodes == 0 || nodes > 1_000 {
        return Err("--nodes must be between 1 and 1000".into());
    }
    if scenario == Scenario::LeaderCrash && nodes < 3 {
        return Err("--scenario leader-crash needs --nodes 3 or more".into());
    }
    Ok(Args {
        algorithms: algorithms.ok_or_else(|| format!("--algorithm is required; {USAGE}"))?,
        nodes: nodes as usize,
        seeds: seeds.ok_or_else(|| format!("--seeds is required; {USAGE}"))?,
        first_seed,
        scenario,
    })
}

/// Runs one seed of one algorithm.
fn run_seed(algorithm: Algorithm, config: &SimConfig, seed: u64) -> RunReport {
    sim::run(config, seed, |node: Config, hard: HardState| {
        // The simulator only builds valid configurations (members 1..=n, default timing).
        algorithm.build(node, hard).expect("simulator configurations are valid")
    })
}

/// Runs `count` seeds from `first`, split over the machine's cores. Each run is independent
/// and the per-thread summaries are merged in seed order, so the output does not depend on
/// the number of threads.
fn run_seeds(algorithm: Algorithm, config: &SimConfig, first: u64, count: u64) -> Summary {
    let threads = thread::available_parallelism().map_or(1, |n| n.get() as u64).min(count.max(1));
    let chunk = count.div_ceil(threads);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let start = first + t * chunk;
                let end = (start + chunk).min(first + count);
                scope.spawn(move || {
                    let mut summary = Summary::default();
                    for seed in start..end {
                        summary.add(run_seed(algorithm, config, seed));
                    }
                    summary
                })
            })
            .collect();
        let mut total = Summary::default();
        for worker in workers {
            total.merge(worker.join().expect("a simulation thread panicked"));
        }
        total
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::from(2);
        }
    };
    let config = SimConfig::new(args.nodes, args.scenario);
    let mut violations = 0;
    let mut first_failure = None;
    for &algorithm in &args.algorithms {
        let summary = run_seeds(algorithm, &config, args.first_seed, args.seeds);
        let times = summary
            .time_to_agree_median_max_ms()
            .map_or("-".to_string(), |(median, max)| format!("median {median} ms, max {max} ms"));
        println!(
            "{algorithm}: nodes {}, scenario {}, seeds {}..{}",
            args.nodes,
            args.scenario,
            args.first_seed,
            args.first_seed + args.seeds
        );
        println!("  runs: {}", summary.runs);
        println!(
            "  elections: {} ({:.2} per run)",
            summary.elections,
            summary.elections as f64 / summary.runs.max(1) as f64
        );
        println!("  messages per election: {:.1}", summary.messages_per_election());
        println!("  time to agree: {times}");
        println!("  failed runs: {}", summary.failed_runs);
        violations += summary.failed_runs;
        if first_failure.is_none() {
            first_failure = summary.first_failure.map(|r| (algorithm, r.seed));
        }
    }
    if let Some((algorithm, seed)) = first_failure {
        let traced = SimConfig { trace: true, ..config };
        let report = run_seed(algorithm, &traced, seed);
        println!();
        println!("first failing seed: {seed} ({algorithm})");
        println!(
            "replay: cargo run --release -p facto-elections --example simulate -- --algorithm {algorithm} \
             --nodes {} --scenario {} --first-seed {seed} --seeds 1",
            args.nodes, args.scenario
        );
        for violation in &report.violations {
            println!("violation: {violation}");
        }
        println!("trace:");
        for line in &report.trace {
            println!("  {line}");
        }
    }
    println!("violations: {violations}");
    if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
