//! Long-polls a follower forwards to the coordinator, together. Clients of a follower that
//! wait for their jobs (`GET /jobs/<id>?wait_ms=N`) would each hold a forwarded long-poll,
//! one HTTP exchange per job between the two members; instead the follower keeps at most
//! two *watches* on their way, `POST /internal/jobs/wait`, naming the jobs its clients wait
//! for, which the coordinator answers as soon as one of them is done, with all done by
//! then. Jobs finish in rounds (their roots are made durable together), so one answer
//! carries several. A client whose job is large, unknown or past retention, or whose watch
//! failed, is forwarded alone as before (`forwards.rs`).

use super::answers::SHARED_DIGITS_MIN;
use super::client_api::{FORWARD_TIMEOUT_MS, WAIT_MS_MAX};
use super::forwards::lock;
use super::respond::{error, json, read_json, CLIENT_BODY_BYTES_MAX};
use crate::api::{JobInfo, WatchAnswer, WatchRequest};
use crate::node::{Handle, JobsQuery, Routed};
use crate::transport::Client;
use async_std::channel::{bounded, Sender};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tide::{Request, StatusCode};

/// The most jobs one watch names (its body stays well under the client body limit).
const WATCH_IDS_MAX: usize = 1_024;
/// The longest job id a watch may name (ids are `<epoch>-<number>`).
const JOB_ID_BYTES_MAX: usize = 48;
/// The most jobs of one watch the coordinator waits on (see [`oldest`]).
const WAITED_MAX: usize = 16;
/// How long a follower's watch lets the coordinator wait for one of its jobs. Short: a
/// client that arrives while every watch waits on long jobs (a 1,000,000! next to small
/// ones) joins the next watch, at most this much later.
const WATCH_WAIT_MS: u64 = 100;

/// `POST /internal/jobs/wait`: the jobs of `ids` done by the time one of them is, or by
/// `wait_ms` (an empty answer), and those to ask about alone; 503 when this member does not
/// coordinate (the follower then forwards each long-poll alone, and learns where to).
pub(super) async fn wait_jobs(mut req: Request<Handle>) -> tide::Result {
    let watch: WatchRequest = match read_json(&mut req, CLIENT_BODY_BYTES_MAX).await {
        Ok(w) => w,
        Err(res) => return Ok(res),
    };
    if watch.ids.len() > WATCH_IDS_MAX || watch.ids.iter().any(|id| id.len() > JOB_ID_BYTES_MAX) {
        let why = format!("a watch names at most {WATCH_IDS_MAX} jobs, each id at most {JOB_ID_BYTES_MAX} bytes");
        return Ok(error(StatusCode::BadRequest, &why));
    }
    let handle = req.state();
    let Some(mut answer) = settle(handle, &watch.ids).await else { return Ok(not_coordinating()) };
    if answer.done.is_empty() && answer.ask.is_empty() && !watch.ids.is_empty() {
        let waits = oldest(&watch.ids)
            .into_iter()
            .map(|id| Box::pin(handle.jobs(JobsQuery::One { id: id.to_string(), wait: true }, true)));
        let wait = Duration::from_millis(watch.wait_ms.min(WAIT_MS_MAX));
        let _ = async_std::future::timeout(wait, futures::future::select_all(waits)).await;
        let Some(then) = settle(handle, &watch.ids).await else { return Ok(not_coordinating()) };
        answer = then;
    }
    Ok(json(StatusCode::Ok, &answer))
}

fn not_coordinating() -> tide::Response {
    error(StatusCode::ServiceUnavailable, "this member does not coordinate; ask each job alone")
}

/// The jobs of a watch whose end it waits for: the oldest (`<epoch>-<number>`), which the
/// scheduler finishes first; a younger one done before them is seen when the wait ends.
/// Waiting on each of hundreds would cost the coordinator's event loop hundreds of
/// questions per watch.
fn oldest(ids: &[String]) -> Vec<&str> {
    let order = |id: &str| {
        let (epoch, number) = id.split_once('-').unwrap_or((id, ""));
        (epoch.parse::<u64>().unwrap_or(u64::MAX), number.parse::<u64>().unwrap_or(u64::MAX))
    };
    let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    ids.sort_by_key(|id| order(id));
    ids.truncate(WAITED_MAX);
    ids
}

