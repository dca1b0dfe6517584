//! A container's own standard streams after it started: what `kubectl
//! attach` (and `kubectl run -i`) connects to, as a kubelet's runtime keeps
//! them.
//!
//! At start ([`Wiring`]) the container gets, as its spec asks:
//! - neither `stdin` nor `tty`: `/dev/null` as input, output in pipes;
//! - `stdin`: a pipe as input, kept open here for attachers. With
//!   `stdinOnce` it closes (end of file) when the first attach session's
//!   input ends;
//! - `tty`: a terminal. `runc run` in the foreground makes the container's
//!   terminal and copies between it and its own stdio, which is the slave
//!   end of a pseudo-terminal opened here (as for `exec -t`, see
//!   [`crate::exec`]); the master carries input and output, and its window
//!   size is the one runc passes on.
//!
//! The output is pumped into the container's log as before, and, as it is
//! read, to whoever is attached ([`Console`]): an attacher sees the output
//! from when it attached, without waiting for whole lines (a shell's
//! prompt has no newline). An attacher too slow to take it loses what it
//! missed, not the log.

use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use rustix::process::Pid;
use skiff_sdk::runtime::{ContainerId, Interactive, LogStream, RuntimeError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::OciRuntime;
use crate::exec::{ExecOptions, ExecSession, Hangup, STDERR, STDOUT, Terminal};

/// Output chunks held for an attacher that is behind.
const LIVE_BACKLOG: usize = 64;

/// The container's standard input while it is open.
type Input = Arc<tokio::sync::Mutex<Option<Pin<Box<dyn AsyncWrite + Send>>>>>;

/// The streams of a container that attach sessions connect to.
pub(crate) struct Console {
    /// Live output; `None` once the container's output has ended.
    live: Mutex<Option<Live>>,
    input: Option<Input>,
    stdin_once: bool,
    /// The terminal's master and runc's pid, with `tty`.
    terminal: Option<(OwnedFd, Option<Pid>)>,
}

impl Console {
    /// The console of a container that never ran.
    pub(crate) fn none() -> Console {
        Console {
            live: Mutex::new(None),
            input: None,
            stdin_once: false,
            terminal: None,
        }
    }

    /// The output has ended: attachers are let go.
    pub(crate) fn close(&self) {
        self.live.lock().take();
    }
}

/// The output streams to pump into the log (and to attachers).
pub(crate) type Readers = Vec<(LogStream, Pin<Box<dyn AsyncRead + Send>>)>;

/// Where the pumps send what they read, for attachers.
pub(crate) type Live = broadcast::Sender<(LogStream, Bytes)>;

/// How `runc run` is connected, decided before it is spawned.
pub(crate) struct Wiring {
    interactive: Interactive,
    /// (master, slave) with `tty`.
    pty: Option<(OwnedFd, OwnedFd)>,
}

impl Wiring {
    pub(crate) fn new(interactive: Interactive) -> std::io::Result<Wiring> {
        let pty = if interactive.tty {
            Some(crate::exec::open_pty()?)
        } else {
            None
        };
        Ok(Wiring { interactive, pty })
    }

    /// Sets runc's stdio.
    pub(crate) fn stdio(&self, cmd: &mut tokio::process::Command) -> std::io::Result<()> {
        match &self.pty {
            Some((_, slave)) => {
                let dup = || slave.try_clone().map(Stdio::from);
                cmd.stdin(if self.interactive.stdin {
                    dup()?
                } else {
                    Stdio::null()
                })
                .stdout(dup()?)
                .stderr(dup()?);
            }
            None => {
                cmd.stdin(if self.interactive.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            }
        }
        Ok(())
    }

    /// After the spawn: the console, the output to pump and its sender.
    /// (The slave end is closed here, so the master reads its end once
    /// the container's last process is gone.)
    pub(crate) fn finish(
        self,
        child: &mut tokio::process::Child,
    ) -> std::io::Result<(Console, Readers, Live)> {
        let (live, _) = broadcast::channel(LIVE_BACKLOG);
        let mut readers: Readers = Vec::new();
        let mut input: Option<Pin<Box<dyn AsyncWrite + Send>>> = None;
        let mut terminal = None;
        match self.pty {
            Some((master, slave)) => {
                drop(slave);
                let file = || {
                    master
                        .try_clone()
                        .map(|f| tokio::fs::File::from_std(std::fs::File::from(f)))
                };
                if self.interactive.stdin {
                    input = Some(Box::pin(file()?));
                }
                readers.push((LogStream::Stdout, Box::pin(file()?)));
                let runc = child.id().and_then(|p| Pid::from_raw(p as i32));
                terminal = Some((master, runc));
            }
            None => {
                if let Some(s) = child.stdin.take() {
                    input = Some(Box::pin(s));
                }
                if let Some(s) = child.stdout.take() {
                    readers.push((LogStream::Stdout, Box::pin(s)));
                }
                if let Some(s) = child.stderr.take() {
                    readers.push((LogStream::Stderr, Box::pin(s)));
                }
            }
        }
        let console = Console {
            live: Mutex::new(Some(live.clone())),
            input: input.map(|i| Arc::new(tokio::sync::Mutex::new(Some(i)))),
            stdin_once: self.interactive.stdin_once,
            terminal,
        };
        Ok((console, readers, live))
    }
}

impl OciRuntime {
    /// Connects to the running container `id`'s own streams: its output
    /// from now on, and, as `opts` asks and its spec allows, its standard
    /// input and terminal. The session ends when the container's output
    /// does (exit code 0: the attach itself went well; how the container
    /// ended is in its status) or when it is hung up, which leaves the
    /// container running.
    pub async fn attach_session(
        &self,
        id: &ContainerId,
        opts: ExecOptions,
    ) -> Result<ExecSession, RuntimeError> {
        let c = self.running(id, "attach")?;
        let console = &c.console;
        let mut live = console
            .live
            .lock()
            .as_ref()
            .map(broadcast::Sender::subscribe)
            .ok_or_else(|| crate::runtime::not_running(id, "attach"))?;
        let (output_tx, output) = mpsc::channel(16);
        let (hangup_tx, mut hangup_rx) = oneshot::channel::<()>();
        let (exit_tx, exit) = oneshot::channel();
        tokio::spawn(async move {
            loop {
                let (stream, data) = tokio::select! {
                    r = live.recv() => match r {
                        Ok(chunk) => chunk,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = &mut hangup_rx => break,
                };
                let stream = match stream {
                    LogStream::Stdout => STDOUT,
                    LogStream::Stderr => STDERR,
                };
                if output_tx.send((stream, data.to_vec())).await.is_err() {
                    break;
                }
            }
            drop(output_tx);
            let _ = exit_tx.send(0);
        });
        let stdin = match (&console.input, opts.stdin) {
            (Some(input), true) => Some(attach_input(input.clone(), console.stdin_once)),
            _ => None,
        };
        let terminal = match (&console.terminal, opts.tty) {
            (Some((master, runc)), true) => Some(Terminal::new(
                master.try_clone().map_err(|source| RuntimeError::Io {
                    context: "the container's terminal".into(),
                    source,
                })?,
                *runc,
            )),
            _ => None,
        };
        Ok(ExecSession {
            stdin,
            output,
            terminal,
            exit,
            hangup: Hangup::new(hangup_tx),
        })
    }
}

/// One attacher's input, copied into the container's: several attachers
/// may type at once, as on a shared terminal. Its end closes the
/// container's input with `stdinOnce`.
fn attach_input(input: Input, once: bool) -> Pin<Box<dyn AsyncWrite + Send>> {
    let (ours, mut theirs) = tokio::io::duplex(32 * 1024);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = theirs.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut open = input.lock().await;
            let Some(w) = open.as_mut() else { break };
            if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
                open.take();
                break;
            }
        }
        if once {
            // End of file for a pipe; a terminal just takes no more input.
            if let Some(mut w) = input.lock().await.take() {
                let _ = w.shutdown().await;
            }
        }
    });
    Box::pin(ours)
}
