//! How `tail` prints what it follows: stdout lines to stdout, stderr and system lines to
//! stderr, raw (ANSI colour kept unless stripped), optionally with the gateway time, or one
//! JSON record per line. Output is buffered while more is pending, and each stream is
//! flushed before the other is written so a shared terminal keeps the order.

use std::borrow::Cow;
use std::io::{self, BufWriter, Stderr, Stdout, Write};

use serde_json::{json, Value};

use super::follow::{Record, RecordBody};

/// What `--no-color`, `--timestamps` and `--json` ask for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// Remove ANSI escape sequences from lines.
    pub strip_color: bool,
    /// Prefix each line with the gateway's time.
    pub timestamps: bool,
    /// One JSON object per event on stdout instead of raw lines.
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Out,
    Err,
}

/// Writes records to stdout and stderr.
pub struct Printer {
    style: Style,
    out: BufWriter<Stdout>,
    err: BufWriter<Stderr>,
    /// The stream written last, flushed before the other one is written.
    last: Option<Which>,
}

impl Printer {
    pub fn new(style: Style) -> Self {
        Self {
            style,
            out: BufWriter::with_capacity(64 * 1024, io::stdout()),
            err: BufWriter::with_capacity(16 * 1024, io::stderr()),
            last: None,
        }
    }

    /// Prints one record as the style says.
    pub fn record(&mut self, record: &Record) -> io::Result<()> {
        if self.style.json {
            let mut object = match &record.json {
                Value::Object(map) => map.clone(),
                _ => serde_json::Map::new(),
            };
            let event = match record.body {
                RecordBody::Log { .. } => "log",
                RecordBody::Status { .. } => "status",
                RecordBody::Custom { .. } => "custom",
            };
            object.insert("event".into(), event.into());
            object.entry("seq").or_insert(record.seq.into());
            return self.json(&Value::Object(object));
        }
        match &record.body {
            RecordBody::Log { stream, line } => {
                let which = if stream == "stdout" {
                    Which::Out
                } else {
                    Which::Err
                };
                let line = if self.style.strip_color {
                    strip_ansi(line)
                } else {
                    Cow::Borrowed(line.as_str())
                };
                let timestamps = self.style.timestamps;
                let w = self.switch(which)?;
                if timestamps {
                    write!(w, "{} ", record.ts)?;
                }
                w.write_all(line.as_bytes())?;
                w.write_all(b"\n")
            }
            RecordBody::Custom { kind, data } => self.notice(&format!("{kind}: {data}")),
            RecordBody::Status { .. } => Ok(()),
        }
    }

    /// A `gap` or `reset` in the JSON output (the notice goes to stderr separately).
    pub fn json_event(&mut self, event: &str, fields: Value) -> io::Result<()> {
        if !self.style.json {
            return Ok(());
        }
        let mut object = match fields {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        object.insert("event".into(), event.into());
        self.json(&Value::Object(object))
    }

    /// A one-line `tailgate: ...` message on stderr.
    pub fn notice(&mut self, message: &str) -> io::Result<()> {
        let w = self.switch(Which::Err)?;
        writeln!(w, "tailgate: {message}")?;
        w.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.err.flush()
    }

    fn json(&mut self, value: &Value) -> io::Result<()> {
        let w = self.switch(Which::Out)?;
        serde_json::to_writer(&mut *w, value)?;
        w.write_all(b"\n")
    }

    fn switch(&mut self, which: Which) -> io::Result<&mut dyn Write> {
        if self.last != Some(which) {
            match self.last {
                Some(Which::Out) => self.out.flush()?,
                Some(Which::Err) => self.err.flush()?,
                None => {}
            }
            self.last = Some(which);
        }
        Ok(match which {
            Which::Out => &mut self.out,
            Which::Err => &mut self.err,
        })
    }
}

/// A gap notice's fields, for the JSON output.
pub fn gap_fields(from: u64, to: u64) -> Value {
    json!({ "from": from, "to": to })
}

/// `line` without ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL|ST`,
/// `ESC ( B`-style designations, and two-byte `ESC x`).
pub fn strip_ansi(line: &str) -> Cow<'_, str> {
    if !line.contains('\x1b') {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' {
                        break;
                    }
                    if c == '\x1b' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            // `ESC ( B` and the like: intermediates in ' '..'/', then one final byte.
            Some(c) if (' '..='/').contains(&c) => {
                for c in chars.by_ref() {
                    if !(' '..='/').contains(&c) {
                        break;
                    }
                }
            }
            Some(_) | None => {}
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_csi_osc_and_short_escapes() {
        assert_eq!(
            strip_ansi("\x1b[1;31merror\x1b[0m: x \x1b]8;;http://a\x07link\x1b]8;;\x1b\\ \x1b(Bok"),
            "error: x link ok"
        );
        assert!(matches!(strip_ansi("plain"), Cow::Borrowed("plain")));
        assert_eq!(strip_ansi("cut\x1b["), "cut");
    }
}
