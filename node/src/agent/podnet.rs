//! The network of a container pod: a network namespace of its own, joined
//! by every container of the pod, with one routed veth to the host
//! (Calico's layout, no bridge):
//!
//! ```text
//!  host                                   pod netns skiff-<uid>
//!  sk<12 hex of uid> ──── veth ────────── eth0  10.42.X.Y/32
//!  route 10.42.X.Y/32 dev sk..            default via 169.254.1.1, a permanent
//!                                         neighbour: the host's end of the veth
//! ```
//!
//! `X.Y` are the pod's wasm-style address `127.42.X.Y` moved into
//! `10.42.0.0/16` (k3s' cluster CIDR), so one allocator serves both
//! runtimes and the address is unique on the host. The node reaches its
//! container pods (probes, Services on this node); traffic between nodes
//! and out of the cluster (routes to other nodes, masquerading) is not set
//! up yet.
//!
//! Done with `ip` (iproute2) rather than netlink by hand: a pod start
//! already costs a runc process, and the commands read as what they do.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The host side of the pod's veth (interface names are 15 bytes at most).
fn host_if(uid: &str) -> String {
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    format!("sk{hex}")
}

fn netns_name(uid: &str) -> String {
    format!("skiff-{uid}")
}

/// The address of a container pod whose allocated address is `wasm_ip`.
pub fn container_ip(wasm_ip: Ipv4Addr) -> Ipv4Addr {
    let [_, _, x, y] = wasm_ip.octets();
    Ipv4Addr::new(10, 42, x, y)
}

/// The namespace's path, as runc joins it.
pub fn netns_path(uid: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(netns_name(uid))
}

async fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running ip (apt-get install iproute2)")?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates the pod's namespace and its link to the host; what an earlier
/// run left for this pod goes first. Returns the namespace's path.
pub async fn setup(uid: &str, addr: Ipv4Addr) -> anyhow::Result<PathBuf> {
    // Only a pod of an agent that died mid-way has anything left; checking
    // costs two stats, tearing down three `ip` processes.
    if netns_path(uid).exists() || Path::new("/sys/class/net").join(host_if(uid)).exists() {
        teardown(uid, addr).await;
    }
    let ns = netns_name(uid);
    let host = host_if(uid);
    let cidr = format!("{addr}/32");
    let result = async {
        ip(&["netns", "add", &ns]).await?;
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])
        .await?;
        ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]).await?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"]).await?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ])
        .await?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ])
        .await?;
        // The gateway is the host's end of the veth, by a permanent
        // neighbour entry: no ARP to answer, and no host-wide setting
        // (proxy ARP would need forwarding on the interface).
        let mac = std::fs::read_to_string(format!("/sys/class/net/{host}/address"))
            .with_context(|| format!("reading the address of {host}"))?;
        ip(&[
            "-n",
            &ns,
            "neigh",
            "replace",
            "169.254.1.1",
            "lladdr",
            mac.trim(),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .await?;
        ip(&["link", "set", &host, "up"]).await?;
        ip(&["route", "replace", &cidr, "dev", &host, "scope", "link"]).await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        teardown(uid, addr).await;
        return Err(e.context(format!("setting up the network of pod {uid}")));
    }
    Ok(netns_path(uid))
}

/// Removes the pod's namespace, veth and route (each if present).
pub async fn teardown(uid: &str, addr: Ipv4Addr) {
    let host = host_if(uid);
    let _ = ip(&["route", "del", &format!("{addr}/32"), "dev", &host]).await;
    // Deleting one end of a veth deletes the pair.
    let _ = ip(&["link", "del", &host]).await;
    let _ = ip(&["netns", "del", &netns_name(uid)]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernels_limits() {
        let uid = "0b7e3f52-9c1d-4e8a-a3f0-5d6c7b8a9e01";
        let h = host_if(uid);
        assert!(h.len() <= 15, "{h}");
        assert_eq!(h, "sk0b7e3f529c1d");
        assert_eq!(
            container_ip(Ipv4Addr::new(127, 42, 7, 9)),
            Ipv4Addr::new(10, 42, 7, 9)
        );
        assert_eq!(
            netns_path(uid),
            PathBuf::from(format!("/var/run/netns/skiff-{uid}"))
        );
    }
}
