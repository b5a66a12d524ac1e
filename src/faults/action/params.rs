//! An action's fields as written, and their deserialisation into its
//! params with structured errors: which field, and what is wrong with it,
//! come as data (never read back out of an error message), so
//! `check-profile` can point at the key or the value at fault.

use std::fmt;

use serde::de::value::{MapDeserializer, StrDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// The key/value pairs of one action's inline table, in the order written,
/// each with its place in the profile's text.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    /// (key, value), in order.
    pub entries: Vec<(Spanned<String>, Spanned<toml::Value>)>,
}

impl Fields {
    /// The entry for `key`.
    pub fn get(&self, key: &str) -> Option<&(Spanned<String>, Spanned<toml::Value>)> {
        self.entries.iter().find(|(k, _)| k.get_ref() == key)
    }

    /// Deserialises the entries other than `skip` into `T`.
    pub fn params<T: DeserializeOwned>(&self, skip: &[&str]) -> Result<T, FieldError> {
        let entries = self
            .entries
            .iter()
            .filter(|(k, _)| !skip.contains(&k.get_ref().as_str()))
            .map(|(k, v)| (k.get_ref().as_str(), ValueDe(v.get_ref())));
        serde_path_to_error::deserialize(MapDeserializer::new(entries)).map_err(|e| {
            let key = match e.path().iter().next() {
                Some(serde_path_to_error::Segment::Map { key }) => Some(key.clone()),
                _ => None,
            };
            let mut inner = e.into_inner();
            // A missing or unknown field names itself; a bad value is the
            // key it was given for.
            if inner.field.is_none() {
                inner.field = key;
            }
            inner
        })
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an action such as { do = \"disconnect\" }")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Fields { entries })
            }
        }
        d.deserialize_map(V)
    }
}

/// Why an action's fields do not make its params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field at fault, when there is one.
    pub field: Option<String>,
    /// What is wrong with it.
    pub kind: FieldErrorKind,
}

/// The kinds of [`FieldError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A field the action does not have; the ones it has.
    Unknown(&'static [&'static str]),
    /// A field it needs and was not given.
    Missing,
    /// A value of the wrong type or out of the type's range (serde's words).
    Value(String),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = self.field.as_deref().unwrap_or("?");
        match &self.kind {
            FieldErrorKind::Unknown(_) => write!(f, "unknown field `{field}`"),
            FieldErrorKind::Missing => write!(f, "missing field `{field}`"),
            FieldErrorKind::Value(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for FieldError {}

impl de::Error for FieldError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        FieldError { field: None, kind: FieldErrorKind::Value(msg.to_string()) }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        FieldError { field: Some(field.to_string()), kind: FieldErrorKind::Unknown(expected) }
    }

    fn missing_field(field: &'static str) -> Self {
        FieldError { field: Some(field.to_string()), kind: FieldErrorKind::Missing }
    }
}

/// A TOML value as a deserializer whose errors are [`FieldError`]s.
struct ValueDe<'a>(&'a toml::Value);

impl<'de> IntoDeserializer<'de, FieldError> for ValueDe<'_> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for ValueDe<'_> {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, FieldError> {
        match self.0 {
            toml::Value::String(s) => v.visit_str(s),
            toml::Value::Integer(i) => v.visit_i64(*i),
            toml::Value::Float(x) => v.visit_f64(*x),
            toml::Value::Boolean(b) => v.visit_bool(*b),
            // Actions take no lists, tables or dates.
            toml::Value::Array(_) => Err(de::Error::invalid_type(Unexpected::Seq, &v)),
            toml::Value::Table(_) => Err(de::Error::invalid_type(Unexpected::Map, &v)),
            toml::Value::Datetime(_) => Err(de::Error::invalid_type(Unexpected::Other("a date"), &v)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, FieldError> {
        v.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, FieldError> {
        match self.0 {
            toml::Value::String(s) => {
                let de: StrDeserializer<'_, FieldError> = s.as_str().into_deserializer();
                de.deserialize_enum(name, variants, v)
            }
            _ => self.deserialize_any(v),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct P {
        ms: u64,
        #[serde(default)]
        side: Option<super::super::Side>,
    }

    fn fields(text: &str) -> Fields {
        #[derive(Deserialize)]
        struct Doc {
            a: Fields,
        }
        toml::from_str::<Doc>(&format!("a = {text}")).expect("toml").a
    }

    #[test]
    fn errors_name_their_field_as_data() {
        let e = fields("{ ms = 5, sid = 1 }").params::<P>(&[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sid"));
        assert_eq!(e.kind, FieldErrorKind::Unknown(&["ms", "side"]));
        let e = fields("{ side = \"client\" }").params::<P>(&[]).unwrap_err();
        assert_eq!((e.field.as_deref(), &e.kind), (Some("ms"), &FieldErrorKind::Missing));
        let e = fields("{ ms = -1 }").params::<P>(&[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ms"));
        assert!(matches!(e.kind, FieldErrorKind::Value(ref m) if m.contains("expected u64")), "{e:?}");
        let e = fields("{ ms = 1, side = \"left\" }").params::<P>(&[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("side"));
        let e = fields("{ ms = [1] }").params::<P>(&[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ms"));
    }

    #[test]
    fn skipped_keys_are_not_params() {
        let p: P = fields("{ do = \"x\", ms = 5, side = \"both\" }").params(&["do"]).expect("params");
        assert_eq!(p, P { ms: 5, side: Some(super::super::Side::Both) });
    }
}
