//! The emulator accepts what the ACI spec allows and rejects the rest, over
//! real HTTPS; every answer it sends is validated against the spec (a
//! violation would come back as 500 `EmulatorResponseInvalid`, which the
//! client helper refuses).

mod common;

use common::{API, Client, simple_group};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use skylet_aci_emulator::Config;

fn full_group() -> Value {
    json!({
        "location": "westeurope",
        "tags": {
            "skylet-pod-uid": "0b6c7e0e-3f7e-4a36-9d0c-5b7b1f3c2d11",
            "skylet-pod-namespace": "default",
            "skylet-pod-name": "web-0",
            "skylet-node": "skylet"
        },
        "zones": ["1"],
        "identity": {
            "type": "SystemAssigned, UserAssigned",
            "userAssignedIdentities": {
                "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/skylet-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pull": {}
            }
        },
        "properties": {
            "osType": "Linux",
            "restartPolicy": "OnFailure",
            "sku": "Confidential",
            "priority": "Spot",
            "confidentialComputeProperties": {"ccePolicy": "eyJhbGxvd19hbGwiOnRydWV9"},
            "imageRegistryCredentials": [
                {"server": "registry.example.com", "username": "puller", "password": "registry-password"},
                {"server": "acr.example.io", "identity": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/skylet-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pull"}
            ],
            "subnetIds": [{"id": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/skylet-rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/aci", "name": "aci"}],
            "dnsConfig": {"nameServers": ["10.0.0.10"], "searchDomains": "default.svc.cluster.local svc.cluster.local", "options": "ndots:5"},
            "ipAddress": {"type": "Private", "ports": [{"protocol": "TCP", "port": 8080}]},
            "volumes": [
                {"name": "config", "secret": {"app.conf": "c2VjcmV0LWNvbmZpZw=="}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "share", "azureFile": {"shareName": "data", "storageAccountName": "skyletsa", "storageAccountKey": "storage-key", "readOnly": false}}
            ],
            "initContainers": [{
                "name": "init-db",
                "properties": {
                    "image": "busybox:1.36",
                    "command": ["sh", "-c", "echo migrating; exit 0"],
                    "environmentVariables": [{"name": "PHASE", "value": "init"}],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]
                }
            }],
            "containers": [
                {
                    "name": "web",
                    "properties": {
                        "image": "registry.example.com/web:1.2.3",
                        "command": ["/bin/sh", "-c", "echo serving; sleep infinity"],
                        "ports": [{"protocol": "TCP", "port": 8080}],
                        "environmentVariables": [
                            {"name": "MODE", "value": "prod"},
                            {"name": "DB_PASSWORD", "secureValue": "s3cr3t-value"}
                        ],
                        "resources": {
                            "requests": {"cpu": 1.0, "memoryInGB": 1.5, "gpu": {"count": 1, "sku": "V100"}},
                            "limits": {"cpu": 2.0, "memoryInGB": 3.0}
                        },
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/app", "readOnly": true},
                            {"name": "share", "mountPath": "/data"}
                        ],
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": 8080, "scheme": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                            "initialDelaySeconds": 5, "periodSeconds": 10, "failureThreshold": 3, "successThreshold": 1, "timeoutSeconds": 2
                        },
                        "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 5},
                        "securityContext": {"privileged": false, "allowPrivilegeEscalation": false, "runAsUser": 1000, "runAsGroup": 1000,
                            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}
                    }
                },
                {
                    "name": "sidecar",
                    "properties": {
                        "image": "busybox",
                        "resources": {"requests": {"cpu": 0.25, "memoryInGB": 0.5}}
                    }
                }
            ]
        }
    })
}

async fn setup() -> (skylet_aci_emulator::Emulator, Client) {
    let (emu, mut client) = common::start(Config::default()).await;
    client.login().await;
    (emu, client)
}

