//! Debian's real `etcdctl` (3.4) against a real `skiff server` process.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Member, etcdctl, etcdctl_ok};

const READY: Duration = Duration::from_secs(30);

/// The mod_revision of `key`, to check that a restart or a restore keeps
/// revisions (the server's Kubernetes side writes too, so the store's
/// current revision keeps moving).
fn mod_revision(ep: &str, key: &str) -> i64 {
    let out = etcdctl_ok(ep, &["get", key, "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["kvs"][0]["mod_revision"].as_i64().unwrap()
}

fn revision(ep: &str) -> i64 {
    let out = etcdctl_ok(ep, &["get", "x-no-such-key", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_kv_txn_watch_lease_member_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Member::new(tmp.path(), "solo");
    m.start();
    m.wait_ready(READY).await;
    let ep = m.endpoint();
    let ep = ep.as_str();

    // put / get / prefix / revisions
    assert_eq!(etcdctl_ok(ep, &["put", "/app/a", "1"]).trim(), "OK");
    let rev_a1 = mod_revision(ep, "/app/a");
    assert_eq!(etcdctl_ok(ep, &["put", "/app/a", "2"]).trim(), "OK");
    etcdctl_ok(ep, &["put", "/app/b", "3"]);
    etcdctl_ok(ep, &["put", "/other", "4"]);
    assert_eq!(etcdctl_ok(ep, &["get", "/app/a"]), "/app/a\n2\n");
    assert_eq!(
        etcdctl_ok(ep, &["get", "--prefix", "/app/"]),
        "/app/a\n2\n/app/b\n3\n"
    );
    assert_eq!(
        etcdctl_ok(ep, &["get", "--prefix", "/app/", "--keys-only"]),
        "/app/a\n\n/app/b\n\n"
    );
    assert_eq!(
        etcdctl_ok(ep, &["get", "/app/a", &format!("--rev={rev_a1}")]),
        "/app/a\n1\n"
    );
    let all: serde_json::Value = serde_json::from_str(&etcdctl_ok(
        ep,
        &["get", "--prefix", "/app/", "--limit=1", "-w", "json"],
    ))
    .unwrap();
    // (The API server keeps its objects under /registry/ in the same store.)
    assert_eq!(all["count"], 2);
    assert_eq!(all["more"], true);
    assert_eq!(
        etcdctl_ok(ep, &["get", "/", "--prefix", "--limit=1"]),
        "/app/a\n2\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&etcdctl_ok(ep, &["get", "/app/a", "-w", "json"])).unwrap();
    let kv = &json["kvs"][0];
    assert_eq!(kv["version"], 2);
    assert_eq!(kv["create_revision"].as_i64().unwrap(), rev_a1);

    // del
    assert_eq!(etcdctl_ok(ep, &["del", "/other"]).trim(), "1");
    assert_eq!(etcdctl_ok(ep, &["del", "/other"]).trim(), "0");
    assert_eq!(etcdctl_ok(ep, &["get", "/other"]), "");

    // txn, both branches
    let txn = "value(\"/app/a\") = \"2\"\n\nput /app/a 20\n\nput /app/a 99\n\n";
    let (ok, out, err) = etcdctl(ep, &["txn"], Some(txn));
    assert!(ok, "{err}");
    assert_eq!(out, "SUCCESS\n\nOK\n");
    let (ok, out, _) = etcdctl(ep, &["txn"], Some(txn));
    assert!(ok);
    assert_eq!(out, "FAILURE\n\nOK\n");
    assert_eq!(etcdctl_ok(ep, &["get", "/app/a"]), "/app/a\n99\n");
    let rev_99 = mod_revision(ep, "/app/a");
    let (ok, out, _) = etcdctl(
        ep,
        &["txn"],
        Some("mod(\"/nope\") = \"0\"\n\nget /app/b\n\n\n"),
    );
    assert!(ok);
    assert_eq!(out, "SUCCESS\n\n/app/b\n3\n");

    // watch: live events and history replay from a revision
    let mut w = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints={ep}"),
            "watch",
            "--prefix",
            "/w/",
            "--prev-kv",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = w.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    etcdctl_ok(ep, &["put", "/w/x", "one"]);
    etcdctl_ok(ep, &["put", "/w/x", "two"]);
    etcdctl_ok(ep, &["del", "/w/x"]);
    let mut lines = Vec::new();
    while lines.len() < 10 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    let _ = w.kill();
    let _ = w.wait();
    assert_eq!(
        lines,
        [
            "PUT", "/w/x", "one", "PUT", "/w/x", "one", "/w/x", "two", "DELETE", "/w/x"
        ],
        "watch output"
    );
    let replay = Command::new("timeout")
        .args([
            "3",
            "etcdctl",
            &format!("--endpoints={ep}"),
            "watch",
            "/app/a",
            &format!("--rev={rev_a1}"),
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    let replay = String::from_utf8_lossy(&replay.stdout);
    assert!(
        replay.starts_with("PUT\n/app/a\n1\nPUT\n/app/a\n2\nPUT\n/app/a\n20\nPUT\n/app/a\n99\n"),
        "{replay}"
    );

    // leases: attach, time-to-live, keep-alive, revoke, expiry
    let out = etcdctl_ok(ep, &["lease", "grant", "60"]);
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    assert!(out.contains("granted with TTL(60s)"), "{out}");
    etcdctl_ok(ep, &["put", "--lease", &id, "/leased", "v"]);
    let ttl = etcdctl_ok(ep, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([/leased])"),
        "{ttl}"
    );
    let ka = etcdctl_ok(ep, &["lease", "keep-alive", "--once", &id]);
    assert!(ka.contains("keepalived with TTL(60)"), "{ka}");
    assert!(etcdctl_ok(ep, &["lease", "list"]).contains(&id));
    assert!(etcdctl_ok(ep, &["lease", "revoke", &id]).contains("revoked"));
    assert_eq!(etcdctl_ok(ep, &["get", "/leased"]), "");
    let (ok, _, err) = etcdctl(ep, &["lease", "revoke", &id], None);
    assert!(!ok && err.contains("requested lease not found"), "{err}");
    let short = etcdctl_ok(ep, &["lease", "grant", "1"]);
    let short_id = short.split_whitespace().nth(1).unwrap().to_string();
    etcdctl_ok(ep, &["put", "--lease", &short_id, "/ephemeral", "v"]);
    let mut gone = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if etcdctl_ok(ep, &["get", "/ephemeral"]).is_empty() {
            gone = true;
            break;
        }
    }
    assert!(
        gone,
        "a key on an expired 1 s lease must be deleted by the leader"
    );

    // member list, endpoint status
    let members = etcdctl_ok(ep, &["member", "list"]);
    assert!(
        members.contains(", started, solo, https://") && members.contains(&m.url()),
        "{members}"
    );
    let status = etcdctl_ok(ep, &["endpoint", "status"]);
    assert!(
        status.starts_with(&format!("{ep}, ")) && status.contains(", 3.4.0, "),
        "{status}"
    );
    // etcdctl 3.4 prints health on stderr.
    let (ok, out, err) = etcdctl(ep, &["endpoint", "health"], None);
    assert!(ok && (out + &err).contains("is healthy"));

    // bad input: empty key, compacted revision, too large a value
    let (ok, _, err) = etcdctl(ep, &["put", "", "v"], None);
    assert!(!ok && err.contains("key is not provided"), "{err}");
    let cur = revision(ep);
    assert!(
        etcdctl_ok(ep, &["compaction", &cur.to_string()])
            .contains(&format!("compacted revision {cur}"))
    );
    let (ok, _, err) = etcdctl(ep, &["get", "/app/a", &format!("--rev={rev_a1}")], None);
    assert!(
        !ok && err.contains("required revision has been compacted"),
        "{err}"
    );
    let (ok, _, err) = etcdctl(
        ep,
        &["get", "/app/a", &format!("--rev={}", cur + 1000)],
        None,
    );
    assert!(
        !ok && err.contains("required revision is a future revision"),
        "{err}"
    );
    let big = "x".repeat(1_600_000);
    // etcdctl reads the value from stdin when it is not an argument.
    let (ok, _, err) = etcdctl(ep, &["put", "/big"], Some(&big));
    assert!(!ok && err.contains("request is too large"), "{err}");

    // snapshot save, then kill -9 and restart: everything is still there
    let snap = tmp.path().join("snap.db");
    let out = etcdctl_ok(ep, &["snapshot", "save", snap.to_str().unwrap()]);
    assert!(out.contains("Snapshot saved at"), "{out}");
    m.kill9();
    m.start();
    m.wait_ready(READY).await;
    assert_eq!(etcdctl_ok(ep, &["get", "/app/a"]), "/app/a\n99\n");
    assert_eq!(mod_revision(ep, "/app/a"), rev_99);
    assert!(revision(ep) >= cur);

    // a new cluster restored from the snapshot has the same keys
    let restored_dir = tmp.path().join("restored");
    let st = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["snapshot", "restore", snap.to_str().unwrap(), "--data-dir"])
        .arg(&restored_dir)
        .args(["--name", "restored"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let mut r = Member::new(tmp.path(), "restored");
    r.start();
    r.wait_ready(READY).await;
    // Its API server starts too: the old cluster's sealed bootstrap record
    // does not open with the new CA and is replaced.
    r.wait_api(READY).await;
    assert_eq!(
        etcdctl_ok(&r.endpoint(), &["get", "--prefix", "/app/"]),
        "/app/a\n99\n/app/b\n3\n"
    );
    assert_eq!(mod_revision(&r.endpoint(), "/app/a"), rev_99);
    assert!(revision(&r.endpoint()) >= cur);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_foreign_or_corrupt_data_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Member::new(tmp.path(), "a");
    m.start();
    m.wait_ready(READY).await;
    m.kill9();

    // Same data dir, another member name: refused, data untouched.
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--data-dir"])
        .arg(&m.dir)
        .args([
            "--name",
            "b",
            "--etcd-listen",
            &m.endpoint(),
            "--peer-listen",
            &m.peer(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("belongs to member \"a\""),
        "{err}"
    );

    // A store directory that is not a store.
    let junk = tmp.path().join("junk");
    std::fs::create_dir_all(junk.join("store")).unwrap();
    std::fs::write(junk.join("store").join("somefile"), b"not rocksdb").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--data-dir"])
        .arg(&junk)
        .args([
            "--etcd-listen",
            &format!("127.0.0.1:{}", common::free_tcp()),
        ])
        .args([
            "--peer-listen",
            &format!("127.0.0.1:{}", common::free_udp()),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("refusing to overwrite"),
        "{err}"
    );
    assert!(junk.join("store").join("somefile").exists());

    // Corrupt the CURRENT file of a real store: refused with a reason.
    std::fs::write(m.dir.join("store").join("CURRENT"), b"garbage\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--data-dir"])
        .arg(&m.dir)
        .args([
            "--name",
            "a",
            "--etcd-listen",
            &m.endpoint(),
            "--peer-listen",
            &m.peer(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot open the store"),
        "{err}"
    );

    // The etcd API refuses to listen beyond loopback without mutual TLS.
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--data-dir"])
        .arg(tmp.path().join("open"))
        .args(["--etcd-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--etcd-client-cert-auth"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_api_with_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Member::new(tmp.path(), "tls");
    m.extra = vec!["--etcd-client-cert-auth".into()];
    m.start();
    let ep = format!("https://{}", m.endpoint());
    let pki = m.dir.join("pki");
    let (ca, cert, key) = (
        format!("--cacert={}", pki.join("ca.crt").display()),
        format!("--cert={}", pki.join("node.crt").display()),
        format!("--key={}", pki.join("node.key").display()),
    );
    let mut ready = false;
    for _ in 0..100 {
        let (ok, _, _) = etcdctl(&ep, &[&ca, &cert, &key, "put", "/tls", "yes"], None);
        if ok {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "TLS endpoint never answered; log:\n{}", m.log());
    assert_eq!(
        etcdctl_ok(&ep, &[&ca, &cert, &key, "get", "/tls"]),
        "/tls\nyes\n"
    );
    // Without a client certificate the server refuses the connection.
    let (ok, _, err) = etcdctl(&ep, &[&ca, "--dial-timeout=2s", "get", "/tls"], None);
    assert!(!ok, "a client without a certificate was served: {err}");
    // Plain text is refused too.
    let (ok, _, _) = etcdctl(&m.endpoint(), &["--dial-timeout=2s", "get", "/tls"], None);
    assert!(!ok, "a plain-text client was served");
}
