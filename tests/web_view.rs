//! The web view in a real browser: headless Chromium driven through chromedriver's WebDriver
//! API, asserting on the rendered DOM (not the HTML source). Skipped with a message when no
//! chromedriver is installed; `.ci/run` installs Debian's `chromium` and `chromium-driver`.
//! Saves a screenshot to `target/artifacts/web-view.png`.

mod common;

use common::{factorial_decimal, wait_until, Cluster};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const AGREE: Duration = Duration::from_secs(30);
/// The key WebDriver names elements by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

fn installed(paths: &[&str]) -> Option<String> {
    paths.iter().find(|p| std::path::Path::new(p).exists()).map(|p| p.to_string())
}

impl Browser {
    /// A headless Chromium at 1280x800, or `None` when none is installed.
    fn start() -> Option<Browser> {
        let driver_path = installed(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])?;
        let binary = installed(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"])?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr = format!("127.0.0.1:{port}");
        wait_until(Duration::from_secs(20), || call(&addr, "GET", "/status", None))?;
        let args =
            ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"];
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"binary": binary, "args": args}}}});
        let session = call(&addr, "POST", "/session", Some(caps)).expect("a browser session");
        let session = session["sessionId"].as_str().expect("a session id").to_string();
        Some(Browser { driver, addr, session })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        call(&self.addr, method, &path, body).unwrap_or_else(|| panic!("WebDriver {method} {path} failed"))
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The elements matching a CSS selector, by WebDriver id (for the page's static parts:
    /// the drawn parts are redrawn twice a second, so they are read with [`Browser::read`]).
    fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.call("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
        found
            .as_array()
            .map_or_else(Vec::new, |a| a.iter().filter_map(|e| e[ELEMENT].as_str().map(String::from)).collect())
    }

    /// Runs `script` in the page and returns its value: reads the rendered DOM in one step.
    fn read(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": [] })))
    }

    /// The text of the first element matching `css` (empty when none).
    fn text_of(&self, css: &str) -> String {
        let script = format!("const e = document.querySelector({}); return e ? e.textContent : '';", json!(css));
        self.read(&script).as_str().unwrap_or_default().to_string()
    }

    fn count(&self, css: &str) -> u64 {
        self.read(&format!("return document.querySelectorAll({}).length;", json!(css))).as_u64().unwrap_or(0)
    }

    fn type_into(&self, css: &str, text: &str) {
        let field = self.find_all(css).pop().expect("the field");
        self.call("POST", &format!("/element/{field}/clear"), Some(json!({})));
        self.call("POST", &format!("/element/{field}/value"), Some(json!({ "text": text })));
    }

    fn click(&self, css: &str) {
        let button = self.find_all(css).pop().expect("the button");
        self.call("POST", &format!("/element/{button}/click"), Some(json!({})));
    }

    fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default()).expect("a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The ids of the member cards drawn as coordinator.
    fn coordinators(&self) -> Vec<String> {
        let ids = self.read("return [...document.querySelectorAll('.member.coordinator')].map(e => e.dataset.id);");
        ids.as_array().map_or_else(Vec::new, |a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = call(&self.addr, "DELETE", &format!("/session/{}", self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver call; its `value`. (chromedriver says `Connection: close` but keeps the
/// connection open: the answer is read by its `Content-Length`.)
fn call(addr: &str, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
    use std::io::{BufRead, BufReader, Read, Write};
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let (mut status, mut length) = (0u16, 0usize);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(code) = line.strip_prefix("HTTP/1.1 ") {
            status = code.split_whitespace().next()?.parse().ok()?;
        } else if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut answer = vec![0; length];
    reader.read_exact(&mut answer).ok()?;
    let answer: Value = serde_json::from_slice(&answer).ok()?;
    (status == 200).then(|| answer["value"].clone())
}

/// A browser, or `None` (a skip, said on stderr) when none is installed outside CI.
fn browser_or_skip() -> Option<Browser> {
    let browser = Browser::start();
    if browser.is_none() {
        // CI installs them (.ci/run): there a missing browser is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "CI needs chromium and chromedriver");
        eprintln!("SKIPPED: no chromium/chromedriver installed (apt-get install chromium chromium-driver)");
    }
    browser
}

#[test]
fn the_web_view_shows_the_cluster_runs_a_job_and_follows_a_failover() {
    let _alone = common::one_cluster_at_a_time();
    let Some(browser) = browser_or_skip() else { return };
    let mut cluster = Cluster::start(6, "raft", &[]);
    let leader = cluster.wait_for_agreement(AGREE);
    let viewer = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    browser.goto(&format!("http://{}/", cluster.addr(viewer)));

    let drawn = wait_until(Duration::from_secs(10), || {
        (browser.count(".member") == 6 && browser.coordinators() == [leader.to_string()]).then_some(())
    });
    assert!(drawn.is_some(), "six members, exactly one coordinator (node {leader}): {:?}", browser.coordinators());

    browser.type_into("#n", "25");
    browser.click("#submit-form button");
    let digits = wait_until(Duration::from_secs(30), || {
        let text = browser.text_of("#result-digits");
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(digits.as_deref(), Some(factorial_decimal(25).as_str()), "the page shows 25!");
    let done = wait_until(Duration::from_secs(10), || {
        (browser.count(".job[data-state=\"done\"][data-n=\"25\"]") == 1).then_some(())
    });
    assert!(done.is_some(), "the job is listed as done");

    // A result too large for the job's JSON: its ends come from the digits stream with a
    // Range, and the download link is the stream itself.
    browser.type_into("#n", "300000");
    browser.click("#submit-form button");
    let expected = facto::bignum::Big::factorial(300_000).to_decimal();
    let title = format!("300000! = ({} digits)", expected.len());
    let shown = wait_until(Duration::from_secs(60), || (browser.text_of("#result-title") == title).then_some(()));
    assert!(shown.is_some(), "{title}: {}", browser.text_of("#result-title"));
    let href = browser.read("return document.getElementById('result-download').getAttribute('href');");
    let href = href.as_str().unwrap_or_default();
    assert!(href.starts_with("/jobs/") && href.ends_with("/digits"), "the download link is the stream: {href}");
    let ends = format!("{}…{}", &expected[..25], &expected[expected.len() - 25..]);
    let shown = wait_until(Duration::from_secs(10), || {
        let text = browser.text_of("#result-digits");
        (text == ends).then_some(text)
    });
    assert!(shown.is_some(), "the first and last 25 digits: {}", browser.text_of("#result-digits"));

    browser.type_into("#n", "-3");
    browser.click("#submit-form button");
    let refused = wait_until(Duration::from_secs(5), || {
        let text = browser.text_of("#submit-error");
        (!text.is_empty()).then_some(text)
    });
    let refused = refused.expect("a bad n is refused with a reason in the page");
    assert_eq!(
        refused, "'-3' is not a non-negative integer (digits only, no sign or leading zero)",
        "facto submit's reason"
    );
    browser.type_into("#n", "99999999999");
    browser.click("#submit-form button");
    let too_big = wait_until(Duration::from_secs(5), || {
        let text = browser.text_of("#submit-error");
        text.contains("above this cluster's --max-n").then_some(text)
    });
    assert!(too_big.is_some(), "the cluster's bound, in its words: {:?}", browser.text_of("#submit-error"));
    // Markup in what the page shows stays text.
    browser.type_into("#n", "<b id=injected>x</b>");
    browser.click("#submit-form button");
    let echoed = wait_until(Duration::from_secs(5), || {
        let text = browser.text_of("#submit-error");
        text.contains("<b id=injected>").then_some(text)
    });
    assert!(echoed.is_some(), "the reason, with the input as text: {:?}", browser.text_of("#submit-error"));
    assert_eq!(browser.count("#injected"), 0, "no element was made from the input");
    browser.screenshot(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts/web-view.png"));

    // The message diagram: arrows between the lanes, and after a crash the election's.
    let arrows = wait_until(Duration::from_secs(10), || (browser.count("#diagram line.arrow") > 0).then_some(()));
    assert!(arrows.is_some(), "the diagram draws the members' messages");
    assert!(browser.text_of("#diagram-legend").contains("vote_request"), "the legend speaks raft");
    browser.click("#diagram-pause");
    browser.click("#diagram-back");
    let scroll_max = browser.read("return Number(document.getElementById('diagram-scroll').max);");
    // Two jobs' batches and rounds make more events than the diagram shows at once.
    if scroll_max.as_u64() > Some(0) {
        assert_eq!(browser.text_of("#diagram-position"), "1 step back", "stepping back one event");
    }
    browser.click("#diagram-newest");
    assert_eq!(browser.text_of("#diagram-position"), "newest");
    browser.click("#diagram-pause");
    let epoch = cluster.status(leader).and_then(|s| s["epoch"].as_u64()).expect("the leader's epoch");

    cluster.signal(leader, libc::SIGKILL);
    let new = cluster.wait_for_agreement(AGREE);
    let agreed = Instant::now();
    let shown = wait_until(Duration::from_secs(5), || (browser.coordinators() == [new.to_string()]).then(Instant::now));
    let shown = shown.unwrap_or_else(|| panic!("the page never showed node {new}: {:?}", browser.coordinators()));
    let took = shown.duration_since(agreed);
    assert!(took <= Duration::from_secs(2), "the page showed the new coordinator {took:?} after the members agreed");
    let votes = format!(
        "return [...document.querySelectorAll('#diagram line.arrow[data-kind=\"vote_request\"]')]
            .some(a => Number(a.dataset.epoch) > {epoch});"
    );
    let election = wait_until(Duration::from_secs(5), || (browser.read(&votes) == json!(true)).then_some(()));
    assert!(election.is_some(), "the diagram shows vote requests above epoch {epoch}");
    browser
        .screenshot(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts/web-view-election.png"));

    // The member the page came from dies: the page says so and offers the others' views.
    cluster.signal(viewer, libc::SIGKILL);
    let banner = wait_until(Duration::from_secs(5), || {
        let shown = browser.read("const b = document.getElementById('banner'); return !b.hidden;").as_bool()?;
        shown.then(|| (browser.text_of("#banner"), browser.count("#banner a")))
    });
    let (text, links) = banner.expect("a banner when the page's member is down");
    assert!(text.contains("not answering"), "{text}");
    assert_eq!(links, 5, "links to the other members' views: {text}");
}

const KEY: &str = "web-view-test-key";

/// The fault buttons on a member card: `kind` on node `id`.
fn fault_button(id: u32, kind: &str) -> String {
    format!(".member[data-id=\"{id}\"] button[data-fault=\"{kind}\"]")
}

#[test]
fn the_fault_buttons_crash_the_coordinator_only_with_the_key_and_the_diagram_shows_the_election() {
    let _alone = common::one_cluster_at_a_time();
    let Some(browser) = browser_or_skip() else { return };
    let mut cluster = Cluster::start(5, "bully", &["--cluster-key", KEY]);
    let leader = cluster.wait_for_agreement(AGREE);
    let epoch = cluster.status(leader).and_then(|s| s["epoch"].as_u64()).expect("the leader's epoch");
    let viewer = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    let follower = cluster.ids().into_iter().find(|&id| id != leader && id != viewer).unwrap();
    browser.goto(&format!("http://{}/", cluster.addr(viewer)));
    let drawn = wait_until(Duration::from_secs(10), || (browser.count(".member .faults button") == 15).then_some(()));
    assert!(drawn.is_some(), "three fault buttons on each of five cards");

    // Without the key every button is disabled and says why; the relay refuses a call anyway.
    assert_eq!(browser.count(".member .faults button:disabled"), 15, "no key: every fault button is disabled");
    let why = browser.read(&format!("return document.querySelector({}).title;", json!(fault_button(leader, "crash"))));
    assert!(why.as_str().unwrap_or_default().contains("cluster key"), "a disabled button says why: {why}");
    assert!(browser.text_of("#fault-status").contains("disabled"), "{}", browser.text_of("#fault-status"));
    browser.click(&fault_button(leader, "crash"));
    let path = format!("/cluster/faults/members/{leader}/crash");
    let (status, _) = common::http(&cluster.addr(viewer), "POST", &path, Some(b"{}")).expect("an answer");
    assert_eq!(status, 401, "the relay without the key");
    assert!(cluster.status(leader).is_some(), "the coordinator still answers");

    // A wrong key: the member's refusal is shown, and the buttons are disabled again.
    browser.type_into("#fault-key", "not-the-key");
    browser.click("#fault-form button[type=submit]");
    assert_eq!(browser.count(".member .faults button:disabled"), 0, "a key enables every button (all are up)");
    browser.click(&fault_button(follower, "stall"));
    let refused = wait_until(Duration::from_secs(5), || {
        let text = browser.text_of("#fault-status");
        text.contains("wrong cluster key").then_some(text)
    });
    assert!(refused.is_some(), "the refusal, in words: {:?}", browser.text_of("#fault-status"));
    assert_eq!(browser.count(".member .faults button:disabled"), 15, "a refused key is forgotten");
    assert_eq!(cluster.wait_for_agreement(AGREE), leader, "nothing happened");

    // The key, then crash on the coordinator's card: a new coordinator, shown within 2 s of
    // agreement, and the election's messages in the diagram.
    browser.type_into("#fault-key", KEY);
    browser.click("#fault-form button[type=submit]");
    browser.click(&fault_button(leader, "crash"));
    assert!(cluster.wait_for_exit(leader, Duration::from_secs(10)).is_some(), "the coordinator crashed");
    let new = cluster.wait_for_agreement(AGREE);
    let agreed = Instant::now();
    let shown = wait_until(Duration::from_secs(5), || (browser.coordinators() == [new.to_string()]).then(Instant::now));
    let shown = shown.unwrap_or_else(|| panic!("the page never showed node {new}: {:?}", browser.coordinators()));
    assert!(shown.duration_since(agreed) <= Duration::from_secs(2), "shown {:?} after agreement", shown - agreed);
    let election = format!(
        "return [...document.querySelectorAll('#diagram line.arrow')]
            .some(a => ['election', 'coordinator'].includes(a.dataset.kind) && Number(a.dataset.epoch) > {epoch});"
    );
    let drawn = wait_until(Duration::from_secs(5), || (browser.read(&election) == json!(true)).then_some(()));
    assert!(drawn.is_some(), "the diagram shows bully's election above epoch {epoch}");
    let down = wait_until(Duration::from_secs(5), || {
        let disabled =
            browser.read(&format!("return document.querySelector({}).disabled;", json!(fault_button(leader, "crash"))));
        (disabled == json!(true)).then_some(())
    });
    assert!(down.is_some(), "the crashed member's buttons are disabled");

    // Partition a follower through the page, then heal every member from it.
    browser.click(&fault_button(follower, "partition"));
    let partitioned = wait_until(Duration::from_secs(5), || {
        browser.text_of("#fault-status").contains(&format!("node {follower}: partition")).then_some(())
    });
    assert!(partitioned.is_some(), "{}", browser.text_of("#fault-status"));
    browser.click("#heal-all");
    let healed = wait_until(Duration::from_secs(5), || {
        let text = browser.text_of("#fault-status");
        text.contains("healed").then_some(text)
    });
    let healed = healed.expect("heal all answers");
    assert!(healed.contains(&format!("node {leader}")), "the crashed member did not answer: {healed}");
    assert!(!healed.contains(&format!("node {follower}")), "the partitioned member was healed: {healed}");
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts/web-view-faults.png");
    browser.screenshot(&docs);
}
