//! The OCI bridge against real runc: the generic runtime harness (the same
//! cases the wasm runtime passes), then what only containers have — image
//! config, OOM kills at a memory limit, exec, start errors. Images are made
//! here from Debian's static busybox and served by a loopback registry.
//! Needs root, runc and docker-registry (scripts/test installs them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use oci_bridge::exec::{ExecOptions, ExecSession, STDERR, STDOUT};
use oci_bridge::image::{ImageConfig, push_dir};
use oci_bridge::{OciConfig, OciRuntime};
use skiff_sdk::registry::RegistryClient;
use skiff_sdk::registry::testing::LocalRegistry;
use skiff_sdk::runtime::conformance::{self, Step, Workloads};
use skiff_sdk::runtime::{
    ContainerSpec, ImageRef, ImageSource, LogReader, Runtime, RuntimeError, TerminationReason,
};

/// A root filesystem with busybox and a link per applet
/// (`scripts/busybox-rootfs`, which the demo uses too).
fn busybox_rootfs(dir: &Path) {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let script = Path::new(&manifest).join("../scripts/busybox-rootfs");
    let out = std::process::Command::new(&script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("etc/greeting"), "from the image\n").unwrap();
}

struct Fixture {
    _registry: LocalRegistry,
    scratch: tempfile::TempDir,
    image: ImageRef,
    rt: OciRuntime,
}

async fn fixture() -> Fixture {
    let registry = LocalRegistry::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = scratch.path().join("busybox");
    busybox_rootfs(&rootfs);
    let image = ImageRef::parse(&format!("{}/test/busybox:1", registry.addr)).unwrap();
    let config = ImageConfig {
        cmd: Some(vec!["sh".into(), "-c".into(), "echo default cmd".into()]),
        env: Some(vec!["FROM_IMAGE=yes".into(), "OVERRIDE=image".into()]),
        working_dir: Some("/etc".into()),
        ..Default::default()
    };
    let platform = format!("linux/{}", oci_bridge::kube_arch());
    push_dir(&RegistryClient::new(), &image, &rootfs, &config, &platform)
        .await
        .expect("pushing the busybox image");
    let rt = OciRuntime::new(OciConfig::new(scratch.path().join("oci")))
        .await
        .expect("starting the runtime");
    Fixture {
        _registry: registry,
        scratch,
        image,
        rt,
    }
}

