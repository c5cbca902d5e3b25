//! Loading the spec: reading the file, refusing `$ref`s that do not
//! resolve, compiling the `pattern`s, and indexing every operation with its
//! parameters, body and responses.

use std::collections::HashMap;
use std::path::Path;

use http::Method;
use regex::Regex;
use serde_json::Value;

use super::{Error, Operation, Param, ParamIn, Segment, Spec, refs};

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
        let (common, common_params) = refs::common_types();
        let mut spec = Self {
            api_version,
            definitions,
            common,
            common_params,
            operations: Vec::new(),
            patterns: HashMap::new(),
        };
        spec.check_refs(&doc)?;
        spec.compile_patterns(&doc)?;
        spec.index_operations(&doc)?;
        Ok(spec)
    }

    /// Refuses a `$ref` (of the document or the common types) that does not
    /// resolve.
    fn check_refs(&self, doc: &Value) -> Result<(), Error> {
        let mut refs = Vec::new();
        collect(doc, "$ref", &mut refs);
        collect(&Value::Object(self.common.clone()), "$ref", &mut refs);
        match refs.into_iter().find(|r| self.lookup(r).is_none()) {
            Some(r) => Err(Error::Invalid(format!("unresolvable $ref {r}"))),
            None => Ok(()),
        }
    }

    /// Compiles every `pattern` once.
    fn compile_patterns(&mut self, doc: &Value) -> Result<(), Error> {
        let mut patterns = Vec::new();
        collect(doc, "pattern", &mut patterns);
        collect(
            &Value::Object(self.common_params.clone()),
            "pattern",
            &mut patterns,
        );
        for p in patterns {
            let re = Regex::new(&p).map_err(|e| Error::Invalid(format!("pattern {p}: {e}")))?;
            self.patterns.insert(p, re);
        }
        Ok(())
    }

    /// Every operation of `paths`; at least one.
    fn index_operations(&mut self, doc: &Value) -> Result<(), Error> {
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
                let operation = self.operation(template, method, op, &shared)?;
                self.operations.push(operation);
            }
        }
        if self.operations.is_empty() {
            return Err(Error::Invalid("no operations".into()));
        }
        Ok(())
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
