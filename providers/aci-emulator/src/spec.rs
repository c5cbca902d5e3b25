//! The ACI ARM spec (Swagger 2.0 with `x-ms-*` extensions): loading it,
//! routing a request to its operation, and validating bodies.
//!
//! The validator is written by hand: no maintained crate validates Swagger
//! 2.0 schemas with the `x-ms-*` extensions (`jsonschema` speaks JSON Schema
//! drafts, whose `readOnly`/`additionalProperties` defaults differ, and knows
//! neither `x-ms-secret` nor Swagger's `in: path` parameters). It covers what
//! the ACI spec uses: `$ref`, `allOf`, `properties`, `additionalProperties`,
//! `required`, `type`/`format`, `enum` (strict), `pattern`, lengths and
//! bounds, `readOnly` (dropped from requests) and `x-ms-secret` (never
//! returned, so never required in responses).
//!
//! The spec refers to ARM common types (`../../../../../../common-types/
//! resource-management/v5/types.json#/...`) that are not in the file; the few
//! it needs are defined by hand in `common_types`, after that file.
//!
//! # Guarantees
//! Nothing here panics on any input: unresolvable `$ref`s are refused when the
//! spec is loaded, and bodies are only ever walked, never indexed blindly.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use http::Method;
use regex::Regex;
use serde_json::{Map, Value, json};

/// Why the spec could not be loaded. Not retryable: fix the file or path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("failed to read the ACI spec {path}")]
    Read {
        /// The spec's path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("the ACI spec {path} is not JSON")]
    Parse {
        /// The spec's path.
        path: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// The JSON is not a usable Swagger 2.0 document.
    #[error("the ACI spec is unusable: {0}")]
    Invalid(String),
}

/// Which direction a body travels; decides `readOnly` and `x-ms-secret`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Client to service: `readOnly` properties are ignored and dropped.
    Request,
    /// Service to client: `readOnly` properties are fine, `x-ms-secret`
    /// properties are never required (ARM never returns them).
    Response,
}

/// What is wrong at one place in a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// A required property is absent.
    MissingRequired,
    /// A property the schema does not know.
    UnknownProperty,
    /// The JSON type is not the schema's.
    WrongType,
    /// A value outside the `enum`.
    BadEnum,
    /// A string not in the `format`, or a number out of its `format`'s range.
    BadFormat,
    /// A length, bound or `pattern` not met.
    OutOfRange,
    /// A body where the spec allows none, or none where it needs one.
    Body,
}

/// One thing wrong with a body, at a JSON path (`$.properties.containers[0]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Where.
    pub path: String,
    /// What kind of problem.
    pub kind: ViolationKind,
    /// What is wrong, for people. Never contains a property's value except
    /// for enum mismatches (enum-typed values are never secret).
    pub message: String,
}

impl Violation {
    /// The ARM error code this violation answers with:
    /// `MissingRequiredProperty` for an absent required property,
    /// `InvalidRequestContent` for everything else.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ViolationKind::MissingRequired => "MissingRequiredProperty",
            _ => "InvalidRequestContent",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Where a parameter travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamIn {
    /// A path segment.
    Path,
    /// A query parameter.
    Query,
    /// A header.
    Header,
}

/// A non-body parameter of an operation.
#[derive(Clone, Debug)]
pub struct Param {
    /// Its name (`api-version`, `containerGroupName`).
    pub name: String,
    /// Where it travels.
    pub location: ParamIn,
    /// Whether it must be present.
    pub required: bool,
    /// The parameter object itself (`type`, `format`, `enum`, `pattern`...).
    schema: Value,
}

#[derive(Clone, Debug)]
enum Segment {
    Literal(String),
    Param(String),
}

/// One operation of the spec.
#[derive(Clone, Debug)]
pub struct Operation {
    /// The `operationId` (`ContainerGroups_Get`).
    pub id: String,
    /// The HTTP method.
    pub method: Method,
    template: Vec<Segment>,
    /// Its non-body parameters.
    pub params: Vec<Param>,
    /// The body parameter: whether required, and its schema.
    body: Option<(bool, Value)>,
    /// Status (`"200"`, `"default"`) to response schema, `None` for no body.
    responses: HashMap<String, Option<Value>>,
}

impl Operation {
    /// Whether it has a body parameter.
    pub fn takes_body(&self) -> bool {
        self.body.is_some()
    }
}

/// The result of routing a request.
#[derive(Debug)]
pub enum Route<'a> {
    /// The operation and its path parameters.
    Found(&'a Operation, HashMap<String, String>),
    /// The path exists, the method does not.
    MethodNotAllowed,
    /// No such path.
    NotFound,
}

/// The loaded spec.
#[derive(Debug)]
pub struct Spec {
    api_version: String,
    definitions: Map<String, Value>,
    common: Map<String, Value>,
    common_params: Map<String, Value>,
    operations: Vec<Operation>,
    patterns: HashMap<String, Regex>,
}

/// The schema that accepts anything (no `type`).
static ANY: Value = Value::Null;

impl Spec {
    /// Reads and indexes the spec at `path`.
    ///
    /// # Errors
    /// When the file is unreadable, not JSON, or not a Swagger 2.0 document
    /// whose `$ref`s all resolve.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        let doc: Value = serde_json::from_str(&text).map_err(|source| Error::Parse {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_value(doc)
    }