/// Where each job stands, from one question to the core: done (with a result small
/// enough to travel in a watch), to be asked about alone (unknown, retired, or large), or
/// still running (in neither list). None if this member does not coordinate.
async fn settle(handle: &Handle, ids: &[String]) -> Option<WatchAnswer> {
    let Routed::Here(jobs) = handle.jobs(JobsQuery::Each { ids: ids.to_vec() }, true).await? else { return None };
    let mut known: HashMap<&str, &JobInfo> = jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let mut answer = WatchAnswer::default();
    for id in ids {
        match known.remove(id.as_str()) {
            Some(job) if !job.is_done() => {}
            Some(job) if job.result.as_ref().is_some_and(|r| r.len() < SHARED_DIGITS_MIN) => {
                answer.done.push(job.clone())
            }
            _ => answer.ask.push(id.clone()),
        }
    }
    Some(answer)
}

/// What a waiting client hears from the watch.
pub enum Watched {
    /// Its job, done.
    Done(Box<JobInfo>),
    /// Forward the long-poll alone: the job is large, unknown or gone, or the watch failed.
    Alone,
}

/// The follower's side: the clients waiting, by coordinator and job id.
#[derive(Default)]
pub struct Watches {
    by_coordinator: Mutex<HashMap<String, Watch>>,
}

#[derive(Default)]
struct Watch {
    waiting: HashMap<String, Vec<Sender<Watched>>>,
    /// Jobs named by a watch on its way.
    covered: HashSet<String>,
    /// Watches on their way to this coordinator.
    in_flight: usize,
}

/// Watches one follower keeps on their way to the coordinator at once: two, so that clients
/// arriving while one waits on long jobs have another; few, so that clients arriving
/// meanwhile share a watch. Measured with `facto bench --load --clients 64`: with four,
/// 1.6 long-polls per watch and no gain; with one or two, 3.5 per watch and 5-25% more
/// jobs a second (`docs/BENCHMARKS.md`).
const WATCHES_IN_FLIGHT_MAX: usize = 2;

impl Watches {
    /// Waits up to `wait` for job `id` at the coordinator at `addr`; None when the wait
    /// passed with the job not done.
    pub async fn wait(&'static self, client: &Client, addr: &str, id: &str, wait: Duration) -> Option<Watched> {
        let (tx, rx) = bounded(1);
        let ids = {
            let mut all = lock(&self.by_coordinator);
            let watch = all.entry(addr.to_string()).or_default();
            watch.waiting.entry(id.to_string()).or_default().push(tx);
            let room = watch.in_flight < WATCHES_IN_FLIGHT_MAX && !watch.covered.contains(id);
            room.then(|| watch.start()).flatten()
        };
        if let Some(ids) = ids {
            async_std::task::spawn(self.ask(client.clone(), addr.to_string(), ids));
        }
        async_std::future::timeout(wait, rx.recv()).await.ok()?.ok()
    }

    /// Asks the coordinator about `ids`, then about the jobs clients still wait for that no
    /// other watch names, while there are any.
    async fn ask(&'static self, client: Client, addr: String, mut ids: Vec<String>) {
        let timeout = Duration::from_millis(WATCH_WAIT_MS + FORWARD_TIMEOUT_MS);
        loop {
            let request = WatchRequest { ids: ids.clone(), wait_ms: WATCH_WAIT_MS };
            let answer = client.post::<_, WatchAnswer>(&addr, "/internal/jobs/wait", &request, timeout, &[]).await;
            let mut all = lock(&self.by_coordinator);
            let Some(watch) = all.get_mut(&addr) else { return };
            watch.in_flight -= 1;
            ids.iter().for_each(|id| _ = watch.covered.remove(id));
            match answer {
                Ok(answer) => watch.hear(&ids, answer),
                Err(e) => {
                    log::debug!("watching jobs at {addr} failed ({e}); each is asked about alone");
                    for id in &ids {
                        watch.waiting.remove(id).into_iter().flatten().for_each(|s| tell(&s, Watched::Alone));
                    }
                }
            }
            match watch.start() {
                Some(next) => ids = next,
                None => {
                    if watch.in_flight == 0 && watch.waiting.is_empty() {
                        all.remove(&addr);
                    }
                    return;
                }
            }
        }
    }
}

