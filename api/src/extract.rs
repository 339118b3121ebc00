//! Extractors whose rejections speak the API's error format, with one rule
//! for every request: a body that is not JSON at all is `400 bad_request`
//! (`415` without a JSON content type, `413` over the size limit); every
//! problem with one field (a wrong type, a value out of range, an unknown or
//! missing field, U+0000 in any text, a number over 1e308 in magnitude) is
//! `422 validation_error` naming it in
//! `details.field`, by its path in the body (`patterns[0].pattern`) or its
//! query parameter name. Integers may be written as whole floats (`7.0`).
//! Path segments are ids: one that cannot name anything (U+0000, not UTF-8)
//! is `404`, like any unknown id.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Number, Value};

use crate::error::ApiError;
use crate::query::QueryDeserializer;

/// A JSON body (always an object), checked as the module says.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Content type, size and JSON syntax: the body as a document.
        let axum::Json(mut value) = axum::Json::<Value>::from_request(request, state).await?;
        if !value.is_object() {
            return Err(ApiError::validation("body", "must be a JSON object"));
        }
        if let Some(path) = longhaul_core::nul::nul_path(&value) {
            return Err(ApiError::validation(
                field_or_body(&path),
                "must not contain the NUL character (\\u0000)",
            ));
        }
        if let Some(path) = huge_number_path(&value, &mut String::new()) {
            return Err(ApiError::validation(
                field_or_body(&path),
                format!("numbers must be at most {MAX_NUMBER:e} in magnitude"),
            ));
        }
        whole_floats_as_integers(&mut value);
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|error| field_error(&error.path().to_string(), &error.inner().to_string()))
    }
}

/// A query string, checked as the module says.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = QueryDeserializer::new(parts.uri.query().unwrap_or_default());
        if let Some((name, _)) = query
            .pairs()
            .iter()
            .find(|(name, value)| name.contains('\0') || value.contains('\0'))
        {
            return Err(ApiError::validation(
                longhaul_core::nul::text_without_nul(name),
                "must not contain the NUL character (\\u0000)",
            ));
        }
        serde_path_to_error::deserialize(query)
            .map(ApiQuery)
            .map_err(|error| field_error(&error.path().to_string(), &error.inner().to_string()))
    }
}

/// Path segments (ids), checked as the module says.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Only `%00` decodes to U+0000: such a segment names nothing.
        if parts.uri.path().contains("%00") {
            return Err(ApiError::not_found("no such resource"));
        }
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// The `422` of a field serde could not read: `path` is where it failed
/// (`.` for the top level), `message` serde's reason. Unknown, missing and
/// repeated fields are named by themselves, not by the object holding them.
fn field_error(path: &str, message: &str) -> ApiError {
    let named = ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|lead| message.strip_prefix(lead))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    // An unknown field's path already ends with it; a missing or repeated
    // one's is the object holding it.
    let field = match (path, named) {
        (".", Some(name)) => name.to_string(),
        (path, Some(name)) if path == name || path.ends_with(&format!(".{name}")) => {
            path.to_string()
        }
        (path, Some(name)) => format!("{path}.{name}"),
        (path, None) => field_or_body(path).to_string(),
    };
    ApiError::validation(field, message)
}

/// The field a path names; the body itself at the top level.
fn field_or_body(path: &str) -> &str {
    if path.is_empty() || path == "." {
        "body"
    } else {
        path
    }
}

/// The largest magnitude of a number in a body. PostgreSQL keeps a JSON
/// number exactly and prints it back in full (`1.79e308` as 309 digits),
/// and numbers that close to `f64::MAX` do not parse back: a stored one would
/// make its row unreadable (a tenant's settings, and with them its keys).
const MAX_NUMBER: f64 = 1e308;

/// Where the first number over [`MAX_NUMBER`] in magnitude is.
fn huge_number_path(value: &Value, path: &mut String) -> Option<String> {
    match value {
        Value::Number(number) => number
            .as_f64()
            .filter(|n| number.is_f64() && n.abs() > MAX_NUMBER)
            .map(|_| path.clone()),
        Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            let len = path.len();
            path.push_str(&format!("[{index}]"));
            let found = huge_number_path(item, path);
            path.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            let found = huge_number_path(item, path);
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

/// `7.0` → `7` wherever a number is a whole float in the range of `i64` or
/// `u64`: JSON has one number type, and clients that write every number as
/// a float (`"priority": 7.0`) mean the integer. `7.5` stays a float, and a
/// field that wants an integer refuses it.
fn whole_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64()) {
                if float.fract() == 0.0 {
                    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&float)
                    {
                        *number = Number::from(float as i64);
                    } else if (0.0..18_446_744_073_709_551_616.0).contains(&float) {
                        *number = Number::from(float as u64);
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_floats_become_integers_and_others_stay() {
        let mut value = json!({"a": 7.0, "b": [7.5, -3.0, 1e300], "c": "7.0", "d": 2});
        whole_floats_as_integers(&mut value);
        assert_eq!(
            value,
            json!({"a": 7, "b": [7.5, -3, 1e300], "c": "7.0", "d": 2})
        );
        assert!(value["a"].is_i64());
    }

    #[test]
    fn numbers_near_the_float_maximum_are_found() {
        let body = json!({"a": [1, {"b": 1.7976931348623155e308}], "c": 1e308});
        assert_eq!(
            huge_number_path(&body, &mut String::new()).as_deref(),
            Some("a[1].b")
        );
        let fine = json!({"c": 1e308, "d": -1e300, "e": u64::MAX, "f": i64::MIN});
        assert_eq!(huge_number_path(&fine, &mut String::new()), None);
    }

    #[test]
    fn fields_are_named_by_their_path() {
        let named = |path: &str, message: &str| field_error(path, message).details["field"].clone();
        assert_eq!(named(".", "missing field `kind`"), json!("kind"));
        assert_eq!(
            named("targets[0].x", "unknown field `x`, expected one of `url`"),
            json!("targets[0].x")
        );
        assert_eq!(
            named("scope", "missing field `buckets`"),
            json!("scope.buckets")
        );
        assert_eq!(
            named(
                "priority",
                "invalid type: floating point `7.5`, expected i16"
            ),
            json!("priority")
        );
        assert_eq!(
            named(".", "invalid type: sequence, expected struct"),
            json!("body")
        );
    }
}
