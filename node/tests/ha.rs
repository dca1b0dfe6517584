//! A highly available control plane of real processes on loopback: one
//! `skiff server`, then two `skiff server --join URL --token T`. Each joins
//! the store as a learner and is promoted to voter; every member serves the
//! Kubernetes API with the cluster's admin credentials; a write through one
//! is read through the others; with the first member killed, the other two
//! keep serving writes. An agent's join token does not make a
//! control-plane member.

mod common;

use std::time::Duration;

use common::{Member, etcdctl_ok, kubectl, kubectl_ok, wait_for};
use serde_json::Value;

const READY: Duration = Duration::from_secs(60);

fn voters_and_learners(m: &Member) -> (usize, usize) {
    let out = etcdctl_ok(&m.endpoint(), &["member", "list", "-w", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let members = v["members"].as_array().cloned().unwrap_or_default();
    let learners = members
        .iter()
        .filter(|m| m["isLearner"].as_bool() == Some(true))
        .count();
    (members.len() - learners, learners)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_join_the_control_plane_and_survive_a_lost_member() {
    let tmp = tempfile::tempdir().unwrap();
    let mut first = Member::new(tmp.path(), "cp1");
    first.extra = ["--node-name", "cp1"].map(String::from).to_vec();
    first.start();
    first.wait_api(READY).await;
    let url = format!("https://127.0.0.1:{}", first.api_port);
    let server_token = std::fs::read_to_string(first.dir.join("pki/server.token")).unwrap();
    let agent_token = std::fs::read_to_string(first.dir.join("pki/join.token")).unwrap();
    assert_ne!(server_token, agent_token);

    // The agents' token is refused: the process says so and exits.
    let wrong = Member::new(tmp.path(), "intruder");
    let (ok, _, err) = common::run(
        {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"));
            c.args(["server", "--data-dir"])
                .arg(&wrong.dir)
                .args(["--name", "intruder", "--etcd-listen", &wrong.endpoint()])
                .args(["--peer-listen", &wrong.peer()])
                .args(["--api-listen", &format!("127.0.0.1:{}", wrong.api_port)])
                .args(["--join", &url, "--token", agent_token.trim()]);
            c
        },
        None,
    );
    assert!(!ok && err.contains("refused the token"), "{err}");
    assert_eq!(voters_and_learners(&first), (1, 0));

    let mut joined = Vec::new();
    for name in ["cp2", "cp3"] {
        let mut m = Member::new(tmp.path(), name);
        m.extra = [
            "--node-name",
            name,
            "--join",
            &url,
            "--token",
            server_token.trim(),
        ]
        .map(String::from)
        .to_vec();
        m.start();
        m.wait_api(READY).await;
        joined.push(m);
    }
    wait_for("three voters", READY, || {
        match voters_and_learners(&first) {
            (3, 0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // One cluster: the admin kubeconfig of each member works, and what is
    // written through one is read through the others.
    kubectl_ok(
        &joined[1],
        &[
            "create",
            "configmap",
            "written-on-cp3",
            "--from-literal=k=v",
        ],
        None,
    );
    for m in [&first, &joined[0]] {
        let v = kubectl_ok(
            m,
            &[
                "get",
                "configmap",
                "written-on-cp3",
                "-o",
                "jsonpath={.data.k}",
            ],
            None,
        );
        assert_eq!(v, "v");
    }
    // One set of keys: a ServiceAccount token issued through one member is
    // good at another, and a Secret written through one (encrypted at
    // rest) is read through another.
    kubectl_ok(&first, &["create", "serviceaccount", "bot"], None);
    let token = kubectl_ok(&first, &["create", "token", "bot"], None);
    // kubectl auth whoami: the SelfSubjectReview of each credential.
    let me = kubectl_ok(
        &joined[1],
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    );
    assert_eq!(me, "admin");
    let me = kubectl_ok(
        &joined[1],
        &[
            "--token",
            token.trim(),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    );
    assert_eq!(me, "system:serviceaccount:default:bot");
    // Authenticated there as the account (RBAC grants it nothing).
    let (ok, _, err) = kubectl(&joined[1], &["--token", token.trim(), "get", "pods"], None);
    assert!(
        !ok && err.contains("User \"system:serviceaccount:default:bot\" cannot list"),
        "{err}"
    );
    kubectl_ok(
        &joined[0],
        &[
            "create",
            "secret",
            "generic",
            "shared",
            "--from-literal=p=s3cret",
        ],
        None,
    );
    let v = kubectl_ok(
        &joined[1],
        &["get", "secret", "shared", "-o", "jsonpath={.data.p}"],
        None,
    );
    assert_eq!(v, "czNjcmV0");
    // The three agents are one cluster's nodes.
    wait_for("three Ready nodes", READY, || {
        let (_, out, err) = kubectl(&joined[0], &["get", "nodes", "--no-headers"], None);
        let ready = out
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
            .count();
        if ready == 3 {
            Ok(())
        } else {
            Err(format!("{out}{err}"))
        }
    })
    .await;

    // The first member goes away: the other two still make a quorum.
    first.kill9();
    wait_for(
        "a write with cp1 gone",
        Duration::from_secs(30),
        || match kubectl(
            &joined[0],
            &["create", "configmap", "after-cp1", "--from-literal=k=w"],
            None,
        ) {
            (true, _, _) => Ok(()),
            (false, _, err) if err.contains("AlreadyExists") => Ok(()),
            (false, out, err) => Err(format!("{out}{err}")),
        },
    )
    .await;
    let v = kubectl_ok(
        &joined[1],
        &["get", "configmap", "after-cp1", "-o", "jsonpath={.data.k}"],
        None,
    );
    assert_eq!(v, "w");
}

/// Members bootstrapped together with --initial-cluster (no --join) make
/// their own keys at first start; the API servers still end up with one
/// set: the first to start publishes, the others adopt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_cluster_members_share_one_set_of_api_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ms = common::initial_cluster(tmp.path(), &["i1", "i2", "i3"], &["--disable-agent"]);
    common::start_initial_cluster(&mut ms).await;
    for m in &ms {
        m.wait_api(READY).await;
    }
    for f in [
        "admin.token",
        "sa.key",
        "secrets.key",
        "join.token",
        "server.token",
    ] {
        let first = std::fs::read(ms[0].dir.join("pki").join(f)).unwrap();
        for m in &ms[1..] {
            assert!(
                first == std::fs::read(m.dir.join("pki").join(f)).unwrap(),
                "{f} of {} differs",
                m.name
            );
        }
    }
    kubectl_ok(
        &ms[1],
        &["create", "secret", "generic", "s", "--from-literal=a=b"],
        None,
    );
    let v = kubectl_ok(
        &ms[2],
        &["get", "secret", "s", "-o", "jsonpath={.data.a}"],
        None,
    );
    assert_eq!(v, "Yg==");
    // The stored record is sealed: the admin token is not in it.
    let token = std::fs::read_to_string(ms[0].dir.join("pki/admin.token")).unwrap();
    let raw = etcdctl_ok(
        &ms[0].endpoint(),
        &["get", "/skiff/bootstrap", "--print-value-only"],
    );
    assert!(!raw.is_empty() && !raw.contains(token.trim()));
}
