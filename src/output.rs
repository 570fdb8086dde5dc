//! Text that leaves simgate for somebody's screen: a log line, a terminal, a spreadsheet.
//! DICOM values and login names come from the network, so control characters and the Unicode
//! bidirectional overrides are shown escaped, never obeyed, and a CSV cell can never start a
//! spreadsheet formula.

/// Characters shown escaped: C0 and C1 controls, DEL, and the bidi marks, embeddings,
/// overrides and isolates.
fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// `text` with every dangerous character written as `\u{..}` (`\n`, `\r`, `\t` as such).
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_dangerous) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_dangerous(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A message of several lines (a TOML parse error shows the line and a caret under it) for
/// a terminal: each line escaped, and every line after the first indented by `indent`, so no
/// text inside the message can pass for a line of its own.
pub fn escape_lines(text: &str, indent: usize) -> String {
    text.trim_end()
        .split('\n')
        .map(escape)
        .collect::<Vec<_>>()
        .join(&format!("\n{:indent$}", ""))
}

/// A CSV cell that a spreadsheet will show as text: one starting with `=`, `+`, `-`, `@`,
/// tab or carriage return gets a leading apostrophe (OWASP's advice). Quoting is the csv
/// crate's.
pub fn csv_cell(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{value}"))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

/// CSV rows through the csv crate (quoting), each cell neutralised with [`csv_cell`].
pub fn write_csv_row<W: std::io::Write>(
    csv: &mut csv::Writer<W>,
    cells: impl IntoIterator<Item = String>,
) -> csv::Result<()> {
    csv.write_record(cells.into_iter().map(|cell| csv_cell(&cell).into_owned()))
}

/// The G-code report as CSV: the web page's download and `simgate report --csv` alike.
/// The report's root-cause table as CSV (cells that could start a formula neutralised).
pub fn root_causes_csv<W: std::io::Write>(
    out: W,
    causes: &[crate::naming::report::RootCause],
) -> csv::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    write_csv_row(
        &mut csv,
        [
            "kind",
            "name",
            "studies",
            "station",
            "protocol",
            "calling_ae_title",
            "nearest",
        ]
        .map(String::from),
    )?;
    for c in causes {
        write_csv_row(
            &mut csv,
            [
                c.kind.to_string(),
                c.name.clone(),
                c.count.to_string(),
                c.station.clone(),
                c.protocol.clone(),
                c.calling_ae_title.clone(),
                c.nearest.clone(),
            ],
        )?;
    }
    csv.flush()?;
    Ok(())
}

pub fn report_csv<W: std::io::Write>(
    out: W,
    group_column: &str,
    rows: &[crate::naming::report::ReportRow],
) -> csv::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    write_csv_row(
        &mut csv,
        [
            group_column,
            "G9318",
            "G9319",
            "G9320",
            "total",
            "conformance_rate",
        ]
        .map(String::from),
    )?;
    for r in rows {
        write_csv_row(
            &mut csv,
            [
                r.group.clone(),
                r.g9318.to_string(),
                r.g9319.to_string(),
                r.g9320.to_string(),
                r.total.to_string(),
                r.conformance_rate
                    .map(|rate| format!("{rate:.3}"))
                    .unwrap_or_default(),
            ],
        )?;
    }
    csv.flush()?;
    Ok(())
}

/// A `tracing` writer that escapes dangerous characters in each formatted event (its final
/// newline kept), so a value with a newline cannot forge a log line.
pub struct EscapingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, newline) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (text.as_ref(), ""),
        };
        // ANSI colours are off (the subscriber writes plain text), so every ESC is data.
        let escaped = escape(body);
        self.0.write_all(escaped.as_bytes())?;
        self.0.write_all(newline.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(escape("CTSIM"), "CTSIM");
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("abc\u{202E}fed"), "abc\\u{202e}fed");
    }

    #[test]
    fn lines_of_a_message_stay_lines_indented_and_escaped() {
        assert_eq!(escape_lines("one line", 4), "one line");
        assert_eq!(
            escape_lines("parse error\n  |\n1 | x\u{1b}[2J\n", 4),
            "parse error\n      |\n    1 | x\\u{1b}[2J"
        );
    }

    #[test]
    fn formula_cells_are_neutralised() {
        for formula in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(csv_cell(formula).starts_with('\''), "{formula:?}");
        }
        assert_eq!(csv_cell("CT SIM"), "CT SIM");
    }
}

