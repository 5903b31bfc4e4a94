//! End-to-end tests of `lm_core::assets::fetch` against fake wheels served by the real pip from a
//! local folder (`--no-index --find-links DIR --no-cache-dir`): no network, nothing under ~/.cache.
//! Tests that need pip are skipped with a message when `python3 -m pip` is unavailable.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use lm_core::assets::{
    self, FetchOptions, FetchStatus, Manifest, ModelSource, fetch_with_manifest, resolve_model_in,
    sha256_file,
};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

fn sha_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pip_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: python3 -m pip is not available");
    }
    ok
}

/// Writes a minimal valid wheel `dist-ver-py3-none-any.whl` into `dir` with the given members.
fn make_wheel(dir: &Path, dist: &str, version: &str, members: &[(&str, &[u8])]) -> PathBuf {
    let norm = dist.replace('-', "_");
    let path = dir.join(format!("{norm}-{version}-py3-none-any.whl"));
    let mut z = zip::ZipWriter::new(File::create(&path).unwrap());
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(data).unwrap();
    }
    let info = format!("{norm}-{version}.dist-info");
    z.start_file(format!("{info}/METADATA"), opts).unwrap();
    write!(
        z,
        "Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    )
    .unwrap();
    z.start_file(format!("{info}/WHEEL"), opts).unwrap();
    write!(
        z,
        "Wheel-Version: 1.0\nGenerator: openexpert-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    .unwrap();
    z.start_file(format!("{info}/RECORD"), opts).unwrap();
    z.finish().unwrap();
    path
}

/// A temporary world: a wheel folder served by pip and an empty OPENEXPERT_HOME.
struct World {
    _root: tempfile::TempDir,
    wheels: PathBuf,
    home: PathBuf,
}

impl World {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let wheels = root.path().join("wheels");
        let home = root.path().join("home");
        std::fs::create_dir_all(&wheels).unwrap();
        World {
            wheels,
            home,
            _root: root,
        }
    }

    fn opts(&self) -> FetchOptions {
        FetchOptions {
            home: Some(self.home.clone()),
            python: Some("python3".into()),
            pip_args: Some(vec![
                "--no-index".into(),
                "--find-links".into(),
                self.wheels.display().to_string(),
                "--no-cache-dir".into(),
            ]),
            quiet: true,
            force: false,
        }
    }
}

fn single_file_manifest(
    name: &str,
    dist: &str,
    member: &str,
    file: &str,
    sha: &str,
    kind: &str,
) -> String {
    format!(
        r#"
[[asset]]
name = "{name}"
description = "test"
licence = "MIT"
kind = "{kind}"
default = true
parts = [{{ wheel = "{dist}==1.0", member = "{member}" }}]
[[asset.files]]
path = "{file}"
sha256 = "{sha}"
"#
    )
}

/// Names of leftover temporary files or folders anywhere under `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".partial-") || name.starts_with(".download-") {
            out.push(name);
        }
        if e.path().is_dir() {
            out.extend(leftovers(&e.path()));
        }
    }
    out
}

#[test]
fn embedded_manifest_pins_the_defaults() {
    let m = Manifest::embedded().unwrap();
    let defaults: Vec<&str> = m.defaults().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        defaults,
        [
            lm_core::assets::DEFAULT_MODEL,
            lm_core::assets::DEFAULT_ENCODER
        ]
    );
    for a in m.assets() {
        assert!(!a.parts.is_empty() && !a.files.is_empty(), "{}", a.name);
        for f in &a.files {
            assert_eq!(f.sha256.len(), 64, "{} {}", a.name, f.path);
            assert!(
                f.sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(
                f.size.is_some_and(|s| s > 0),
                "{} {} has no size",
                a.name,
                f.path
            );
        }
        for p in &a.parts {
            assert!(
                !p.package().is_empty() && !p.version().is_empty(),
                "{}",
                p.wheel
            );
        }
    }
    let minilm = m.get(lm_core::assets::DEFAULT_ENCODER).unwrap();
    assert_eq!(minilm.kind, assets::AssetKind::HfDir);
    let files: Vec<&str> = minilm.files.iter().map(|f| f.path.as_str()).collect();
    for want in [
        "model.safetensors",
        "tokenizer.json",
        "config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "sentence_bert_config.json",
        "modules.json",
        "1_Pooling/config.json",
    ] {
        assert!(files.contains(&want), "minilm lacks {want}");
    }
    let qwen = m.get("qwen2.5-0.5b-instruct").unwrap();
    assert_eq!(qwen.parts.len(), 6);
    assert_eq!(qwen.files.len(), 1);
    assert!(!qwen.default);
    let gemma = m.get("gemma3-270m").unwrap();
    assert_eq!(gemma.kind, assets::AssetKind::Gguf);
    assert_eq!(gemma.parts.len(), 4);
    assert_eq!(gemma.files.len(), 1);
    assert_eq!(gemma.files[0].size, Some(253_113_024));
    assert!(!gemma.default, "Gemma is fetched on request only");
    assert_eq!(m.get("gsm8k-test").unwrap().kind, assets::AssetKind::Data);
}

