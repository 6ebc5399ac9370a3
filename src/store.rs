//! The node's local database (sled). Only this module names sled.

use crate::checkpoint::{Checkpoint, Fact};
use crate::coordinator::{OpId, Plan};
use crate::error::{Error, Result};
use facto_elections::HardState;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const HARD_STATE_KEY: &[u8] = b"election/hard_state";
/// sled's page cache: checkpoint records are written once and read back only at start.
const CACHE_BYTES: u64 = 64 << 20;
const VERSION_KEY: &[u8] = b"checkpoint/version";
/// Written once, when the database is created: a database without it in a marked directory
/// was lost or truncated.
const CREATED_KEY: &[u8] = b"store/created";
/// Records larger than this live in files of their own under [`RECORDS_DIR`], and sled holds
/// a pointer (see [`RecordFile`]): sled keeps values inline in its leaf nodes (up to 16 keys
/// each) and rewrites a whole node every tenth change, so a megabyte record kept inline is
/// written three to four times over: a 1,000,000! job would write about 42 MB to store
/// 11.5 MB of products.
const INLINE_BYTES_MAX: usize = 16 << 10;
const RECORDS_DIR: &str = "records";
/// A file beside the database saying this directory holds one.
const MARKER_FILE: &str = "FACTO_STORE";
const MARKER_TEXT: &str = "This directory holds a facto node's database. Do not delete single files; \
see `facto node --reset-data`.\n";

/// The one-line error for a data directory that cannot be opened or read: what, where, and
/// what to do. A full disk is named as such: its data is intact, and moving it aside with
/// `--reset-data` (the advice for damage) would only throw the node's vote away.
fn damaged(dir: &Path, what: &str) -> Error {
    // Only a failure of the disk itself can be a full disk; a missing or empty file cannot.
    let io_failure = ["IO error", "os error", "panicked"].iter().any(|s| what.contains(s));
    if is_disk_full(what) || (io_failure && free_bytes(dir).is_some_and(|free| free < FULL_BYTES)) {
        return disk_full(dir, what);
    }
    Error::Store(format!(
        "the data directory {} held a facto database that is now damaged ({what}); restore it, \
         or start this node with --reset-data to move it aside and start empty",
        dir.display()
    ))
}

/// Below this much free space a failure to open or read is taken for a full disk (sled may
/// panic rather than report ENOSPC).
const FULL_BYTES: u64 = 1 << 20;

/// Whether an error's text is the operating system's "no space left" (ENOSPC) or a quota's.
fn is_disk_full(what: &str) -> bool {
    ["No space left on device", "os error 28", "Disk quota exceeded", "os error 122"].iter().any(|s| what.contains(s))
}

/// "disk full", with the directory, its free space and what failed.
fn disk_full(dir: &Path, what: &str) -> Error {
    let free = free_bytes(dir).map_or("unknown".into(), |b| format!("{b} bytes"));
    Error::Store(format!(
        "disk full: the disk holding {} has {free} free ({what}); free some space and start this node again \
         (its data is intact: keep it)",
        dir.display()
    ))
}

/// Free space on the file system holding `dir` (or its nearest existing parent), for this
/// process (root may use the blocks reserved for it).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = dir.ancestors().find(|d| d.exists())?;
    let path = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a buffer of the right type.
    let ok = unsafe { libc::statvfs(path.as_ptr(), &mut stat) } == 0;
    // SAFETY: geteuid has no preconditions.
    let blocks = if unsafe { libc::geteuid() } == 0 { stat.f_bfree } else { stat.f_bavail };
    ok.then(|| u64::from(blocks).saturating_mul(u64::from(stat.f_frsize)))
}

