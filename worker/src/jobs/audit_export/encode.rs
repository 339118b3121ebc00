//! Turning audit events into export bytes: CSV per RFC 4180 (header row,
//! CRLF line ends, quotes doubled, cells that a spreadsheet would run as a
//! formula neutralised as OWASP recommends) or NDJSON (one object per line),
//! optionally gzip. A gzip file is written as a series of members, one per
//! stored part, so a resumed export just starts the next member: every gzip
//! reader (gunzip, Python, flate2's MultiGzDecoder) reads them as one file.

use std::io::Write;

use chrono::{Datelike, SecondsFormat, Timelike};
use flate2::write::GzEncoder;
use flate2::Compression;
use longhaul_core::audit::export::ExportFormat;
use longhaul_core::audit::AuditEventRef;
use uuid::Uuid;

/// The CSV columns, in order.
pub const CSV_HEADER: &[&str] = &[
    "id",
    "occurredAt",
    "recordedAt",
    "source",
    "actorType",
    "actorId",
    "actorKeyId",
    "action",
    "resourceType",
    "resourceId",
    "ip",
    "requestId",
    "externalId",
    "details",
];

/// Characters that make a spreadsheet read a cell as a formula when first.
const FORMULA_TRIGGERS: &[u8] = b"=+-@\t\r";

/// The header of a file in `format` (NDJSON has none).
pub fn header(format: ExportFormat) -> Vec<u8> {
    match format {
        ExportFormat::Csv => format!("{}\r\n", CSV_HEADER.join(",")).into_bytes(),
        ExportFormat::Json => Vec::new(),
    }
}

/// Appends one event in `format`.
pub fn encode_row(
    format: ExportFormat,
    event: &AuditEventRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match format {
        ExportFormat::Csv => {
            csv_row(event, out);
            Ok(())
        }
        ExportFormat::Json => {
            serde_json::to_writer(&mut *out, event)
                .map_err(|e| format!("encoding an event as JSON: {e}"))?;
            out.push(b'\n');
            Ok(())
        }
    }
}

fn csv_row(event: &AuditEventRef<'_>, out: &mut Vec<u8>) {
    let mut id = Uuid::encode_buffer();
    out.extend_from_slice(b"aud_");
    out.extend_from_slice(event.id.simple().encode_lower(&mut id).as_bytes());
    out.push(b',');
    utc_time(out, &event.occurred_at);
    out.push(b',');
    utc_time(out, &event.recorded_at);
    for value in [
        Some(event.source),
        Some(event.actor_type),
        event.actor_id,
        event.actor_key_id,
        Some(event.action),
        event.resource_type,
        event.resource_id,
        event.ip,
        event.request_id,
        event.external_id,
        Some(event.details),
    ] {
        out.push(b',');
        if let Some(value) = value {
            cell(out, value);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The file's bytes on their way to the upload: passed through, or gzip
/// compressed as a series of members.
pub struct Packer {
    /// Set for gzip: the current member, writing into its own buffer.
    gzip: Option<GzEncoder<Vec<u8>>>,
}

const GZIP_LEVEL: u32 = 1;

impl Packer {
    pub fn new(gzip: bool) -> Self {
        Self {
            gzip: gzip.then(|| GzEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL))),
        }
    }

    /// Bytes ready to store (the compressor may hold some back until the
    /// member ends).
    pub fn pack(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        match &mut self.gzip {
            None => Ok(bytes),
            Some(gz) => {
                gz.write_all(&bytes)
                    .map_err(|e| format!("compressing: {e}"))?;
                Ok(std::mem::take(gz.get_mut()))
            }
        }
    }

    /// Ends the current gzip member (nothing for plain files) and returns
    /// what is left of it; the next bytes start a new member. After this the
    /// bytes handed out are a complete file so far.
    pub fn end_member(&mut self) -> Result<Vec<u8>, String> {
        match self.gzip.take() {
            None => Ok(Vec::new()),
            Some(gz) => {
                let rest = gz.finish().map_err(|e| format!("compressing: {e}"))?;
                self.gzip = Some(GzEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL)));
                Ok(rest)
            }
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds), written digit by digit:
/// two per row, so no formatter machinery or allocation.
fn utc_time(out: &mut Vec<u8>, at: &chrono::DateTime<chrono::Utc>) {
    let digits = |out: &mut Vec<u8>, value: u32, width: usize| {
        let mut buf = [b'0'; 10];
        let mut v = value;
        for slot in buf[..width].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..width]);
    };
    let year = at.year();
    if !(0..=9999).contains(&year) {
        out.extend_from_slice(at.to_rfc3339_opts(SecondsFormat::Micros, true).as_bytes());
        return;
    }
    digits(out, year as u32, 4);
    out.push(b'-');
    digits(out, at.month(), 2);
    out.push(b'-');
    digits(out, at.day(), 2);
    out.push(b'T');
    digits(out, at.hour(), 2);
    out.push(b':');
    digits(out, at.minute(), 2);
    out.push(b':');
    // A leap second shows as :60, as RFC 3339 allows.
    let nanos = at.nanosecond();
    digits(out, at.second() + nanos / 1_000_000_000, 2);
    out.push(b'.');
    digits(out, (nanos % 1_000_000_000) / 1000, 6);
    out.push(b'Z');
}