    /// Indexes an already parsed spec.
    ///
    /// # Errors
    /// As [`Spec::load`].
    pub fn from_value(doc: Value) -> Result<Self, Error> {
        if doc.get("swagger").and_then(Value::as_str) != Some("2.0") {
            return Err(Error::Invalid("not a Swagger 2.0 document".into()));
        }
        let api_version = doc
            .pointer("/info/version")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Invalid("no info.version".into()))?
            .to_owned();
        let definitions = doc
            .get("definitions")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let (common, common_params) = common_types();
        let mut spec = Self {
            api_version,
            definitions,
            common,
            common_params,
            operations: Vec::new(),
            patterns: HashMap::new(),
        };
        let mut refs = Vec::new();
        collect(&doc, "$ref", &mut refs);
        collect(&Value::Object(spec.common.clone()), "$ref", &mut refs);
        for r in refs {
            if spec.lookup(&r).is_none() {
                return Err(Error::Invalid(format!("unresolvable $ref {r}")));
            }
        }
        let mut patterns = Vec::new();
        collect(&doc, "pattern", &mut patterns);
        collect(
            &Value::Object(spec.common_params.clone()),
            "pattern",
            &mut patterns,
        );
        for p in patterns {
            let re = Regex::new(&p).map_err(|e| Error::Invalid(format!("pattern {p}: {e}")))?;
            spec.patterns.insert(p, re);
        }
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Invalid("no paths".into()))?;
        for (template, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            let shared: Vec<Value> = item
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (method, op) in item {
                let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                    continue;
                };
                if method == Method::OPTIONS && !op.is_object() {
                    continue;
                }
                let operation = spec.operation(template, method, op, &shared)?;
                spec.operations.push(operation);
            }
        }
        if spec.operations.is_empty() {
            return Err(Error::Invalid("no operations".into()));
        }
        Ok(spec)
    }

    fn operation(
        &self,
        template: &str,
        method: Method,
        op: &Value,
        shared: &[Value],
    ) -> Result<Operation, Error> {
        let id = op
            .get("operationId")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Invalid(format!("{method} {template} has no operationId")))?
            .to_owned();
        let segments = template
            .split('/')
            .filter(|s| !s.is_empty())
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Param(name.to_owned()),
                    None => Segment::Literal(s.to_ascii_lowercase()),
                },
            )
            .collect();
        let mut params = Vec::new();
        let mut body = None;
        let own = op
            .get("parameters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for p in shared.iter().chain(own.iter()) {
            let p = self.resolve(p).clone();
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
            match p.get("in").and_then(Value::as_str) {
                Some("body") => {
                    body = Some((required, p.get("schema").cloned().unwrap_or(Value::Null)))
                }
                Some("path") => params.push(Param {
                    name,
                    location: ParamIn::Path,
                    required: true,
                    schema: p,
                }),
                Some("query") => params.push(Param {
                    name,
                    location: ParamIn::Query,
                    required,
                    schema: p,
                }),
                Some("header") => params.push(Param {
                    name,
                    location: ParamIn::Header,
                    required,
                    schema: p,
                }),
                other => {
                    return Err(Error::Invalid(format!(
                        "{id}: parameter {name} in {other:?} is not supported"
                    )));
                }
            }
        }
        let responses = op
            .get("responses")
            .and_then(Value::as_object)
            .map(|r| {
                r.iter()
                    .map(|(status, resp)| (status.clone(), resp.get("schema").cloned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Operation {
            id,
            method,
            template: segments,
            params,
            body,
            responses,
        })
    }

    /// The api-version the spec describes (`info.version`).
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The operation with this `operationId`.
    pub fn operation_by_id(&self, id: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.id == id)
    }

    /// Routes `method path` to its operation. Literal segments match
    /// case-insensitively (as ARM does); the most literal match wins.
    pub fn route(&self, method: &Method, path: &str) -> Route<'_> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut best: Option<(usize, &Operation, HashMap<String, String>)> = None;
        let mut path_matched = false;
        for op in &self.operations {
            if op.template.len() != segments.len() {
                continue;
            }
            let mut literals = 0;
            let mut params = HashMap::new();
            let matched = op.template.iter().zip(&segments).all(|(t, s)| match t {
                Segment::Literal(l) => {
                    literals += 1;
                    l.eq_ignore_ascii_case(s)
                }
                Segment::Param(name) => {
                    params.insert(name.clone(), (*s).to_owned());
                    true
                }
            });
            if !matched {
                continue;
            }
            path_matched = true;
            if op.method != method {
                continue;
            }
            if best.as_ref().is_none_or(|(l, _, _)| literals > *l) {
                best = Some((literals, op, params));
            }
        }
        match best {
            Some((_, op, params)) => Route::Found(op, params),
            None if path_matched => Route::MethodNotAllowed,
            None => Route::NotFound,
        }
    }

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

    fn lookup(&self, reference: &str) -> Option<&Value> {
        let (file, fragment) = reference.split_once('#')?;
        let (kind, name) = fragment.trim_start_matches('/').split_once('/')?;
        match (file.is_empty(), kind) {
            (true, "definitions") => self.definitions.get(name),
            (false, "definitions") => self.common.get(name),
            (false, "parameters") => self.common_params.get(name),
            _ => None,
        }
    }

    /// Follows `$ref`s (bounded, so a cycle cannot hang).
    fn resolve<'s>(&'s self, mut schema: &'s Value) -> &'s Value {
        for _ in 0..32 {
            match schema.get("$ref").and_then(Value::as_str) {
                Some(r) => schema = self.lookup(r).unwrap_or(&ANY),
                None => return schema,
            }
        }
        &ANY
    }

    /// An object schema's properties, required names and
    /// `additionalProperties`, merged over its `allOf`.
    fn object_parts<'s>(&'s self, schema: &'s Value) -> ObjectParts<'s> {
        let mut parts = ObjectParts::default();
        self.collect_parts(schema, &mut parts, 0);
        parts
    }

    fn collect_parts<'s>(&'s self, schema: &'s Value, parts: &mut ObjectParts<'s>, depth: usize) {
        if depth > 16 {
            return;
        }
        let schema = self.resolve(schema);
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.collect_parts(s, parts, depth + 1);
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                parts.props.insert(k.as_str(), v);
            }
        }
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            parts.required.extend(req.iter().filter_map(Value::as_str));
        }
        if let Some(add) = schema.get("additionalProperties") {
            parts.additional = Some(add);
        }
    }
}

