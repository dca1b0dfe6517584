//! The agents' QUIC transport to the control plane, from the outside: a real
//! `skiff server` and the SDK's `QuicTransport`. Requests and watches work
//! with a certificate from the cluster CA and are authorized as its user;
//! a certificate from another CA, or none, gets nowhere; many requests share
//! one connection at once; a restarted server is redialled.

mod common;

use std::time::Duration;

use common::Member;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use skiff_sdk::client::https::Connection;
use skiff_sdk::client::quic::QuicTransport;
use skiff_sdk::client::{Api, Client, ListParams, WatchEvent};

fn connection(m: &Member, ca: &consensus::pki::ClusterCa, cn: &str, orgs: &[&str]) -> Connection {
    let cert = ca.issue_for(cn, orgs, &[]).unwrap();
    Connection {
        server: format!("https://127.0.0.1:{}", m.api_port),
        ca_pem: std::fs::read(m.dir.join("pki/ca.crt")).unwrap(),
        token: None,
        client_cert: Some((cert.cert_pem.into_bytes(), cert.key_pem.into_bytes())),
        namespace: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_reach_the_api_over_quic() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Member::new(tmp.path(), "quic");
    m.extra = vec!["--disable-agent".into()];
    m.start();
    m.wait_api(Duration::from_secs(30)).await;
    let cluster_ca = consensus::pki::ClusterCa::load(&m.dir.join("pki")).unwrap();

    // An admin certificate: requests, a watch, writes.
    let admin = Client::new(
        QuicTransport::new(&connection(
            &m,
            &cluster_ca,
            "quic-admin",
            &["system:masters"],
        ))
        .unwrap(),
    );
    let namespaces = Api::<Namespace>::all(&admin);
    let list = namespaces.list(&ListParams::default()).await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("kube-system")),
        "{:?}",
        list.items
    );
    let cms = Api::<ConfigMap>::namespaced(&admin, "default");
    let mut watch = cms
        .watch(&ListParams {
            resource_version: Some(list.resource_version.clone()),
            ..ListParams::default()
        })
        .await
        .unwrap();
    // Many requests at once, each on its own stream of one connection.
    let creates = (0..64).map(|i| {
        let cms = cms.clone();
        async move {
            let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("over-quic-{i}")},
                "data": {"i": i.to_string()},
            }))
            .unwrap();
            cms.create(&cm).await
        }
    });
    for r in futures::future::join_all(creates).await {
        r.unwrap();
    }
    let mut seen = 0;
    while seen < 64 {
        match tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("watch events over quic")
            .unwrap()
        {
            Some(WatchEvent::Added(cm)) => {
                assert!(cm.metadata.name.unwrap().starts_with("over-quic-"));
                seen += 1;
            }
            Some(_) => {}
            None => panic!("the watch ended after {seen} events"),
        }
    }

    // The certificate is the identity: a user with no role is forbidden.
    let nobody =
        Client::new(QuicTransport::new(&connection(&m, &cluster_ca, "nobody", &[])).unwrap());
    let e = Api::<ConfigMap>::namespaced(&nobody, "default")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");

    // Another CA's certificate fails the handshake; no certificate at all
    // is refused before dialling.
    let stranger_ca = consensus::pki::ClusterCa::generate().unwrap();
    let stranger = Client::new(
        QuicTransport::new(&connection(
            &m,
            &stranger_ca,
            "quic-admin",
            &["system:masters"],
        ))
        .unwrap(),
    );
    let e = Api::<Namespace>::all(&stranger)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(!matches!(e, skiff_sdk::client::Error::Api(_)), "{e}");
    let mut anonymous = connection(&m, &cluster_ca, "x", &[]);
    anonymous.client_cert = None;
    anonymous.token = Some(std::fs::read_to_string(m.dir.join("kubeconfig.yaml")).unwrap());
    assert!(QuicTransport::new(&anonymous).is_err());

    // The server restarts: the next requests redial.
    m.kill9();
    m.start();
    m.wait_api(Duration::from_secs(30)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match namespaces.list(&ListParams::default()).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("the quic client did not reconnect: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
