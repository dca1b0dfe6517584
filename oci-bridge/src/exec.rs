//! Interactive exec: `runc exec` with its standard streams connected to the
//! caller as they flow (`kubectl exec -i`, `-t`), where
//! [`Runtime::exec`](skiff_sdk::runtime::Runtime::exec) collects the output
//! of a command that has ended.
//!
//! Without a terminal the command gets pipes (runc copies between them and
//! the process). With one, `runc exec --tty` in the foreground allocates
//! the terminal in the container, as the process's controlling terminal,
//! and copies between it and its own stdio — which is the slave end of a
//! pseudo-terminal skiff opens on the host, so runc puts it in raw mode and
//! takes the window size from it (at start, and on SIGWINCH). The master end
//! carries input and output. runc starts once the caller has sent its
//! window size (kubectl does as soon as it is connected), or after
//! [`FIRST_SIZE_WAIT`]: a command that reads its size at once (`stty
//! size`, a full-screen program) then sees the caller's, not 0×0.
//! (`--console-socket`, which would hand skiff the
//! container's terminal directly, works only for a detached runc, whose
//! command's exit code nobody then sees.)
//!
//! The session ends when the command exits. A caller that goes away first
//! hangs up: SIGHUP to the command (runc forwards the signals it gets), then
//! SIGKILL to runc after [`HANGUP_GRACE`].

use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use skiff_sdk::runtime::{ContainerId, RuntimeError, exit_code};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::OciRuntime;

/// How long a hung-up command has to end before runc is killed.
pub const HANGUP_GRACE: Duration = Duration::from_secs(5);

/// How long a terminal exec waits for the caller's window size.
pub const FIRST_SIZE_WAIT: Duration = Duration::from_secs(1);

/// The standard output stream (the only one with a terminal).
pub const STDOUT: u8 = 1;
/// The standard error stream.
pub const STDERR: u8 = 2;

/// What an exec session connects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The caller sends standard input.
    pub stdin: bool,
    /// The command runs on a terminal.
    pub tty: bool,
}

/// A command running in a container, its streams connected.
pub struct ExecSession {
    /// The command's standard input (with [`ExecOptions::stdin`]); dropping
    /// it is end of file.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// The command's output as it comes, tagged [`STDOUT`] or [`STDERR`];
    /// closed once the command has ended and all of it was read.
    pub output: mpsc::Receiver<(u8, Vec<u8>)>,
    /// The terminal, to set its size (columns, rows); with a tty only.
    pub terminal: Option<Terminal>,
    /// The command's exit code (128+n for a signal), once it has ended.
    pub exit: oneshot::Receiver<i32>,
    /// Hangs up: the command gets SIGHUP, runc SIGKILL after
    /// [`HANGUP_GRACE`]. Dropping it does nothing.
    pub hangup: Hangup,
}

/// The host end of a session's terminal.
pub struct Terminal {
    master: OwnedFd,
    /// Told to pass a new size on (SIGWINCH), once it runs.
    runc: Arc<OnceLock<Pid>>,
    /// Told of the first size, for a command waiting to start.
    sized: parking_lot::Mutex<Option<oneshot::Sender<(u16, u16)>>>,
}

impl Terminal {
    pub(crate) fn new(master: OwnedFd, runc: Option<Pid>) -> Terminal {
        let pid = OnceLock::new();
        if let Some(p) = runc {
            let _ = pid.set(p);
        }
        Terminal {
            master,
            runc: Arc::new(pid),
            sized: parking_lot::Mutex::new(None),
        }
    }

    /// Sets the window size, as a terminal emulator does on a resize.
    pub fn resize(&self, columns: u16, rows: u16) -> std::io::Result<()> {
        rustix::termios::tcsetwinsize(
            &self.master,
            rustix::termios::Winsize {
                ws_row: rows,
                ws_col: columns,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )?;
        if let Some(tx) = self.sized.lock().take() {
            let _ = tx.send((columns, rows));
        }
        if let Some(pid) = self.runc.get() {
            kill_process(*pid, Signal::WINCH)?;
        }
        Ok(())
    }
}

/// Ends a session early (see [`ExecSession::hangup`]).
pub struct Hangup(Option<oneshot::Sender<()>>);

impl Hangup {
    /// A hang-up that sends on `tx`, for sessions made elsewhere.
    pub fn new(tx: oneshot::Sender<()>) -> Hangup {
        Hangup(Some(tx))
    }

