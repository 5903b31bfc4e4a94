//! The runner of the bad-input corpus (`tests/bad_inputs/cases.toml`).
//!
//! Each case is a folder of inputs (`tests/bad_inputs/<kind>/<case>/`, committed, and/or written
//! by a generator of [`crate::generate`]), the CLI arguments that feed them to `openexpert`, and
//! the text its error must contain. A case passes when the command fails with exit code 1 (a
//! clear error; 101 is a panic, 124+ a crash or a hang), prints no panic message, and its stderr
//! contains every expected substring. A few cases are inputs PEFT accepts with a warning: they
//! give `exit = 0` and the warning's text.
//!
//! Placeholders in the arguments: `{case}` (the case's materialised folder), `{out}` (an empty
//! folder for outputs), `{corpus}` (the committed corpus folder), and the fixtures `{gguf}`,
//! `{hf}`, `{bert}`, `{bank}`, `{moe}` (valid tiny models, a bank of two tiny adapters and their
//! mixture).
//!
//! `OPENEXPERT_CORPUS_PROBE=1` prints every case's exit code and last error line instead of
//! asserting (to write a new case's `expect`); `OPENEXPERT_CORPUS_KEEP=1` keeps the temporary
//! folder; `OPENEXPERT_CORPUS_ONLY=text` runs the cases whose name contains `text`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::generate::{self, Fixtures};

/// Longest a case may run.
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    case: Vec<Case>,
}

/// One bad input and what the CLI must say about it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// `<kind>/<case>`: the folder of its committed files (if any) and its name.
    name: String,
    /// What is wrong with the input, and the public report it comes from, if any.
    why: String,
    /// The CLI arguments, with placeholders.
    args: Vec<String>,
    /// Substrings the error output must contain.
    expect: Vec<String>,
    /// A generator of [`generate::generate`] that writes the case's larger files.
    #[serde(default)]
    generate: Option<String>,
    /// The expected exit code: 1 (refused) unless given; 0 for inputs accepted with a warning.
    #[serde(default = "refused")]
    exit: i32,
}

fn refused() -> i32 {
    1
}

/// The committed corpus folder.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs")
}

fn manifest() -> Vec<Case> {
    let path = corpus_dir().join("cases.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let m: Manifest = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    m.case
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Files under `dir`, relative to it, with `/` separators.
fn files_under(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            files_under(&e.path(), &format!("{name}/"), out);
        } else {
            out.insert(name);
        }
    }
}

/// The committed binary files equal what their generators write; with
/// `OPENEXPERT_BLESS_CORPUS=1` they are (re)written instead.
pub fn check_committed_binaries() {
    let bless = std::env::var("OPENEXPERT_BLESS_CORPUS").is_ok_and(|v| v == "1");
    let root = corpus_dir();
    let mut stale = Vec::new();
    for (rel, bytes) in generate::committed() {
        let path = root.join(&rel);
        assert!(
            bytes.len() < 10 * 1024,
            "{rel}: {} bytes, too big to commit; generate it at test time instead",
            bytes.len()
        );
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else if std::fs::read(&path).ok().as_ref() != Some(&bytes) {
            stale.push(rel);
        }
    }
    assert!(
        stale.is_empty(),
        "committed corpus files differ from their generators (rerun with OPENEXPERT_BLESS_CORPUS=1 and commit): {stale:?}"
    );
}

/// The manifest is consistent: names unique, each committed file belongs to a case (or is a
/// shared input under `common/`), at least 40 cases and 40 files.
fn check_manifest(cases: &[Case]) {
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names.len(),
        cases.len(),
        "duplicate case names in cases.toml"
    );
    let mut files = BTreeSet::new();
    files_under(&corpus_dir(), "", &mut files);
    let orphans: Vec<&String> = files
        .iter()
        .filter(|f| f.contains('/') && !f.starts_with("common/"))
        .filter(|f| !names.iter().any(|n| f.starts_with(&format!("{n}/"))))
        .collect();
    assert!(orphans.is_empty(), "corpus files no case uses: {orphans:?}");
    for c in cases {
        assert!(!c.expect.is_empty(), "{}: no expected text", c.name);
        assert!(!c.why.is_empty(), "{}: say what is wrong (why)", c.name);
        let dir = corpus_dir().join(&c.name);
        assert!(
            dir.is_dir() || c.generate.is_some(),
            "{}: no committed folder and no generator",
            c.name
        );
    }
    let inputs = files
        .iter()
        .filter(|f| f.contains('/') && !f.starts_with("common/"))
        .count();
    assert!(
        cases.len() >= 40 && inputs >= 40,
        "{} cases, {inputs} files",
        cases.len()
    );
}

