//! 10,000 instantiate/drop cycles leak nothing. Alone in its test binary:
//! it reads the process's RSS, which other tests would disturb.

mod common;

use std::time::Duration;

use skiff_sdk::runtime::Runtime;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rss pages");
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_instantiations_leak_nothing() {
    // A pool of 16 slots: a leaked instance would exhaust it quickly.
    let f = common::runtime_with(|c| c.engine.max_instances = 16);
    let spec = f.handler("cycles", "hello-http.wasm", Duration::from_secs(1));
    f.runtime.start(spec.clone()).await.expect("starting");
    f.runtime
        .instantiate_cycles(&spec.id, 1000)
        .await
        .expect("warming up");
    let before = rss_bytes();
    let times = f
        .runtime
        .instantiate_cycles(&spec.id, 10_000)
        .await
        .expect("10,000 cycles");
    let grew = rss_bytes().saturating_sub(before);
    assert_eq!(times.len(), 10_000);
    assert!(
        grew < 4 << 20,
        "RSS grew by {grew} bytes over 10,000 instantiate/drop cycles"
    );
}
