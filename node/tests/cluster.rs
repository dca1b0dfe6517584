//! A 3-member store of real processes on loopback: `kill -9` of the leader
//! during writes loses no acknowledged write, and writes resume; members
//! are added (as learners, then promoted) and removed at runtime.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Member, etcdctl_ok};
use consensus::pb::etcdserverpb::{
    MemberAddRequest, MemberPromoteRequest, MemberRemoveRequest, PutRequest, RangeRequest,
    cluster_client::ClusterClient, kv_client::KvClient,
};

const READY: Duration = Duration::from_secs(30);

fn three(tmp: &std::path::Path) -> Vec<Member> {
    common::initial_cluster(tmp, &["n1", "n2", "n3"], &[])
}

async fn start_three(ms: &mut [Member]) -> u64 {
    common::start_initial_cluster(ms).await;
    let mut leader = 0;
    for m in ms.iter() {
        leader = m.wait_ready(READY).await.1;
    }
    leader
}

async fn put(ep: &str, key: String, value: String) -> Result<(), String> {
    let fut = async {
        let mut c = KvClient::connect(format!("http://{ep}"))
            .await
            .map_err(|e| e.to_string())?;
        c.put(PutRequest {
            key: key.into_bytes(),
            value: value.into_bytes(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .map_err(|_| "timeout".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill9_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ms = three(tmp.path());
    let leader = start_three(&mut ms).await;
    let mut ids = Vec::new();
    for m in &ms {
        ids.push(m.wait_ready(READY).await.0);
    }
    let li = ids
        .iter()
        .position(|id| *id == leader)
        .expect("leader is a member");
    let endpoints: Vec<String> = ms.iter().map(|m| m.endpoint()).collect();

    let acked: Arc<Mutex<BTreeMap<String, (String, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (acked, stop, eps) = (acked.clone(), stop.clone(), endpoints.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut ep = w % eps.len();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (k, v) = (format!("/w{w}/{i}"), format!("value-{w}-{i}"));
                match put(&eps[ep], k.clone(), v.clone()).await {
                    Ok(()) => {
                        acked.lock().unwrap().insert(k, (v, Instant::now()));
                        i += 1;
                    }
                    Err(_) => {
                        ep = (ep + 1) % eps.len();
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    ms[li].kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let before = acked.values().filter(|(_, t)| *t < killed_at).count();
    let after = acked.values().filter(|(_, t)| *t > killed_at).count();
    assert!(before > 50, "too few writes before the kill: {before}");
    assert!(
        after > 50,
        "writes did not resume after the leader was killed: {after}"
    );

    // Every acknowledged write is on the survivors (linearizable reads).
    for (i, m) in ms.iter().enumerate() {
        if i == li {
            continue;
        }
        let mut c = KvClient::connect(m.url()).await.unwrap();
        for (k, (v, _)) in &acked {
            let r = c
                .range(RangeRequest {
                    key: k.clone().into_bytes(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.kvs.len(), 1, "acknowledged key {k} missing on {}", m.name);
            assert_eq!(r.kvs[0].value, v.as_bytes(), "key {k} on {}", m.name);
        }
    }

    // The killed member comes back and catches up.
    ms[li].start();
    ms[li].wait_ready(READY).await;
    let last = acked.keys().next_back().unwrap().clone();
    let deadline = Instant::now() + READY;
    loop {
        let mut c = KvClient::connect(ms[li].url()).await.unwrap();
        let r = c
            .range(RangeRequest {
                key: b"/w".to_vec(),
                range_end: b"/x".to_vec(),
                count_only: true,
                serializable: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if r.count as usize >= acked.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted member has {} of {} keys ({last})",
            r.count,
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_as_learners_get_promoted_and_leave() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ms = three(tmp.path());
    start_three(&mut ms).await;
    let ep = ms[0].endpoint();
    for i in 0..20 {
        etcdctl_ok(&ep, &["put", &format!("/pre/{i}"), "x"]);
    }

    let mut n4 = Member::new(tmp.path(), "n4");
    let mut cc = ClusterClient::connect(ms[0].url()).await.unwrap();
    let added = cc
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![format!("https://{}", n4.peer())],
            is_learner: true,
        })
        .await
        .unwrap()
        .into_inner();
    let new_id = added.member.unwrap().id;
    assert_eq!(added.members.len(), 4);
    let initial = ms
        .iter()
        .chain([&n4])
        .map(|m| format!("{}={}", m.name, m.peer()))
        .collect::<Vec<_>>()
        .join(",");
    n4.extra = vec![
        "--initial-cluster".into(),
        initial,
        "--initial-cluster-state".into(),
        "existing".into(),
        "--ca-from".into(),
        ms[0].dir.join("pki").display().to_string(),
    ];
    n4.start();
    n4.wait_ready(READY).await;
    // The learner receives the data (through a snapshot: its log is empty).
    let deadline = Instant::now() + READY;
    loop {
        let (ok, out, _) = common::etcdctl(
            &n4.endpoint(),
            &[
                "get",
                "--prefix",
                "/pre/",
                "--keys-only",
                "--consistency=s",
                "-w",
                "json",
            ],
            None,
        );
        if ok && out.contains("\"count\":20") {
            break;
        }
        assert!(Instant::now() < deadline, "learner never caught up: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cc.member_promote(MemberPromoteRequest { id: new_id })
        .await
        .unwrap();
    // The new member publishes its name once it runs; the promotion keeps it.
    let deadline = Instant::now() + READY;
    loop {
        let list = etcdctl_ok(&ep, &["member", "list"]);
        if list.contains(", started, n4, ") {
            assert!(!list.contains("true"), "n4 is still a learner: {list}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n4 never published its name: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    etcdctl_ok(&n4.endpoint(), &["put", "/post", "from-n4"]);
    assert_eq!(etcdctl_ok(&ep, &["get", "/post"]), "/post\nfrom-n4\n");

    cc.member_remove(MemberRemoveRequest { id: new_id })
        .await
        .unwrap();
    let list = etcdctl_ok(&ep, &["member", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    etcdctl_ok(&ep, &["put", "/after-remove", "ok"]);
}
