//! The whole-cluster simulator (`facto::simulation`): it replays a seed exactly, passes
//! healthy node cores, and catches the deliberately broken ones.

use facto::node_core::Bugs;
use facto::simulation::{run, SimConfig};
use facto_elections::Algorithm;

const ALGORITHMS: [Algorithm; 3] = [Algorithm::Bully, Algorithm::Ring, Algorithm::Raft];

fn config(algorithm: Algorithm, bugs: Bugs) -> SimConfig {
    SimConfig { algorithm, nodes: 5, bugs, trace: false }
}

/// The first seed below `seeds` whose run reports a violation, and the violation.
fn first_violation(config: &SimConfig, seeds: u64) -> Option<(u64, String)> {
    (0..seeds).find_map(|seed| {
        let report = run(config, seed);
        report.violations.first().map(|v| (seed, v.clone()))
    })
}

/// Traced healthy runs of every sixth seed from `first` below 600 (one kind of run), each
/// checked to be of `kind` and free of violations.
fn healthy_runs(algorithm: Algorithm, first: u64, kind: &str) -> Vec<facto::simulation::RunReport> {
    let traced = SimConfig { trace: true, ..config(algorithm, Bugs::default()) };
    (first..600)
        .step_by(6)
        .map(|seed| {
            let report = run(&traced, seed);
            assert_eq!(report.kind, kind, "{algorithm} seed {seed}");
            assert_eq!(report.violations, Vec::<String>::new(), "{algorithm} seed {seed}");
            report
        })
        .collect()
}

#[test]
fn one_seed_replays_exactly() {
    for algorithm in ALGORITHMS {
        let traced = SimConfig { trace: true, ..config(algorithm, Bugs::default()) };
        for seed in [3, 374, 1007] {
            let (a, b) = (run(&traced, seed), run(&traced, seed));
            assert!(a.trace.len() > 50, "{algorithm} seed {seed}: a trace");
            assert_eq!(a.trace, b.trace, "{algorithm} seed {seed}");
            assert_eq!((a.events, a.sim_ms), (b.events, b.sim_ms));
        }
    }
}

#[test]
fn healthy_cores_pass_and_do_work() {
    for algorithm in ALGORITHMS {
        let (mut computed, mut rogue_runs) = (0, 0);
        for seed in 0..300 {
            let report = run(&config(algorithm, Bugs::default()), seed);
            assert_eq!(report.violations, Vec::<String>::new(), "{algorithm} seed {seed}");
            computed += report.tasks_computed;
            rogue_runs += u32::from(report.kind == "rogue");
        }
        assert!(computed > 1_000, "{algorithm}: the workers computed {computed} tasks in 300 runs");
        assert_eq!(rogue_runs, 50, "{algorithm}: one run in six has a rogue member");
    }
}

#[test]
fn a_rogue_epoch_is_moved_past_in_every_rogue_run() {
    // The rogue member's higher epoch reaches the others, who elect above it once it is silent.
    for algorithm in ALGORITHMS {
        let mut shown_runs = 0;
        for report in healthy_runs(algorithm, 2, "rogue") {
            let seed = report.seed;
            let rogue = report.trace.iter().find(|l| l.contains("GOES ROGUE")).expect("a rogue");
            let shown = rogue.contains("coordinates") || report.trace.iter().any(|l| l.contains("SHOWS its rogue"));
            if !shown {
                continue; // A rogue worker that got no work before it fell silent.
            }
            shown_runs += 1;
            let epoch: u64 = rogue.rsplit("epoch ").next().and_then(|t| t.split(',').next()).unwrap().parse().unwrap();
            let above = report.trace.iter().any(|l| {
                l.split("save epoch ")
                    .nth(1)
                    .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|e| e.parse::<u64>().ok())
                    .is_some_and(|e| e > epoch)
            });
            assert!(above, "{algorithm} seed {seed}: no member saved an epoch above the rogue's {epoch}");
        }
        assert!(shown_runs >= 50, "{algorithm}: the rogue showed its epoch in only {shown_runs} of 100 runs");
    }
}

#[test]
fn fencing_apart_from_the_election_is_caught() {
    // Workers fence with a rogue's higher epoch while the election stays below it: the
    // coordinator's work is refused forever and the jobs never finish.
    let bugs = Bugs { fence_apart_from_election: true, ..Bugs::default() };
    for algorithm in ALGORITHMS {
        let (seed, violation) = first_violation(&config(algorithm, bugs), 600).expect("caught");
        assert!(violation.contains("no progress"), "{algorithm} seed {seed}: {violation}");
    }
}

