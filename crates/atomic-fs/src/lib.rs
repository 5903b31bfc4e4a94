//! Atomic writes, in one place: a reader (or a resumed run) sees either the old content or the
//! new content of a file or directory, never a half-written one.
//!
//! - [`write_atomic`]: a file, through a temporary sibling in the same directory, `fsync`ed,
//!   renamed over the target, then the directory `fsync`ed.
//! - [`write_json`]: pretty JSON with a trailing newline, through [`write_atomic`].
//! - [`StagedDir`]: a directory built in a hidden sibling and swapped in as a whole on
//!   [`commit`](StagedDir::commit).
//!
//! This crate depends on std, `tempfile` and serde only, so burn-free crates (data-select) use
//! it too.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while writing atomically.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system level I/O failure on a named file or directory.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A value could not be serialised to JSON.
    #[error("cannot write {path} as JSON: {source}")]
    Json {
        /// The file that was to be written.
        path: PathBuf,
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The output path exists and is a file, not a directory.
    #[error("output {path} exists and is not a directory: pick another --output")]
    NotADirectory {
        /// The output path.
        path: PathBuf,
    },
    /// The output directory exists, is not empty, and replacing it was not asked for.
    #[error(
        "output directory {path} exists and is not empty: pass --force to replace it, or pick another --output"
    )]
    OutputExists {
        /// The output directory.
        path: PathBuf,
    },
    /// The output path has no final component to name a directory (e.g. `/` or `..`).
    #[error("output {path} has no directory name: give a path that ends in a directory name")]
    NoName {
        /// The output path.
        path: PathBuf,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The directory `path` lives in (`.` for a bare file name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The last component of `path`, as a string, for naming hidden siblings.
fn name_of(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::NoName {
            path: path.to_path_buf(),
        })
}

/// `fsync`s a directory so a rename inside it survives a crash. A no-op where directories cannot
/// be opened for syncing (Windows).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Gives a temporary file or directory the mode an ordinary `create` / `mkdir` would (`mode`
/// minus the umask) instead of tempfile's owner-only 0600 / 0700, since it becomes a published
/// output once renamed into place.
fn published(builder: &mut tempfile::Builder<'_, '_>, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = (builder, mode);
}

/// Writes `bytes` to `path` atomically: a temporary sibling in the same directory (so the rename
/// stays on one file system), written and `fsync`ed, renamed over `path`, then the directory
/// `fsync`ed. Creates missing parent directories. On failure the temporary file is removed and
/// `path` keeps its old content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], with the content written by `write` into the temporary file (for
/// streaming writers). If `write` fails, nothing is renamed and `path` keeps its old content.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = parent_of(path);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = name_of(path)?;
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    published(&mut builder, 0o666);
    let mut tmp = builder.tempfile_in(&dir).map_err(|e| Error::io(&dir, e))?;
    write(tmp.as_file_mut())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    sync_dir(&dir)
}

/// Writes `value` to `path` as pretty JSON with a trailing newline, atomically ([`write_atomic`]).
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// An output directory being written: files go to a hidden sibling directory that
/// [`commit`](StagedDir::commit) swaps in for the target as a whole; dropped uncommitted, the
/// sibling is removed and the target is untouched.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staging: Option<tempfile::TempDir>,
}

impl StagedDir {
    /// Checks `target` (refused when it is a file, or a non-empty directory unless `force`) and
    /// creates the staging directory next to it (creating missing parents).
    pub fn create(target: &Path, force: bool) -> Result<Self> {
        if target.exists() {
            if !target.is_dir() {
                return Err(Error::NotADirectory {
                    path: target.to_path_buf(),
                });
            }
            let non_empty = std::fs::read_dir(target)
                .map_err(|e| Error::io(target, e))?
                .next()
                .is_some();
            if non_empty && !force {
                return Err(Error::OutputExists {
                    path: target.to_path_buf(),
                });
            }
        }
        Self::replacing(target)
    }

    /// A staged directory that will replace `target` whatever it holds (a directory, or nothing);
    /// still refuses a `target` that is a file.
    pub fn replacing(target: &Path) -> Result<Self> {
        if target.exists() && !target.is_dir() {
            return Err(Error::NotADirectory {
                path: target.to_path_buf(),
            });
        }
        let name = name_of(target)?;
        let parent = parent_of(target);
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let prefix = format!(".{name}.partial-");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        published(&mut builder, 0o777);
        let staging = builder
            .tempdir_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            staging: Some(staging),
        })
    }

    /// Where files are written until the commit.
    pub fn path(&self) -> &Path {
        self.staging
            .as_ref()
            .expect("a staged directory has its staging until commit")
            .path()
    }

    /// The final directory.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the staged directory into place, replacing an existing target as a whole: the old
    /// target is first renamed aside, the staging renamed in, and only then the old one removed,
    /// so a crash leaves either the old or the new directory (plus a hidden leftover), never a
    /// mix of the two. Files in the staging are `fsync`ed before the swap.
    pub fn commit(mut self) -> Result<PathBuf> {
        let staging = self
            .staging
            .take()
            .expect("a staged directory has its staging until commit");
        sync_tree(staging.path())?;
        let parent = parent_of(&self.target);
        let aside = if self.target.exists() {
            let aside = tempfile::Builder::new()
                .prefix(&format!(".{}.old-", name_of(&self.target)?))
                .tempdir_in(&parent)
                .map_err(|e| Error::io(&parent, e))?
                .keep();
            // `rename` over an (empty) directory replaces it on Unix; remove it first elsewhere.
            #[cfg(not(unix))]
            std::fs::remove_dir(&aside).map_err(|e| Error::io(&aside, e))?;
            std::fs::rename(&self.target, &aside).map_err(|e| Error::io(&self.target, e))?;
            Some(aside)
        } else {
            None
        };
        let staged = staging.keep();
        if let Err(e) = std::fs::rename(&staged, &self.target) {
            // Put the old directory back; the staging stays for inspection.
            if let Some(aside) = &aside {
                let _ = std::fs::rename(aside, &self.target);
            }
            let _ = std::fs::remove_dir_all(&staged);
            return Err(Error::io(&self.target, e));
        }
        sync_dir(&parent)?;
        if let Some(aside) = aside {
            std::fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
        }
        Ok(self.target.clone())
    }
}

