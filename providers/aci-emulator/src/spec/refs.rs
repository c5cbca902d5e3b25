//! Reference resolution: following `$ref`s (to the spec's definitions, or
//! to the hand-written ARM common types), and merging an object schema's
//! `allOf` into one set of properties.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::Spec;

/// The schema that accepts anything (no `type`).
pub(super) static ANY: Value = Value::Null;

/// An object schema's properties, required names and
/// `additionalProperties`, merged over its `allOf`.
#[derive(Default)]
pub(super) struct ObjectParts<'s> {
    pub(super) props: HashMap<&'s str, &'s Value>,
    pub(super) required: Vec<&'s str>,
    pub(super) additional: Option<&'s Value>,
}

impl Spec {
    pub(super) fn lookup(&self, reference: &str) -> Option<&Value> {
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
    pub(super) fn resolve<'s>(&'s self, mut schema: &'s Value) -> &'s Value {
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
    pub(super) fn object_parts<'s>(&'s self, schema: &'s Value) -> ObjectParts<'s> {
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

/// The ARM common types (`common-types/resource-management/v5/types.json`)
/// the ACI spec refers to, written by hand because that file is not shipped
/// with the spec: `Resource`, `ProxyResource`, `systemData`, the error types,
/// `OperationStatusResult` (the operation status resource of contract item
/// 4) and the four shared parameters. Refs between them use a non-empty file
/// part (`common#/definitions/...`) so they resolve here, not in the spec.
pub(super) fn common_types() -> (Map<String, Value>, Map<String, Value>) {
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