thread_local! {
    /// Set while this thread runs [`quietly`].
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into an error without the panic's message and backtrace (sled
/// panics on some damage; the caller reports it in one line). The panic hook is wrapped
/// once, and stays silent only on a thread inside `quietly`: other threads' panics still
/// print.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static WRAP: std::sync::Once = std::sync::Once::new();
    WRAP.call_once(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                hook(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result
}

/// The files sled cannot do without: present and not empty.
fn check_files(dir: &Path) -> Result<()> {
    for name in ["db", "conf"] {
        match std::fs::metadata(dir.join(name)) {
            Ok(m) if m.len() > 0 => {}
            Ok(_) => return Err(damaged(dir, &format!("{name} is empty"))),
            Err(_) => return Err(damaged(dir, &format!("{name} is missing"))),
        }
    }
    Ok(())
}

/// A node's durable state: the election's hard state, and the checkpoint facts this node holds
/// (as coordinator or as a replica), one key per fact so a write never rewrites the whole.
/// Clones share the database (sled is safe to use from several threads).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    facts: sled::Tree,
    /// The data directory.
    dir: PathBuf,
    /// Where records larger than [`INLINE_BYTES_MAX`] live.
    records: PathBuf,
    /// Makes record file names unique: this opening's start time, and a count.
    file_names: std::sync::Arc<(u128, std::sync::atomic::AtomicU64)>,
}

impl Store {
    /// Opens (or creates) the database in `dir`. Two nodes cannot share a directory.
    ///
    /// A directory that has held a database (its marker file says so) must still hold it,
    /// whole: a missing, truncated or unreadable database is an error naming the directory,
    /// never a silent empty start (which would forget jobs and, worse, the node's votes).
    pub fn open(dir: &Path) -> Result<Store> {
        let marked = dir.join(MARKER_FILE).exists();
        if marked {
            check_files(dir)?;
        }
        // sled panics on some damage (a deleted blob file) instead of returning an error.
        let opened = quietly(|| {
            sled::Config::new()
                // sled's default cache is 1 GiB: with products of tens of megabytes it kept them all.
                .cache_capacity(CACHE_BYTES)
                .path(dir)
                .open()
        });
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(damaged(dir, &format!("cannot open it (is another node using it?): {e}"))),
            Err(_) => return Err(damaged(dir, "the database panicked while opening")),
        };
        let facts = db.open_tree("facts").map_err(|e| damaged(dir, &e.to_string()))?;
        let created = db.get(CREATED_KEY).map_err(|e| damaged(dir, &e.to_string()))?.is_some();
        if marked && !created {
            return Err(damaged(dir, "the database is empty, but this directory held one"));
        }
        if !created {
            db.insert(CREATED_KEY, &[1]).and_then(|_| db.flush()).map_err(|e| damaged(dir, &e.to_string()))?;
        }
        if !marked {
            std::fs::write(dir.join(MARKER_FILE), MARKER_TEXT).map_err(|e| damaged(dir, &e.to_string()))?;
        }
        let opened_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let file_names = std::sync::Arc::new((opened_ns, std::sync::atomic::AtomicU64::new(0)));
        let store = Store { db, facts, dir: dir.to_path_buf(), records: dir.join(RECORDS_DIR), file_names };
        if !store.records.exists() {
            let created = std::fs::create_dir(&store.records).and_then(|()| std::fs::File::open(dir)?.sync_all());
            created.map_err(|e| damaged(dir, &e.to_string()))?;
        }
        match quietly(|| store.remove_unreferenced_files()) {
            Ok(Ok(())) => Ok(store),
            Ok(Err(e)) => Err(damaged(dir, &e.to_string())),
            Err(_) => Err(damaged(dir, "the database panicked while reading")),
        }
    }

    /// Record files no key points to: written before a crash that came before their pointer
    /// was, or left by a removal that crashed before deleting them.
    fn remove_unreferenced_files(&self) -> Result<()> {
        let mut referenced = std::collections::BTreeSet::new();
        for entry in self.facts.iter() {
            let (_, value) = entry.map_err(store_err)?;
            if let Some(file) = RecordFile::parse(&value) {
                referenced.insert(file.name);
            }
        }
        for entry in std::fs::read_dir(&self.records)? {
            let entry = entry?;
            if !referenced.contains(&entry.file_name().to_string_lossy().into_owned()) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// `--reset-data`: moves what `dir` holds aside (nothing is deleted) so the node starts
    /// empty on purpose. Returns where the old data went, if there was any.
    pub fn reset(dir: &Path) -> Result<Option<std::path::PathBuf>> {
        if !dir.exists() {
            return Ok(None);
        }
        let unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let aside = dir.with_file_name(format!(
            "{}.reset-{unix_s}",
            dir.file_name().map_or("data".into(), |n| n.to_string_lossy())
        ));
        std::fs::rename(dir, &aside)?;
        Ok(Some(aside))
    }

    /// Reads everything back (the election state and every fact), as the node does at start:
    /// damage that opening did not notice shows here, as an error rather than a panic.
    pub fn load(&self, dir: &Path) -> Result<(HardState, Checkpoint, u64)> {
        let loaded = quietly(|| {
            let hard_state = self.hard_state()?;
            let (checkpoint, checkpoint_version) = self.checkpoint()?;
            Ok::<_, Error>((hard_state, checkpoint, checkpoint_version))
        });
        match loaded {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(e)) => Err(damaged(dir, &e.to_string())),
            Err(_) => Err(damaged(dir, "the database panicked while reading")),
        }
    }

    /// Every fact on disk, merged, and the checkpoint version (facts ever applied here).
    pub fn checkpoint(&self) -> Result<(Checkpoint, u64)> {
        let mut checkpoint = Checkpoint::default();
        for entry in self.facts.iter() {
            let (_, value) = entry.map_err(store_err)?;
            let Some(bytes) = self.record_bytes_or_warn(&value) else { continue };
            for fact in decode(&bytes)? {
                checkpoint.apply(fact);
            }
        }
        let checkpoint_version = match self.db.get(VERSION_KEY).map_err(store_err)? {
            Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        };
        Ok((checkpoint, checkpoint_version))
    }

    /// Writes new facts and the new checkpoint version in one batch (the writer thread then
    /// flushes it to disk). Returns the record files that the batch no longer points to:
    /// delete them once the batch is on disk, not before.
    pub fn save_facts(
        &self,
        facts: &[Fact],
        finished: &[(String, Fact)],
        retired: &[String],
        checkpoint_version: u64,
    ) -> Result<Vec<PathBuf>> {
        let mut batch = sled::Batch::default();
        let mut unreferenced = Vec::new();
        for job in retired {
            for entry in self.facts.scan_prefix(job_prefix(job)) {
                let (key, value) = entry.map_err(store_err)?;
                unreferenced.extend(RecordFile::parse(&value).map(|f| self.records.join(f.name)));
                batch.remove(key);
            }
        }
        for (job, _) in finished {
            let job_key = [job.as_bytes(), JOB_KEY_SUFFIX].concat();
            for entry in self.facts.scan_prefix(job_prefix(job)) {
                let (key, value) = entry.map_err(store_err)?;
                if key != job_key {
                    unreferenced.extend(RecordFile::parse(&value).map(|f| self.records.join(f.name)));
                    batch.remove(key);
                }
            }
        }
        let mut values = Vec::new();
        // One record per job and write, not one key per fact: a batch of 64 products is one
        // sled insert (sled's cost is per key: each insert copies a tree node).
        let mut records: BTreeMap<&str, Vec<&Fact>> = BTreeMap::new();
        for fact in facts {
            match fact {
                Fact::Job { .. } | Fact::Finished { .. } | Fact::Retired { .. } => {
                    values.push((fact_key(fact), encode(&[fact])?))
                }
                Fact::Dispatched { job, .. } | Fact::Product { job, .. } => {
                    if !finished.iter().any(|(done, _)| done == job) {
                        records.entry(job).or_default().push(fact);
                    }
                }
            }
        }
        for (job, facts) in records {
            let mut key = job_prefix(job);
            key.push(b'r');
            key.extend_from_slice(&checkpoint_version.to_be_bytes());
            values.push((key, encode(&facts)?));
        }
        for (_, root) in finished {
            values.push((fact_key(root), encode(&[root])?));
        }
        let mut files = 0;
        for (key, bytes) in values {
            if let Some(old) = self.facts.get(&key).map_err(store_err)?.as_deref().and_then(RecordFile::parse) {
                unreferenced.push(self.records.join(old.name));
            }
            let value = if bytes.len() > INLINE_BYTES_MAX {
                files += 1;
                self.write_record_file(&key, &bytes)?
            } else {
                bytes
            };
            batch.insert(key, value);
        }
        if files > 0 {
            // The files' names must be on disk too before a pointer to them is.
            std::fs::File::open(&self.records)?.sync_all()?;
        }
        self.facts.apply_batch(batch).map_err(store_err)?;
        self.db.insert(VERSION_KEY, &checkpoint_version.to_be_bytes()).map_err(store_err)?;
        Ok(unreferenced)
    }

    /// Writes a record's bytes to a file of its own, on disk before this returns; the pointer
    /// to store in its place.
    fn write_record_file(&self, key: &[u8], bytes: &[u8]) -> Result<Vec<u8>> {
        use std::io::Write;
        // Never a name in use: a key written again (a replica offered the same root twice)
        // gets a new file, and the old one stays whole until the new pointer is durable.
        let (opened_ns, count) = &*self.file_names;
        let count = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("{key_hex}-{opened_ns:x}-{count}");
        let mut file = std::fs::File::create_new(self.records.join(&name))?;
        file.write_all(bytes)?;
        file.sync_data()?;
        Ok(RecordFile { name, len: bytes.len() as u64, crc32: crc32fast::hash(bytes) }.pointer())
    }

    /// A record's bytes: the value itself, or the file it points to, checked against the
    /// length and checksum in the pointer. A missing or damaged file is logged and its facts
    /// are left out (as sled drops a damaged blob): they only save work, which is redone.
    fn record_bytes_or_warn<'a>(&self, value: &'a [u8]) -> Option<std::borrow::Cow<'a, [u8]>> {
        let Some(file) = RecordFile::parse(value) else { return Some(std::borrow::Cow::Borrowed(value)) };
        let path = self.records.join(&file.name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() as u64 == file.len && crc32fast::hash(&bytes) == file.crc32 => bytes,
            Ok(_) => {
                log::warn!(
                    "checkpoint record {} is damaged: its facts are dropped, their work will be redone",
                    path.display()
                );
                return None;
            }
            Err(e) => {
                log::warn!(
                    "checkpoint record {}: {e}: its facts are dropped, their work will be redone",
                    path.display()
                );
                return None;
            }
        };
        Some(std::borrow::Cow::Owned(bytes))
    }

    /// The root product fact of finished job `job`, if this node wrote it. Reads a file of
    /// up to tens of megabytes: call it off the runtime threads.
    pub fn root_fact(&self, job: &str) -> Result<Option<Fact>> {
        let Some(record) = self.facts.get([job.as_bytes(), JOB_KEY_SUFFIX].concat()).map_err(store_err)? else {
            return Ok(None);
        };
        let Some(Fact::Job { n, .. }) = decode(&record)?.into_iter().next() else { return Ok(None) };
        let Some(root) = Plan::new(n).root() else { return Ok(None) };
        let Some(record) = self.facts.get(op_key(job, b'p', root)).map_err(store_err)? else { return Ok(None) };
        let Some(bytes) = self.record_bytes_or_warn(&record) else { return Ok(None) };
        Ok(decode(&bytes)?.into_iter().find(|fact| matches!(fact, Fact::Product { op, .. } if *op == root)))
    }

    /// The election state saved by [`Store::save_hard_state`], or the initial one.
    pub fn hard_state(&self) -> Result<HardState> {
        match self.db.get(HARD_STATE_KEY).map_err(store_err)? {
            None => Ok(HardState::default()),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| Error::Store(format!("corrupt election state: {e}")))
            }
        }
    }

    /// Writes the election state and waits for the disk (at start, before anything runs).
    pub fn save_hard_state_now(&self, state: &HardState) -> Result<()> {
        self.save_hard_state(state)?;
        self.db.flush().map(drop).map_err(store_err)
    }

    /// Writes the election state, without waiting for the disk (the writer flushes).
    fn save_hard_state(&self, state: &HardState) -> Result<()> {
        let bytes = serde_json::to_vec(state).map_err(|e| Error::Store(e.to_string()))?;
        self.db.insert(HARD_STATE_KEY, bytes).map_err(store_err)?;
        Ok(())
    }

    /// Starts the thread that writes the election state and checkpoint facts, so that the
    /// node's event loop never waits on the disk: it hands writes over and gets a [`Durable`]
    /// to await where a message or an acknowledgement depends on them. Writes queued together
    /// share one fsync.
    /// Starts the writer thread; `on_flush` hears how long each flush to disk took.
    pub fn start_writer(&self, on_flush: impl Fn(std::time::Duration) + Send + 'static) -> Writer {
        let (tx, rx) = std::sync::mpsc::channel::<WriteRequest>();
        let store = self.clone();
        let thread = std::thread::Builder::new()
            .name("fact-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut requests = vec![first];
                    requests.extend(rx.try_iter());
                    let mut unreferenced = Vec::new();
                    let written = requests
                        .iter()
                        .try_for_each(|r| match &r.what {
                            Write::HardState(state) => store.save_hard_state(state),
                            Write::Facts(w) => {
                                unreferenced.extend(store.save_facts(
                                    &w.facts,
                                    &w.finished,
                                    &w.retired,
                                    w.checkpoint_version,
                                )?);
                                Ok(())
                            }
                        })
                        .and_then(|()| {
                            let started = std::time::Instant::now();
                            let flushed = store.db.flush().map(drop).map_err(store_err);
                            on_flush(started.elapsed());
                            flushed
                        });
                    if let Err(e) = written {
                        // Nothing this node acknowledges may be lost: stop rather than go on.
                        // A coordinator's peers elect another; what it acknowledged is on a
                        // peer too.
                        let e = e.to_string();
                        match is_disk_full(&e) {
                            true => log::error!("{}; this node stops", disk_full(&store.dir, &e)),
                            false => log::error!("cannot write to the disk, stopping: {e}"),
                        }
                        std::process::exit(1);
                    }
                    for r in requests {
                        let _ = r.done.try_send(());
                    }
                    // Only now that nothing durable points to them (one left by a crash
                    // here goes at the next start), and after the waiters heard: a finished
                    // job drops dozens of files, and its client should not wait for that.
                    for file in unreferenced {
                        let _ = std::fs::remove_file(file);
                    }
                }
            })
            .expect("a thread can be started");
        Writer { tx: Some(tx), thread: Some(thread) }
    }
}