impl Fixture {
    fn spec(&self, id: &str, script: &str) -> ContainerSpec {
        let mut spec = ContainerSpec::new(
            id,
            ImageSource::Registry(self.image.clone()),
            self.scratch.path().join("logs").join(format!("{id}.log")),
        );
        if !script.is_empty() {
            spec.command = vec!["/bin/sh".into(), "-c".into(), script.into()];
        }
        spec
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Workloads for Fixture {
    fn spec(&self, id: &str, steps: &[Step]) -> ContainerSpec {
        let script: Vec<String> = steps
            .iter()
            .map(|s| match s {
                Step::Echo(t) => format!("echo {}", quote(t)),
                Step::Stderr(t) => format!("echo {} >&2", quote(t)),
                Step::Env => "env".into(),
                Step::Cat(p) => format!("cat {} || exit 1", quote(p)),
                Step::Write(p, t) => format!("printf %s {} > {} || exit 1", quote(t), quote(p)),
                Step::TickForever(ms) => format!(
                    "i=0; while true; do i=$((i+1)); echo \"tick $i\"; usleep {}; done",
                    ms * 1000
                ),
                Step::Exit(c) => format!("exit {c}"),
            })
            .collect();
        Fixture::spec(self, id, &script.join("\n"))
    }

    fn scratch_dir(&self) -> PathBuf {
        self.scratch.path().join("volumes")
    }
}

async fn run(rt: &OciRuntime, spec: ContainerSpec) -> skiff_sdk::runtime::Termination {
    rt.start(spec.clone()).await.expect("starting");
    let status = tokio::time::timeout(Duration::from_secs(60), rt.wait(&spec.id))
        .await
        .expect("the container ends within a minute")
        .expect("waiting");
    status.termination().cloned().expect("terminated")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_runtime() {
    let f = fixture().await;

    // Everything the wasm runtime is held to.
    conformance::run_all(&f.rt, &f, "conf").await;

    // The image's Cmd, Env and WorkingDir apply when the pod says nothing.
    let spec = f.spec("image-defaults", "");
    let t = run(&f.rt, spec.clone()).await;
    assert_eq!(t.reason, TerminationReason::Completed, "{t:?}");
    assert_eq!(
        LogReader::read_text(&spec.log_path).unwrap(),
        "default cmd\n"
    );
    let mut spec = f.spec(
        "image-env",
        "echo $FROM_IMAGE $OVERRIDE $(pwd) $(hostname); cat greeting",
    );
    spec.env = vec![("OVERRIDE".into(), "pod".into())];
    spec.hostname = Some("web-0".into());
    let t = run(&f.rt, spec.clone()).await;
    assert_eq!(t.exit_code, 0, "{t:?}");
    assert_eq!(
        LogReader::read_text(&spec.log_path).unwrap(),
        "yes pod /etc web-0\nfrom the image\n"
    );

    // Writes go to the container's own layer: the next container of the
    // image does not see them.
    let t = run(
        &f.rt,
        f.spec(
            "layer-a",
            "echo changed > /etc/greeting && cat /etc/greeting",
        ),
    )
    .await;
    assert_eq!(t.exit_code, 0, "{t:?}");
    let spec = f.spec("layer-b", "cat /etc/greeting");
    run(&f.rt, spec.clone()).await;
    assert_eq!(
        LogReader::read_text(&spec.log_path).unwrap(),
        "from the image\n"
    );

    // A missing binary is a StartError with runc's reason.
    let mut spec = f.spec("no-binary", "");
    spec.command = vec!["/bin/does-not-exist".into()];
    let status = f.rt.start(spec.clone()).await.expect("start answers");
    let t = match status.termination() {
        Some(t) => t.clone(),
        None => {
            f.rt.wait(&spec.id)
                .await
                .unwrap()
                .termination()
                .cloned()
                .unwrap()
        }
    };
    assert_eq!(t.reason, TerminationReason::StartError, "{t:?}");
    assert!(t.message.contains("does-not-exist"), "{t:?}");

    // A process over its memory limit is OOMKilled, and only it.
    let mut spec = f.spec(
        "oom",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    );
    spec.limits.memory_bytes = Some(32 << 20);
    let t = run(&f.rt, spec.clone()).await;
    assert_eq!(
        (t.reason, t.exit_code),
        (TerminationReason::OomKilled, 137),
        "{t:?}\n{}",
        LogReader::read_text(&spec.log_path).unwrap_or_default()
    );
    // A stop of a limited container is not an OOM kill.
    let mut spec = f.spec("limited-stop", "sleep 600");
    spec.limits.memory_bytes = Some(32 << 20);
    f.rt.start(spec.clone()).await.unwrap();
    let s = f.rt.stop(&spec.id, Duration::ZERO).await.unwrap();
    assert_eq!(s.termination().unwrap().reason, TerminationReason::Error);

    // exec runs in the container.
    let spec = f.spec("exec", "echo inside > /tmp/mark; sleep 600");
    f.rt.start(spec.clone()).await.unwrap();
    let mut out = None;
    for _ in 0..100 {
        let o =
            f.rt.exec(&spec.id, vec!["cat".into(), "/tmp/mark".into()])
                .await
                .unwrap();
        if o.exit_code == 0 {
            out = Some(o);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(out.expect("exec never saw the file").stdout, b"inside\n");
    let o =
        f.rt.exec(&spec.id, vec!["sh".into(), "-c".into(), "exit 7".into()])
            .await
            .unwrap();
    assert_eq!(o.exit_code, 7);
    interactive_exec(&f.rt, &spec.id).await;
    f.rt.remove(&spec.id).await.unwrap();
    attach(&f).await;

    // activeDeadlineSeconds.
    let mut spec = f.spec("deadline", "sleep 600");
    spec.active_deadline = Some(Duration::from_millis(300));
    let t = run(&f.rt, spec).await;
    assert_eq!(t.reason, TerminationReason::DeadlineExceeded, "{t:?}");

    // An image that is not there is a pull error (the agent's ErrImagePull).
    let mut spec = f.spec("missing-image", "true");
    spec.image = ImageSource::parse(&format!("{}/test/nothing:1", f.image.registry)).unwrap();
    match f.rt.start(spec).await {
        Err(RuntimeError::Pull { message, .. }) => {
            assert!(message.contains("not found"), "{message}")
        }
        other => panic!("a missing image: {other:?}"),
    }

    // Nothing is left mounted once the containers are removed.
    for s in f.rt.list() {
        f.rt.remove(&s.id).await.unwrap();
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours = f.scratch.path().to_string_lossy().into_owned();
    assert!(
        !mounts.contains(&ours),
        "mounts left behind:\n{}",
        mounts
            .lines()
            .filter(|l| l.contains(&ours))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_removes_what_an_old_one_left() {
    let f = fixture().await;
    let spec = f.spec("left", "sleep 600");
    f.rt.start(spec.clone()).await.unwrap();
    assert!(f.rt.status(&spec.id).unwrap().is_running());
    // A second runtime on the same directory, as after an agent restart.
    let again = OciRuntime::new(OciConfig::new(f.scratch.path().join("oci")))
        .await
        .unwrap();
    assert!(again.list().is_empty());
    let t = tokio::time::timeout(Duration::from_secs(10), f.rt.wait(&spec.id))
        .await
        .expect("the old container was killed")
        .unwrap();
    assert!(t.termination().is_some());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*f.scratch.path().to_string_lossy()));
}

/// Everything a session printed, by stream, and its exit code.
async fn drain(mut s: ExecSession) -> (String, String, i32) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read = async {
        while let Some((stream, data)) = s.output.recv().await {
            match stream {
                STDOUT => out.extend(data),
                STDERR => err.extend(data),
                other => panic!("stream {other}"),
            }
        }
        s.exit.await.expect("an exit code")
    };
    let code = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the session ends");
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        code,
    )
}

/// `kubectl attach` (and `kubectl run -i`) to a container's own streams.
async fn attach(f: &Fixture) {
    use skiff_sdk::runtime::Interactive;
    let both = ExecOptions {
        stdin: true,
        tty: false,
    };
    // Without stdin in its spec, a container reads end of file.
    let t = run(&f.rt, f.spec("no-stdin", "cat; echo eof")).await;
    assert_eq!(t.exit_code, 0, "{t:?}");
    let log = f.scratch.path().join("logs/no-stdin.log");
    assert_eq!(LogReader::read_text(&log).unwrap(), "eof\n");

    // stdin + stdinOnce: what the first attacher types reaches the
    // container, whose output every attacher sees as it comes; the end of
    // that attacher's input is the container's end of file.
    let mut spec = f.spec("cat-once", "cat; echo bye >&2; exit 4");
    spec.interactive = Interactive {
        stdin: true,
        stdin_once: true,
        tty: false,
    };
    f.rt.start(spec.clone()).await.unwrap();
    let mut typing = f.rt.attach_session(&spec.id, both).await.unwrap();
    let watching =
        f.rt.attach_session(&spec.id, ExecOptions::default())
            .await
            .unwrap();
    assert!(watching.stdin.is_none());
    let mut stdin = typing.stdin.take().expect("the container's stdin");
    stdin.write_all(b"hello\n").await.unwrap();
    let (stream, first) = tokio::time::timeout(Duration::from_secs(10), typing.output.recv())
        .await
        .expect("output while stdin is open")
        .unwrap();
    assert_eq!((stream, &first[..]), (STDOUT, &b"hello\n"[..]));
    drop(stdin);
    let (out, err, code) = drain(typing).await;
    assert_eq!((out.as_str(), err.as_str(), code), ("", "bye\n", 0));
    let (out, err, _) = drain(watching).await;
    assert_eq!((out.as_str(), err.as_str()), ("hello\n", "bye\n"));
    let t = f.rt.wait(&spec.id).await.unwrap();
    assert_eq!(t.termination().map(|t| t.exit_code), Some(4), "{t:?}");
    assert_eq!(
        LogReader::read_text(&spec.log_path).unwrap(),
        "hello\nbye\n"
    );
    f.rt.remove(&spec.id).await.unwrap();

    // Without stdinOnce the input outlives an attacher, and a hang-up
    // leaves the container running.
    let mut spec = f.spec("cat-many", "cat");
    spec.interactive.stdin = true;
    f.rt.start(spec.clone()).await.unwrap();
    for word in ["one", "two"] {
        let mut s = f.rt.attach_session(&spec.id, both).await.unwrap();
        let mut stdin = s.stdin.take().unwrap();
        stdin
            .write_all(format!("{word}\n").as_bytes())
            .await
            .unwrap();
        let (_, got) = tokio::time::timeout(Duration::from_secs(10), s.output.recv())
            .await
            .expect("the echo")
            .unwrap();
        assert_eq!(got, format!("{word}\n").as_bytes());
        drop(stdin);
        s.hangup.hang_up();
        assert_eq!(s.exit.await.unwrap(), 0);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = f.rt.status(&spec.id).unwrap();
    assert!(status.termination().is_none(), "{status:?}");
    f.rt.remove(&spec.id).await.unwrap();

    // A terminal: of the size the attacher sets, echoing what it types.
    let mut spec = f.spec("term", "read x; stty size; echo got $x");
    spec.interactive = Interactive {
        stdin: true,
        stdin_once: true,
        tty: true,
    };
    f.rt.start(spec.clone()).await.unwrap();
    let tty = ExecOptions {
        stdin: true,
        tty: true,
    };
    let mut s = f.rt.attach_session(&spec.id, tty).await.unwrap();
    s.terminal
        .as_ref()
        .expect("a terminal")
        .resize(100, 30)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.stdin.take().unwrap().write_all(b"hi\n").await.unwrap();
    let (out, err, code) = drain(s).await;
    assert_eq!(code, 0);
    assert!(err.is_empty(), "a terminal has one stream: {err}");
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        lines.contains(&"30 100") && lines.contains(&"got hi"),
        "{out:?}"
    );
    f.rt.remove(&spec.id).await.unwrap();
}

/// `kubectl exec -i` and `-it`: standard input flows in, output flows out
/// as it is written, a terminal has the size it was given, and a hang-up
/// ends a command that reads nothing.
async fn interactive_exec(rt: &OciRuntime, id: &skiff_sdk::runtime::ContainerId) {
    let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
    let both = ExecOptions {
        stdin: true,
        tty: false,
    };
    // Piped standard input, stderr apart; end of file ends `cat`.
    let mut s = rt
        .exec_session(id, argv("cat; echo done >&2; exit 3"), both)
        .await
        .unwrap();
    let mut stdin = s.stdin.take().expect("stdin");
    stdin.write_all(b"line one\n").await.unwrap();
    // The first line comes back before standard input ends: streaming.
    let (stream, first) = tokio::time::timeout(Duration::from_secs(10), s.output.recv())
        .await
        .expect("output while stdin is open")
        .unwrap();
    assert_eq!((stream, &first[..]), (STDOUT, &b"line one\n"[..]));
    stdin.write_all(b"line two\n").await.unwrap();
    drop(stdin);
    let (out, err, code) = drain(s).await;
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("line two\n", "done\n", 3)
    );

    // A terminal: the command sees one, of the size set, stderr joins
    // stdout, and it reads what is typed.
    let tty = ExecOptions {
        stdin: true,
        tty: true,
    };
    let mut s = rt
        .exec_session(
            id,
            argv("echo ready; read x; stty size; [ -t 0 ] && echo is-a-tty; echo got $x >&2"),
            tty,
        )
        .await
        .unwrap();
    // Typed once the command runs (runc has set its terminal up by then):
    // input that arrives earlier is echoed by the host side too.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("ready") {
        let (_, chunk) = tokio::time::timeout(Duration::from_secs(10), s.output.recv())
            .await
            .expect("the command starts")
            .expect("output before the end");
        seen.extend(chunk);
    }
    s.terminal
        .as_ref()
        .expect("a terminal")
        .resize(132, 43)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut stdin = s.stdin.take().unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    let (rest, err, code) = drain(s).await;
    let out = String::from_utf8_lossy(&seen).into_owned() + &rest;
    assert_eq!(code, 0, "{out}");
    assert!(err.is_empty(), "{err}");
    // The terminal echoes input and ends lines with CR LF.
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines.contains(&"43 132"), "{out:?}");
    assert!(lines.contains(&"is-a-tty"), "{out:?}");
    assert!(lines.contains(&"got hello"), "{out:?}");

    // A size sent as the session opens (as kubectl sends it) is the
    // terminal's from the command's first instant.
    let s = rt.exec_session(id, argv("stty size"), tty).await.unwrap();
    s.terminal
        .as_ref()
        .expect("a terminal")
        .resize(91, 27)
        .unwrap();
    let (out, _, code) = drain(s).await;
    assert_eq!((out.trim_end(), code), ("27 91", 0));

    // No stdin asked for: none given, and the command sees end of file.
    let s = rt
        .exec_session(id, argv("cat; echo eof"), ExecOptions::default())
        .await
        .unwrap();
    assert!(s.stdin.is_none() && s.terminal.is_none());
    let (out, _, code) = drain(s).await;
    assert_eq!((out.as_str(), code), ("eof\n", 0));

    // A caller that goes away hangs up a command that ignores its input.
    let s = rt.exec_session(id, argv("sleep 600"), both).await.unwrap();
    let started = std::time::Instant::now();
    let ExecSession {
        exit,
        hangup,
        output,
        stdin,
        ..
    } = s;
    hangup.hang_up();
    let code = tokio::time::timeout(Duration::from_secs(20), exit)
        .await
        .expect("a hung-up command ends")
        .unwrap();
    drop((output, stdin));
    assert_eq!(code, 128 + 1, "SIGHUP ends sleep");
    assert!(started.elapsed() < Duration::from_secs(10));

    // A command that is not there: runc's error, and a failing code.
    let (_, err, code) = drain(
        rt.exec_session(id, vec!["/no/such".into()], ExecOptions::default())
            .await
            .unwrap(),
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("no such file"), "{err}");
}