#[test]
fn fetch_then_already_present_then_repair() {
    if !pip_available() {
        return;
    }
    let w = World::new();
    let payload = b"GGUF fake model payload".repeat(1000);
    make_wheel(
        &w.wheels,
        "oe-test-single",
        "1.0",
        &[("oe_test_single/m.gguf", &payload)],
    );
    let text = single_file_manifest(
        "tiny",
        "oe-test-single",
        "oe_test_single/m.gguf",
        "tiny.gguf",
        &sha_hex(&payload),
        "gguf",
    );
    let m = Manifest::from_toml_str(&text).unwrap();

    let r = fetch_with_manifest(&m, &[], &w.opts()).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, FetchStatus::Fetched);
    assert_eq!(r[0].bytes_written, payload.len() as u64);
    let dest = w.home.join("models/tiny/tiny.gguf");
    assert_eq!(r[0].files, std::slice::from_ref(&dest));
    assert_eq!(std::fs::read(&dest).unwrap(), payload);
    assert_eq!(sha256_file(&dest).unwrap(), sha_hex(&payload));
    assert!(leftovers(&w.home).is_empty(), "{:?}", leftovers(&w.home));
    assert_eq!(
        resolve_model_in(&m, &w.home, "tiny").unwrap(),
        ModelSource::Gguf(dest.clone())
    );

    // Second run: nothing to do, even with the wheel gone from the index.
    std::fs::remove_dir_all(&w.wheels).unwrap();
    std::fs::create_dir_all(&w.wheels).unwrap();
    let r = fetch_with_manifest(&m, &["tiny".to_string()], &w.opts()).unwrap();
    assert_eq!(r[0].status, FetchStatus::AlreadyPresent);
    assert_eq!(r[0].bytes_written, 0);

    // A file damaged on disk (same size) is detected by its hash and fetched again.
    make_wheel(
        &w.wheels,
        "oe-test-single",
        "1.0",
        &[("oe_test_single/m.gguf", &payload)],
    );
    let mut damaged = payload.clone();
    damaged[7] ^= 1;
    std::fs::write(&dest, &damaged).unwrap();
    let r = fetch_with_manifest(&m, &[], &w.opts()).unwrap();
    assert_eq!(r[0].status, FetchStatus::Fetched);
    assert_eq!(std::fs::read(&dest).unwrap(), payload);

    // force re-downloads a good file.
    let opts = FetchOptions {
        force: true,
        ..w.opts()
    };
    let r = fetch_with_manifest(&m, &[], &opts).unwrap();
    assert_eq!(r[0].status, FetchStatus::Fetched);
}

