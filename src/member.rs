//! Starting a member: its database, its runtime and its HTTP server, joined by the node's
//! [`Handle`]. The only module that names [`crate::node`], [`crate::http`] and
//! [`crate::store`] together, so that neither of the first two imports the other's wiring.

use crate::api::NodeStatus;
use crate::config::{NodeConfig, SharedSettings};
use crate::coordinator::Fingerprint;
use crate::error::{Error, Result};
use crate::node::{faults, runtime, Handle};
use crate::store::Store;
use crate::transport::{self, Client};
use std::sync::Arc;

/// A seed no peer can predict: the operating system's randomness (the clock and process id
/// should it be unreadable).
fn random_seed() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// `--reset-data`: moves the data directory aside, loudly. Returns whether there was one.
fn reset_data_dir(dir: &std::path::Path) -> Result<bool> {
    let aside = Store::reset(dir)?;
    match &aside {
        Some(aside) => log::warn!(
            "--reset-data: {} moved to {}; this node starts EMPTY and takes its epoch from its peers",
            dir.display(),
            aside.display()
        ),
        None => log::warn!("--reset-data: {} did not exist; starting empty", dir.display()),
    }
    Ok(aside.is_some())
}

/// How long a node started empty on purpose asks its peers for the current epoch.
const RESET_EPOCH_WAIT_MS: u64 = 5_000;

/// The election state of a node that lost its own: the highest epoch its peers report, with
/// its vote at that epoch spent on itself. A Raft voter that forgot its vote could otherwise
/// vote twice in one term; it may still have voted in a later term that no answering peer
/// knows of (its candidate down too): a second fault, outside the failure model.
async fn hard_state_from_peers(handle: &Handle) -> facto_elections::HardState {
    let me = handle.config.id;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(RESET_EPOCH_WAIT_MS);
    let mut epoch = 0;
    while std::time::Instant::now() < deadline {
        let mut answers = 0;
        for (&id, addr) in handle.config.members.0.iter().filter(|(&id, _)| id != me) {
            let timeout = std::time::Duration::from_millis(500);
            if let Ok(status) = handle.client.get::<NodeStatus>(addr, "/status", timeout).await {
                answers += 1;
                epoch = epoch.max(status.epoch);
                log::debug!("node {id} is at epoch {}", status.epoch);
            }
        }
        // A majority of the others answering is as much as the cluster can know.
        if answers * 2 > handle.config.members.0.len() - 1 || handle.config.members.0.len() == 1 {
            break;
        }
        async_std::task::sleep(std::time::Duration::from_millis(200)).await;
    }
    log::warn!("node {me} starts empty at epoch {epoch}, its vote there spent");
    facto_elections::HardState { epoch, voted_for: Some(me) }
}

/// How long a starting node waits for each peer's `/status` when it compares settings.
const SETTINGS_CHECK_TIMEOUT_MS: u64 = 500;

/// Refuses to start when most of the other members answer with other cluster settings: this
/// node was given another `--peers` (a membership change half made), `--election`,
/// `--max-n`, `--checkpoint` or `--tick-ms` than the running cluster, or is another
/// protocol's build. The peers refuse its requests anyway
/// ([`crate::node_core::validate::shared_settings`]), so it could only sit apart. Most of
/// all the others, not of those that answer: a healthy member that starts while only a
/// misconfigured one runs must not take itself for the odd one out.
async fn check_settings(handle: &Handle) -> Result<()> {
    let me = handle.config.id;
    let asks = handle.config.members.0.iter().filter(|(&id, _)| id != me).map(|(&id, addr)| {
        let (client, addr) = (handle.client.clone(), addr.clone());
        async move {
            let timeout = std::time::Duration::from_millis(SETTINGS_CHECK_TIMEOUT_MS);
            client.get::<NodeStatus>(&addr, "/status", timeout).await.ok().map(|s| (id, s))
        }
    });
    let answers: Vec<(u32, NodeStatus)> = futures::future::join_all(asks).await.into_iter().flatten().collect();
    let differ: Vec<(u32, String)> =
        answers.iter().filter_map(|(id, status)| Some((*id, differences(handle, *id, status)?))).collect();
    let others = handle.config.members.0.len() - 1;
    if differ.len() * 2 > others {
        let (id, how) = &differ[0];
        return Err(Error::Usage(format!(
            "this node's settings differ from those of {} of the {others} other members ({how}; node {id} is \
             one of them): refusing to join; give every member the same settings (see README, \"One \
             configuration\")",
            differ.len()
        )));
    }
    Ok(())
}

