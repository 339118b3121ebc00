//! U+0000 (NUL): JSON and Rust strings can hold it, PostgreSQL's `text` and
//! `jsonb` cannot. The API refuses it in every request body, query value and
//! path (`longhaul_api::extract`, naming the field by [`nul_path`]); params
//! that contain it are refused by `JobClient` too, so both stores hold the
//! same data; what workers write (errors, results, progress,
//! checkpoints) has it replaced by U+FFFD, so an attempt is always recorded.

use std::borrow::Cow;

use serde_json::Value;

const REPLACEMENT: &str = "\u{FFFD}";

/// Does any string or key in the JSON hold U+0000?
pub fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Where the first U+0000 in the JSON is: the path of the string or key that
/// holds it, as request fields are named (`patterns[0].pattern`,
/// `settings.owner`); empty for a top-level string.
pub fn nul_path(value: &Value) -> Option<String> {
    fn find(value: &Value, path: &mut String) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(index, item)| {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                let found = find(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(key, item)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&text_without_nul(key));
                let found = key.contains('\0') || find(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    find(value, &mut path).then_some(path)
}

/// The text with U+0000 replaced by U+FFFD (borrowed when there is none).
pub fn text_without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', REPLACEMENT))
    } else {
        Cow::Borrowed(text)
    }
}

/// The JSON with U+0000 replaced by U+FFFD in every string and key.
pub fn json_without_nul(value: &Value) -> Cow<'_, Value> {
    fn scrub(value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(text_without_nul(s).into_owned()),
            Value::Array(items) => Value::Array(items.iter().map(scrub).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (text_without_nul(k).into_owned(), scrub(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    if contains_nul(value) {
        Cow::Owned(scrub(value))
    } else {
        Cow::Borrowed(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_and_replaces_nul_in_strings_and_keys() {
        let dirty = json!({"a\0": ["ok", "x\0y"], "n": 1});
        assert!(contains_nul(&dirty));
        let clean = json_without_nul(&dirty);
        assert!(!contains_nul(&clean));
        assert_eq!(clean["a\u{FFFD}"][1], json!("x\u{FFFD}y"));
        let untouched = json!({"a": "b"});
        assert!(matches!(json_without_nul(&untouched), Cow::Borrowed(_)));
        assert_eq!(text_without_nul("a\0b"), "a\u{FFFD}b");
    }

    #[test]
    fn names_the_path_of_the_first_nul() {
        let body = json!({"name": "ok", "patterns": [{"id": "a"}, {"pattern": "x\0"}]});
        assert_eq!(nul_path(&body).as_deref(), Some("patterns[1].pattern"));
        assert_eq!(
            nul_path(&json!({"settings": {"k\0": 1}})).as_deref(),
            Some("settings.k\u{FFFD}")
        );
        assert_eq!(nul_path(&json!(["a", "b\0"])).as_deref(), Some("[1]"));
        assert_eq!(nul_path(&json!("\0")).as_deref(), Some(""));
        assert_eq!(nul_path(&json!({"a": ["b"], "n": 1})), None);
    }
}
