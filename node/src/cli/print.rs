//! Printing as kubectl prints: server-side Tables through Go's tabwriter
//! settings (columns padded by three spaces, the last one not padded),
//! `kind/name`, and JSON or YAML documents.

use serde_json::{Value, json};

/// Which columns of a server Table to show and how.
#[derive(Debug, Clone)]
pub struct TablePrinter {
    /// Indices into the Table's columnDefinitions.
    columns: Vec<usize>,
    headers: Vec<String>,
    /// A NAMESPACE column first (`-A`).
    namespace: bool,
    /// `deployment.apps/` before each name (more than one kind).
    name_prefix: Option<String>,
}

impl TablePrinter {
    /// `wide` shows the priority > 0 columns too.
    pub fn new(
        table: &Value,
        wide: bool,
        namespace: bool,
        name_prefix: Option<String>,
    ) -> TablePrinter {
        let defs = table["columnDefinitions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let columns: Vec<usize> = (0..defs.len())
            .filter(|&i| wide || defs[i]["priority"].as_i64().unwrap_or(0) == 0)
            .collect();
        let mut headers: Vec<String> = columns
            .iter()
            .map(|&i| defs[i]["name"].as_str().unwrap_or("").to_uppercase())
            .collect();
        if namespace {
            headers.insert(0, "NAMESPACE".into());
        }
        TablePrinter {
            columns,
            headers,
            namespace,
            name_prefix,
        }
    }

    pub fn header(&self) -> Vec<String> {
        self.headers.clone()
    }

    /// The rows of `table` (the listed one, or a watch event's), as cells.
    pub fn rows(&self, table: &Value) -> Vec<Vec<String>> {
        table["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                let cells = row["cells"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let mut out: Vec<String> = self
                    .columns
                    .iter()
                    .map(|&i| cells.get(i).map(cell).unwrap_or_default())
                    .collect();
                if let (Some(p), Some(first)) = (&self.name_prefix, out.first_mut()) {
                    *first = format!("{p}/{first}");
                }
                if self.namespace {
                    let ns = row["object"]["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    out.insert(0, ns);
                }
                out
            })
            .collect()
    }
}

/// One cell as kubectl prints it: strings cut at the first line break
/// (with `...`), numbers and booleans as written, null as nothing.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => match s.find(['\n', '\r', '\x0c']) {
            Some(i) => format!("{}...", &s[..i]),
            None => s.clone(),
        },
        other => other.to_string(),
    }
}

/// Lines aligned as Go's `tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)` aligns
/// tab-separated cells: every column but the last padded to its widest cell
/// plus three spaces.
pub fn tabulate(lines: &[Vec<String>]) -> String {
    tabulate_padded(lines, 3)
}

/// [`tabulate`] with another padding.
pub fn tabulate_padded(lines: &[Vec<String>], padding: usize) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for line in lines {
        for (i, c) in line.iter().enumerate().take(line.len().saturating_sub(1)) {
            let w = c.chars().count();
            match widths.get_mut(i) {
                Some(x) => *x = (*x).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for line in lines {
        for (i, c) in line.iter().enumerate() {
            out.push_str(c);
            if i + 1 < line.len() {
                let pad = widths[i] + padding - c.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// Go's `text/tabwriter` with `minwidth` 0, padding `padding` and spaces
/// (`NewWriter(out, 0, 8, padding, ' ', 0)`, as kubectl's describers use
/// it): tab-terminated cells align in columns, a column block being the
/// consecutive lines that have a cell in that column, so a line without
/// tabs ends the alignment of the lines before it.
pub fn tabwriter(text: &str, padding: usize) -> String {
    let mut lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let complete = text.ends_with('\n');
    if complete {
        lines.pop();
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut widths = Vec::new();
    tab_format(&mut out, &lines, &mut widths, 0, lines.len(), padding);
    if !complete && out.ends_with('\n') {
        out.pop();
    }
    out
}

fn tab_format(
    out: &mut String,
    lines: &[Vec<&str>],
    widths: &mut Vec<usize>,
    mut line0: usize,
    line1: usize,
    padding: usize,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        tab_lines(out, lines, widths, line0, this);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].chars().count() + padding);
            this += 1;
        }
        widths.push(width);
        tab_format(out, lines, widths, line0, this, padding);
        widths.pop();
        line0 = this;
    }
    tab_lines(out, lines, widths, line0, line1);
}

fn tab_lines(out: &mut String, lines: &[Vec<&str>], widths: &[usize], from: usize, to: usize) {
    for line in &lines[from..to] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(w) = widths.get(j) {
                out.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(cell.chars().count()),
                ));
            }
        }
        out.push('\n');
    }
}

/// `kubectl -o json`: four-space indentation.
pub fn json(v: &Value) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    v.serialize(&mut ser).expect("JSON values serialize");
    let mut s = String::from_utf8(buf).expect("serde_json writes UTF-8");
    s.push('\n');
    s
}

pub fn yaml(v: &Value) -> anyhow::Result<String> {
    Ok(serde_saphyr::to_string(v)?)
}

/// kubectl's wrapper for several objects.
pub fn list(items: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Value {
        json!({
            "columnDefinitions": [
                {"name": "Name", "priority": 0},
                {"name": "Ready", "priority": 0},
                {"name": "Nominated Node", "priority": 1},
                {"name": "Age", "priority": 0},
            ],
            "rows": [
                {"cells": ["web-1", "1/1", null, "5s"], "object": {"metadata": {"namespace": "shop"}}},
                {"cells": ["a", 3, "n1", "10m"], "object": {"metadata": {"namespace": "default"}}},
            ]
        })
    }

    #[test]
    fn columns_pad_like_tabwriter() {
        let t = table();
        let p = TablePrinter::new(&t, false, false, None);
        let mut lines = vec![p.header()];
        lines.extend(p.rows(&t));
        assert_eq!(
            tabulate(&lines),
            "NAME    READY   AGE\nweb-1   1/1     5s\na       3       10m\n"
        );
        let p = TablePrinter::new(&t, true, true, Some("pod".into()));
        let mut lines = vec![p.header()];
        lines.extend(p.rows(&t));
        assert_eq!(
            tabulate(&lines),
            "NAMESPACE   NAME        READY   NOMINATED NODE   AGE\n\
             shop        pod/web-1   1/1                      5s\n\
             default     pod/a       3       n1               10m\n"
        );
    }

    #[test]
    fn cells_stop_at_a_line_break() {
        assert_eq!(cell(&json!("one\ntwo")), "one...");
        assert_eq!(cell(&json!(true)), "true");
        assert_eq!(cell(&Value::Null), "");
    }

    #[test]
    fn json_is_indented_by_four() {
        assert_eq!(
            json(&json!({"a": [1]})),
            "{\n    \"a\": [\n        1\n    ]\n}\n"
        );
    }
}