/// How a peer's settings (from its `/status`) differ from this node's, if they do. A peer of
/// a build that shows only its member list is compared on that.
fn differences(handle: &Handle, id: u32, status: &NodeStatus) -> Option<String> {
    let us = format!("this node ({})", handle.config.id);
    if status.settings.is_empty() {
        let mine = format!("{:016x}", handle.config.members.fingerprint());
        let differs = !status.member_list.is_empty() && status.member_list != mine;
        return differs.then(|| format!("members: {us} has {mine}, node {id} has {}", status.member_list));
    }
    handle.settings.differences(&us, &SharedSettings::parse(&status.settings), &format!("node {id}"))
}

/// Runs a node until the process ends or a fatal error (its database fails).
/// Over `tls` (the member's certificates), it serves and calls its peers with mutual TLS.
pub async fn run(
    config: NodeConfig,
    cluster_key: Option<String>,
    tls: Option<transport::tls::MemberTls>,
    faults: faults::Faults,
) -> Result<()> {
    config.validate()?;
    // An empty key (FACTO_CLUSTER_KEY= in a compose file) means no key, not a key anyone
    // can present.
    let cluster_key = cluster_key.filter(|k| !k.is_empty());
    let listener = async_std::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| Error::Listen { addr: config.listen.clone(), source })?;
    let reset = config.reset_data && reset_data_dir(&config.data_dir)?;
    let store = Store::open(&config.data_dir)?;
    let (hard_state, checkpoint, checkpoint_version) = store.load(&config.data_dir)?;
    let (inbox, inboxes) = crate::node::Inbox::new();
    let gate = Arc::new(transport::Gate::default());
    let settings = format!("{};node={}", crate::config::SharedSettings::of(&config).text(), config.id);
    let client = Client::behind(
        cluster_key.clone(),
        tls.as_ref().map(|t| t.client.clone()),
        &config.members,
        gate.clone(),
        settings,
    );
    let fingerprint = Fingerprint::new(random_seed());
    let handle = Handle::new(inbox, config, faults, (client, gate), store.clone(), fingerprint);
    let hard_state = if reset {
        let taken = hard_state_from_peers(&handle).await;
        store.save_hard_state_now(&taken)?;
        taken
    } else {
        hard_state
    };
    check_settings(&handle).await?;
    let runtime = runtime::Runtime::new(handle.clone(), store, hard_state, (checkpoint, checkpoint_version))?;
    if handle.config.members.0.len() < 2 {
        log::warn!(
            "this cluster has one member: it will coordinate and refuse every job (a coordinator never multiplies)"
        );
    }
    log::info!(
        "node {} listening on {} over {} ({} members, election {})",
        handle.config.id,
        handle.config.listen,
        if tls.is_some() { "mutual TLS" } else { "plain HTTP" },
        handle.config.members.0.len(),
        handle.config.algorithm
    );
    let app = crate::http::app(handle.clone(), cluster_key, tls.is_some());
    async_std::task::spawn(crate::http::serve(listener, app, tls.map(|t| t.server)));
    give_memory_back();
    runtime.run(inboxes).await
}

/// How often freed memory goes back to the system.
const MEMORY_TRIM_MS: u64 = 10_000;

/// Hands freed heap memory back to the system now and then. glibc keeps what a burst freed
/// (thousands of connections, megabyte answers) in its per-thread arenas: without a trim,
/// one such burst leaves a member's resident memory at about 1.6 times its idle value.
fn give_memory_back() {
    #[cfg(target_env = "gnu")]
    let spawned = std::thread::Builder::new().name("facto-trim".into()).spawn(|| loop {
        std::thread::sleep(std::time::Duration::from_millis(MEMORY_TRIM_MS));
        // SAFETY: malloc_trim only returns free pages of the allocator's own arenas.
        unsafe { libc::malloc_trim(0) };
    });
    #[cfg(target_env = "gnu")]
    if let Err(e) = spawned {
        log::warn!("no thread to give memory back: {e}");
    }
}
