//! The addresses the service proxy listens on: every cluster IP in use is
//! put on the loopback interface, so that the host takes connections to it
//! as its own — from the host itself and from container pods, whose default
//! route leads to the host (kube-proxy's IPVS mode does the same with its
//! `kube-ipvs0` dummy interface; loopback needs no kernel module, and
//! `scope host` keeps the kernel from choosing these addresses as the
//! source of anything it sends).
//!
//! The addresses carry the label `lo:skiffsvc<X>`, `X` being the agent's pod
//! address block, which no other agent on the host holds: what an earlier
//! run left is flushed when the agent starts, and everything when it stops.
//! Addresses are changed with one `ip -batch` per sync.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Stdio;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;

pub struct ServiceAddrs {
    label: String,
    held: BTreeSet<Ipv4Addr>,
}

impl ServiceAddrs {
    pub fn label_for(block: u8) -> String {
        format!("lo:skiffsvc{block}")
    }

    /// Takes the label, dropping the addresses an earlier run left with it.
    pub async fn take(label: String) -> anyhow::Result<ServiceAddrs> {
        batch(&format!("addr flush dev lo label {label}\n"), false)
            .await
            .with_context(|| format!("clearing the service addresses labelled {label}"))?;
        Ok(ServiceAddrs {
            label,
            held: BTreeSet::new(),
        })
    }

    /// Makes the label hold exactly `want`.
    pub async fn sync(&mut self, want: &[Ipv4Addr]) -> anyhow::Result<()> {
        let want: BTreeSet<Ipv4Addr> = want.iter().copied().collect();
        if want == self.held {
            return Ok(());
        }
        let mut script = String::new();
        for ip in self.held.difference(&want) {
            script.push_str(&format!("addr del {ip}/32 dev lo\n"));
        }
        for ip in want.difference(&self.held) {
            script.push_str(&format!(
                "addr replace {ip}/32 dev lo scope host label {}\n",
                self.label
            ));
        }
        let result = batch(&script, true).await;
        // Whatever failed is retried at the next sync: read back what is held.
        self.held = self.read().await.unwrap_or_default();
        result.with_context(|| format!("setting the service addresses ({})", self.label))
    }

    async fn read(&self) -> anyhow::Result<BTreeSet<Ipv4Addr>> {
        let out = tokio::process::Command::new("ip")
            .args([
                "-o",
                "-4",
                "addr",
                "show",
                "dev",
                "lo",
                "label",
                &self.label,
            ])
            .stdin(Stdio::null())
            .output()
            .await?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.find(|x| *x == "inet")?;
                w.next()?.split('/').next()?.parse().ok()
            })
            .collect())
    }

    /// Removes every address of the label.
    pub async fn remove(self) {
        if let Err(e) = batch(&format!("addr flush dev lo label {}\n", self.label), false).await {
            tracing::warn!("removing the service addresses ({}): {e:#}", self.label);
        }
    }
}

/// Runs `ip -batch -` (with `-force`, to go on after an error) on `script`.
async fn batch(script: &str, force: bool) -> anyhow::Result<()> {
    if script.is_empty() {
        return Ok(());
    }
    let mut cmd = tokio::process::Command::new("ip");
    if force {
        cmd.arg("-force");
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running ip (apt-get install iproute2)")?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(script.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        anyhow::bail!("ip: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
