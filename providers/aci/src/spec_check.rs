//! Checks JSON against the ACI spec (tests only): [`spec`] reads
//! `containerInstance.json` (env `SKYLET_ACI_SPEC`, default
//! `<repo>/../shared/specs/aci/containerInstance.json`), [`spec_errors`]
//! lists every property, enum value and JSON type of a body that the spec's
//! definition does not allow (what [`crate::models`] and
//! [`crate::translate`] write is checked with it).

use serde_json::{Value, json};

/// The spec (always `Some`).
///
/// # Panics
/// When the spec cannot be read: a missing spec fails the test, never
/// skips it.
pub(crate) fn spec() -> Option<Value> {
    let path = std::env::var_os("SKYLET_ACI_SPEC")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/specs/aci/containerInstance.json")
        });
    match std::fs::read(&path) {
        Ok(b) => Some(serde_json::from_slice(&b).unwrap()),
        Err(e) => panic!(
            "cannot read the ACI spec {}: {e}; set SKYLET_ACI_SPEC to the path of containerInstance.json",
            path.display()
        ),
    }
}

/// Resolves a local `$ref`; external common-types refs become `None`.
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> Option<&'a Value> {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/definitions/")
            .and_then(|n| spec["definitions"].get(n)),
        None => Some(schema),
    }
}

/// Walks `value` against `schema`, collecting every property, enum value
/// and JSON type the spec does not allow.
fn walk(spec: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(schema) = resolve(spec, schema) else {
        errors.push(format!("{path}: unresolvable {schema}"));
        return;
    };
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match (ty, value) {
        (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_))
        | (Some("number"), Value::Number(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64(),
        (Some("array"), Value::Array(_)) | (Some("object") | None, Value::Object(_)) => true,
        (None, _) => true,
        _ => false,
    };
    if !type_ok {
        errors.push(format!("{path}: {value} is not of type {ty:?}"));
    }
    match value {
        Value::Object(map) => {
            // properties, including those inherited through allOf
            let mut props = serde_json::Map::new();
            let mut stack = vec![schema];
            while let Some(s) = stack.pop() {
                if let Some(p) = s.get("properties").and_then(Value::as_object) {
                    props.extend(p.clone());
                }
                for parent in s
                    .get("allOf")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match resolve(spec, parent) {
                        Some(p) => stack.push(p),
                        // common-types v5 ProxyResource -> Resource
                        None => {
                            for k in ["id", "name", "type"] {
                                props.insert(k.into(), json!({"type": "string"}));
                            }
                            props.insert("systemData".into(), json!({}));
                        }
                    }
                }
            }
            let additional = schema.get("additionalProperties");
            for (k, v) in map {
                let sub = format!("{path}.{k}");
                if let Some(p) = props.get(k) {
                    walk(spec, p, v, &sub, errors);
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    walk(spec, a, v, &sub, errors);
                } else if !(props.is_empty() && schema.get("type").is_none()) {
                    errors.push(format!("{sub}: not a property of the spec's definition"));
                }
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().unwrap_or_default();
                if !map.contains_key(r) {
                    errors.push(format!("{path}.{r}: required by the spec but not written"));
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(spec, item, v, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// The spec's definition `name`.
pub(crate) fn definition<'a>(spec: &'a Value, name: &str) -> &'a Value {
    &spec["definitions"][name]
}

/// Where `value` departs from the spec's definition `name`.
pub(crate) fn spec_errors(spec: &Value, name: &str, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    walk(spec, definition(spec, name), value, name, &mut errors);
    errors
}