enum Write {
    HardState(HardState),
    Facts(FactsWrite),
}

/// One write of facts: new facts, jobs finished (their root, which replaces their other
/// records), jobs retired (all their records go), and the checkpoint version after it.
pub struct FactsWrite {
    pub facts: Vec<Fact>,
    pub finished: Vec<(String, Fact)>,
    pub retired: Vec<String>,
    pub checkpoint_version: u64,
}

struct WriteRequest {
    what: Write,
    done: async_std::channel::Sender<()>,
}

/// Queues writes for the writer thread.
pub struct Writer {
    tx: Option<std::sync::mpsc::Sender<WriteRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    /// Lets the writer finish what is queued and release the database.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    /// Queues facts (and the jobs they finish) with the new checkpoint version; see [`Store::save_facts`].
    pub fn write(&self, write: FactsWrite) -> Durable {
        self.queue(Write::Facts(write))
    }

    /// Queues the election state: the messages that depend on it (a vote, a higher epoch)
    /// may only leave once the returned [`Durable`] resolves.
    pub fn write_hard_state(&self, state: HardState) -> Durable {
        self.queue(Write::HardState(state))
    }

    fn queue(&self, what: Write) -> Durable {
        let (done, rx) = async_std::channel::bounded(1);
        if let Some(tx) = &self.tx {
            let _ = tx.send(WriteRequest { what, done });
        }
        Durable(rx)
    }
}

