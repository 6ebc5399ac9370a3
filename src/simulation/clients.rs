//! Simulated clients: each submits one job with its own idempotency key, retries until the
//! cluster acknowledges it, then polls until the result arrives and checks it.

use super::{Ev, Sim};
use crate::bignum::Big;
use crate::node_core::{Answer, Input, JobsQuery, ReplyId, Routed};
use facto_elections::sim::{MAX_DELAY_MS, MIN_DELAY_MS};
use facto_elections::NodeId;

/// How long a client waits for a submission's answer (the HTTP edge's bound while a node
/// takes over is 3 s) or a poll's.
const SUBMIT_TIMEOUT_MS: u64 = 3_000;
const POLL_TIMEOUT_MS: u64 = 1_000;

pub(super) enum ClientEv {
    /// Time to send the next request.
    Wake { client: usize, generation: u64 },
    /// The request reaches a node (`forwarded`: carried there by another member).
    Request { client: usize, generation: u64, node: usize, forwarded: bool },
    /// The node's answer reaches the client.
    Answer { client: usize, generation: u64, answer: Box<Answer> },
    /// No answer in time, or the node was down.
    GiveUp { client: usize, generation: u64 },
}

pub(super) struct Client {
    pub key: String,
    pub n: u64,
    /// The node it talks to.
    target: usize,
    /// Counts requests; only events of the current one count.
    generation: u64,
    /// The job the cluster acknowledged for this key.
    acked: Option<String>,
    pub done: bool,
    /// Where its current request waits: node, its life, reply id.
    waiting_at: Option<(usize, u64, ReplyId)>,
}

impl Client {
    pub fn new(index: usize, n: u64) -> Client {
        Client { key: format!("key-{index}"), n, target: 0, generation: 0, acked: None, done: false, waiting_at: None }
    }

    /// The client, sending its first request to node `target`.
    pub fn aimed_at(self, target: usize) -> Client {
        Client { target, ..self }
    }

    pub fn describe(&self) -> String {
        match &self.acked {
            Some(job) => format!("{} ({}!) acknowledged as job {job}, no result", self.key, self.n),
            None => format!("{} ({}!) never acknowledged", self.key, self.n),
        }
    }
}