#[test]
fn acknowledging_a_job_before_it_is_durable_is_caught() {
    let bugs = Bugs { ack_before_durable: true, ..Bugs::default() };
    for algorithm in ALGORITHMS {
        let found = first_violation(&config(algorithm, bugs), 2_000);
        assert!(found.is_some(), "{algorithm}: the bug went unnoticed for 2,000 seeds");
    }
}

#[test]
fn counting_a_product_done_before_a_peer_holds_it_is_caught() {
    // Bully's crash timing exposes it at once (seed 56). Ring and Raft-lite need
    // more than 10,000 since a hard-state save became a barrier (ring: seed 14544, raft: 13138,
    // `--bug done-before-replicated --first-seed 10000 --seeds 20000`), too slow for a test.
    let bugs = Bugs { done_before_replicated: true, ..Bugs::default() };
    let (seed, violation) = first_violation(&config(Algorithm::Bully, bugs), 2_000).expect("bully: caught");
    assert!(violation.contains("computed 2 times"), "seed {seed}: {violation}");
}

#[test]
fn coordinating_at_an_epoch_before_it_is_durable_is_caught() {
    // A coordinator that crashes before its epoch is on disk may lead at the same epoch again
    // after a restart and hand the same job id to another job (seen with bully, seed 444).
    // Raft-lite makes its term durable before it asks for votes, so it is immune.
    let bugs = Bugs { coordinate_before_epoch_durable: true, ..Bugs::default() };
    for algorithm in [Algorithm::Bully, Algorithm::Ring] {
        let found = first_violation(&config(algorithm, bugs), 2_000);
        assert!(found.is_some(), "{algorithm}: the bug went unnoticed for 2,000 seeds");
    }
}

#[test]
fn the_promise_run_restarts_a_peer_between_its_answer_and_the_old_coordinators_write() {
    // Healthy cores: the script reaches its moment in most promise runs, and nothing is lost.
    for algorithm in ALGORITHMS {
        let reached = healthy_runs(algorithm, 4, "promise")
            .iter()
            .filter(|report| report.trace.iter().any(|l| l.contains("answered a gathering; it crashes")))
            .count();
        assert!(reached >= 80, "{algorithm}: the peer restarted after its answer in only {reached} of 100 runs");
    }
}

#[test]
fn keeping_the_gather_promise_in_memory_is_caught() {
    // The restarted peer forgets its promise and takes the deposed coordinator's write: a
    // job acknowledged through it is never heard of again. (Raft-lite's check-quorum deposes
    // the cut-off coordinator about when a successor gathers: it is not immune either.)
    let bugs = Bugs { promise_in_memory: true, ..Bugs::default() };
    for algorithm in ALGORITHMS {
        let found = (4..1_200).step_by(6).find_map(|seed| {
            let report = run(&config(algorithm, bugs), seed);
            report.violations.first().map(|v| (seed, v.clone()))
        });
        let (seed, violation) =
            found.unwrap_or_else(|| panic!("{algorithm}: the bug went unnoticed in 200 promise runs"));
        assert!(violation.contains("acknowledged as job"), "{algorithm} seed {seed}: {violation}");
    }
}

#[test]
fn finished_results_stay_within_reach() {
    // A new coordinator brings every finished result it can reach up to two disks, so one
    // member down at a time never leaves a result out of reach; and one out of reach is read
    // again for a few seconds before it is computed again, so a storm's faults pass first.
    // Without either, these 1,000 seeds computed 9 (bully), 5 (ring) and 1 (raft) results
    // again; without the second, up to 1 per algorithm in storms.
    for algorithm in ALGORITHMS {
        let (mut calm, mut storm) = (0, 0);
        for seed in 0..1_000 {
            let report = run(&config(algorithm, Bugs::default()), seed);
            match report.kind {
                "storm" => storm += report.results_lost,
                _ => calm += report.results_lost,
            }
        }
        assert_eq!(calm, 0, "{algorithm}: finished results computed again outside storms");
        assert_eq!(storm, 0, "{algorithm}: finished results computed again in storms");
    }
}