impl Watch {
    /// A new watch of up to [`WATCH_IDS_MAX`] jobs clients wait for that no watch on its
    /// way names (clients that gave up are forgotten first); None if there are none.
    fn start(&mut self) -> Option<Vec<String>> {
        self.waiting.retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
        let ids: Vec<String> =
            self.waiting.keys().filter(|id| !self.covered.contains(*id)).take(WATCH_IDS_MAX).cloned().collect();
        if ids.is_empty() {
            return None;
        }
        self.covered.extend(ids.iter().cloned());
        self.in_flight += 1;
        Some(ids)
    }

    /// The coordinator's answer to a watch of `asked`: done jobs go to their clients, and
    /// those to ask about alone are told so. Jobs it was not asked about are ignored.
    fn hear(&mut self, asked: &[String], answer: WatchAnswer) {
        let asked: HashSet<&String> = asked.iter().collect();
        for job in answer.done.into_iter().filter(|j| asked.contains(&j.id)) {
            for sender in self.waiting.remove(&job.id).unwrap_or_default() {
                tell(&sender, Watched::Done(Box::new(job.clone())));
            }
        }
        for id in answer.ask.iter().filter(|id| asked.contains(id)) {
            for sender in self.waiting.remove(id).unwrap_or_default() {
                tell(&sender, Watched::Alone);
            }
        }
    }
}

fn tell(sender: &Sender<Watched>, what: Watched) {
    let _ = sender.try_send(what);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, result: Option<&str>) -> JobInfo {
        let mut job: JobInfo = serde_json::from_str(&format!(
            r#"{{"id":"{id}","n":5,"state":"done","progress":1.0,"operations_total":1,"operations_done":1,"operations_reexecuted":0}}"#
        ))
        .unwrap();
        job.result = result.map(Into::into);
        job
    }

    #[test]
    fn a_watch_waits_on_its_oldest_jobs() {
        let ids: Vec<String> = (1..=40).rev().map(|n| format!("2-{n}")).chain(["1-9".into(), "junk".into()]).collect();
        let waited = oldest(&ids);
        assert_eq!(waited.len(), WAITED_MAX);
        assert_eq!(&waited[..3], ["1-9", "2-1", "2-2"]);
        assert!(!waited.contains(&"junk"));
    }

    #[test]
    fn an_answer_reaches_only_the_clients_of_the_jobs_asked_about() {
        let mut watch = Watch::default();
        let mut receivers = HashMap::new();
        for id in ["1-1", "1-2", "1-3", "1-4"] {
            let (tx, rx) = bounded(1);
            watch.waiting.entry(id.to_string()).or_default().push(tx);
            receivers.insert(id, rx);
        }
        let asked: Vec<String> = ["1-1", "1-2", "1-3"].map(String::from).to_vec();
        // A done job it was asked about, one to ask alone, and one it was not asked about.
        let answer =
            WatchAnswer { done: vec![job("1-1", Some("120")), job("1-4", Some("7"))], ask: vec!["1-2".into()] };
        watch.hear(&asked, answer);
        assert!(matches!(receivers["1-1"].try_recv(), Ok(Watched::Done(j)) if j.result.as_deref() == Some("120")));
        assert!(matches!(receivers["1-2"].try_recv(), Ok(Watched::Alone)));
        assert!(receivers["1-3"].try_recv().is_err(), "still running: still waiting");
        assert!(receivers["1-4"].try_recv().is_err(), "not asked about: not taken from this answer");
        let mut still: Vec<&String> = watch.waiting.keys().collect();
        still.sort();
        assert_eq!(still, ["1-3", "1-4"]);
    }

    #[test]
    fn a_watch_names_only_jobs_no_other_watch_names_and_forgets_clients_that_left() {
        let mut watch = Watch::default();
        let (tx, _rx) = bounded(1);
        watch.waiting.insert("1-1".into(), vec![tx]);
        assert_eq!(watch.start(), Some(vec!["1-1".to_string()]));
        assert_eq!(watch.in_flight, 1);
        let (tx, _rx2) = bounded(1);
        watch.waiting.insert("1-2".into(), vec![tx]);
        let (gone, rx) = bounded(1);
        drop(rx);
        watch.waiting.insert("1-3".into(), vec![gone]);
        assert_eq!(watch.start(), Some(vec!["1-2".to_string()]), "1-1 is on its way; 1-3's client left");
        assert_eq!(watch.start(), None);
        assert_eq!(watch.in_flight, 2);
        assert!(!watch.waiting.contains_key("1-3"));
    }
}
