//! Container images: pulled with the sdk's registry client (the one the wasm
//! runtime uses), their layers checked against their digests, then applied
//! in order into one read-only root filesystem per image, which every
//! container of that image mounts as the lower layer of an overlay.
//!
//! ```text
//! DIR/images/<manifest hex>/rootfs/     the image's layers, applied in order
//! DIR/images/<manifest hex>/image.json  what a container needs: the config
//! ```
//!
//! Layers are applied with the OCI whiteout rules (`.wh.<name>` deletes
//! `<name>` from the layers below, `.wh..wh..opq` empties its directory of
//! what the layers below put there), entries are confined to the root
//! (`tar`'s `unpack_in` refuses `..` and paths through symlinks out of it),
//! and an image is published by renaming a finished directory, so a crash
//! mid-pull leaves nothing that looks complete.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use skiff_sdk::registry::{Descriptor, RegistryClient, RegistryError};
use skiff_sdk::runtime::{ImageRef, RuntimeError};

/// The parts of an image's config (`application/vnd.oci.image.config.v1+json`)
/// that decide how its containers run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<ImageConfig>,
}

/// An image ready to run: its manifest digest, its config and the root
/// filesystem its containers start from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub digest: String,
    pub config: ImageConfig,
    #[serde(skip)]
    pub rootfs: PathBuf,
}

/// Where images live, and the pulls in flight (one per image at a time).
pub struct ImageStore {
    root: PathBuf,
    registry: RegistryClient,
    platform: String,
    /// Image reference → the image it resolved to, since this process
    /// started (a tag is asked of the registry once; `prepare` after that is
    /// free, as with `imagePullPolicy: IfNotPresent`).
    resolved: parking_lot::Mutex<HashMap<String, Image>>,
    pulling: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.root)
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

/// The layer media types this store can apply.
fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar" => Some(Compression::None),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
}

impl ImageStore {
    /// A store under `root` pulling for `platform` (`linux/amd64`).
    pub fn new(root: PathBuf, registry: RegistryClient, platform: String) -> Self {
        ImageStore {
            root,
            registry,
            platform,
            resolved: Default::default(),
            pulling: Default::default(),
        }
    }

