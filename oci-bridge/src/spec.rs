//! The OCI runtime spec (`config.json`) a container runs with: pure, from
//! the agent's [`ContainerSpec`] and the image's config, with the defaults a
//! Kubernetes user gets from containerd — Docker's default capabilities, the
//! masked and read-only kernel paths, `/dev` and `/proc` of its own, and
//! Kubernetes' rules for `command`/`args` against the image's
//! `Entrypoint`/`Cmd`.

use std::path::Path;

use serde_json::{Value, json};
use skiff_sdk::runtime::ContainerSpec;

use crate::image::ImageConfig;

/// containerd's default capability set (the one Docker documents).
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CFS period the CPU limit is expressed in, as the kubelet does.
const CPU_PERIOD_US: u64 = 100_000;

/// Why a container cannot be specified; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: &'static str,
    pub message: String,
}

/// The argv: `command` replaces the entrypoint and drops `Cmd`; `args`
/// alone replace `Cmd` (Kubernetes' rules).
pub fn argv(spec: &ContainerSpec, image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    let argv: Vec<String> = match (spec.command.is_empty(), spec.args.is_empty()) {
        (false, _) => spec.command.iter().chain(&spec.args).cloned().collect(),
        (true, false) => entrypoint.into_iter().chain(spec.args.clone()).collect(),
        (true, true) => entrypoint.into_iter().chain(cmd).collect(),
    };
    if argv.is_empty() || argv[0].is_empty() {
        return Err(SpecError {
            field: "command",
            message: "no command specified: the image has no Entrypoint or Cmd \
                      and the container no command"
                .into(),
        });
    }
    Ok(argv)
}

/// The environment: the image's, then the container's (a name set twice
/// takes the later value), with `PATH` and `HOSTNAME` as Docker sets them.
pub fn environment(spec: &ContainerSpec, image: &ImageConfig) -> Vec<String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match vars.iter_mut().find(|(n, _)| n == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => vars.push((k.to_string(), v.to_string())),
    };
    set("PATH", DEFAULT_PATH);
    if let Some(h) = &spec.hostname {
        set("HOSTNAME", h);
    }
    if spec.interactive.tty {
        // As containerd does for a container on a terminal.
        set("TERM", "xterm");
    }
    for kv in image.env.iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for (k, v) in &spec.env {
        set(k, v);
    }
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The image's `User` (`uid`, `uid:gid`, `name`, `name:group`) as numbers,
/// names looked up in the image's `/etc/passwd` and `/etc/group`.
pub fn user(image: &ImageConfig, rootfs: &Path) -> Result<(u32, u32), SpecError> {
    let spec = image.user.as_deref().unwrap_or("").trim();
    if spec.is_empty() {
        return Ok((0, 0));
    }
    let err = |message: String| SpecError {
        field: "image.User",
        message,
    };
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let entry = |file: &str, name: &str| -> Option<(u32, u32)> {
        file.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name) && f.len() >= 4)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().unwrap_or(0))))
                .flatten()
        })
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 4 && f[2].parse() == Ok(uid))
                        .then(|| f[3].parse().ok())
                        .flatten()
                })
                .unwrap_or(0),
        ),
        Err(_) => entry(&passwd, u)
            .ok_or_else(|| err(format!("user {u:?} is not in the image's /etc/passwd")))?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
                groups
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.first() == Some(&g) && f.len() >= 3)
                            .then(|| f[2].parse().ok())
                            .flatten()
                    })
                    .ok_or_else(|| err(format!("group {g:?} is not in the image's /etc/group")))?
            }
        },
    };
    Ok((uid, gid))
}

