//! Turns a tool's JSON arguments into its typed input, with errors that name the field
//! and the rule. Types are strict: a string `"false"` where a boolean belongs, or `1.5`
//! where an integer belongs, is an error, never a coercion. Unknown fields are errors too
//! (they are usually misspellings).

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{ErrorCode, OpError};

/// Parses `args` (a JSON object; `null` counts as `{}`) into `T`.
pub fn parse<T: DeserializeOwned>(args: Value) -> Result<T, OpError> {
    let args = match args {
        Value::Null => Value::Object(Default::default()),
        Value::Object(_) => args,
        other => {
            return Err(OpError::new(
                ErrorCode::InvalidArgument,
                format!("arguments must be a JSON object, not {}", kind(&other)),
            ));
        }
    };
    serde_path_to_error::deserialize::<_, T>(args).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde reports a missing or unknown field at the parent path; name the field.
        if let Some(field) = between(&inner, "missing field `", "`") {
            let field = join(&path, field);
            return OpError::new(
                ErrorCode::InvalidArgument,
                format!("{field}: this field is required"),
            )
            .with_details(json!({"field": field, "rule": "required"}));
        }
        if let Some(field) = between(&inner, "unknown field `", "`") {
            // serde_path_to_error already includes the unknown field in the path.
            let field = if path.ends_with(field) {
                path.clone()
            } else {
                join(&path, field)
            };
            let expected = inner.split_once(", expected ").map_or("", |(_, e)| e);
            let expected = expected.strip_prefix("one of ").unwrap_or(expected);
            return OpError::new(
                ErrorCode::InvalidArgument,
                format!("{field}: unknown field; the known fields are {expected}"),
            )
            .with_details(json!({"field": field, "rule": "unknown field"}));
        }
        let inner = plain_types(inner.split(" at line ").next().unwrap_or(&inner));
        OpError::new(ErrorCode::InvalidArgument, format!("{path}: {inner}"))
            .with_details(json!({"field": path, "rule": inner}))
    })
}

/// serde names Rust types in its messages; say what the JSON should have been.
fn plain_types(msg: &str) -> String {
    let mut m = msg.to_owned();
    for (rust, json) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("expected string or map", "expected a string"),
        ("expected a borrowed string", "expected a string"),
    ] {
        m = m.replace(rust, json);
    }
    m
}

fn join(path: &str, field: &str) -> String {
    if path == "." || path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = s.split_once(start)?.1;
    Some(rest.split_once(end)?.0)
}

/// The JSON kind of a value, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks an integer against an inclusive range.
pub fn int_in(field: &str, v: i64, lo: i64, hi: i64) -> Result<i64, OpError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(OpError::invalid(
            field,
            format!("must be between {lo} and {hi}, got {v}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct In {
        name: String,
        #[serde(default)]
        force: bool,
        #[serde(default)]
        timeout: Option<i64>,
        #[serde(default)]
        env: std::collections::BTreeMap<String, String>,
    }

    fn err(v: Value) -> OpError {
        parse::<In>(v).unwrap_err()
    }

    #[test]
    fn names_the_field_and_the_rule() {
        let e = err(json!({"name": "x", "force": "false"}));
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(
            e.message
                .starts_with("force: invalid type: string \"false\", expected a boolean"),
            "{}",
            e.message
        );
        assert_eq!(e.details.unwrap()["field"], "force");

        let e = err(json!({"force": true}));
        assert_eq!(e.message, "name: this field is required");

        let e = err(json!({"name": "x", "nmae": 1}));
        assert!(
            e.message
                .starts_with("nmae: unknown field; the known fields are"),
            "{}",
            e.message
        );

        let e = err(json!({"name": "x", "timeout": 1.5}));
        assert!(
            e.message
                .starts_with("timeout: invalid type: floating point"),
            "{}",
            e.message
        );

        let e = err(json!({"name": "x", "env": {"A": 1}}));
        assert!(
            e.message.starts_with("env.A: invalid type: integer"),
            "{}",
            e.message
        );

        let e = err(json!([1, 2]));
        assert_eq!(e.message, "arguments must be a JSON object, not an array");
    }

    #[test]
    fn null_is_an_empty_object_and_defaults_apply() {
        let e = parse::<In>(Value::Null).unwrap_err();
        assert_eq!(e.message, "name: this field is required");
        let v: In = parse(json!({"name": "a"})).unwrap();
        assert!(!v.force && v.timeout.is_none() && v.env.is_empty() && v.name == "a");
    }

    #[test]
    fn ranges_are_inclusive_and_say_what_they_got() {
        assert_eq!(int_in("timeout", 1, 1, 10).unwrap(), 1);
        assert_eq!(int_in("timeout", 10, 1, 10).unwrap(), 10);
        let e = int_in("timeout", 0, 1, 10).unwrap_err();
        assert_eq!(e.message, "timeout: must be between 1 and 10, got 0");
    }
}