/// A writer for the operator's terminal (the CLI's standard output): every dangerous
/// character but the newline is written as a JSON-style `\uXXXX` escape, which keeps `--json`
/// output valid JSON and shows tables and CSV with the escape instead of obeying it.
pub struct TerminalWriter<W: std::io::Write> {
    inner: W,
    /// The start of a UTF-8 sequence split across writes.
    pending: Vec<u8>,
}

impl<W: std::io::Write> TerminalWriter<W> {
    pub fn new(inner: W) -> TerminalWriter<W> {
        TerminalWriter {
            inner,
            pending: Vec::new(),
        }
    }

    fn put(&mut self, text: &str) -> std::io::Result<()> {
        // Printable ASCII and newlines (nearly all output) pass as they are.
        if text
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) || b == b'\n')
        {
            return self.inner.write_all(text.as_bytes());
        }
        let mut start = 0;
        for (at, c) in text.char_indices() {
            if c != '\n' && is_dangerous(c) {
                self.inner.write_all(&text.as_bytes()[start..at])?;
                write!(self.inner, "\\u{:04x}", c as u32)?;
                start = at + c.len_utf8();
            }
        }
        self.inner.write_all(&text.as_bytes()[start..])
    }
}

impl<W: std::io::Write> std::io::Write for TerminalWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The common case: whole characters, nothing left over from the last write.
        if self.pending.is_empty()
            && let Ok(text) = std::str::from_utf8(buf)
        {
            self.put(text)?;
            return Ok(buf.len());
        }
        self.pending.extend_from_slice(buf);
        let bytes = std::mem::take(&mut self.pending);
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.put(text)?;
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    self.put(std::str::from_utf8(valid).unwrap_or_default())?;
                    match e.error_len() {
                        // An incomplete sequence at the end: wait for the rest.
                        None => {
                            self.pending = after.to_vec();
                            break;
                        }
                        Some(bad) => {
                            self.put("\u{fffd}")?;
                            rest = &after[bad..];
                        }
                    }
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod terminal_tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_terminal_sees_escapes_and_json_stays_json() {
        let mut out = TerminalWriter::new(Vec::new());
        let text = "{\"name\": \"DOE\u{202E}EVIL\u{1b}[2J\"}\n";
        // Split inside the three-byte override on purpose.
        let bytes = text.as_bytes();
        out.write_all(&bytes[..14]).expect("write");
        out.write_all(&bytes[14..]).expect("write");
        let written = String::from_utf8(out.inner).expect("utf-8");
        assert_eq!(written, "{\"name\": \"DOE\\u202eEVIL\\u001b[2J\"}\n");
        let parsed: serde_json::Value = serde_json::from_str(&written).expect("still JSON");
        assert_eq!(parsed["name"], "DOE\u{202E}EVIL\u{1b}[2J");
    }
}

/// Asks on standard error and reads one line from the terminal on standard input without
/// echoing it (the terminal's echo is restored before returning).
pub fn prompt_hidden(prompt: &str) -> std::io::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    use std::io::Write;
    let stdin = std::io::stdin();
    let mut stderr = std::io::stderr();
    write!(stderr, "{prompt}")?;
    stderr.flush()?;
    let before = tcgetattr(&stdin)?;
    let mut quiet = before.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    tcsetattr(&stdin, OptionalActions::Now, &before)?;
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