#[tokio::test]
async fn rejects_bodies_the_spec_or_aci_forbid() {
    let (emu, client) = setup().await;
    let base = simple_group(&["sleep", "infinity"]);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = base.clone();
        f(&mut b);
        b
    };
    let cases: Vec<(&str, Value, StatusCode, &str, &str)> = vec![
        (
            "unknown top-level property",
            with(&|b| b["bogus"] = json!(1)),
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "$.bogus",
        ),
        (
            "unknown property in a container's properties",
            with(&|b| b["properties"]["containers"][0]["properties"]["cpuCount"] = json!(2)),
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "$.properties.containers[0].properties.cpuCount",
        ),
        (
            "string for cpu",
            with(&|b| {
                b["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"] =
                    json!("1")
            }),
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "$.properties.containers[0].properties.resources.requests.cpu",
        ),
        (
            "missing containers",
            with(&|b| {
                b["properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("containers");
            }),
            StatusCode::BAD_REQUEST,
            "MissingRequiredProperty",
            "$.properties.containers",
        ),
        (
            "missing image",
            with(&|b| {
                b["properties"]["containers"][0]["properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("image");
            }),
            StatusCode::BAD_REQUEST,
            "MissingRequiredProperty",
            "$.properties.containers[0].properties.image",
        ),
        (
            "bad osType enum",
            with(&|b| b["properties"]["osType"] = json!("Solaris")),
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "$.properties.osType",
        ),
        (
            "bad tag name",
            with(&|b| b["tags"]["a/b"] = json!("x")),
            StatusCode::BAD_REQUEST,
            "InvalidTagNameCharacters",
            "a/b",
        ),
        (
            "other location",
            with(&|b| b["location"] = json!("eastus")),
            StatusCode::BAD_REQUEST,
            "LocationNotAvailableForResourceType",
            "eastus",
        ),
        (
            "no containers",
            with(&|b| b["properties"]["containers"] = json!([])),
            StatusCode::BAD_REQUEST,
            "NoContainersSpecified",
            "",
        ),
        (
            "bad container name",
            with(&|b| b["properties"]["containers"][0]["name"] = json!("App_1")),
            StatusCode::BAD_REQUEST,
            "InvalidContainerName",
            "App_1",
        ),
        (
            "no resource requests",
            with(&|b| {
                b["properties"]["containers"][0]["properties"]
                    .as_object_mut()
                    .unwrap()
                    .remove("resources");
            }),
            StatusCode::BAD_REQUEST,
            "ResourceRequestsNotSpecified",
            "",
        ),
        (
            "mount of an undeclared volume",
            with(&|b| {
                b["properties"]["containers"][0]["properties"]["volumeMounts"] =
                    json!([{"name": "nope", "mountPath": "/x"}])
            }),
            StatusCode::BAD_REQUEST,
            "InvalidVolumeMount",
            "nope",
        ),
        (
            "port out of range",
            with(&|b| {
                b["properties"]["containers"][0]["properties"]["ports"] = json!([{"port": 70000}])
            }),
            StatusCode::BAD_REQUEST,
            "InvalidContainerPort",
            "70000",
        ),
    ];
    for (what, body, status, code, in_message) in &cases {
        let r = client.put_group("g1", body).await;
        assert_eq!((r.status, r.code()), (*status, *code), "{what}: {}", r.json);
        let message = r.json["error"]["message"].as_str().unwrap();
        assert!(message.contains(in_message), "{what}: {message}");
    }
    // The group name is a path parameter.
    for bad in ["Upper", "-lead", "trail-", "dou--ble", &"a".repeat(64)] {
        let r = client.put_group(bad, &base).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "InvalidContainerGroupName"),
            "{bad}"
        );
    }
    // api-version: missing and other.
    let path = client.group_path("g1");
    let auth = format!("Bearer {}", client.token.as_deref().unwrap());
    let r = client
        .send(Method::GET, &path, &[("authorization", &auth)], None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "MissingApiVersionParameter")
    );
    let r = client
        .arm(Method::GET, &format!("{path}?api-version=2023-05-01"), None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidApiVersionParameter")
    );
    // Not JSON at all.
    let r = client
        .send(
            Method::PUT,
            &format!("{path}?{API}"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(b"{".to_vec()),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidRequestContent")
    );
    // Nothing was created, and each rejection counted.
    assert!(emu.groups().is_empty());
    let stats = emu.stats();
    assert!(
        stats.rejected >= u64::try_from(cases.len()).unwrap() + 8,
        "{stats:?}"
    );
    assert_eq!(stats.invalid_responses, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn accepts_a_full_body_and_hides_write_only_values() {
    let (emu, client) = setup().await;
    let body = full_group();
    let r = client.put_group("web-0", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["properties"]["provisioningState"], "Creating");
    // The raw request is kept as received.
    assert_eq!(
        emu.requests("ContainerGroups_CreateOrUpdate"),
        vec![body.clone()]
    );
    let g = client
        .wait_group("web-0", |g| {
            g["properties"]["instanceView"]["state"] == "Running"
        })
        .await;
    let props = &g["properties"];
    assert_eq!(props["sku"], "Confidential");
    assert_eq!(props["priority"], "Spot");
    // Private IP from the subnet; identities filled in.
    assert!(
        props["ipAddress"]["ip"]
            .as_str()
            .unwrap()
            .starts_with("10."),
        "{}",
        props["ipAddress"]
    );
    assert!(g["identity"]["principalId"].is_string());
    assert_eq!(g["identity"]["tenantId"], emu.config().tenant_id.as_str());
    // Init container ran first and ended.
    let init = &props["initContainers"][0]["properties"]["instanceView"];
    assert_eq!(init["currentState"]["state"], "Terminated");
    assert_eq!(init["currentState"]["exitCode"], 0);
    // Write-only values never come back, in GET or LIST.
    let list = client
        .arm(
            Method::GET,
            &format!("{}/containerGroups", client.rg_path()),
            None,
        )
        .await;
    for text in [g.to_string(), r.json.to_string(), list.json.to_string()] {
        for secret in [
            "s3cr3t-value",
            "registry-password",
            "storage-key",
            "c2VjcmV0LWNvbmZpZw==",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
    assert!(
        props["containers"][0]["properties"]["environmentVariables"][1]
            .get("secureValue")
            .is_none()
    );
    // ... but are stored.
    let stored = emu.groups()[0].to_string();
    assert!(stored.contains("s3cr3t-value") && stored.contains("registry-password"));
    // Same body again: 200, a no-op.
    let again = client.put_group("web-0", &body).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json["properties"]["provisioningState"], "Succeeded");
    assert_eq!(emu.stats().invalid_responses, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_groups_and_subscriptions() {
    let (emu, client) = setup().await;
    let r = client.get_group("nope").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );
    let other_rg = client.group_path("g").replace("skylet-rg", "other-rg");
    let r = client.arm(Method::GET, &other_rg, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "ResourceGroupNotFound")
    );
    let other_sub = client
        .group_path("g")
        .replace(&client.sub, "00000000-0000-0000-0000-000000000009");
    let r = client.arm(Method::GET, &other_sub, None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "SubscriptionNotFound")
    );
    let r = client
        .arm(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.Nope/things",
                client.sub
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = client
        .arm(Method::POST, &client.group_path("g"), None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = client
        .group_call(Method::GET, "g", "/containers/c/logs?tail=x", None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidQueryParameterValue")
    );
    assert_eq!(emu.stats().invalid_responses, 0);
    emu.shutdown().await;
}
