//! Validation: a parameter's value, a request or response body of an
//! operation, a value of a named definition, and redaction of write-only
//! secrets; the schema walk itself is the [`Walker`]'s.

use serde_json::Value;

use super::walker::{Walker, violation};
use super::{Mode, Operation, Param, ParamIn, Spec, Violation, ViolationKind};

impl Spec {
    /// Checks a parameter's value against its declaration (type, format,
    /// enum, pattern, lengths). `value` is the raw string from the URL.
    pub fn check_param(&self, param: &Param, value: &str) -> Result<(), Violation> {
        let path = match param.location {
            ParamIn::Path => format!("path parameter {}", param.name),
            ParamIn::Query => format!("query parameter {}", param.name),
            ParamIn::Header => format!("header {}", param.name),
        };
        let typed = match param.schema.get("type").and_then(Value::as_str) {
            Some("integer") => match value.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => {
                    return Err(violation(
                        &path,
                        ViolationKind::WrongType,
                        "expected an integer",
                    ));
                }
            },
            Some("number") => match value
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Some(n) => Value::Number(n),
                None => {
                    return Err(violation(
                        &path,
                        ViolationKind::WrongType,
                        "expected a number",
                    ));
                }
            },
            Some("boolean") => match value {
                "true" | "True" => Value::Bool(true),
                "false" | "False" => Value::Bool(false),
                _ => {
                    return Err(violation(
                        &path,
                        ViolationKind::WrongType,
                        "expected true or false",
                    ));
                }
            },
            _ => Value::String(value.to_owned()),
        };
        let mut walker = Walker {
            spec: self,
            mode: Mode::Request,
            out: Vec::new(),
        };
        walker.walk(&param.schema, &typed, &path);
        match walker.out.into_iter().next() {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }

    /// Validates a request body for `op` and returns it with `readOnly`
    /// properties dropped (and explicit `null`s, which ARM reads as absent).
    ///
    /// # Errors
    /// Every violation found (object members in key order).
    pub fn validate_request(
        &self,
        op: &Operation,
        body: Option<&Value>,
    ) -> Result<Option<Value>, Vec<Violation>> {
        match (&op.body, body) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(vec![violation(
                "$",
                ViolationKind::Body,
                "this operation takes no request body",
            )]),
            (Some((true, _)), None) => Err(vec![violation(
                "$",
                ViolationKind::MissingRequired,
                "the request body is required",
            )]),
            (Some((false, _)), None) => Ok(None),
            (Some((_, schema)), Some(body)) => self.validate(schema, body, Mode::Request).map(Some),
        }
    }

    /// Validates a response `op` would send with `status`.
    ///
    /// # Errors
    /// Every violation found; a status the spec does not list (and no
    /// `default`), a body where none is allowed or the reverse.
    pub fn validate_response(
        &self,
        op: &Operation,
        status: u16,
        body: Option<&Value>,
    ) -> Result<(), Vec<Violation>> {
        let schema = match op
            .responses
            .get(&status.to_string())
            .or_else(|| op.responses.get("default"))
        {
            Some(s) => s,
            None => {
                return Err(vec![violation(
                    "$",
                    ViolationKind::Body,
                    &format!("status {status} is not in the spec"),
                )]);
            }
        };
        match (schema, body) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(vec![violation(
                "$",
                ViolationKind::Body,
                &format!("status {status} takes no body"),
            )]),
            (Some(_), None) => Err(vec![violation(
                "$",
                ViolationKind::Body,
                &format!("status {status} needs a body"),
            )]),
            (Some(schema), Some(body)) => self.validate(schema, body, Mode::Response).map(drop),
        }
    }

    /// Validates `value` against the definition named `definition` (a local
    /// one such as `ContainerGroup`, or a hand-defined common type such as
    /// `common:OperationStatusResult`).
    ///
    /// # Errors
    /// Every violation found; an unknown definition is one.
    pub fn validate_definition(
        &self,
        definition: &str,
        value: &Value,
        mode: Mode,
    ) -> Result<Value, Vec<Violation>> {
        let Some(schema) = self.definition(definition) else {
            return Err(vec![violation(
                "$",
                ViolationKind::Body,
                &format!("no definition {definition}"),
            )]);
        };
        self.validate(schema, value, mode)
    }

    fn definition(&self, name: &str) -> Option<&Value> {
        match name.strip_prefix("common:") {
            Some(common) => self.common.get(common),
            None => self.definitions.get(name),
        }
    }

    fn validate(&self, schema: &Value, value: &Value, mode: Mode) -> Result<Value, Vec<Violation>> {
        let mut walker = Walker {
            spec: self,
            mode,
            out: Vec::new(),
        };
        let cleaned = walker.walk(schema, value, "$");
        if walker.out.is_empty() {
            Ok(cleaned.unwrap_or(Value::Null))
        } else {
            Err(walker.out)
        }
    }

    /// Removes every `x-ms-secret` property from `value` (a response body
    /// of the definition `definition`): ARM never returns write-only secrets.
    pub fn redact(&self, definition: &str, value: &mut Value) {
        if let Some(schema) = self.definition(definition) {
            self.redact_walk(schema, value);
        }
    }

    fn redact_walk(&self, schema: &Value, value: &mut Value) {
        let schema = self.resolve(schema);
        match value {
            Value::Object(map) => {
                let parts = self.object_parts(schema);
                map.retain(|k, _| {
                    parts
                        .props
                        .get(k.as_str())
                        .is_none_or(|p| p.get("x-ms-secret").and_then(Value::as_bool) != Some(true))
                });
                for (k, v) in map.iter_mut() {
                    if let Some(p) = parts.props.get(k.as_str()) {
                        self.redact_walk(p, v);
                    } else if let Some(add) = parts.additional.filter(|a| a.is_object()) {
                        self.redact_walk(add, v);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for item in items {
                        self.redact_walk(item_schema, item);
                    }
                }
            }
            _ => {}
        }
    }
}
