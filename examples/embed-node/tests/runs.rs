//! The example runs as a user would run it, and does what it says.

use std::process::Command;

#[test]
fn the_embedded_node_serves_the_deployment() {
    let out = Command::new(env!("CARGO_BIN_EXE_embed-node"))
        .output()
        .expect("run embed-node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("deployment hello: 2/2 ready"), "{stdout}");
    let answers = stdout
        .lines()
        .filter(|l| l.contains(") answered: "))
        .count();
    assert_eq!(answers, 2, "{stdout}");
    assert!(stdout.ends_with("node stopped\n"), "{stdout}");
}
