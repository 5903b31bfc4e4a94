//! Markdown tables and number formatting for reports.

/// A GitHub-flavoured markdown table, columns padded to line up in plain text.
///
/// `align_right[i]` right-aligns column `i` (missing entries mean left). Cells have `|` escaped
/// as `\|` and line breaks replaced by `<br>`, so a cell never breaks the table. A row shorter
/// than the header is padded with empty cells; a longer row widens the table (the header gets
/// empty cells), so no data is dropped. Returns the table ending in a newline.
pub fn markdown_table(header: &[&str], align_right: &[bool], rows: &[Vec<String>]) -> String {
    let ncols = rows
        .iter()
        .map(Vec::len)
        .chain(std::iter::once(header.len()))
        .max()
        .unwrap_or(0)
        .max(1);
    let row_cells = |cells: Vec<String>| {
        let mut cells: Vec<String> = cells.iter().map(|c| escape(c)).collect();
        cells.resize(ncols, String::new());
        cells
    };
    let head = row_cells(header.iter().map(|h| h.to_string()).collect());
    let body: Vec<Vec<String>> = rows.iter().map(|r| row_cells(r.clone())).collect();
    let right = |i: usize| align_right.get(i).copied().unwrap_or(false);
    let widths: Vec<usize> = (0..ncols)
        .map(|i| {
            body.iter()
                .chain(std::iter::once(&head))
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(3)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = " ".repeat(widths[i] - c.chars().count());
                if right(i) {
                    format!("{pad}{c}")
                } else {
                    format!("{c}{pad}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&head);
    let rule: Vec<String> = (0..ncols)
        .map(|i| {
            if right(i) {
                format!("{}:", "-".repeat(widths[i] - 1))
            } else {
                "-".repeat(widths[i])
            }
        })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for r in &body {
        out.push_str(&line(r));
    }
    out
}

fn escape(cell: &str) -> String {
    cell.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace("\r\n", "<br>")
        .replace('\n', "<br>")
}

/// `mean ± se` with `digits` decimals, e.g. `0.433 ± 0.045`; only the mean when `se` is `None`
/// or non-finite; `—` when the mean is non-finite.
pub fn fmt_mean_se(mean: f64, se: Option<f64>, digits: usize) -> String {
    if !mean.is_finite() {
        return "—".to_string();
    }
    match se.filter(|s| s.is_finite()) {
        Some(se) => format!("{mean:.digits$} ± {se:.digits$}"),
        None => format!("{mean:.digits$}"),
    }
}

/// `v` with `digits` decimals; `—` for `None` or a non-finite value.
pub fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v.filter(|v| v.is_finite()) {
        Some(v) => format!("{v:.digits$}"),
        None => "—".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_escapes() {
        let t = markdown_table(
            &["name", "acc"],
            &[false, true],
            &[
                vec!["a|b".into(), "0.5".into()],
                vec!["two\nlines".into(), "0.25".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "| name         |  acc |");
        assert_eq!(lines[1], "| ------------ | ---: |");
        assert_eq!(lines[2], "| a\\|b         |  0.5 |");
        assert_eq!(lines[3], "| two<br>lines | 0.25 |");
        // Every line has exactly ncols + 1 unescaped pipes.
        for l in &lines {
            assert_eq!(l.replace("\\|", "").matches('|').count(), 3, "{l}");
        }
    }

    #[test]
    fn table_ragged_rows_keep_all_cells() {
        let t = markdown_table(&["a"], &[], &[vec![], vec!["1".into(), "2".into()]]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| a   |     |");
        assert_eq!(lines[2], "|     |     |");
        assert_eq!(lines[3], "| 1   | 2   |");
    }

    #[test]
    fn number_formats() {
        assert_eq!(fmt_mean_se(0.4333, Some(0.0449), 3), "0.433 ± 0.045");
        assert_eq!(fmt_mean_se(0.5, None, 2), "0.50");
        assert_eq!(fmt_mean_se(0.5, Some(f64::NAN), 1), "0.5");
        assert_eq!(fmt_mean_se(f64::NAN, Some(0.1), 1), "—");
        assert_eq!(fmt_opt(Some(1.23456), 2), "1.23");
        assert_eq!(fmt_opt(None, 2), "—");
        assert_eq!(fmt_opt(Some(f64::INFINITY), 2), "—");
    }
}