#[test]
fn folder_member_extracts_only_listed_files() {
    if !pip_available() {
        return;
    }
    let w = World::new();
    let config = br#"{"model_type": "bert"}"#;
    let pooling = br#"{"pooling_mode_mean_tokens": true}"#;
    make_wheel(
        &w.wheels,
        "oe-test-dir",
        "1.0",
        &[
            ("oe_test_dir/model/config.json", config),
            ("oe_test_dir/model/1_Pooling/config.json", pooling),
            ("oe_test_dir/model/README.md", b"not listed"),
        ],
    );
    let text = format!(
        r#"
[[asset]]
name = "emb"
description = "test"
licence = "MIT"
kind = "hf-dir"
parts = [{{ wheel = "oe-test-dir==1.0", member = "oe_test_dir/model/" }}]
[[asset.files]]
path = "config.json"
size = {}
sha256 = "{}"
[[asset.files]]
path = "1_Pooling/config.json"
sha256 = "{}"
"#,
        config.len(),
        sha_hex(config),
        sha_hex(pooling)
    );
    let m = Manifest::from_toml_str(&text).unwrap();
    assert!(m.defaults().is_empty());
    let r = fetch_with_manifest(&m, &["emb".into(), "emb".into()], &w.opts()).unwrap();
    assert_eq!(r.len(), 1, "duplicate names fetch once");
    assert_eq!(r[0].status, FetchStatus::Fetched);
    let dir = w.home.join("models/emb");
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), config);
    assert_eq!(
        std::fs::read(dir.join("1_Pooling/config.json")).unwrap(),
        pooling
    );
    assert!(!dir.join("README.md").exists());
    assert!(leftovers(&w.home).is_empty());
    assert_eq!(
        resolve_model_in(&m, &w.home, "emb").unwrap(),
        ModelSource::HfDir(dir.clone())
    );

    // One file lost: only it is written again.
    std::fs::remove_file(dir.join("1_Pooling/config.json")).unwrap();
    let r = fetch_with_manifest(&m, &["emb".into()], &w.opts()).unwrap();
    assert_eq!(r[0].status, FetchStatus::Fetched);
    assert_eq!(r[0].bytes_written, pooling.len() as u64);
    assert_eq!(
        std::fs::read(dir.join("1_Pooling/config.json")).unwrap(),
        pooling
    );
}

#[test]
fn checksum_mismatch_fails_and_leaves_nothing() {
    if !pip_available() {
        return;
    }
    let w = World::new();
    let tampered = b"this is not the pinned payload";
    make_wheel(
        &w.wheels,
        "oe-test-bad",
        "1.0",
        &[("oe_test_bad/d.jsonl", tampered)],
    );
    let pinned = sha_hex(b"the pinned payload");
    let text = single_file_manifest(
        "bad",
        "oe-test-bad",
        "oe_test_bad/d.jsonl",
        "d.jsonl",
        &pinned,
        "data",
    );
    let m = Manifest::from_toml_str(&text).unwrap();
    let err = fetch_with_manifest(&m, &[], &w.opts())
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(&pinned), "expected hash in: {err}");
    assert!(err.contains(&sha_hex(tampered)), "found hash in: {err}");
    let dir = w.home.join("data/bad");
    assert!(!dir.join("d.jsonl").exists());
    assert!(leftovers(&w.home).is_empty(), "{:?}", leftovers(&w.home));
}

#[test]
fn missing_member_is_a_clear_error() {
    if !pip_available() {
        return;
    }
    let w = World::new();
    make_wheel(
        &w.wheels,
        "oe-test-nomember",
        "1.0",
        &[("oe_test_nomember/other.bin", b"x")],
    );
    let text = single_file_manifest(
        "nm",
        "oe-test-nomember",
        "oe_test_nomember/wanted.bin",
        "wanted.bin",
        &sha_hex(b"x"),
        "data",
    );
    let m = Manifest::from_toml_str(&text).unwrap();
    let err = fetch_with_manifest(&m, &[], &w.opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`oe_test_nomember/wanted.bin` is missing from wheel"),
        "{err}"
    );
    assert!(
        err.contains("oe_test_nomember/other.bin"),
        "lists what is there: {err}"
    );
    assert!(leftovers(&w.home).is_empty());
}

#[test]
fn nonexistent_package_is_a_clear_error() {
    if !pip_available() {
        return;
    }
    let w = World::new();
    let text = single_file_manifest("ghost", "oe-test-ghost", "g/x", "x", &sha_hex(b""), "data");
    let m = Manifest::from_toml_str(&text).unwrap();
    let err = fetch_with_manifest(&m, &[], &w.opts())
        .unwrap_err()
        .to_string();
    assert!(err.contains("oe-test-ghost==1.0 was not found"), "{err}");
    assert!(
        err.contains("No matching distribution"),
        "pip's tail: {err}"
    );
    assert!(leftovers(&w.home).is_empty());
}