    fn image_dir(&self, digest: &str) -> PathBuf {
        self.root
            .join("images")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// The image `reference` names, pulled if this store does not have it.
    pub async fn pull(&self, reference: &ImageRef) -> Result<(Image, bool), RuntimeError> {
        let key = reference.to_string();
        if let Some(image) = self.resolved.lock().get(&key) {
            return Ok((image.clone(), true));
        }
        let gate = self.pulling.lock().entry(key.clone()).or_default().clone();
        let _one_pull = gate.lock().await;
        if let Some(image) = self.resolved.lock().get(&key) {
            return Ok((image.clone(), true));
        }
        let pull_err = |e: RegistryError| RuntimeError::Pull {
            image: key.clone(),
            message: e.to_string(),
        };
        // A digest reference that is on disk needs no registry.
        let cached = match &reference.digest {
            Some(d) => self.load(d),
            None => None,
        };
        let (image, was_cached) = match cached {
            Some(image) => (image, true),
            None => {
                let fetched = self
                    .registry
                    .manifest(reference, &self.platform)
                    .await
                    .map_err(pull_err)?;
                match self.load(&fetched.digest) {
                    Some(image) => (image, true),
                    None => (
                        self.fetch(reference, &fetched.digest, &fetched.manifest)
                            .await?,
                        false,
                    ),
                }
            }
        };
        self.resolved.lock().insert(key.clone(), image.clone());
        self.pulling.lock().remove(&key);
        Ok((image, was_cached))
    }

    /// An image already applied on disk.
    fn load(&self, digest: &str) -> Option<Image> {
        let dir = self.image_dir(digest);
        let bytes = std::fs::read(dir.join("image.json")).ok()?;
        let mut image: Image = serde_json::from_slice(&bytes).ok()?;
        image.rootfs = dir.join("rootfs");
        image.rootfs.is_dir().then_some(image)
    }

    async fn fetch(
        &self,
        reference: &ImageRef,
        digest: &str,
        manifest: &skiff_sdk::registry::Manifest,
    ) -> Result<Image, RuntimeError> {
        let invalid = |message: String| RuntimeError::InvalidImage {
            image: reference.to_string(),
            message,
        };
        if manifest.is_wasm() {
            return Err(invalid(
                "it is a WebAssembly artifact: run it with runtimeClassName: wasm".into(),
            ));
        }
        let pull_err = |e: RegistryError| RuntimeError::Pull {
            image: reference.to_string(),
            message: e.to_string(),
        };
        let config_bytes = self
            .registry
            .blob(reference, &manifest.config.digest)
            .await
            .map_err(pull_err)?;
        let config: ConfigFile = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid(format!("its config is not an image config: {e}")))?;
        let (os, arch) = self
            .platform
            .split_once('/')
            .unwrap_or((&self.platform, ""));
        if (!config.os.is_empty() && config.os != os)
            || (!config.architecture.is_empty() && config.architecture != arch)
        {
            return Err(invalid(format!(
                "it is built for {}/{}, this node is {}",
                config.os, config.architecture, self.platform
            )));
        }
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for layer in &manifest.layers {
            let compression = layer_compression(&layer.media_type).ok_or_else(|| {
                invalid(format!(
                    "layer {} has media type {:?}, which this runtime cannot apply \
                     (gzip-compressed or plain tar only)",
                    layer.digest, layer.media_type
                ))
            })?;
            let bytes = self
                .registry
                .blob(reference, &layer.digest)
                .await
                .map_err(pull_err)?;
            layers.push((layer.clone(), compression, bytes));
        }
        let image = Image {
            digest: digest.to_string(),
            config: config.config.unwrap_or_default(),
            rootfs: PathBuf::new(),
        };
        let dir = self.image_dir(digest);
        let root = self.root.clone();
        let name = reference.to_string();
        tokio::task::spawn_blocking(move || publish(&root, &dir, &image, &layers))
            .await
            .map_err(|e| RuntimeError::Io {
                context: format!("applying the layers of {name}"),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|e| match e {
                ApplyError::Io(context, source) => RuntimeError::Io { context, source },
                ApplyError::Invalid(message) => RuntimeError::InvalidImage {
                    image: name.clone(),
                    message,
                },
            })
    }
}

/// Packs a directory as a one-layer image (gzip tar, OCI media types) and
/// pushes it under `reference`, like `docker import`: for images made on
/// the spot (the tests, the demo's busybox image). `platform` (`os/arch`)
/// is what its config says it is built for. Returns the manifest digest.
pub async fn push_dir(
    registry: &RegistryClient,
    reference: &ImageRef,
    dir: &Path,
    config: &ImageConfig,
    platform: &str,
) -> Result<String, RegistryError> {
    let io = |e: std::io::Error| RegistryError::Http {
        registry: reference.registry.clone(),
        message: format!("packing {}: {e}", dir.display()),
    };
    let dir2 = dir.to_path_buf();
    let layer = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        tar.append_dir_all(".", &dir2)?;
        tar.into_inner()?.finish()
    })
    .await
    .map_err(|e| io(std::io::Error::other(e.to_string())))?
    .map_err(io)?;
    let layer = bytes::Bytes::from(layer);
    let (os, arch) = platform.split_once('/').unwrap_or(("linux", platform));
    let config_json = serde_json::json!({
        "architecture": arch,
        "os": os,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let config_bytes = bytes::Bytes::from(serde_json::to_vec(&config_json).expect("json"));
    let config_digest = registry.push_blob(reference, config_bytes.clone()).await?;
    let layer_size = layer.len() as u64;
    let layer_digest = registry.push_blob(reference, layer).await?;
    let descriptor = |media_type: &str, digest: String, size: u64| Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        platform: None,
        artifact_type: None,
        annotations: None,
    };
    let manifest = skiff_sdk::registry::Manifest {
        schema_version: 2,
        media_type: Some(skiff_sdk::registry::OCI_MANIFEST_MEDIA_TYPE.to_string()),
        artifact_type: None,
        config: descriptor(
            "application/vnd.oci.image.config.v1+json",
            config_digest,
            config_bytes.len() as u64,
        ),
        layers: vec![descriptor(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            layer_digest,
            layer_size,
        )],
        annotations: None,
    };
    registry
        .push_manifest(
            reference,
            skiff_sdk::registry::OCI_MANIFEST_MEDIA_TYPE,
            bytes::Bytes::from(serde_json::to_vec(&manifest).expect("json")),
        )
        .await
}

