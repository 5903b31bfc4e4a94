//! Command-line plumbing shared by the pipeline commands (`rocket`, `tapir`): `--set KEY=VALUE`
//! overrides of a TOML config, and the command line a report prints for re-running.

use anyhow::Context;

/// Sets a dotted key of a TOML document to a value (TOML syntax, or a bare string).
pub(crate) fn set_key(doc: &mut toml::Value, assignment: &str) -> anyhow::Result<()> {
    let (key, value) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment:?}: expected KEY=VALUE, e.g. train.lr=1e-3"))?;
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut node = doc;
    for (i, part) in parts.iter().enumerate() {
        let table = node
            .as_table_mut()
            .with_context(|| format!("--set {key}: {} is not a section", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            table.insert((*part).to_string(), parsed.clone());
            return Ok(());
        }
        node = table
            .entry((*part).to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}

/// The command line `args` (argv, program first) as one shell line a user can paste: the
/// program as `openexpert`, arguments with characters outside `[A-Za-z0-9-_./=,:]` single-quoted.
pub(crate) fn shell_line(args: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let a = if i == 0 {
            "openexpert".to_string()
        } else {
            a.clone()
        };
        if a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:".contains(c))
        {
            out.push(a);
        } else {
            out.push(format!("'{}'", a.replace('\'', r"'\''")));
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_quote_what_the_shell_would_split() {
        let args: Vec<String> = [
            "/tmp/target/release/openexpert",
            "tapir",
            "--set",
            "curriculum.alpha=[0.5, 1.0]",
            "--output",
            "runs/it's",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            shell_line(&args),
            r"openexpert tapir --set 'curriculum.alpha=[0.5, 1.0]' --output 'runs/it'\''s'"
        );
    }

    #[test]
    fn set_key_creates_sections_and_refuses_non_sections() {
        let mut doc = toml::Value::Table(Default::default());
        set_key(&mut doc, "a.b.c=3").unwrap();
        set_key(&mut doc, "a.name=plain words").unwrap();
        assert_eq!(doc["a"]["b"]["c"].as_integer(), Some(3));
        assert_eq!(doc["a"]["name"].as_str(), Some("plain words"));
        assert!(
            set_key(&mut doc, "a.b.c.d=1").is_err(),
            "c is a value, not a section"
        );
    }
}
