//! Looking members' host names up off the runtime's threads, with a short-lived cache.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a looked-up address (or a failed lookup) is reused.
const RESOLVED_TTL_MS: u64 = 1_000;

/// Looks up members' host names off the runtime's threads. surf's h1 client resolves a
/// name with the blocking system resolver on the task that sends: with a member whose name
/// no longer resolves (a container cut off from the network), each lookup would hold one of
/// the two runtime threads for seconds, heartbeats would stop, and the other members would
/// elect a new coordinator every few seconds. Calls are handed an address surf need not look up.
/// When a name was looked up, and to what (or why not).
type Resolved = (Instant, Result<SocketAddr, String>);

#[derive(Default)]
pub struct Resolver {
    cache: Mutex<HashMap<String, Resolved>>,
}

impl Resolver {
    pub async fn resolve(&self, addr: &str) -> Result<SocketAddr, String> {
        if let Ok(ip) = addr.parse::<SocketAddr>() {
            return Ok(ip);
        }
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(addr).cloned();
        if let Some((at, resolved)) = cached {
            if at.elapsed() < Duration::from_millis(RESOLVED_TTL_MS) {
                return resolved;
            }
        }
        // async-std runs the system resolver on its blocking pool.
        let resolved = async_std::net::ToSocketAddrs::to_socket_addrs(addr)
            .await
            .map_err(|e| format!("cannot resolve {addr}: {e}"))
            .and_then(|mut addrs| addrs.next().ok_or_else(|| format!("{addr} resolves to no address")));
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr.to_string(), (Instant::now(), resolved.clone()));
        resolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_looked_up_once_and_reused() {
        let resolver = Resolver::default();
        for _ in 0..3 {
            let addr = async_std::task::block_on(resolver.resolve("localhost:7000"));
            assert_eq!(addr.map(|a| a.port()), Ok(7000));
        }
        assert_eq!(resolver.cache.lock().unwrap().len(), 1);
        assert!(async_std::task::block_on(resolver.resolve("127.0.0.1:7000")).is_ok());
        assert_eq!(resolver.cache.lock().unwrap().len(), 1, "an address needs no lookup");
    }
}
