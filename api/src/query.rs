//! Query strings read into typed structs: every value arrives as text and is
//! read as the field's type asks (a number, a boolean, an enum variant, a
//! string). Integers may be written as whole floats (`limit=7.0`), as in
//! JSON bodies. Errors are serde's, wrapped by `serde_path_to_error` in the
//! extractor so that they name the parameter.

use serde::de::value::{Error, MapDeserializer, StringDeserializer};
use serde::de::{self, Deserializer, IntoDeserializer, Unexpected, Visitor};
use serde::forward_to_deserialize_any;

/// The decoded `name=value` pairs of a query string, as a map for serde.
pub struct QueryDeserializer {
    pairs: Vec<(String, String)>,
}

impl QueryDeserializer {
    /// `query`: the raw (percent-encoded) query string, without `?`.
    pub fn new(query: &str) -> Self {
        QueryDeserializer {
            pairs: form_urlencoded::parse(query.as_bytes())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        }
    }

    /// The pairs, in the order given.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

impl<'de> Deserializer<'de> for QueryDeserializer {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let entries = self
            .pairs
            .into_iter()
            .map(|(name, value)| (name, QueryValue(value)));
        let mut map = MapDeserializer::new(entries);
        let value = visitor.visit_map(&mut map)?;
        map.end()?;
        Ok(value)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// One parameter's value.
struct QueryValue(String);

impl<'de> IntoDeserializer<'de, Error> for QueryValue {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl QueryValue {
    /// The value as a whole number: `7`, `-7`, or a whole float (`7.0`).
    fn whole_number<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let text = self.0.trim();
        if let Ok(value) = text.parse::<u64>() {
            return visitor.visit_u64(value);
        }
        if let Ok(value) = text.parse::<i64>() {
            return visitor.visit_i64(value);
        }
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() && value.fract() == 0.0 => {
                if (0.0..18_446_744_073_709_551_616.0).contains(&value) {
                    visitor.visit_u64(value as u64)
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&value) {
                    visitor.visit_i64(value as i64)
                } else {
                    Err(de::Error::invalid_value(Unexpected::Float(value), &visitor))
                }
            }
            Ok(value) => Err(de::Error::invalid_value(Unexpected::Float(value), &visitor)),
            Err(_) => Err(de::Error::invalid_type(Unexpected::Str(&self.0), &visitor)),
        }
    }
}

impl<'de> Deserializer<'de> for QueryValue {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_string(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let text: StringDeserializer<Error> = self.0.into_deserializer();
        visitor.visit_enum(text)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.as_str() {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            other => Err(de::Error::invalid_type(Unexpected::Str(other), &visitor)),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.trim().parse::<f64>() {
            Ok(value) => visitor.visit_f64(value),
            Err(_) => Err(de::Error::invalid_type(Unexpected::Str(&self.0), &visitor)),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.whole_number(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.whole_number(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.whole_number(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.whole_number(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.whole_number(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.whole_number(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.whole_number(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.whole_number(visitor)
    }

    forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Page {
        limit: Option<u32>,
        cursor: Option<String>,
        desc: Option<bool>,
    }

    fn read(query: &str) -> Result<Page, String> {
        serde_path_to_error::deserialize(QueryDeserializer::new(query))
            .map_err(|error| format!("{} {}", error.path(), error.inner()))
    }

    #[test]
    fn reads_numbers_whole_floats_and_text() {
        assert_eq!(
            read("limit=7.0&cursor=a%20b&desc=true"),
            Ok(Page {
                limit: Some(7),
                cursor: Some("a b".into()),
                desc: Some(true),
            })
        );
        assert_eq!(read("").map(|p| p.limit), Ok(None));
    }

    #[test]
    fn names_the_parameter_of_a_bad_value() {
        for bad in [
            "limit=7.5",
            "limit=abc",
            "limit=-1",
            "limit=99999999999",
            "limit=1e300",
        ] {
            let error = read(bad).expect_err(bad);
            assert!(error.starts_with("limit "), "{bad}: {error}");
        }
        assert!(read("desc=yes").expect_err("bool").starts_with("desc "));
        assert!(read("page=2")
            .expect_err("unknown")
            .contains("unknown field `page`"));
        assert!(read("limit=1&limit=2")
            .expect_err("twice")
            .contains("duplicate field `limit`"));
    }
}