/// The whole `config.json`. `rootfs` is the mounted root (the bundle's
/// `rootfs`), `cgroup` the container's cgroups path.
pub fn runtime_spec(
    spec: &ContainerSpec,
    image: &ImageConfig,
    rootfs: &Path,
    cgroup: &str,
) -> Result<Value, SpecError> {
    let args = argv(spec, image)?;
    let (uid, gid) = user(image, rootfs)?;
    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(SpecError {
            field: "workingDir",
            message: format!("{cwd:?} is not an absolute path"),
        });
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for m in &spec.mounts {
        if !m.container_path.starts_with('/') {
            return Err(SpecError {
                field: "volumeMounts.mountPath",
                message: format!("{:?} is not an absolute path", m.container_path),
            });
        }
        let mut options = vec!["rbind", "rprivate"];
        if m.read_only {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": m.container_path,
            "type": "bind",
            "source": m.host_path,
            "options": options,
        }));
    }
    let pid = match &spec.pid_namespace {
        Some(path) => json!({"type": "pid", "path": path}),
        None => json!({"type": "pid"}),
    };
    let mut namespaces = vec![
        pid,
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if let Some(netns) = &spec.network_namespace {
        namespaces.push(json!({"type": "network", "path": netns}));
    }
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
    });
    if let Some(millis) = spec.limits.cpu_millis {
        // The kubelet's conversion, with its 1 ms floor.
        let quota = (millis * CPU_PERIOD_US / 1000).max(1000);
        resources["cpu"] = json!({"quota": quota, "period": CPU_PERIOD_US});
    }
    let caps: Vec<&str> = CAPABILITIES.to_vec();
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.interactive.tty,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": environment(spec, image),
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": false,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": spec.hostname.clone().unwrap_or_else(|| spec.id.to_string()),
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroup,
            "resources": resources,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_sdk::runtime::{ImageSource, Mount};

    fn spec() -> ContainerSpec {
        ContainerSpec::new("c1", ImageSource::File("/x".into()), "/tmp/c1.log")
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        let v = |s: &[&str]| (!s.is_empty()).then(|| s.iter().map(|x| x.to_string()).collect());
        ImageConfig {
            entrypoint: v(entrypoint),
            cmd: v(cmd),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image(&["/entry"], &["--default"]);
        let mut s = spec();
        assert_eq!(argv(&s, &img).unwrap(), ["/entry", "--default"]);
        s.args = vec!["--mine".into()];
        assert_eq!(argv(&s, &img).unwrap(), ["/entry", "--mine"]);
        s.command = vec!["/bin/sh".into(), "-c".into()];
        s.args = vec!["echo hi".into()];
        assert_eq!(argv(&s, &img).unwrap(), ["/bin/sh", "-c", "echo hi"]);
        s.args.clear();
        assert_eq!(argv(&s, &img).unwrap(), ["/bin/sh", "-c"]);
        let err = argv(&spec(), &image(&[], &[])).unwrap_err();
        assert_eq!(err.field, "command");
    }

    #[test]
    fn the_containers_env_overrides_the_images() {
        let mut img = image(&[], &["x"]);
        img.env = Some(vec!["PATH=/img/bin".into(), "A=1".into(), "B=2".into()]);
        let mut s = spec();
        s.env = vec![("B".into(), "two".into()), ("C".into(), "".into())];
        s.hostname = Some("web-0".into());
        assert_eq!(
            environment(&s, &img),
            ["PATH=/img/bin", "HOSTNAME=web-0", "A=1", "B=two", "C="]
        );
        // On a terminal, TERM as containerd sets it, below the image's.
        s.interactive.tty = true;
        assert!(environment(&s, &img).contains(&"TERM=xterm".to_string()));
        img.env = Some(vec!["TERM=vt100".into()]);
        assert!(environment(&s, &img).contains(&"TERM=vt100".to_string()));
    }

    #[test]
    fn users_resolve_through_the_images_passwd() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let u = |s: &str| {
            let img = ImageConfig {
                user: Some(s.into()),
                ..Default::default()
            };
            user(&img, dir.path())
        };
        assert_eq!(u("").unwrap(), (0, 0));
        assert_eq!(u("www").unwrap(), (33, 34));
        assert_eq!(u("33").unwrap(), (33, 34));
        assert_eq!(u("1000:1000").unwrap(), (1000, 1000));
        assert_eq!(u("www:staff").unwrap(), (33, 50));
        assert_eq!(u("nobody").unwrap_err().field, "image.User");
        assert!(u("www:nogroup").unwrap_err().message.contains("nogroup"));
    }

    #[test]
    fn the_spec_carries_mounts_limits_and_namespaces() {
        let mut s = spec();
        s.command = vec!["/bin/true".into()];
        s.mounts = vec![Mount {
            host_path: "/var/lib/x".into(),
            container_path: "/config".into(),
            read_only: true,
        }];
        s.limits.cpu_millis = Some(250);
        s.network_namespace = Some("/var/run/netns/pod".into());
        let v = runtime_spec(&s, &image(&[], &[]), Path::new("/r"), "/skiff/c1/ctr").unwrap();
        let bind = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/config")
            .unwrap();
        assert_eq!(bind["options"], json!(["rbind", "rprivate", "ro"]));
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 25_000);
        assert!(
            v["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&json!({"type": "network", "path": "/var/run/netns/pod"}))
        );
        s.working_dir = Some("relative".into());
        let err = runtime_spec(&s, &image(&[], &[]), Path::new("/r"), "/c").unwrap_err();
        assert_eq!(err.field, "workingDir");
    }
}