/// What one run of a case gave.
struct Outcome {
    code: Option<i32>,
    stderr: String,
    timed_out: bool,
}

fn run_case(bin: &Path, case: &Case, root: &Path, fx: &Fixtures) -> Outcome {
    let dir = root.join("cases").join(&case.name);
    let out = root.join("out").join(&case.name);
    std::fs::create_dir_all(&out).unwrap();
    if let Some(g) = &case.generate {
        generate::generate(g, &dir, fx);
    }
    let committed = corpus_dir().join(&case.name);
    if committed.is_dir() {
        copy_dir(&committed, &dir);
    }
    std::fs::create_dir_all(&dir).unwrap();
    let subst = |a: &str| {
        a.replace("{case}", &dir.display().to_string())
            .replace("{out}", &out.display().to_string())
            .replace("{corpus}", &corpus_dir().display().to_string())
            .replace("{gguf}", &fx.gguf.display().to_string())
            .replace("{hf}", &fx.hf.display().to_string())
            .replace("{bert}", &fx.bert.display().to_string())
            .replace("{bank}", &fx.bank.display().to_string())
            .replace("{moe}", &fx.moe.display().to_string())
    };
    let args: Vec<String> = case.args.iter().map(|a| subst(a)).collect();
    let stderr_path = out.join("stderr.txt");
    let mut child = Command::new(bin)
        .args(&args)
        .env("OPENEXPERT_HOME", root.join("home"))
        .env("OPENEXPERT_THREADS", "1")
        .env("RUST_BACKTRACE", "0")
        .env_remove("RUST_LOG")
        .current_dir(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let (code, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status.code(), false);
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code,
        stderr: String::from_utf8_lossy(&std::fs::read(&stderr_path).unwrap()).into_owned(),
        timed_out,
    }
}

/// Why a case's outcome is wrong, if it is.
fn verdict(case: &Case, o: &Outcome) -> Option<String> {
    let last = o
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if o.timed_out {
        return Some(format!("timed out after {TIMEOUT:?}"));
    }
    if o.stderr.contains("panicked at") || o.code == Some(101) {
        let at = o
            .stderr
            .lines()
            .skip_while(|l| !l.contains("panicked at"))
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        return Some(format!("PANIC (exit {:?}): {at}", o.code));
    }
    match o.code {
        Some(c) if c == case.exit => {}
        Some(0) => return Some(format!("accepted (exit 0); stderr: {last}")),
        other => return Some(format!("exit {other:?} (expected {}): {last}", case.exit)),
    }
    let missing: Vec<&String> = case
        .expect
        .iter()
        .filter(|e| !o.stderr.contains(e.as_str()))
        .collect();
    (!missing.is_empty()).then(|| format!("error lacks {missing:?}: {}", o.stderr.trim()))
}

/// Runs every case through the CLI; fails listing every case that went wrong.
pub fn run_all(bin: &Path) {
    let cases = manifest();
    check_manifest(&cases);
    let only = std::env::var("OPENEXPERT_CORPUS_ONLY").ok();
    let probe = std::env::var("OPENEXPERT_CORPUS_PROBE").is_ok_and(|v| v == "1");
    let keep = std::env::var("OPENEXPERT_CORPUS_KEEP").is_ok_and(|v| v == "1");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let fx = Fixtures::build(&root.join("fixtures"), bin);
    let selected: Vec<&Case> = cases
        .iter()
        .filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    // Two workers: each case is a short process.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(case) = selected.get(i) else { break };
                    let o = run_case(bin, case, &root, &fx);
                    results.lock().unwrap().push((i, o));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut failures = Vec::new();
    for (i, o) in &results {
        let case = selected[*i];
        if probe {
            let last = o
                .stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            eprintln!("{:<45} exit {:?}  {last}", case.name, o.code);
            continue;
        }
        if let Some(why) = verdict(case, o) {
            failures.push(format!("{} ({}): {why}", case.name, case.why));
        }
    }
    if keep {
        eprintln!("corpus kept in {}", tmp.keep().display());
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs were not refused cleanly:\n{}",
        failures.len(),
        selected.len(),
        failures.join("\n")
    );
}