/// Resolves once a write is on disk.
pub struct Durable(async_std::channel::Receiver<()>);

impl Durable {
    /// Waits for the disk; false if the writer is gone (the process is stopping).
    pub async fn wait(self) -> bool {
        self.0.recv().await.is_ok()
    }
}

const JOB_KEY_SUFFIX: &[u8] = b"\0job";

/// What sled holds for a record kept in a file: a magic prefix (no frame or JSON record
/// starts with it), the file's length and CRC-32, and its name.
struct RecordFile {
    name: String,
    len: u64,
    crc32: u32,
}

impl RecordFile {
    const MAGIC: &'static [u8] = b"facto-record-file\0";

    fn pointer(&self) -> Vec<u8> {
        [Self::MAGIC, &self.len.to_be_bytes(), &self.crc32.to_be_bytes(), self.name.as_bytes()].concat()
    }

    fn parse(value: &[u8]) -> Option<RecordFile> {
        let rest = value.strip_prefix(Self::MAGIC)?;
        let len = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let crc32 = u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?);
        let name = std::str::from_utf8(rest.get(12..)?).ok()?;
        // A name is hex digits, a dash and digits: never a path.
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return None;
        }
        Some(RecordFile { name: name.to_string(), len, crc32 })
    }
}

fn job_prefix(job: &str) -> Vec<u8> {
    let mut key = job.as_bytes().to_vec();
    key.push(0);
    key
}

