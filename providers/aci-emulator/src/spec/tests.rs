//! The validator on a small spec of its own, and the real ACI spec.

use http::Method;
use serde_json::json;

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