/// `fsync`s every regular file under `dir`, and the directories themselves.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn outputs_get_the_permissions_of_an_ordinary_create() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode();
        let tmp = tempfile::tempdir().unwrap();
        let reference = tmp.path().join("plain");
        std::fs::write(&reference, b"").unwrap();
        let f = tmp.path().join("a.json");
        super::write_atomic(&f, b"{}").unwrap();
        assert_eq!(mode(&f), mode(&reference), "not tempfile's owner-only 0600");
        let reference_dir = tmp.path().join("plain-dir");
        std::fs::create_dir(&reference_dir).unwrap();
        let d = tmp.path().join("out");
        super::StagedDir::create(&d, false)
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(
            mode(&d),
            mode(&reference_dir),
            "not tempfile's owner-only 0700"
        );
    }

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_and_replaces_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(names(p.parent().unwrap()), ["a.bin"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |f| {
            f.write_all(b"half of the new")?;
            Err(std::io::Error::other("killed half-way"))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    #[test]
    fn json_is_pretty_with_a_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.json");
        write_json(&p, &serde_json::json!({"a": [1, 2]})).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.ends_with("}\n") && text.contains("\n  \"a\""),
            "{text:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["a"][1], 2);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        assert!(matches!(
            write_atomic(Path::new("/"), b"x"),
            Err(Error::NoName { .. })
        ));
    }

    #[test]
    fn staged_dir_refuses_non_empty_unless_forced_and_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        let err = StagedDir::create(&target, false).unwrap_err();
        assert!(matches!(err, Error::OutputExists { .. }));
        assert!(err.to_string().contains("--force"), "{err}");
        {
            let s = StagedDir::create(&target, true).unwrap();
            std::fs::write(s.path().join("f"), b"y").unwrap();
            // dropped without commit: staging removed, target untouched
        }
        assert!(target.join("keep").is_file());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
        let s = StagedDir::create(&target, true).unwrap();
        std::fs::write(s.path().join("f"), b"y").unwrap();
        std::fs::create_dir(s.path().join("nested")).unwrap();
        std::fs::write(s.path().join("nested").join("g"), b"z").unwrap();
        assert_eq!(s.commit().unwrap(), target);
        assert!(target.join("f").is_file() && !target.join("keep").exists());
        assert_eq!(
            std::fs::read(target.join("nested").join("g")).unwrap(),
            b"z"
        );
        // The directory was replaced as a whole: nothing aside or staged is left.
        assert_eq!(names(root.path()), ["out"]);
    }

    #[test]
    fn staged_dir_refuses_a_file_and_creates_missing_parents() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            StagedDir::create(&file, true),
            Err(Error::NotADirectory { .. })
        ));
        let deep = root.path().join("a").join("b").join("out");
        let s = StagedDir::create(&deep, false).unwrap();
        std::fs::write(s.path().join("x"), b"1").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read(deep.join("x")).unwrap(), b"1");
    }

    /// A child process that is SIGKILLed while writing leaves the old content readable.
    #[cfg(unix)]
    #[test]
    fn a_writer_killed_mid_write_leaves_the_old_content() {
        if let Ok(path) = std::env::var("ATOMIC_FS_CHILD_WRITE") {
            // The child: start writing new content and never finish (the parent kills us).
            let _ = write_atomic_with(Path::new(&path), |f| {
                f.write_all(&[b'n'; 4096])?;
                f.flush()?;
                std::fs::write(format!("{path}.started"), b"")?;
                std::thread::sleep(std::time::Duration::from_secs(60));
                Ok(())
            });
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"old").unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::a_writer_killed_mid_write_leaves_the_old_content",
                "--nocapture",
            ])
            .env("ATOMIC_FS_CHILD_WRITE", &p)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = dir.path().join("state.json.started");
        let t0 = std::time::Instant::now();
        while !started.exists() {
            assert!(
                t0.elapsed().as_secs() < 30,
                "the child never started writing"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        // A later write still succeeds and replaces it.
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }
}
