//! Object formats for classification: which format an object is (by its
//! name's extension, `.gz` stripped, else by sniffing its text), and how a
//! CSV, JSON or NDJSON object becomes the text the detectors run over: one
//! `"<key words>: <value>\n"` line per cell or JSON string/number, so that
//! context-dependent detectors see the column or key name and escaped JSON
//! content is decoded. Only matches inside a value count (a key never
//! counts, nor a match spanning two values). Unparsable objects fall back to
//! plain text.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// How an object was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Csv,
    Json,
    Ndjson,
}

/// Longest key (in bytes) put before a value; longer keys are cut.
const MAX_KEY: usize = 200;

/// The text to classify and the byte ranges of its values, sorted; None
/// when all of the text counts (plain text).
pub(crate) struct Flat<'a> {
    pub text: Cow<'a, str>,
    pub spans: Option<Vec<(usize, usize)>>,
    pub format: Format,
}

impl Flat<'_> {
    /// Whether `start..end` lies inside one value.
    pub fn counts(&self, start: usize, end: usize) -> bool {
        let Some(spans) = &self.spans else {
            return true;
        };
        let after = spans.partition_point(|span| span.0 <= start);
        after > 0 && end <= spans[after - 1].1
    }
}

/// The format the name says, if any.
pub fn format_of_name(name: &str) -> Option<Format> {
    let lower = name.to_ascii_lowercase();
    let base = lower.strip_suffix(".gz").unwrap_or(&lower);
    if base.ends_with(".csv") {
        Some(Format::Csv)
    } else if base.ends_with(".json") {
        Some(Format::Json)
    } else if base.ends_with(".ndjson") || base.ends_with(".jsonl") {
        Some(Format::Ndjson)
    } else {
        None
    }
}

/// `text` (the object `name`, maybe `truncated`) as key/value lines.
pub(crate) fn flatten<'a>(name: &str, text: &'a str, truncated: bool) -> Flat<'a> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parsed = match format_of_name(name) {
        Some(Format::Csv) => csv(text, truncated).map(|out| (out, Format::Csv)),
        Some(Format::Json) => json(text, truncated).map(|out| (out, Format::Json)),
        Some(Format::Ndjson) => ndjson(text, truncated, false).map(|out| (out, Format::Ndjson)),
        Some(Format::Text) => None,
        None => match text.trim_start().as_bytes().first() {
            Some(b'{' | b'[') => json(text, false)
                .map(|out| (out, Format::Json))
                .or_else(|| ndjson(text, truncated, true).map(|out| (out, Format::Ndjson))),
            _ => None,
        },
    };
    match parsed {
        Some((out, format)) => Flat {
            text: Cow::Owned(out.text),
            spans: Some(out.spans),
            format,
        },
        None => Flat {
            text: Cow::Borrowed(text),
            spans: None,
            format: Format::Text,
        },
    }
}

/// Key/value lines being built.
#[derive(Default)]
struct Builder {
    text: String,
    spans: Vec<(usize, usize)>,
}

impl Builder {
    /// Adds `"<key>: <value>\n"` (just the value for an empty key); blank
    /// values are left out.
    fn push(&mut self, key: &str, value: &str) {
        if value.trim().is_empty() {
            return;
        }
        if !key.is_empty() {
            self.text.push_str(key);
            self.text.push_str(": ");
        }
        let start = self.text.len();
        self.text.push_str(value);
        self.spans.push((start, self.text.len()));
        self.text.push('\n');
    }
}

/// A column or key name as words, so the detectors' context words match:
/// `date_of_birth`, `date-of-birth` and `dateOfBirth` become
/// `date of birth`-like text; control characters become spaces.
fn key_words(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut previous: Option<char> = None;
    for c in key.trim().chars() {
        if out.len() >= MAX_KEY {
            break;
        }
        if c.is_uppercase() && previous.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit()) {
            out.push(' ');
        }
        out.push(if matches!(c, '_' | '-' | '.') || c.is_control() {
            ' '
        } else {
            c
        });
        previous = Some(c);
    }
    out
}