#[derive(Debug)]
enum ApplyError {
    Io(String, std::io::Error),
    Invalid(String),
}

/// Applies the layers into a fresh directory and renames it into place.
fn publish(
    root: &Path,
    dir: &Path,
    image: &Image,
    layers: &[(Descriptor, Compression, bytes::Bytes)],
) -> Result<Image, ApplyError> {
    let io = |what: String| move |e: std::io::Error| ApplyError::Io(what, e);
    let tmp = root.join("images").join(format!(
        ".{}.{}.tmp",
        image.digest.trim_start_matches("sha256:"),
        rand::random::<u64>()
    ));
    let rootfs = tmp.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(io(format!("creating {}", rootfs.display())))?;
    let result = (|| {
        for (layer, compression, bytes) in layers {
            let reader: Box<dyn Read> = match compression {
                Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&bytes[..])),
                Compression::None => Box::new(&bytes[..]),
            };
            apply_layer(&rootfs, reader)
                .map_err(|e| ApplyError::Invalid(format!("layer {}: {e}", layer.digest)))?;
        }
        let json = serde_json::to_vec_pretty(image).expect("an image serialises");
        std::fs::write(tmp.join("image.json"), json)
            .map_err(io(format!("writing {}", tmp.display())))?;
        if dir.exists() {
            // Another process finished first; theirs is as good as ours.
            let _ = std::fs::remove_dir_all(&tmp);
        } else {
            std::fs::rename(&tmp, dir).map_err(io(format!("publishing {}", dir.display())))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    Ok(Image {
        rootfs: dir.join("rootfs"),
        ..image.clone()
    })
}

/// Applies one layer (an uncompressed tar stream) on top of `root`.
pub fn apply_layer(root: &Path, reader: impl Read) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    // Paths this layer wrote: an opaque directory keeps them.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = clean(&entry.path()?).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "an entry's path leaves the root",
            )
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == ".wh..wh..opq" {
            let dir = root.join(&parent);
            if let Ok(children) = std::fs::read_dir(&dir) {
                for child in children.flatten() {
                    let rel = parent.join(child.file_name());
                    if !written.contains(&rel) {
                        remove_any(&child.path())?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            remove_any(&root.join(&parent).join(hidden))?;
            continue;
        }
        // A file replacing a directory (or the reverse) replaces it whole.
        let target = root.join(&path);
        if let Ok(meta) = std::fs::symlink_metadata(&target)
            && meta.is_dir() != entry.header().entry_type().is_dir()
        {
            remove_any(&target)?;
        }
        if !entry.unpack_in(root)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("entry {} leaves the root", path.display()),
            ));
        }
        written.insert(path);
    }
    Ok(())
}

/// `path` without `.` components or a leading `/`; `None` if it has `..`.
fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match content {
                Some(text) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(text.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, text.as_bytes()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_apply_with_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        apply_layer(
            root,
            &layer(&[
                ("etc/", None),
                ("etc/a", Some("a1")),
                ("etc/b", Some("b1")),
                ("var/", None),
                ("var/lib/", None),
                ("var/lib/x", Some("x")),
                ("opt/", None),
                ("opt/old", Some("old")),
            ])[..],
        )
        .unwrap();
        apply_layer(
            root,
            &layer(&[
                ("etc/a", Some("a2")),
                ("etc/.wh.b", Some("")),
                ("var/.wh.lib", Some("")),
                ("opt/", None),
                ("opt/.wh..wh..opq", Some("")),
                ("opt/new", Some("new")),
            ])[..],
        )
        .unwrap();
        let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
        assert_eq!(read("etc/a").as_deref(), Some("a2"));
        assert_eq!(read("etc/b"), None);
        assert!(!root.join("var/lib").exists());
        assert!(root.join("var").is_dir());
        assert_eq!(read("opt/old"), None);
        assert_eq!(read("opt/new").as_deref(), Some("new"));
        assert!(!root.join("etc/.wh.b").exists());
    }

    #[test]
    fn entries_cannot_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        // `tar::Builder` refuses `..` itself, so write the header by hand.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..10].copy_from_slice(b"../escaped");
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'x'; 512]);
        bytes.extend_from_slice(&[0; 1024]);
        let err = apply_layer(&root, &bytes[..]).unwrap_err();
        assert!(err.to_string().contains("leaves the root"), "{err}");
        assert!(!dir.path().join("escaped").exists());
    }
}