/// A record: the facts as a frame (products as raw bytes).
fn encode(facts: &[&Fact]) -> Result<Vec<u8>> {
    crate::checkpoint::encode_facts((), facts.iter().copied()).map_err(Error::Store)
}

/// A record written by [`encode`], or by an older version of facto: a JSON array of facts, or (before
/// records held several facts) one fact per key.
fn decode(value: &[u8]) -> Result<Vec<Fact>> {
    if let Ok(((), facts)) = crate::checkpoint::decode_facts::<()>(value) {
        return Ok(facts);
    }
    serde_json::from_slice(value)
        .or_else(|_| serde_json::from_slice::<Fact>(value).map(|f| vec![f]))
        .map_err(|e| Error::Store(format!("corrupt checkpoint record: {e}")))
}

/// The key of the retirement horizon ([`Fact::Retired`]) among the facts.
const RETIRED_KEY: &[u8] = b"\0retired";

/// Keys: `<job>\0job` (the job), `<job>\0r<checkpoint_version>` (a write's facts of that job),
/// `<job>\0p<level><index>` (the root product of a finished job), `<job>\0f` (the job
/// finished, its root on other nodes); big-endian numbers, so a job's keys sort together.
fn fact_key(fact: &Fact) -> Vec<u8> {
    match fact {
        Fact::Job { id, .. } => [id.as_bytes(), JOB_KEY_SUFFIX].concat(),
        Fact::Dispatched { job, op } => op_key(job, b'd', *op),
        Fact::Product { job, op, .. } => op_key(job, b'p', *op),
        Fact::Finished { job } => [&job_prefix(job)[..], b"f"].concat(),
        // No job id starts with a zero byte: the horizon has a key of its own.
        Fact::Retired { .. } => RETIRED_KEY.to_vec(),
    }
}