// ---- CSV ---------------------------------------------------------------------

/// RFC 4180 records: `,` separated, `"` quoted with `""` escapes, quoted
/// cells may hold commas and newlines; records end in LF or CRLF.
struct CsvReader<'a> {
    text: &'a str,
    pos: usize,
    /// The object was cut: an unterminated quoted cell at the end is kept.
    truncated: bool,
}

impl<'a> CsvReader<'a> {
    /// The next record's cells; Ok(false) at the end; Err for malformed
    /// input (an unterminated quote, text after a closing quote).
    fn record(&mut self, cells: &mut Vec<Cow<'a, str>>) -> Result<bool, ()> {
        cells.clear();
        let bytes = self.text.as_bytes();
        if self.pos >= bytes.len() {
            return Ok(false);
        }
        loop {
            if bytes.get(self.pos) == Some(&b'"') {
                let mut value = String::new();
                let mut from = self.pos + 1;
                loop {
                    match bytes[from..].iter().position(|&b| b == b'"') {
                        None if self.truncated => {
                            value.push_str(&self.text[from..]);
                            cells.push(Cow::Owned(value));
                            self.pos = bytes.len();
                            return Ok(true);
                        }
                        None => return Err(()),
                        Some(at) => {
                            let quote = from + at;
                            value.push_str(&self.text[from..quote]);
                            if bytes.get(quote + 1) == Some(&b'"') {
                                value.push('"');
                                from = quote + 2;
                            } else {
                                self.pos = quote + 1;
                                break;
                            }
                        }
                    }
                }
                cells.push(Cow::Owned(value));
                match bytes.get(self.pos) {
                    None => return Ok(true),
                    Some(b',') => self.pos += 1,
                    Some(b'\n') => {
                        self.pos += 1;
                        return Ok(true);
                    }
                    Some(b'\r') if bytes.get(self.pos + 1) == Some(&b'\n') => {
                        self.pos += 2;
                        return Ok(true);
                    }
                    Some(_) => return Err(()),
                }
            } else {
                let start = self.pos;
                let end = bytes[start..]
                    .iter()
                    .position(|&b| b == b',' || b == b'\n')
                    .map_or(bytes.len(), |at| start + at);
                let cell = &self.text[start..end];
                match bytes.get(end) {
                    Some(b',') => {
                        cells.push(Cow::Borrowed(cell));
                        self.pos = end + 1;
                    }
                    _ => {
                        cells.push(Cow::Borrowed(cell.strip_suffix('\r').unwrap_or(cell)));
                        self.pos = (end + 1).min(bytes.len());
                        return Ok(true);
                    }
                }
            }
        }
    }
}

/// Every cell after the header row as `"<header>: <cell>"`.
fn csv(text: &str, truncated: bool) -> Option<Builder> {
    let mut reader = CsvReader {
        text,
        pos: 0,
        truncated,
    };
    let mut cells = Vec::new();
    let mut out = Builder::default();
    // The header: the first record that is not blank.
    loop {
        if !reader.record(&mut cells).ok()? {
            return Some(out);
        }
        if cells.iter().any(|cell| !cell.trim().is_empty()) {
            break;
        }
    }
    let header: Vec<String> = cells.iter().map(|cell| key_words(cell)).collect();
    while reader.record(&mut cells).ok()? {
        for (column, cell) in cells.iter().enumerate() {
            out.push(header.get(column).map_or("", String::as_str), cell);
        }
    }
    Some(out)
}

// ---- JSON --------------------------------------------------------------------

