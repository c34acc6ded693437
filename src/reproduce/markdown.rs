//! One small helper for the report's Markdown tables. Plain code on purpose: a table crate
//! would re-pad the columns and rewrite every committed results file.

/// A Markdown table: the header row, the `|---|` separator, one line per row; every line
/// ends with a newline. Cells are written as given (no padding, no escaping).
///
/// ```
/// use tensorgrad::reproduce::markdown::table;
/// let t = table(&["loss", "error (%)"], [vec!["SML".to_string(), "0.91".to_string()]]);
/// assert_eq!(t, "| loss | error (%) |\n|---|---|\n| SML | 0.91 |\n");
/// ```
pub fn table<R: AsRef<[String]>>(header: &[&str], rows: impl IntoIterator<Item = R>) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for row in rows {
        out.push_str("| ");
        out.push_str(&row.as_ref().join(" | "));
        out.push_str(" |\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_separator_and_rows() {
        let rows = vec![
            vec!["a".to_string(), "1".into()],
            vec!["b".into(), "—".into()],
        ];
        assert_eq!(
            table(&["x", "y"], &rows),
            "| x | y |\n|---|---|\n| a | 1 |\n| b | — |\n"
        );
        assert_eq!(
            table(&["only"], Vec::<Vec<String>>::new()),
            "| only |\n|---|\n"
        );
    }
}