/// One CSV cell: neutralised if a spreadsheet would run it, quoted when it
/// holds a comma, quote, CR or LF (or was neutralised), quotes doubled.
fn cell(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let formula = bytes.first().is_some_and(|b| FORMULA_TRIGGERS.contains(b));
    let quote = formula
        || bytes
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !quote {
        out.extend_from_slice(bytes);
        return;
    }
    out.push(b'"');
    if formula {
        // OWASP: a leading apostrophe makes the cell text.
        out.push(b'\'');
    }
    for &b in bytes {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn csv_of(value: &str) -> String {
        let mut out = Vec::new();
        cell(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cells_are_quoted_and_neutralised() {
        assert_eq!(csv_of("plain"), "plain");
        assert_eq!(csv_of(""), "");
        assert_eq!(csv_of("a,b"), "\"a,b\"");
        assert_eq!(csv_of("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_of("two\r\nlines"), "\"two\r\nlines\"");
        for formula in ["=SUM(A1)", "+1", "-2+3", "@cmd", "\tx", "\rx"] {
            let got = csv_of(formula);
            assert!(got.starts_with("\"'"), "{formula:?} -> {got:?}");
        }
        assert_eq!(csv_of("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        // Only the first character matters.
        assert_eq!(csv_of("a=b"), "a=b");
    }

    #[test]
    fn times_are_utc_with_microseconds() {
        for text in [
            "2026-11-23T22:08:55.123456Z",
            "1999-01-01T00:00:00.000000Z",
            "0042-12-31T23:59:59.999999Z",
        ] {
            let at: chrono::DateTime<chrono::Utc> = text.parse().unwrap();
            let mut out = Vec::new();
            utc_time(&mut out, &at);
            assert_eq!(String::from_utf8(out).unwrap(), text);
            assert_eq!(at.to_rfc3339_opts(SecondsFormat::Micros, true), text);
        }
    }

    #[test]
    fn gzip_members_concatenate_into_one_file() {
        let mut packer = Packer::new(true);
        let mut file = packer.pack(header(ExportFormat::Csv)).unwrap();
        file.extend(packer.end_member().unwrap());
        file.extend(packer.pack(b"second member\r\n".to_vec()).unwrap());
        file.extend(packer.end_member().unwrap());
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&file[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(
            text,
            format!("{}\r\nsecond member\r\n", CSV_HEADER.join(","))
        );
        let mut plain = Packer::new(false);
        assert_eq!(plain.pack(b"x".to_vec()).unwrap(), b"x");
        assert!(plain.end_member().unwrap().is_empty());
    }
}