#[test]
fn missing_python_is_a_clear_error() {
    let w = World::new();
    let text = single_file_manifest("p", "oe-test-p", "p/x", "x", &sha_hex(b""), "data");
    let m = Manifest::from_toml_str(&text).unwrap();
    let opts = FetchOptions {
        python: Some("/nonexistent/python3".into()),
        ..w.opts()
    };
    let err = fetch_with_manifest(&m, &[], &opts).unwrap_err().to_string();
    assert!(err.contains("`/nonexistent/python3` not found"), "{err}");
    assert!(err.contains("OPENEXPERT_PYTHON"), "{err}");
}

#[cfg(unix)]
#[test]
fn missing_pip_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let fake = w.wheels.join("fake-python");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"$0: No module named pip\" >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = single_file_manifest("p", "oe-test-p", "p/x", "x", &sha_hex(b""), "data");
    let m = Manifest::from_toml_str(&text).unwrap();
    let opts = FetchOptions {
        python: Some(fake.display().to_string()),
        ..w.opts()
    };
    let err = fetch_with_manifest(&m, &[], &opts).unwrap_err().to_string();
    assert!(err.contains("pip is not installed"), "{err}");
}

#[test]
fn unknown_name_lists_known_ones_before_downloading() {
    let w = World::new();
    let text = single_file_manifest("known", "oe-test-k", "k/x", "x", &sha_hex(b""), "data");
    let m = Manifest::from_toml_str(&text).unwrap();
    let opts = FetchOptions {
        python: Some("/nonexistent/python3".into()),
        ..w.opts()
    };
    let err = fetch_with_manifest(&m, &["known".into(), "nope".into()], &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope") && err.contains("known assets are known"),
        "{err}"
    );
    assert!(!w.home.exists(), "nothing was created");
}

#[test]
fn multi_part_concatenation() {
    if !pip_available() {
        return;
    }
    let w = World::new();
    let pieces: Vec<Vec<u8>> = (0..3u8)
        .map(|i| {
            (0..(5000 + 1000 * i as usize))
                .map(|j| (j as u8).wrapping_mul(i + 3))
                .collect()
        })
        .collect();
    let mut joined = Vec::new();
    let mut parts = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let n = i + 1;
        let dist = format!("oe-test-part{n}");
        let member = format!("oe_test_part{n}/data/part0{n}.bin");
        make_wheel(&w.wheels, &dist, "0.9.0", &[(member.as_str(), piece)]);
        parts.push(format!(
            r#"{{ wheel = "{dist}==0.9.0", member = "{member}" }}"#
        ));
        joined.extend_from_slice(piece);
    }
    let text = format!(
        r#"
[[asset]]
name = "joined"
description = "test"
licence = "MIT"
kind = "gguf"
parts = [{}]
[[asset.files]]
path = "joined.gguf"
size = {}
sha256 = "{}"
"#,
        parts.join(", "),
        joined.len(),
        sha_hex(&joined)
    );
    let m = Manifest::from_toml_str(&text).unwrap();
    let r = fetch_with_manifest(&m, &["joined".into()], &w.opts()).unwrap();
    assert_eq!(r[0].status, FetchStatus::Fetched);
    assert_eq!(r[0].bytes_written, joined.len() as u64);
    let dest = w.home.join("models/joined/joined.gguf");
    assert_eq!(std::fs::read(&dest).unwrap(), joined);
    assert!(leftovers(&w.home).is_empty());

    // Parts in the wrong order give another file: the joined checksum catches it.
    let swapped = text.replacen("oe-test-part1==0.9.0", "oe-test-partX==0.9.0", 1);
    let swapped = swapped
        .replacen(
            "oe_test_part1/data/part01.bin",
            "oe_test_partX/data/partX.bin",
            1,
        )
        .replace("oe-test-part2==0.9.0", "oe-test-part1==0.9.0")
        .replace(
            "oe_test_part2/data/part02.bin",
            "oe_test_part1/data/part01.bin",
        )
        .replace("oe-test-partX==0.9.0", "oe-test-part2==0.9.0")
        .replace(
            "oe_test_partX/data/partX.bin",
            "oe_test_part2/data/part02.bin",
        );
    assert_ne!(swapped, text);
    let m2 = Manifest::from_toml_str(&swapped).unwrap();
    std::fs::remove_file(&dest).unwrap();
    let err = fetch_with_manifest(
        &m2,
        &["joined".into()],
        &FetchOptions {
            force: true,
            ..w.opts()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!dest.exists());
    assert!(leftovers(&w.home).is_empty());
}