fn op_key(job: &str, kind: u8, op: OpId) -> Vec<u8> {
    let mut key = job_prefix(job);
    key.push(kind);
    key.extend_from_slice(&op.level.to_be_bytes());
    key.extend_from_slice(&op.index.to_be_bytes());
    key
}

fn store_err(e: sled::Error) -> Error {
    Error::Store(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bignum::Big;

    /// Opens a store again after the test dropped it. sled lets go of its file lock from a
    /// background thread a moment after the last handle is dropped, so an immediate reopen
    /// can fail with "could not acquire lock": wait for that, and only for that.
    fn reopen(dir: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir) {
                Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                opened => return opened.unwrap(),
            }
        }
    }

    #[test]
    fn hard_state_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("facto-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir).unwrap();
            assert_eq!(store.hard_state().unwrap(), HardState::default());
            let durable = store.start_writer(|_| ()).write_hard_state(HardState { epoch: 7, voted_for: Some(3) });
            assert!(async_std::task::block_on(durable.wait()));
        }
        let store = reopen(&dir);
        assert_eq!(store.hard_state().unwrap(), HardState { epoch: 7, voted_for: Some(3) });
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_is_one_record_per_job_and_old_one_fact_keys_still_load() {
        let dir = std::env::temp_dir().join(format!("facto-store-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let leaf = |i| Fact::Product { job: "1-1".into(), op: OpId { level: 5, index: i }, product: Big::from(i + 7) };
        let store = Store::open(&dir).unwrap();
        let mut facts = vec![Fact::Job { id: "1-1".into(), n: 100_000, request: None }];
        facts.extend((0..16).map(leaf));
        assert!(async_std::task::block_on(
            store
                .start_writer(|_| ())
                .write(FactsWrite { facts, finished: vec![], retired: vec![], checkpoint_version: 17 })
                .wait()
        ));
        assert_eq!(store.facts.len(), 2, "the job, and one record of 16 products");
        // A database from before records: one fact per key.
        store.facts.insert(b"1-1\0p-old", serde_json::to_vec(&leaf(16)).unwrap()).unwrap();
        let (checkpoint, _) = store.checkpoint().unwrap();
        assert_eq!(checkpoint.jobs["1-1"].products.len(), 17);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Products of 20,000 bits: a record of a few of them is larger than INLINE_BYTES_MAX.
    fn large_product(job: &str, index: u64) -> Fact {
        Fact::Product { job: job.into(), op: OpId { level: 5, index }, product: Big::factorial(2_000 + index) }
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(RECORDS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn large_records_live_in_checked_files_that_go_with_their_job() {
        let dir = std::env::temp_dir().join(format!("facto-store-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let job = Fact::Job { id: "1-1".into(), n: 100_000, request: None };
        let facts: Vec<Fact> = std::iter::once(job).chain((0..8).map(|i| large_product("1-1", i))).collect();
        {
            let store = Store::open(&dir).unwrap();
            assert!(async_std::task::block_on(
                store
                    .start_writer(|_| ())
                    .write(FactsWrite {
                        facts: facts.clone(),
                        finished: vec![],
                        retired: vec![],
                        checkpoint_version: 9
                    })
                    .wait()
            ));
            assert_eq!(files_in(&dir).len(), 1, "one record, in a file");
        }
        // A file written just before a crash, its pointer never saved: gone at the next start.
        std::fs::write(dir.join(RECORDS_DIR).join("00-1"), b"orphan").unwrap();
        let store = reopen(&dir);
        assert_eq!(files_in(&dir).len(), 1);
        let (checkpoint, _) = store.checkpoint().unwrap();
        assert_eq!(checkpoint.jobs["1-1"].products.len(), 8, "the products came back from the file");
        // Finishing the job drops the record and, once that is on disk, its file.
        let root = Fact::Product {
            job: "1-1".into(),
            op: Plan::new(100_000).root().unwrap(),
            product: Big::factorial(20_000),
        };
        let written = store.start_writer(|_| ()).write(FactsWrite {
            facts: vec![],
            finished: vec![("1-1".into(), root.clone())],
            retired: vec![],
            checkpoint_version: 10,
        });
        assert!(async_std::task::block_on(written.wait()));
        assert_eq!(files_in(&dir).len(), 1, "only the root's file is left");
        assert_eq!(store.root_fact("1-1").unwrap(), Some(root));
        // A damaged or missing file drops its facts (the job is no longer finished here), never
        // reads as other facts.
        let file = dir.join(RECORDS_DIR).join(&files_in(&dir)[0]);
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        let (_, checkpoint, _) = store.load(&dir).unwrap();
        assert!(!checkpoint.jobs["1-1"].finished, "a flipped bit is found");
        assert_eq!(store.root_fact("1-1").unwrap(), None);
        std::fs::remove_file(&file).unwrap();
        let (_, checkpoint, _) = store.load(&dir).unwrap();
        assert!(
            !checkpoint.jobs["1-1"].finished && checkpoint.jobs["1-1"].products.is_empty(),
            "a missing file is found"
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn facts_survive_reopening_and_a_finished_job_keeps_only_its_root() {
        let dir = std::env::temp_dir().join(format!("facto-store-facts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let leaf = |i| Fact::Product { job: "1-1".into(), op: OpId { level: 5, index: i }, product: Big::from(i + 7) };
        {
            let store = Store::open(&dir).unwrap();
            let facts = vec![Fact::Job { id: "1-1".into(), n: 20_000, request: None }, leaf(0), leaf(1)];
            let durable = store.start_writer(|_| ()).write(FactsWrite {
                facts,
                finished: vec![],
                retired: vec![],
                checkpoint_version: 3,
            });
            assert!(async_std::task::block_on(durable.wait()));
        }
        let store = reopen(&dir);
        let (checkpoint, checkpoint_version) = store.checkpoint().unwrap();
        assert_eq!(checkpoint_version, 3);
        assert_eq!(checkpoint.jobs["1-1"].products.len(), 2);
        let root = Plan::new(20_000).root().unwrap();
        let root_fact = Fact::Product { job: "1-1".into(), op: root, product: Big::from(99) };
        let durable = store.start_writer(|_| ()).write(FactsWrite {
            facts: vec![],
            finished: vec![("1-1".into(), root_fact.clone())],
            retired: vec![],
            checkpoint_version: 4,
        });
        assert!(async_std::task::block_on(durable.wait()));
        let (checkpoint, _) = store.checkpoint().unwrap();
        assert!(checkpoint.jobs["1-1"].finished);
        assert!(checkpoint.jobs["1-1"].products.is_empty(), "the root stays on disk");
        assert_eq!(store.facts.len(), 2, "the job and its root");
        assert_eq!(store.root_fact("1-1").unwrap(), Some(root_fact));
        assert_eq!(store.root_fact("1-2").unwrap(), None);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