impl Sim<'_> {
    pub(super) fn client_event(&mut self, ev: ClientEv) {
        match ev {
            ClientEv::Wake { client, generation } if self.current(client, generation) => self.client_send(client),
            ClientEv::Request { client, generation, node, forwarded } if self.current(client, generation) => {
                self.client_request(client, generation, node, forwarded)
            }
            ClientEv::Answer { client, generation, answer } if self.current(client, generation) => {
                self.clients[client].waiting_at = None;
                self.client_answered(client, *answer);
            }
            ClientEv::GiveUp { client, generation } if self.current(client, generation) => self.client_gives_up(client),
            _ => {}
        }
    }

    fn current(&self, client: usize, generation: u64) -> bool {
        let c = &self.clients[client];
        !c.done && c.generation == generation
    }

    fn client_send(&mut self, client: usize) {
        let c = &mut self.clients[client];
        c.generation += 1;
        let (generation, node) = (c.generation, c.target);
        let timeout_ms = if c.acked.is_some() { POLL_TIMEOUT_MS } else { SUBMIT_TIMEOUT_MS };
        let delay = self.rng.range(MIN_DELAY_MS, MAX_DELAY_MS + 1);
        self.schedule(delay, Ev::Client(ClientEv::Request { client, generation, node, forwarded: false }));
        self.schedule(timeout_ms, Ev::Client(ClientEv::GiveUp { client, generation }));
    }

    fn client_request(&mut self, client: usize, generation: u64, node: usize, forwarded: bool) {
        if !self.up(node) {
            return self.schedule(1, Ev::Client(ClientEv::GiveUp { client, generation }));
        }
        let reply = self.client_reply_id(node, client, generation);
        self.clients[client].waiting_at = Some((node, self.nodes[node].life, reply));
        let c = &self.clients[client];
        let input = match &c.acked {
            Some(id) => Input::Jobs { query: JobsQuery::One { id: id.clone(), wait: false }, reply, forwarded },
            None => Input::Submit { n: c.n, request: Some(c.key.clone()), reply, forwarded },
        };
        self.step(node, input);
    }

    /// A member forwards `client`'s request to the coordinator `leader` (over the network);
    /// the client's later requests go there first.
    pub(super) fn client_forwarded(&mut self, client: usize, generation: u64, leader: NodeId) {
        let node = self.index(leader);
        self.clients[client].target = node;
        let delay = self.rng.range(MIN_DELAY_MS, MAX_DELAY_MS + 1);
        self.schedule(delay, Ev::Client(ClientEv::Request { client, generation, node, forwarded: true }));
    }

    /// A node answers `client`'s request (over the network).
    pub(super) fn client_answer(&mut self, client: usize, generation: u64, answer: Answer) {
        let delay = self.rng.range(MIN_DELAY_MS, MAX_DELAY_MS + 1);
        self.schedule(delay, Ev::Client(ClientEv::Answer { client, generation, answer: Box::new(answer) }));
    }

    fn client_answered(&mut self, client: usize, answer: Answer) {
        match answer {
            Answer::Job(Routed::Here(job)) => {
                let key = self.clients[client].key.clone();
                if let Some(earlier) = self.clients[client].acked.clone().filter(|e| *e != job.id) {
                    self.violation(format!("request key {key} acknowledged as job {earlier} and as job {}", job.id));
                }
                self.note(|| format!("client {key}: acknowledged as job {}", job.id));
                self.clients[client].acked = Some(job.id);
                self.client_wake(client, 10);
            }
            Answer::Job(Routed::Refused(why)) | Answer::Jobs(Routed::Refused(why)) => {
                self.violation(format!("client {}: refused: {why}", self.clients[client].key));
            }
            Answer::Jobs(Routed::Gone(why)) => self.client_finds_gone(client, &why),
            Answer::Jobs(Routed::Here(jobs)) => {
                let acked = self.clients[client].acked.clone();
                match jobs.into_iter().find(|j| Some(&j.id) == acked.as_ref()).and_then(|j| j.result) {
                    Some(digits) => self.client_checks(client, &digits),
                    None => self.client_wake(client, 30),
                }
            }
            _ => {
                let wait = self.rng.range(20, 150);
                self.client_wake(client, wait);
            }
        }
    }

    /// A job past retention may be forgotten before its client reads it, but only a job
    /// that finished: some node's disk must hold (or have held) its root.
    fn client_finds_gone(&mut self, client: usize, why: &str) {
        let key = self.clients[client].key.clone();
        let Some(id) = self.clients[client].acked.clone() else { return };
        if !self.nodes.iter().any(|node| node.disk.roots.contains_key(&id)) {
            self.violation(format!("client {key}: job {id} is gone but never finished: {why}"));
        }
        self.note(|| format!("client {key}: job {id} retired before it was read"));
        self.clients[client].done = true;
    }

    /// The result must be n!, computed independently (malachite's own factorial).
    fn client_checks(&mut self, client: usize, digits: &str) {
        let (key, n) = (self.clients[client].key.clone(), self.clients[client].n);
        if digits != Big::factorial(n).to_decimal() {
            self.violation(format!("client {key}: the result for {n}! is wrong: {digits}"));
        }
        self.note(|| format!("client {key}: {n}! received"));
        self.clients[client].done = true;
    }

    fn client_gives_up(&mut self, client: usize) {
        if let Some((node, life, reply)) = self.clients[client].waiting_at.take() {
            if self.up(node) && self.nodes[node].life == life {
                self.client_gone(node, reply);
            }
        }
        self.clients[client].target = self.rng.below(self.nodes.len() as u64) as usize;
        let wait = self.rng.range(20, 100);
        self.client_wake(client, wait);
    }

    fn client_wake(&mut self, client: usize, after_ms: u64) {
        let generation = self.clients[client].generation;
        self.schedule(after_ms, Ev::Client(ClientEv::Wake { client, generation }));
    }
}
