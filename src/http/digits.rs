//! `GET /jobs/<id>/digits`: a finished job's decimal digits as plain text, streamed from the
//! coordinator's copy without a JSON string around them: whole, from `?offset=N`, or the
//! `Range: bytes=A-B` a client resumes with. A follower passes the coordinator's answer on.

use super::answers::{self, Shared};
use super::client_api::{retry_later, unavailable};
use super::forwards::Forwards;
use super::respond::error;
use crate::api::JobInfo;
use crate::node::{Handle, JobsQuery, Routed};
use crate::transport::client::FORWARDED_HEADER;
use std::ops::Range;
use std::time::Duration;
use tide::{Request, Response, StatusCode};

/// How long a follower waits for the coordinator's digits: 10,000,000! has 65 MB of them.
const DIGITS_FORWARD_TIMEOUT_MS: u64 = 60_000;

/// Which digits a client asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wanted {
    /// From this offset to the end (no `offset`: all of them); answered 200.
    From(u64),
    /// `Range: bytes=A-B` (B inclusive, `None`: to the end); answered 206.
    Range(u64, Option<u64>),
    /// `Range: bytes=-N`: the last N; answered 206.
    Last(u64),
}

impl Wanted {
    /// The byte range of `total` digits asked for, or why none fits (416).
    fn within(self, total: usize) -> Result<Range<usize>, String> {
        let total64 = total as u64;
        match self {
            Wanted::From(start) if start <= total64 => Ok(start as usize..total),
            Wanted::From(start) => Err(format!("offset {start} is beyond the {total} digits")),
            Wanted::Range(start, _) if start >= total64 => Err(format!("range starts beyond the {total} digits")),
            Wanted::Range(start, end) => Ok(start as usize..end.map_or(total64, |e| (e + 1).min(total64)) as usize),
            Wanted::Last(0) => Err("an empty suffix range".into()),
            Wanted::Last(n) => Ok(total - n.min(total64) as usize..total),
        }
    }

    fn partial(self) -> bool {
        !matches!(self, Wanted::From(_))
    }
}

/// What the request asks for, from `?offset=N` or a single `Range: bytes=...` (never both).
fn wanted(offset: Option<&str>, range: Option<&str>) -> Result<Wanted, String> {
    match (offset, range) {
        (Some(_), Some(_)) => Err("give offset or a Range header, not both".into()),
        (Some(o), None) => {
            o.parse().map(Wanted::From).map_err(|_| format!("offset must be a non-negative integer, not '{o}'"))
        }
        (None, Some(r)) => parse_range(r).ok_or_else(|| format!("unsupported Range '{r}': use bytes=A-B, A- or -N")),
        (None, None) => Ok(Wanted::From(0)),
    }
}

fn parse_range(header: &str) -> Option<Wanted> {
    let (first, last) = header.trim().strip_prefix("bytes=")?.split_once('-')?;
    let number = |s: &str| -> Option<u64> { s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok())? };
    match (first.is_empty(), last.is_empty()) {
        (true, false) => Some(Wanted::Last(number(last)?)),
        (false, true) => Some(Wanted::Range(number(first)?, None)),
        (false, false) => {
            let (a, b) = (number(first)?, number(last)?);
            (a <= b).then_some(Wanted::Range(a, Some(b)))
        }
        (true, true) => None,
    }
}

pub(super) async fn get_digits(req: Request<Handle>) -> tide::Result {
    let id = req.param("id")?.to_string();
    let offset = req.url().query_pairs().find(|(k, _)| k == "offset").map(|(_, v)| v.to_string());
    let range = req.header("Range").map(|v| v.as_str().to_string());
    let wanted = match wanted(offset.as_deref(), range.as_deref()) {
        Ok(w) => w,
        Err(why) => return Ok(error(StatusCode::BadRequest, &why)),
    };
    let forwarded = req.header(FORWARDED_HEADER).is_some();
    let handle = req.state();
    Ok(match handle.jobs(JobsQuery::One { id: id.clone(), wait: false }, forwarded).await {
        Some(Routed::Here(mut jobs)) => match jobs.pop() {
            Some(JobInfo { result: Some(digits), .. }) => send(Shared::digits(digits), wanted).await,
            Some(job) => not_yet(&job),
            None => error(StatusCode::NotFound, &format!("no job {id}")),
        },
        Some(Routed::Gone(why)) => error(StatusCode::Gone, &why),
        Some(Routed::Unavailable(why)) => retry_later(&why),
        Some(Routed::Leader(addr)) => {
            // Clients asking at once share one copy from the coordinator.
            static FORWARDS: std::sync::LazyLock<Forwards> = std::sync::LazyLock::new(Default::default);
            let timeout = Duration::from_millis(DIGITS_FORWARD_TIMEOUT_MS);
            let path = format!("/jobs/{id}/digits");
            match FORWARDS.get(&handle.client, &addr, None, &path, timeout).await {
                Ok(all) => send(all, wanted).await,
                Err(e) => super::client_api::relay::<()>(StatusCode::Ok, Err(e)),
            }
        }
        _ => unavailable(),
    })
}

/// A job without digits in hand: not finished yet, or its digits are being converted again.
fn not_yet(job: &JobInfo) -> Response {
    let why = format!("job {} has no digits yet ({}, {:.0}% done)", job.id, job.state, job.progress * 100.0);
    let mut res = error(StatusCode::Conflict, &why);
    res.insert_header("Retry-After", "1");
    res
}

/// The digits asked for, paced like every large answer.
async fn send(all: Shared, wanted: Wanted) -> Response {
    let total = all.len();
    let range = match wanted.within(total) {
        Ok(range) => range,
        Err(why) => {
            let mut res = error(StatusCode::RequestedRangeNotSatisfiable, &why);
            res.insert_header("Content-Range", format!("bytes */{total}"));
            return res;
        }
    };
    let mut res = Response::new(if wanted.partial() { StatusCode::PartialContent } else { StatusCode::Ok });
    if wanted.partial() {
        res.insert_header("Content-Range", format!("bytes {}-{}/{total}", range.start, range.end - 1));
    }
    res.insert_header("Accept-Ranges", "bytes");
    res.set_body(answers::body(all.slice(range)).await);
    res.set_content_type(tide::http::mime::PLAIN);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_ranges_pick_the_digits_asked_for() {
        let pick = |offset: Option<&str>, range: Option<&str>| wanted(offset, range).and_then(|w| w.within(10));
        assert_eq!(pick(None, None), Ok(0..10));
        assert_eq!(pick(Some("4"), None), Ok(4..10));
        assert_eq!(pick(Some("10"), None), Ok(10..10), "resuming at the end reads nothing");
        assert_eq!(pick(None, Some("bytes=2-5")), Ok(2..6));
        assert_eq!(pick(None, Some("bytes=7-")), Ok(7..10));
        assert_eq!(pick(None, Some("bytes=3-99")), Ok(3..10));
        assert_eq!(pick(None, Some("bytes=-3")), Ok(7..10));
        assert_eq!(pick(None, Some("bytes=-30")), Ok(0..10));
        for (offset, range) in [
            (Some("11"), None),
            (Some("-1"), None),
            (Some("x"), None),
            (None, Some("bytes=10-")),
            (None, Some("bytes=5-2")),
            (None, Some("bytes=-0")),
            (None, Some("bytes=1-2,4-5")),
            (None, Some("items=1-2")),
            (Some("1"), Some("bytes=1-")),
        ] {
            assert!(pick(offset, range).is_err(), "{offset:?} {range:?}");
        }
    }
}
