//! The seeded network simulator, run from `cargo test`: thousands of faulty runs per algorithm
//! must show no invariant violation, a seed must replay exactly, and the checker must catch a
//! deliberately broken algorithm.

use facto_elections::sim::{self, RunReport, Scenario, SimConfig};
use facto_elections::{Actions, Algorithm, Config, Election, HardState, Input, Leadership};

fn run(algorithm: Algorithm, config: &SimConfig, seed: u64) -> RunReport {
    sim::run(config, seed, |node, hard| algorithm.build(node, hard).expect("valid configuration"))
}

/// Runs `seeds` seeds of every scenario and fails with the first violation and its replay
/// command.
fn assert_no_violations(algorithm: Algorithm, nodes: usize, seeds: u64) {
    for scenario in Scenario::ALL {
        let config = SimConfig::new(nodes, scenario);
        for seed in 0..seeds {
            let report = run(algorithm, &config, seed);
            assert!(
                report.violations.is_empty() && report.time_to_agree_ms.is_some(),
                "{algorithm} at {nodes} nodes, {scenario}, seed {seed}: {:?}\nreplay: cargo run \
                 --release -p facto-elections --example simulate -- --algorithm {algorithm} \
                 --nodes {nodes} --scenario {scenario} --first-seed {seed} --seeds 1",
                report.violations
            );
        }
    }
}

#[test]
fn raft_survives_2000_faulty_runs_at_6_nodes() {
    assert_no_violations(Algorithm::Raft, 6, 2_000);
}

#[test]
fn raft_survives_100_faulty_runs_at_25_nodes() {
    assert_no_violations(Algorithm::Raft, 25, 100);
}

#[test]
fn bully_survives_2000_faulty_runs_at_6_nodes() {
    assert_no_violations(Algorithm::Bully, 6, 2_000);
}

#[test]
fn bully_survives_100_faulty_runs_at_25_nodes() {
    assert_no_violations(Algorithm::Bully, 25, 100);
}

#[test]
fn ring_survives_2000_faulty_runs_at_6_nodes() {
    assert_no_violations(Algorithm::Ring, 6, 2_000);
}

#[test]
fn ring_survives_100_faulty_runs_at_25_nodes() {
    assert_no_violations(Algorithm::Ring, 25, 100);
}

#[test]
fn a_seed_replays_exactly() {
    for algorithm in Algorithm::ALL {
        let config = SimConfig { trace: true, ..SimConfig::new(6, Scenario::Random) };
        let first = run(algorithm, &config, 4242);
        assert_eq!(first, run(algorithm, &config, 4242), "{algorithm} is not deterministic");
        assert!(!first.trace.is_empty());
        // Tracing only records; it must not change the run.
        let quiet = run(algorithm, &SimConfig { trace: false, ..config.clone() }, 4242);
        assert_eq!(RunReport { trace: Vec::new(), ..first }, quiet);
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let config = SimConfig { trace: true, ..SimConfig::new(6, Scenario::Random) };
    let a = run(Algorithm::Raft, &config, 1);
    let b = run(Algorithm::Raft, &config, 2);
    assert_ne!(a.trace, b.trace);
}

/// A broken algorithm: every node declares itself leader at epoch 1 on its first tick.
#[derive(Clone, Debug)]
struct EveryoneLeads {
    leading: bool,
}

impl Election for EveryoneLeads {
    type Msg = ();

    fn name(&self) -> &'static str {
        "everyone-leads"
    }

    fn step(&mut self, input: Input<()>) -> Actions<()> {
        let mut actions = Actions::default();
        if input == Input::Tick && !self.leading {
            self.leading = true;
            actions.leadership = Some(self.leadership());
        }
        actions
    }

    fn leadership(&self) -> Leadership {
        if self.leading {
            Leadership::Leading { epoch: 1 }
        } else {
            Leadership::Unknown
        }
    }

    fn hard_state(&self) -> HardState {
        HardState::default()
    }

    fn set_checkpoint_version(&mut self, _freshness: u64) {}
}

#[test]
fn the_checker_catches_two_leaders_in_one_epoch() {
    let config = SimConfig { trace: true, ..SimConfig::new(3, Scenario::ColdStart) };
    let report = sim::run(&config, 7, |_: Config, _: HardState| EveryoneLeads { leading: false });
    assert!(report.violations.iter().any(|v| v.contains("both led epoch 1")), "{:?}", report.violations);
    assert!(report.trace.iter().any(|line| line.contains("VIOLATION")));
}

/// A broken algorithm: never elects anyone.
#[derive(Clone, Debug)]
struct Silent;

impl Election for Silent {
    type Msg = ();

    fn name(&self) -> &'static str {
        "silent"
    }

    fn step(&mut self, _input: Input<()>) -> Actions<()> {
        Actions::default()
    }

    fn leadership(&self) -> Leadership {
        Leadership::Unknown
    }

    fn hard_state(&self) -> HardState {
        HardState::default()
    }

    fn set_checkpoint_version(&mut self, _freshness: u64) {}
}

#[test]
fn the_checker_catches_a_cluster_that_never_agrees() {
    let report = sim::run(&SimConfig::new(3, Scenario::Random), 7, |_, _| Silent);
    assert_eq!(report.time_to_agree_ms, None);
    assert_eq!(report.violations.len(), 1);
    assert!(report.violations[0].starts_with("liveness"), "{:?}", report.violations);
}
