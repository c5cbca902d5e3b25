//! Printing: an aligned table for people, JSON or YAML of the same data for
//! scripts.

use serde::Serialize;

use crate::Format;

/// Prints `data` as JSON or YAML, or `rows` under `headers` as a table.
pub(crate) fn print<T: Serialize>(
    format: Format,
    data: &T,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(data)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(data)?),
        Format::Table => print!("{}", table(headers, &rows)),
    }
    Ok(())
}

/// Columns padded to their widest cell, separated by three spaces, as
/// kubectl prints them.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i < last {
                let pad = widths[i] - c.chars().count() + 3;
                s.push_str(&" ".repeat(pad));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let t = table(
            &["NAME", "PODS"],
            &[
                vec!["a".into(), "1".into()],
                vec!["longer".into(), "20".into()],
            ],
        );
        assert_eq!(t, "NAME     PODS\na        1\nlonger   20\n");
    }
}
