//! Pod IPs. Wasm pods share the host's network stack, so each pod gets its
//! own loopback address, `127.42.X.Y`: Linux routes all of 127/8 to `lo`, so
//! binding one needs no setup and no privilege. `X` is the node's block
//! (derived from its name, or configured), `Y` is allocated per pod and
//! persisted in the agent's data directory, so an agent restart gives every
//! pod its address back.
//!
//! These addresses are reachable **on the node itself only**: traffic to a
//! pod from another node (Services across nodes) is a later piece.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Host numbers handed to pods: `.0` and `.255` look like network and
/// broadcast addresses to some software, `.1` is kept for the node itself.
const FIRST: u8 = 2;
const LAST: u8 = 254;

/// The block (`X` of `127.42.X.Y`) of a node without a configured one: a
/// stable hash of its name into 1..=250. Two nodes may share a block; as
/// the addresses are node-local, that only makes them look alike.
pub fn block_for(node_name: &str) -> u8 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in node_name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % 250) as u8 + 1
}

/// Agents on one host (a demo's second node, the tests) must not share a
/// block: each holds a listener on `127.42.X.1:CLAIM_PORT` for as long as it
/// runs, and one that finds its block held moves to the next free one.
const CLAIM_PORT: u16 = 10249;

/// Claims a block for this agent, starting at `preferred`: the block and
/// the listener that holds it (drop it to give the block up). With
/// `configured`, the block was asked for and another is never taken.
pub fn claim_block(preferred: u8, configured: bool) -> anyhow::Result<(u8, TcpListener)> {
    let mut block = preferred;
    for _ in 0..250 {
        match TcpListener::bind((Ipv4Addr::new(127, 42, block, 1), CLAIM_PORT)) {
            Ok(l) => return Ok((block, l)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && !configured => {
                block = block % 250 + 1;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "claiming the pod address block 127.42.{block}.0/24 \
                     (127.42.{block}.1:{CLAIM_PORT}): {e}{}",
                    if e.kind() == io::ErrorKind::AddrInUse {
                        "; another agent on this host uses it: \
                         choose another SKIFF_AGENT_POD_IP_BLOCK"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    anyhow::bail!("every pod address block 127.42.1-250.0/24 is held by another agent on this host")
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no pod address left in 127.42.{0}.{FIRST}-{LAST}")]
    Exhausted(u8),
    #[error("saving pod addresses to {path}: {source}")]
    Save {
        path: String,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    block: u8,
    /// Where the next search for a free host number starts, so that a
    /// released address is not handed out again at once.
    next: u8,
    /// Pod uid → host number.
    pods: BTreeMap<String, u8>,
}

/// The node's pod addresses, saved to a file on every change.
#[derive(Debug)]
pub struct PodIps {
    path: PathBuf,
    state: State,
}

impl PodIps {
    /// Loads the saved allocations (none if the file is missing or was
    /// written for another block). A new file is written at once, so that
    /// it always names the block the agent holds (its service addresses'
    /// label too, see `proxy`).
    pub fn open(path: PathBuf, block: u8) -> PodIps {
        let saved = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<State>(&b).ok())
            .filter(|s| s.block == block);
        let fresh = saved.is_none();
        let state = saved.unwrap_or(State {
            block,
            next: FIRST,
            pods: BTreeMap::new(),
        });
        let ips = PodIps { path, state };
        if fresh && let Err(e) = ips.save() {
            tracing::warn!("{e}");
        }
        ips
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 42, self.state.block, host)
    }

    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.state.pods.get(uid).map(|&h| self.addr(h))
    }

    /// The pod's address, allocating one if it has none.
    pub fn allocate(&mut self, uid: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.get(uid) {
            return Ok(ip);
        }
        let used: std::collections::HashSet<u8> = self.state.pods.values().copied().collect();
        let span = u16::from(LAST - FIRST) + 1;
        let start = u16::from(self.state.next.clamp(FIRST, LAST) - FIRST);
        let host = (0..span)
            .map(|i| FIRST + ((start + i) % span) as u8)
            .find(|h| !used.contains(h))
            .ok_or(IpamError::Exhausted(self.state.block))?;
        self.state.pods.insert(uid.to_string(), host);
        self.state.next = if host == LAST { FIRST } else { host + 1 };
        self.save()?;
        Ok(self.addr(host))
    }

    pub fn release(&mut self, uid: &str) {
        if self.state.pods.remove(uid).is_some()
            && let Err(e) = self.save()
        {
            tracing::warn!("{e}");
        }
    }

    /// Forgets every pod `keep` says no to (pods deleted while the agent
    /// was down); returns them with their addresses.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) -> Vec<(String, Ipv4Addr)> {
        let gone: Vec<(String, Ipv4Addr)> = self
            .state
            .pods
            .iter()
            .filter(|(uid, _)| !keep(uid))
            .map(|(uid, &h)| (uid.clone(), self.addr(h)))
            .collect();
        for (uid, _) in &gone {
            self.state.pods.remove(uid);
        }
        if !gone.is_empty()
            && let Err(e) = self.save()
        {
            tracing::warn!("{e}");
        }
        gone
    }

    /// Written to a temporary file and renamed, so a crash leaves the old
    /// or the new table, never half of one.
    fn save(&self) -> Result<(), IpamError> {
        let err = |source| IpamError::Save {
            path: self.path.display().to_string(),
            source,
        };
        let tmp = self.path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(io::Error::other);
        std::fs::write(&tmp, bytes.map_err(err)?).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_stable_and_in_range() {
        assert_eq!(block_for("node-a"), block_for("node-a"));
        for name in ["", "a", "node-a", "node-b", "worker-17"] {
            assert!((1..=250).contains(&block_for(name)));
        }
    }

    #[test]
    fn two_agents_never_share_a_block() {
        // 241 is what no test node name hashes to; the claim is real, on
        // this host's loopback.
        let (a, _held) = claim_block(241, false).unwrap();
        let (b, _held_too) = claim_block(a, false).unwrap();
        assert_ne!(a, b);
        let err = claim_block(a, true).unwrap_err().to_string();
        assert!(err.contains("another agent on this host"), "{err}");
    }

    #[test]
    fn addresses_survive_a_restart_and_are_not_reused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ips.json");
        let mut ips = PodIps::open(path.clone(), 7);
        let a = ips.allocate("a").unwrap();
        let b = ips.allocate("b").unwrap();
        assert_eq!(a, Ipv4Addr::new(127, 42, 7, 2));
        assert_eq!(b, Ipv4Addr::new(127, 42, 7, 3));
        assert_eq!(ips.allocate("a").unwrap(), a);
        ips.release("a");
        assert_eq!(ips.allocate("c").unwrap(), Ipv4Addr::new(127, 42, 7, 4));
        let mut again = PodIps::open(path.clone(), 7);
        assert_eq!(again.get("b"), Some(b));
        assert_eq!(again.get("a"), None);
        again.retain(|uid| uid == "c");
        assert_eq!(PodIps::open(path.clone(), 7).get("b"), None);
        // Another block starts afresh.
        assert_eq!(PodIps::open(path, 8).get("c"), None);
    }

    #[test]
    fn the_block_runs_out_after_253_pods() {
        let dir = tempfile::tempdir().unwrap();
        let mut ips = PodIps::open(dir.path().join("ips.json"), 1);
        for i in 0..253 {
            ips.allocate(&format!("p{i}")).unwrap();
        }
        assert!(matches!(
            ips.allocate("one-more"),
            Err(IpamError::Exhausted(1))
        ));
        ips.release("p100");
        assert_eq!(
            ips.allocate("one-more").unwrap(),
            Ipv4Addr::new(127, 42, 1, 102)
        );
    }
}
