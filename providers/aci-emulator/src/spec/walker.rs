//! The schema walk: a value checked against a schema at a JSON path,
//! every violation collected, and the value cleaned on the way (in request
//! mode: without `readOnly` properties and `null`s).

use serde_json::{Map, Value};

use super::refs::ANY;
use super::{Mode, Spec, Violation, ViolationKind};

/// A walk over one value: the spec, the direction, what was found wrong.
pub(super) struct Walker<'s> {
    pub(super) spec: &'s Spec,
    pub(super) mode: Mode,
    pub(super) out: Vec<Violation>,
}

impl Walker<'_> {
    /// Checks `value` at `path`; returns it cleaned (request mode: without
    /// `readOnly` properties and `null`s).
    pub(super) fn walk(&mut self, schema: &Value, value: &Value, path: &str) -> Option<Value> {
        let schema = self.spec.resolve(schema);
        let ty = schema.get("type").and_then(Value::as_str).or_else(|| {
            (schema.get("properties").is_some()
                || schema.get("allOf").is_some()
                || schema.get("additionalProperties").is_some())
            .then_some("object")
        });
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let names: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            self.push(
                path,
                ViolationKind::BadEnum,
                &format!("{value} is not one of {}", names.join(", ")),
            );
            return None;
        }
        match ty {
            Some("object") => self.object(schema, value, path),
            Some("array") => self.array(schema, value, path),
            Some("string") => {
                let s = self.expect(value.as_str(), "a string", value, path)?;
                self.string(schema, s, path);
                Some(value.clone())
            }
            Some("integer") => {
                let n = value
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| value.as_u64().map(i128::from));
                let n = self.expect(n, "an integer", value, path)?;
                self.integer(schema, n, path);
                Some(value.clone())
            }
            Some("number") => {
                let n = self.expect(value.as_f64(), "a number", value, path)?;
                self.bounds(schema, n, path);
                Some(value.clone())
            }
            Some("boolean") => {
                self.expect(value.as_bool(), "a boolean", value, path)?;
                Some(value.clone())
            }
            _ => Some(value.clone()),
        }
    }

    /// `got`, or a `WrongType` violation: `expected` (`a string`) is not
    /// what `value` is.
    fn expect<T>(
        &mut self,
        got: Option<T>,
        expected: &str,
        value: &Value,
        path: &str,
    ) -> Option<T> {
        if got.is_none() {
            self.push(
                path,
                ViolationKind::WrongType,
                &format!("expected {expected}, got {}", type_name(value)),
            );
        }
        got
    }

    fn array(&mut self, schema: &Value, value: &Value, path: &str) -> Option<Value> {
        let items = self.expect(value.as_array(), "an array", value, path)?;
        let item_schema = schema.get("items").unwrap_or(&ANY);
        let cleaned = items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| self.walk(item_schema, v, &format!("{path}[{i}]")))
            .collect();
        Some(Value::Array(cleaned))
    }

    /// An integer within its `format` (`int32`, else `int64`) and bounds.
    fn integer(&mut self, schema: &Value, n: i128, path: &str) {
        let (lo, hi) = match schema.get("format").and_then(Value::as_str) {
            Some("int32") => (i128::from(i32::MIN), i128::from(i32::MAX)),
            _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
        };
        if n < lo || n > hi {
            self.push(
                path,
                ViolationKind::BadFormat,
                "the integer is out of range for its format",
            );
        }
        #[allow(clippy::cast_precision_loss)] // bounds are small in practice
        self.bounds(schema, n as f64, path);
    }

    fn object(&mut self, schema: &Value, value: &Value, path: &str) -> Option<Value> {
        let spec = self.spec;
        let map = self.expect(value.as_object(), "an object", value, path)?;
        let parts = spec.object_parts(schema);
        let mut cleaned = Map::new();
        for (key, v) in map {
            let child = child_path(path, key);
            if v.is_null() {
                continue;
            }
            if let Some(prop) = parts.props.get(key.as_str()) {
                if self.mode == Mode::Request && is_read_only(prop) {
                    continue;
                }
                if let Some(c) = self.walk(prop, v, &child) {
                    cleaned.insert(key.clone(), c);
                }
                continue;
            }
            match parts.additional {
                Some(Value::Bool(true)) => {
                    cleaned.insert(key.clone(), v.clone());
                }
                Some(add @ Value::Object(_)) => {
                    if let Some(c) = self.walk(add, v, &child) {
                        cleaned.insert(key.clone(), c);
                    }
                }
                _ => self.push(&child, ViolationKind::UnknownProperty, "unknown property"),
            }
        }
        for name in &parts.required {
            if map.get(*name).is_some_and(|v| !v.is_null()) {
                continue;
            }
            let prop = parts.props.get(name).copied().unwrap_or(&ANY);
            let skip = match self.mode {
                Mode::Request => is_read_only(prop),
                Mode::Response => prop.get("x-ms-secret").and_then(Value::as_bool) == Some(true),
            };
            if !skip {
                self.push(
                    &child_path(path, name),
                    ViolationKind::MissingRequired,
                    "required property is missing",
                );
            }
        }
        Some(Value::Object(cleaned))
    }

    fn string(&mut self, schema: &Value, s: &str, path: &str) {
        let ok = match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => s.parse::<jiff::Timestamp>().is_ok(),
            Some("uuid") => is_uuid(s),
            Some("uri") => s.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                    && !rest.is_empty()
            }),
            Some("arm-id") => s.starts_with('/'),
            _ => true,
        };
        if !ok {
            let format = schema
                .get("format")
                .and_then(Value::as_str)
                .unwrap_or_default();
            self.push(
                path,
                ViolationKind::BadFormat,
                &format!("not a valid {format}"),
            );
        }
        let len = s.chars().count();
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && (len as u64) < min
        {
            self.push(
                path,
                ViolationKind::OutOfRange,
                &format!("shorter than {min} characters"),
            );
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && (len as u64) > max
        {
            self.push(
                path,
                ViolationKind::OutOfRange,
                &format!("longer than {max} characters"),
            );
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str)
            && let Some(re) = self.spec.patterns.get(p)
            && !re.is_match(s)
        {
            self.push(
                path,
                ViolationKind::OutOfRange,
                &format!("does not match the pattern {p}"),
            );
        }
    }

    fn bounds(&mut self, schema: &Value, n: f64, path: &str) {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            self.push(
                path,
                ViolationKind::OutOfRange,
                &format!("less than the minimum {min}"),
            );
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            self.push(
                path,
                ViolationKind::OutOfRange,
                &format!("more than the maximum {max}"),
            );
        }
    }

    fn push(&mut self, path: &str, kind: ViolationKind, message: &str) {
        self.out.push(violation(path, kind, message));
    }
}

/// A violation at `path`.
pub(super) fn violation(path: &str, kind: ViolationKind, message: &str) -> Violation {
    Violation {
        path: path.to_owned(),
        kind,
        message: message.to_owned(),
    }
}

fn is_read_only(prop: &Value) -> bool {
    prop.get("readOnly").and_then(Value::as_bool) == Some(true)
}

fn child_path(path: &str, key: &str) -> String {
    if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", Value::String(key.to_owned()))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}