#[derive(Default)]
struct ObjectParts<'s> {
    props: HashMap<&'s str, &'s Value>,
    required: Vec<&'s str>,
    additional: Option<&'s Value>,
}

struct Walker<'s> {
    spec: &'s Spec,
    mode: Mode,
    out: Vec<Violation>,
}

impl Walker<'_> {
    /// Checks `value` at `path`; returns it cleaned (request mode: without
    /// `readOnly` properties and `null`s).
    fn walk(&mut self, schema: &Value, value: &Value, path: &str) -> Option<Value> {
        let spec = self.spec;
        let schema = spec.resolve(schema);
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
            Some("array") => {
                let Some(items) = value.as_array() else {
                    self.push(
                        path,
                        ViolationKind::WrongType,
                        &format!("expected an array, got {}", type_name(value)),
                    );
                    return None;
                };
                let item_schema = schema.get("items").unwrap_or(&ANY);
                let cleaned = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| self.walk(item_schema, v, &format!("{path}[{i}]")))
                    .collect();
                Some(Value::Array(cleaned))
            }
            Some("string") => {
                let Some(s) = value.as_str() else {
                    self.push(
                        path,
                        ViolationKind::WrongType,
                        &format!("expected a string, got {}", type_name(value)),
                    );
                    return None;
                };
                self.string(schema, s, path);
                Some(value.clone())
            }
            Some("integer") => {
                let n = value
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| value.as_u64().map(i128::from));
                let Some(n) = n else {
                    self.push(
                        path,
                        ViolationKind::WrongType,
                        &format!("expected an integer, got {}", type_name(value)),
                    );
                    return None;
                };
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
                Some(value.clone())
            }
            Some("number") => {
                let Some(n) = value.as_f64() else {
                    self.push(
                        path,
                        ViolationKind::WrongType,
                        &format!("expected a number, got {}", type_name(value)),
                    );
                    return None;
                };
                self.bounds(schema, n, path);
                Some(value.clone())
            }
            Some("boolean") => {
                if !value.is_boolean() {
                    self.push(
                        path,
                        ViolationKind::WrongType,
                        &format!("expected a boolean, got {}", type_name(value)),
                    );
                    return None;
                }
                Some(value.clone())
            }
            _ => Some(value.clone()),
        }
    }

    fn object(&mut self, schema: &Value, value: &Value, path: &str) -> Option<Value> {
        let spec = self.spec;
        let Some(map) = value.as_object() else {
            self.push(
                path,
                ViolationKind::WrongType,
                &format!("expected an object, got {}", type_name(value)),
            );
            return None;
        };
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

fn violation(path: &str, kind: ViolationKind, message: &str) -> Violation {
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

/// Every string value of `key` anywhere in `value`, except in
/// `x-ms-examples` (whose `$ref`s name example files, not schemas).
fn collect(value: &Value, key: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "x-ms-examples" {
                    continue;
                }
                match v {
                    Value::String(s) if k == key => out.push(s.clone()),
                    _ => collect(v, key, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, key, out)),
        _ => {}
    }
}

/// The ARM common types (`common-types/resource-management/v5/types.json`)
/// the ACI spec refers to, written by hand because that file is not shipped
/// with the spec: `Resource`, `ProxyResource`, `systemData`, the error types,
/// `OperationStatusResult` (the operation status resource of contract item
/// 4) and the four shared parameters. Refs between them use a non-empty file
/// part (`common#/definitions/...`) so they resolve here, not in the spec.
fn common_types() -> (Map<String, Value>, Map<String, Value>) {
    let definitions = json!({
        "Resource": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "arm-id", "readOnly": true},
                "name": {"type": "string", "readOnly": true},
                "type": {"type": "string", "readOnly": true},
                "systemData": {"$ref": "common#/definitions/systemData", "readOnly": true}
            }
        },
        "ProxyResource": {"type": "object", "allOf": [{"$ref": "common#/definitions/Resource"}]},
        "systemData": {
            "type": "object",
            "properties": {
                "createdBy": {"type": "string"},
                "createdByType": {"type": "string", "enum": ["User", "Application", "ManagedIdentity", "Key"]},
                "createdAt": {"type": "string", "format": "date-time"},
                "lastModifiedBy": {"type": "string"},
                "lastModifiedByType": {"type": "string", "enum": ["User", "Application", "ManagedIdentity", "Key"]},
                "lastModifiedAt": {"type": "string", "format": "date-time"}
            }
        },
        "ErrorAdditionalInfo": {
            "type": "object",
            "properties": {"type": {"type": "string", "readOnly": true}, "info": {"type": "object", "readOnly": true, "additionalProperties": true}}
        },
        "ErrorDetail": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "readOnly": true},
                "message": {"type": "string", "readOnly": true},
                "target": {"type": "string", "readOnly": true},
                "details": {"type": "array", "readOnly": true, "items": {"$ref": "common#/definitions/ErrorDetail"}},
                "additionalInfo": {"type": "array", "readOnly": true, "items": {"$ref": "common#/definitions/ErrorAdditionalInfo"}}
            }
        },
        "ErrorResponse": {"type": "object", "properties": {"error": {"$ref": "common#/definitions/ErrorDetail"}}},
        "OperationStatusResult": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "arm-id"},
                "name": {"type": "string"},
                "status": {"type": "string"},
                "percentComplete": {"type": "number", "minimum": 0, "maximum": 100},
                "startTime": {"type": "string", "format": "date-time"},
                "endTime": {"type": "string", "format": "date-time"},
                "operations": {"type": "array", "items": {"$ref": "common#/definitions/OperationStatusResult"}},
                "error": {"$ref": "common#/definitions/ErrorDetail"},
                "resourceId": {"type": "string", "readOnly": true}
            },
            "required": ["status"]
        }
    });
    let parameters = json!({
        "ApiVersionParameter": {"name": "api-version", "in": "query", "required": true, "type": "string", "minLength": 1},
        "SubscriptionIdParameter": {"name": "subscriptionId", "in": "path", "required": true, "type": "string", "format": "uuid"},
        "ResourceGroupNameParameter": {
            "name": "resourceGroupName", "in": "path", "required": true, "type": "string",
            "pattern": "^[-\\w\\._\\(\\)]+$", "minLength": 1, "maxLength": 90
        },
        "LocationParameter": {"name": "location", "in": "path", "required": true, "type": "string", "minLength": 1}
    });
    let as_map = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    (as_map(definitions), as_map(parameters))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec::from_value(json!({
            "swagger": "2.0",
            "info": {"version": "2026-05-01"},
            "paths": {
                "/subscriptions/{subscriptionId}/things/{name}": {
                    "put": {
                        "operationId": "Things_Put",
                        "parameters": [
                            {"$ref": "../x/types.json#/parameters/ApiVersionParameter"},
                            {"$ref": "../x/types.json#/parameters/SubscriptionIdParameter"},
                            {"name": "name", "in": "path", "required": true, "type": "string"},
                            {"name": "tail", "in": "query", "type": "integer", "format": "int32"},
                            {"name": "thing", "in": "body", "required": true, "schema": {"$ref": "#/definitions/Thing"}}
                        ],
                        "responses": {
                            "200": {"schema": {"$ref": "#/definitions/Thing"}},
                            "204": {},
                            "default": {"schema": {"$ref": "../x/types.json#/definitions/ErrorResponse"}}
                        }
                    },
                    "get": {"operationId": "Things_Get", "responses": {"200": {"schema": {"$ref": "#/definitions/Thing"}}}}
                }
            },
            "definitions": {
                "Thing": {
                    "type": "object",
                    "allOf": [{"$ref": "../x/types.json#/definitions/ProxyResource"}],
                    "properties": {
                        "size": {"type": "integer", "format": "int32"},
                        "kind": {"type": "string", "enum": ["A", "B"]},
                        "key": {"type": "string", "x-ms-secret": true},
                        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                        "parts": {"type": "array", "items": {"$ref": "#/definitions/Part"}},
                        "state": {"type": "string", "readOnly": true}
                    },
                    "required": ["kind", "key"]
                },
                "Part": {"type": "object", "properties": {"cpu": {"type": "number"}}, "required": ["cpu"]}
            }
        }))
        .unwrap()
    }

    fn put(spec: &Spec) -> &Operation {
        spec.operation_by_id("Things_Put").unwrap()
    }

    #[test]
    fn routes_by_template_and_method() {
        let spec = spec();
        let sub = "00000000-0000-0000-0000-000000000001";
        match spec.route(&Method::PUT, &format!("/subscriptions/{sub}/THINGS/a")) {
            Route::Found(op, params) => {
                assert_eq!(op.id, "Things_Put");
                assert_eq!(params.get("name").map(String::as_str), Some("a"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            spec.route(&Method::DELETE, &format!("/subscriptions/{sub}/things/a")),
            Route::MethodNotAllowed
        ));
        assert!(matches!(spec.route(&Method::GET, "/nope"), Route::NotFound));
    }

    #[test]
    fn request_drops_read_only_and_accepts_valid() {
        let spec = spec();
        let body = json!({"kind": "A", "key": "s", "state": "x", "id": "/x", "size": 3, "tags": {"a": "b"}, "parts": [{"cpu": 1.5}]});
        let cleaned = spec
            .validate_request(put(&spec), Some(&body))
            .unwrap()
            .unwrap();
        assert!(cleaned.get("state").is_none());
        assert!(cleaned.get("id").is_none());
        assert_eq!(cleaned["key"], "s");
    }

    #[test]
    fn request_violations_name_the_path() {
        let spec = spec();
        let cases = [
            (
                json!({"kind": "A", "key": "s", "bogus": 1}),
                "$.bogus",
                ViolationKind::UnknownProperty,
            ),
            (
                json!({"kind": "C", "key": "s"}),
                "$.kind",
                ViolationKind::BadEnum,
            ),
            (
                json!({"kind": "A"}),
                "$.key",
                ViolationKind::MissingRequired,
            ),
            (
                json!({"kind": "A", "key": "s", "parts": [{"cpu": "1"}]}),
                "$.parts[0].cpu",
                ViolationKind::WrongType,
            ),
            (
                json!({"kind": "A", "key": "s", "parts": [{}]}),
                "$.parts[0].cpu",
                ViolationKind::MissingRequired,
            ),
            (
                json!({"kind": "A", "key": "s", "size": 1u64 << 40}),
                "$.size",
                ViolationKind::BadFormat,
            ),
            (
                json!({"kind": "A", "key": "s", "tags": {"a": 1}}),
                "$.tags.a",
                ViolationKind::WrongType,
            ),
            (json!([]), "$", ViolationKind::WrongType),
        ];
        for (body, path, kind) in cases {
            let errs = spec.validate_request(put(&spec), Some(&body)).unwrap_err();
            assert_eq!(
                (errs[0].path.as_str(), errs[0].kind),
                (path, kind),
                "{body}"
            );
        }
        assert_eq!(
            spec.validate_request(put(&spec), None).unwrap_err()[0].code(),
            "MissingRequiredProperty"
        );
    }

    #[test]
    fn responses_skip_secret_requirements_and_check_statuses() {
        let spec = spec();
        let op = put(&spec);
        assert!(
            spec.validate_response(
                op,
                200,
                Some(&json!({"kind": "A", "state": "ok", "id": "/a"}))
            )
            .is_ok()
        );
        assert!(spec.validate_response(op, 204, None).is_ok());
        assert!(spec.validate_response(op, 204, Some(&json!({}))).is_err());
        assert!(spec.validate_response(op, 200, None).is_err());
        assert!(
            spec.validate_response(
                op,
                400,
                Some(&json!({"error": {"code": "X", "message": "m"}}))
            )
            .is_ok()
        );
        assert!(
            spec.validate_response(op, 400, Some(&json!({"error": {"code": 1}})))
                .is_err()
        );
        let get = spec.operation_by_id("Things_Get").unwrap();
        assert!(spec.validate_response(get, 404, Some(&json!({}))).is_err());
    }

    #[test]
    fn redact_removes_secrets() {
        let spec = spec();
        let mut v = json!({"kind": "A", "key": "s"});
        spec.redact("Thing", &mut v);
        assert_eq!(v, json!({"kind": "A"}));
    }

    #[test]
    fn params_are_typed() {
        let spec = spec();
        let op = put(&spec);
        let p = |n: &str| op.params.iter().find(|p| p.name == n).unwrap();
        assert!(spec.check_param(p("tail"), "10").is_ok());
        assert!(spec.check_param(p("tail"), "x").is_err());
        assert!(spec.check_param(p("subscriptionId"), "nope").is_err());
        assert!(
            spec.check_param(p("subscriptionId"), "00000000-0000-0000-0000-000000000001")
                .is_ok()
        );
    }

    #[test]
    fn refuses_unresolvable_refs() {
        let doc = json!({"swagger": "2.0", "info": {"version": "1"}, "paths": {}, "definitions": {"A": {"$ref": "#/definitions/B"}}});
        assert!(matches!(Spec::from_value(doc), Err(Error::Invalid(_))));
    }

    #[test]
    fn loads_the_real_spec() {
        let path = crate::default_spec_path();
        let spec = Spec::load(&path).unwrap_or_else(|e| {
            panic!(
                "cannot load the ACI spec {}: {e}; set SKYLET_ACI_SPEC to the path of containerInstance.json",
                path.display()
            )
        });
        assert_eq!(spec.api_version(), "2026-05-01");
        assert!(
            spec.operation_by_id("ContainerGroups_CreateOrUpdate")
                .is_some()
        );
        // The response checks catch what an emulator bug would send: list
        // items have no group-level instance view and no systemData.
        let list = spec
            .operation_by_id("ContainerGroups_ListByResourceGroup")
            .unwrap();
        let item = json!({"name": "g", "properties": {"osType": "Linux", "containers": []}});
        assert!(
            spec.validate_response(list, 200, Some(&json!({"value": [item]})))
                .is_ok()
        );
        for (field, value) in [("systemData", json!({})), ("bogus", json!(1))] {
            let mut bad = item.clone();
            bad[field] = value;
            assert!(
                spec.validate_response(list, 200, Some(&json!({"value": [bad]})))
                    .is_err(),
                "{field}"
            );
        }
        let mut bad = item;
        bad["properties"]["instanceView"] = json!({"state": "Running"});
        let errs = spec
            .validate_response(
                list,
                200,
                Some(&json!({"value": [bad], "nextLink": "relative"})),
            )
            .unwrap_err();
        let mut paths: Vec<&str> = errs.iter().map(|v| v.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["$.nextLink", "$.value[0].properties.instanceView"]);
    }
}