    pub fn hang_up(mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl OciRuntime {
    /// Starts `command` in the running container `id` with its streams
    /// connected as `opts` asks.
    pub async fn exec_session(
        &self,
        id: &ContainerId,
        command: Vec<String>,
        opts: ExecOptions,
    ) -> Result<ExecSession, RuntimeError> {
        let c = self.exec_target(id, &command)?;
        let io = |context: &str| {
            let context = context.to_string();
            move |e: std::io::Error| RuntimeError::Io { context, source: e }
        };
        let mut cmd = self.runc();
        let (output_tx, output) = mpsc::channel(16);
        let mut stdin: Option<Pin<Box<dyn AsyncWrite + Send>>> = None;
        let mut terminal = None;
        let mut readers: Vec<(u8, Pin<Box<dyn AsyncRead + Send>>)> = Vec::new();
        let launch = if opts.tty {
            let (master, slave) = open_pty().map_err(io("opening a pseudo-terminal"))?;
            let dup = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
            if opts.stdin {
                cmd.stdin(dup(&slave).map_err(io("the terminal"))?);
            }
            cmd.stdout(dup(&slave).map_err(io("the terminal"))?)
                .stderr(Stdio::from(slave));
            let process = TerminalProcess::new(&c.dir, &command)
                .map_err(io("reading the container's process spec"))?;
            let file = |fd: &OwnedFd| {
                fd.try_clone()
                    .map(|f| tokio::fs::File::from_std(std::fs::File::from(f)))
                    .map_err(io("the terminal"))
            };
            if opts.stdin {
                stdin = Some(Box::pin(file(&master)?));
            }
            readers.push((STDOUT, Box::pin(file(&master)?)));
            let (sized_tx, sized) = oneshot::channel();
            let t = Terminal::new(master, None);
            *t.sized.lock() = Some(sized_tx);
            let runc = t.runc.clone();
            terminal = Some(t);
            Launch::WhenSized {
                cmd,
                process,
                runc_id: c.runc_id.clone(),
                sized,
                runc,
            }
        } else {
            cmd.args(["exec", "--", &c.runc_id]).args(&command);
            cmd.stdin(if opts.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            let mut child = cmd.spawn().map_err(io("running runc exec"))?;
            if let Some(s) = child.stdin.take() {
                stdin = Some(Box::pin(s));
            }
            if let Some(s) = child.stdout.take() {
                readers.push((STDOUT, Box::pin(s)));
            }
            if let Some(s) = child.stderr.take() {
                readers.push((STDERR, Box::pin(s)));
            }
            Launch::Now(child)
        };
        let pumps: Vec<_> = readers
            .into_iter()
            .map(|(stream, mut r)| {
                let tx = output_tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    // A terminal's master reads EIO once the slave is closed.
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0 || tx.send((stream, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        let (hangup_tx, mut hangup_rx) = oneshot::channel::<()>();
        let (exit_tx, exit) = oneshot::channel();
        let error_tx = output_tx.clone();
        drop(output_tx);
        tokio::spawn(async move {
            let (mut child, _process_file) = match launch.start(&mut hangup_rx).await {
                Ok(Some(started)) => started,
                Ok(None) => {
                    let _ = exit_tx.send(exit_code::KILLED);
                    return;
                }
                Err(e) => {
                    let message = format!("running runc exec: {e}\n");
                    let _ = error_tx.send((STDERR, message.into_bytes())).await;
                    let _ = exit_tx.send(exit_code::START_ERROR);
                    return;
                }
            };
            drop(error_tx);
            let status = tokio::select! {
                s = child.wait() => s,
                Ok(()) = &mut hangup_rx => {
                    if let Some(pid) = child.id().and_then(|p| Pid::from_raw(p as i32)) {
                        let _ = kill_process(pid, Signal::HUP);
                    }
                    match tokio::time::timeout(HANGUP_GRACE, child.wait()).await {
                        Ok(s) => s,
                        Err(_) => {
                            let _ = child.start_kill();
                            child.wait().await
                        }
                    }
                }
            };
            let code = status
                .ok()
                .and_then(exit_status_code)
                .unwrap_or(exit_code::KILLED);
            // With a terminal, a background process of the command may
            // still hold the slave open: its output is not waited for.
            for p in pumps {
                let _ = tokio::time::timeout(Duration::from_secs(1), p).await;
            }
            let _ = exit_tx.send(code);
        });
        Ok(ExecSession {
            stdin,
            output,
            terminal,
            exit,
            hangup: Hangup(Some(hangup_tx)),
        })
    }
}

/// How runc exec starts: at once, or on a terminal once it has its size.
enum Launch {
    Now(tokio::process::Child),
    WhenSized {
        /// runc, its stdio on the terminal's slave.
        cmd: tokio::process::Command,
        process: TerminalProcess,
        runc_id: String,
        sized: oneshot::Receiver<(u16, u16)>,
        runc: Arc<OnceLock<Pid>>,
    },
}

impl Launch {
    /// The running runc (and what to remove once it has ended); `None` if
    /// hung up before it started.
    async fn start(
        self,
        hangup: &mut oneshot::Receiver<()>,
    ) -> std::io::Result<Option<(tokio::process::Child, Option<Scratch>)>> {
        match self {
            Launch::Now(child) => Ok(Some((child, None))),
            Launch::WhenSized {
                mut cmd,
                process,
                runc_id,
                sized,
                runc,
            } => {
                let size = tokio::select! {
                    r = tokio::time::timeout(FIRST_SIZE_WAIT, sized) => r.ok().and_then(Result::ok),
                    // Hung up, or the session dropped: nobody is there.
                    _ = &mut *hangup => return Ok(None),
                };
                let file = process.write(size)?;
                cmd.arg("exec")
                    .arg("--process")
                    .arg(&file.0)
                    .args(["--", &runc_id]);
                let child = cmd.spawn()?;
                if let Some(pid) = child.id().and_then(|p| Pid::from_raw(p as i32)) {
                    let _ = runc.set(pid);
                }
                // The slave's last copy here: the master reads its end once
                // the command's processes have closed theirs.
                drop(cmd);
                Ok(Some((child, Some(file))))
            }
        }
    }
}

/// The process a terminal exec runs, as `runc exec --process` takes it:
/// the container's own (user, environment, working directory,
/// capabilities — what `runc exec COMMAND` would take from the bundle)
/// with the command, a terminal and `TERM=xterm` as containerd sets, and
/// `consoleSize`, which runc gives the container's terminal before the
/// command runs. (Without it runc sizes the terminal only after the start,
/// and a command that asks at once — `stty size`, an editor — can see 0×0.)
struct TerminalProcess {
    dir: std::path::PathBuf,
    process: serde_json::Value,
}

impl TerminalProcess {
    fn new(bundle: &std::path::Path, command: &[String]) -> std::io::Result<TerminalProcess> {
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
        let mut process = config["process"].clone();
        if !process.is_object() {
            return Err(std::io::Error::other("config.json has no process"));
        }
        process["args"] = serde_json::json!(command);
        process["terminal"] = true.into();
        let mut env: Vec<serde_json::Value> = process["env"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|v| !v.as_str().is_some_and(|v| v.starts_with("TERM=")))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        env.push("TERM=xterm".into());
        process["env"] = env.into();
        Ok(TerminalProcess {
            dir: bundle.to_path_buf(),
            process,
        })
    }

    /// Writes it, sized `(columns, rows)` if known, for one runc exec.
    fn write(mut self, size: Option<(u16, u16)>) -> std::io::Result<Scratch> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if let Some((width, height)) = size.filter(|&(w, h)| w > 0 && h > 0) {
            self.process["consoleSize"] = serde_json::json!({"height": height, "width": width});
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("exec-{}-{n}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_vec(&self.process)?)?;
        Ok(Scratch(path))
    }
}

/// A file removed when dropped.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// runc's exit status: the command's code, or 128+n for a signal.
fn exit_status_code(s: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt as _;
    s.code().or_else(|| s.signal().map(|n| 128 + n))
}

/// A new pseudo-terminal: (master, slave).
pub(crate) fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pseudo_terminal_opens_and_takes_a_size() {
        let (master, slave) = open_pty().unwrap();
        let terminal = Terminal::new(master, None);
        terminal.resize(120, 40).unwrap();
        let size = rustix::termios::tcgetwinsize(&slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (120, 40));
        assert!(rustix::termios::isatty(&slave));
    }
}
