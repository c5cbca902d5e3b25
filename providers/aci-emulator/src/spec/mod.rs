//! The ACI ARM spec (Swagger 2.0 with `x-ms-*` extensions): loading it
//! ([`load`]), routing a request to its operation ([`route`]), and
//! validating parameters and bodies ([`validate`], walking a schema with
//! [`walker`], following `$ref`s with [`refs`]).
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
//! it needs are defined by hand in [`refs`].
//!
//! # Guarantees
//! Nothing here panics on any input: unresolvable `$ref`s are refused when the
//! spec is loaded, and bodies are only ever walked, never indexed blindly.

use std::collections::HashMap;
use std::fmt;

use http::Method;
use regex::Regex;
use serde_json::{Map, Value};

mod load;
mod refs;
mod route;
#[cfg(test)]
mod tests;
mod validate;
mod walker;

use route::Segment;

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

impl Spec {
    /// The api-version the spec describes (`info.version`).
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The operation with this `operationId`.
    pub fn operation_by_id(&self, id: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.id == id)
    }
}