/// Walks a JSON value without building it, adding every string and number
/// under the nearest object key.
struct Walk<'b> {
    out: &'b mut Builder,
    key: &'b str,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.out.push(self.key, &value.to_string());
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.out.push(self.key, &value.to_string());
        Ok(())
    }

    fn visit_f64<E>(self, value: f64) -> Result<(), E> {
        self.out.push(self.key, &value.to_string());
        Ok(())
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        self.out.push(self.key, value);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Walk { out, key } = self;
        while seq
            .next_element_seed(Walk {
                out: &mut *out,
                key,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Walk { out, .. } = self;
        while let Some(key) = map.next_key::<String>()? {
            let key = key_words(&key);
            map.next_value_seed(Walk {
                out: &mut *out,
                key: &key,
            })?;
        }
        Ok(())
    }
}

/// Adds one JSON document's values; Err(true) when it ended too early.
fn walk_document(out: &mut Builder, text: &str) -> Result<(), bool> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    Walk { out, key: "" }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|error| error.is_eof())
}

/// A whole JSON document; a cut one (`truncated`) keeps what was read.
fn json(text: &str, truncated: bool) -> Option<Builder> {
    let mut out = Builder::default();
    match walk_document(&mut out, text) {
        Ok(()) => Some(out),
        Err(true) if truncated => Some(out),
        Err(_) => None,
    }
}

/// One JSON document per non-empty line (objects only when sniffing); a
/// cut last line (`truncated`) keeps what was read. Sniffing needs at least
/// one line.
fn ndjson(text: &str, truncated: bool, objects_only: bool) -> Option<Builder> {
    let mut out = Builder::default();
    let mut documents = 0usize;
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if objects_only && !line.starts_with('{') {
            return None;
        }
        match walk_document(&mut out, line) {
            Ok(()) => documents += 1,
            Err(true) if truncated && lines.peek().is_none() => break,
            Err(_) => return None,
        }
    }
    (documents > 0 || !objects_only).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(flat: &Flat) -> Vec<String> {
        flat.text.lines().map(str::to_string).collect()
    }

    #[test]
    fn csv_cells_get_their_header() {
        let flat = flatten(
            "people.csv",
            "name,date_of_birth,note\r\nAda,1985-03-12,\"says \"\"hi\"\",\nbye\"\n\nBob,,x,extra\n",
            false,
        );
        assert_eq!(flat.format, Format::Csv);
        assert_eq!(
            lines(&flat),
            [
                "name: Ada",
                "date of birth: 1985-03-12",
                "note: says \"hi\",",
                "bye",
                "name: Bob",
                "note: x",
                "extra"
            ]
        );
        let broken = flatten("x.csv", "a,b\n\"open,1\n", false);
        assert_eq!(broken.format, Format::Text);
        let cut = flatten("x.csv", "a,b\n\"open,1\n", true);
        assert_eq!(cut.format, Format::Csv);
    }

    #[test]
    fn json_values_get_their_key() {
        let flat = flatten(
            "x.data",
            r#"{"user":{"eMail":"a\u0040example.com","tags":["x",7]},"ok":true,"n":null}"#,
            false,
        );
        assert_eq!(flat.format, Format::Json);
        assert_eq!(
            lines(&flat),
            ["e Mail: a@example.com", "tags: x", "tags: 7"]
        );
        assert!(flat.counts(8, 10));
        assert!(!flat.counts(0, 3));

        let nd = flatten("log", "{\"a\":\"x\"}\n\n{\"b\":\"y\"}\n", false);
        assert_eq!(nd.format, Format::Ndjson);
        assert_eq!(lines(&nd), ["a: x", "b: y"]);
        assert_eq!(flatten("log", "{ not json\n", false).format, Format::Text);
        assert_eq!(flatten("a.json", "[1, 2", false).format, Format::Text);
        assert_eq!(flatten("a.json", "[1, 2", true).format, Format::Json);
        assert_eq!(
            flatten("a.jsonl.gz", "3\n\"s\"\n", false).format,
            Format::Ndjson
        );
    }
}
