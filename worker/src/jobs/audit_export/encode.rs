//! Turning audit events into export bytes: CSV per RFC 4180 (header row,
//! CRLF line ends, quotes doubled, cells that a spreadsheet would run as a
//! formula neutralised as OWASP recommends) or NDJSON (one object per line),
//! optionally gzip. A gzip file is written as a series of members, one per
//! stored part, so a resumed export just starts the next member: every gzip
//! reader (gunzip, Python, flate2's MultiGzDecoder) reads them as one file.

use std::io::Write;

use chrono::SecondsFormat;
use flate2::write::GzEncoder;
use flate2::Compression;
use longhaul_core::audit::export::ExportFormat;
use longhaul_core::audit::AuditEvent;

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

pub struct Encoder {
    format: ExportFormat,
    /// Encoded rows not yet handed out (uncompressed).
    rows: Vec<u8>,
    /// Set for gzip: the current member, writing into its own buffer.
    gzip: Option<GzEncoder<Vec<u8>>>,
    gzip_level: Compression,
}

impl Encoder {
    pub fn new(format: ExportFormat, gzip: bool) -> Self {
        let level = Compression::fast();
        Self {
            format,
            rows: Vec::with_capacity(256 * 1024),
            gzip: gzip.then(|| GzEncoder::new(Vec::new(), level)),
            gzip_level: level,
        }
    }

    /// The CSV header row (NDJSON has none).
    pub fn header(&mut self) {
        if self.format == ExportFormat::Csv {
            self.rows.extend_from_slice(CSV_HEADER.join(",").as_bytes());
            self.rows.extend_from_slice(b"\r\n");
        }
    }

    pub fn row(&mut self, event: &AuditEvent) -> Result<(), String> {
        match self.format {
            ExportFormat::Csv => {
                self.csv_row(event);
                Ok(())
            }
            ExportFormat::Json => {
                serde_json::to_writer(&mut self.rows, event)
                    .map_err(|e| format!("encoding an event as JSON: {e}"))?;
                self.rows.push(b'\n');
                Ok(())
            }
        }
    }

    fn csv_row(&mut self, event: &AuditEvent) {
        let out = &mut self.rows;
        let time =
            |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
        cell(out, &event.id);
        out.push(b',');
        cell(out, &time(&event.occurred_at));
        out.push(b',');
        cell(out, &time(&event.recorded_at));
        for value in [
            Some(event.source.as_str()),
            Some(event.actor_type.as_str()),
            event.actor_id.as_deref(),
            event.actor_key_id.as_deref(),
            Some(event.action.as_str()),
            event.resource_type.as_deref(),
            event.resource_id.as_deref(),
            event.ip.as_deref(),
            event.request_id.as_deref(),
            event.external_id.as_deref(),
        ] {
            out.push(b',');
            if let Some(value) = value {
                cell(out, value);
            }
        }
        out.push(b',');
        cell(out, &event.details.to_string());
        out.extend_from_slice(b"\r\n");
    }

    /// Bytes ready to store: encoded rows (through the compressor for gzip;
    /// it may hold some back until the member ends).
    pub fn take(&mut self) -> Result<Vec<u8>, String> {
        match &mut self.gzip {
            None => Ok(std::mem::take(&mut self.rows)),
            Some(gz) => {
                gz.write_all(&self.rows)
                    .map_err(|e| format!("compressing: {e}"))?;
                self.rows.clear();
                Ok(std::mem::take(gz.get_mut()))
            }
        }
    }

    /// Ends the current gzip member (nothing for plain files) and returns
    /// what is left of it; the next bytes start a new member. After this the
    /// bytes handed out are a complete file so far.
    pub fn end_member(&mut self) -> Result<Vec<u8>, String> {
        let mut out = self.take()?;
        if let Some(gz) = self.gzip.take() {
            out.extend(gz.finish().map_err(|e| format!("compressing: {e}"))?);
            self.gzip = Some(GzEncoder::new(Vec::new(), self.gzip_level));
        }
        Ok(out)
    }
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
    fn gzip_members_concatenate_into_one_file() {
        let mut encoder = Encoder::new(ExportFormat::Csv, true);
        encoder.header();
        let mut file = encoder.end_member().unwrap();
        encoder.rows.extend_from_slice(b"second member\r\n");
        file.extend(encoder.take().unwrap());
        file.extend(encoder.end_member().unwrap());
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&file[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(
            text,
            format!("{}\r\nsecond member\r\n", CSV_HEADER.join(","))
        );
    }
}
