//! Tests of the models: every property they write is in the spec, their
//! enums list the spec's values, answers with unknown values still parse,
//! and secrets stay out of `Debug`.

use serde_json::json;

use super::*;
use crate::{
    client::{CloudError, CloudErrorBody},
    spec_check::{definition, spec, spec_errors},
};

/// A group with every field skylet can write or read set.
fn full_group() -> ContainerGroup {
    let state = |s: &str| ContainerState {
        state: Some(s.into()),
        start_time: Some("2026-11-25T21:40:00.5Z".parse().unwrap()),
        exit_code: Some(0),
        finish_time: Some("2026-11-25T21:41:00Z".parse().unwrap()),
        detail_status: Some("Completed".into()),
    };
    let event = Event {
        count: Some(2),
        first_timestamp: Some("2026-11-25T21:40:00Z".parse().unwrap()),
        last_timestamp: Some("2026-11-25T21:40:01Z".parse().unwrap()),
        name: Some("Pulling".into()),
        message: Some("pulling image".into()),
        type_: Some("Normal".into()),
    };
    let view = ContainerPropertiesInstanceView {
        restart_count: Some(1),
        current_state: Some(state("Running")),
        previous_state: Some(state("Terminated")),
        events: vec![event.clone()],
    };
    let env = vec![
        EnvironmentVariable {
            name: "A".into(),
            value: Some("1".into()),
            ..Default::default()
        },
        EnvironmentVariable {
            name: "B".into(),
            secure_value: Some(SecretString::new("hunter2")),
            secure_value_reference: Some("ref".into()),
            ..Default::default()
        },
    ];
    let mounts = vec![VolumeMount {
        name: "v".into(),
        mount_path: "/v".into(),
        read_only: Some(true),
    }];
    let sc = SecurityContextDefinition {
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        capabilities: Some(SecurityContextCapabilitiesDefinition {
            add: vec!["NET_ADMIN".into()],
            drop: vec!["ALL".into()],
        }),
        run_as_group: Some(1000),
        run_as_user: Some(1000),
        seccomp_profile: Some("e30=".into()),
    };
    let gpu = GpuResource {
        count: 1,
        sku: GpuSku::V100,
    };
    let probe = ContainerProbe {
        exec: Some(ContainerExec {
            command: vec!["true".into()],
        }),
        http_get: Some(ContainerHttpGet {
            path: Some("/healthz".into()),
            port: 8080,
            scheme: Some(Scheme::Https),
            http_headers: vec![HttpHeader {
                name: Some("X".into()),
                value: Some("y".into()),
            }],
        }),
        initial_delay_seconds: Some(1),
        period_seconds: Some(2),
        failure_threshold: Some(3),
        success_threshold: Some(1),
        timeout_seconds: Some(4),
    };
    ContainerGroup {
        id: Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g".into()),
        name: Some("g".into()),
        type_: Some("Microsoft.ContainerInstance/containerGroups".into()),
        system_data: Some(SystemData { created_by: Some("me".into()), ..Default::default() }),
        location: Some("westeurope".into()),
        tags: Some([("skylet-pod-uid".to_owned(), "u".to_owned())].into()),
        zones: vec!["1".into()],
        identity: Some(ContainerGroupIdentity {
            principal_id: Some("p".into()),
            tenant_id: Some("t".into()),
            type_: Some(ResourceIdentityType::UserAssigned),
            user_assigned_identities: [(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id".to_owned(),
                UserAssignedIdentities { principal_id: Some("p".into()), client_id: Some("c".into()) },
            )]
            .into(),
        }),
        properties: ContainerGroupPropertiesProperties {
            provisioning_state: Some(ContainerGroupProvisioningState::Succeeded),
            containers: vec![Container {
                name: "web".into(),
                properties: ContainerProperties {
                    image: "nginx".into(),
                    command: vec!["nginx".into(), "-g".into()],
                    ports: vec![ContainerPort { protocol: Some(ContainerNetworkProtocol::Udp), port: 53 }],
                    environment_variables: env.clone(),
                    instance_view: Some(view.clone()),
                    resources: ResourceRequirements {
                        requests: ResourceRequests { memory_in_gb: 1.5, cpu: 1.0, gpu: Some(gpu.clone()) },
                        limits: Some(ResourceLimits { memory_in_gb: Some(2.0), cpu: Some(2.0), gpu: Some(gpu) }),
                    },
                    volume_mounts: mounts.clone(),
                    liveness_probe: Some(probe.clone()),
                    readiness_probe: Some(probe),
                    security_context: Some(sc.clone()),
                    config_map: Some(ConfigMap { key_value_pairs: [("k".to_owned(), "v".to_owned())].into() }),
                },
            }],
            image_registry_credentials: vec![ImageRegistryCredential {
                server: "r.azurecr.io".into(),
                username: Some("u".into()),
                password: Some(SecretString::new("pa55")),
                password_reference: Some("ref".into()),
                identity: Some("id".into()),
                identity_url: Some("https://id".into()),
            }],
            restart_policy: Some(ContainerGroupRestartPolicy::OnFailure),
            ip_address: Some(IpAddress {
                ports: vec![Port { protocol: Some(ContainerGroupNetworkProtocol::Tcp), port: 80 }],
                type_: ContainerGroupIpAddressType::Public,
                ip: Some("20.1.2.3".into()),
                dns_name_label: Some("web".into()),
                auto_generated_domain_name_label_scope: Some(DnsNameLabelReusePolicy::TenantReuse),
                fqdn: Some("web.westeurope.azurecontainer.io".into()),
            }),
            os_type: Some(OperatingSystemTypes::Linux),
            volumes: vec![
                Volume { name: "e".into(), empty_dir: Some(EmptyDir {}), ..Default::default() },
                Volume {
                    name: "s".into(),
                    secret: Some(SecretMap([("f".to_owned(), SecretString::new("c2VjcmV0"))].into())),
                    ..Default::default()
                },
                Volume { name: "r".into(), secret_reference: Some([("f".to_owned(), "uri".to_owned())].into()), ..Default::default() },
                Volume {
                    name: "a".into(),
                    azure_file: Some(AzureFileVolume {
                        share_name: "share".into(),
                        read_only: Some(false),
                        storage_account_name: "acct".into(),
                        storage_account_key: Some(SecretString::new("a2V5")),
                        storage_account_key_reference: Some("ref".into()),
                        user_managed_identity_client_id: Some("c".into()),
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "g".into(),
                    git_repo: Some(GitRepoVolume {
                        directory: Some(".".into()),
                        repository: "https://x/y.git".into(),
                        revision: Some("abc".into()),
                    }),
                    ..Default::default()
                },
            ],
            instance_view: Some(ContainerGroupPropertiesPropertiesInstanceView {
                events: vec![event],
                state: Some("Running".into()),
            }),
            subnet_ids: vec![ContainerGroupSubnetId { id: "/subscriptions/s/.../subnets/a".into(), name: Some("a".into()) }],
            dns_config: Some(DnsConfiguration {
                name_servers: vec!["10.0.0.10".into()],
                search_domains: Some("svc.cluster.local".into()),
                options: Some("ndots:5".into()),
            }),
            sku: Some(ContainerGroupSku::Confidential),
            init_containers: vec![InitContainerDefinition {
                name: "init".into(),
                properties: InitContainerPropertiesDefinition {
                    image: Some("busybox".into()),
                    command: vec!["true".into()],
                    environment_variables: env,
                    instance_view: Some(view),
                    volume_mounts: mounts,
                    security_context: Some(sc),
                },
            }],
            confidential_compute_properties: Some(ConfidentialComputeProperties { cce_policy: Some("cG9saWN5".into()) }),
            priority: Some(ContainerGroupPriority::Spot),
            is_created_from_standby_pool: Some(false),
        },
    }
}

#[test]
fn every_property_written_is_in_the_spec() {
    let Some(spec) = spec() else { return };
    let group = serde_json::to_value(full_group()).unwrap();
    let mut errors = spec_errors(&spec, "ContainerGroup", &group);
    // a LIST item is the same without the group-level instanceView
    let mut item = group.clone();
    item["properties"]
        .as_object_mut()
        .unwrap()
        .remove("instanceView");
    // ListResultContainerGroup spells out id, name and type, not systemData
    item.as_object_mut().unwrap().remove("systemData");
    errors.extend(spec_errors(&spec, "ListResultContainerGroup", &item));
    let page = json!({"value": [item], "nextLink": "https://x/?$skipToken=1"});
    errors.extend(spec_errors(&spec, "ContainerGroupListResult", &page));
    // the client's error body
    let err = serde_json::to_value(CloudError {
        error: Some(CloudErrorBody {
            code: Some("X".into()),
            message: Some("m".into()),
            target: Some("t".into()),
            details: vec![CloudErrorBody::default()],
        }),
    })
    .unwrap();
    errors.extend(spec_errors(&spec, "CloudError", &err));
    assert!(errors.is_empty(), "{errors:#?}");

    // the walker itself finds a property the spec lacks
    let mut bad = group;
    bad["properties"]["containers"][0]["properties"]["workingDir"] = json!("/");
    let errors = spec_errors(&spec, "ContainerGroup", &bad);
    assert!(
        errors.iter().any(|e| e.contains("workingDir")),
        "{errors:?}"
    );
}

#[test]
fn enums_list_exactly_the_specs_values() {
    let Some(spec) = spec() else { return };
    let values = |name: &str| -> Vec<String> {
        let d = definition(&spec, name);
        let e = d
            .get("enum")
            .unwrap_or_else(|| &d["properties"]["autoGeneratedDomainNameLabelScope"]["enum"]);
        e.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    for (name, ours) in [
        (
            "ContainerGroupRestartPolicy",
            ContainerGroupRestartPolicy::VALUES,
        ),
        ("OperatingSystemTypes", OperatingSystemTypes::VALUES),
        (
            "ContainerGroupIpAddressType",
            ContainerGroupIpAddressType::VALUES,
        ),
        (
            "ContainerGroupNetworkProtocol",
            ContainerGroupNetworkProtocol::VALUES,
        ),
        ("ContainerNetworkProtocol", ContainerNetworkProtocol::VALUES),
        ("GpuSku", GpuSku::VALUES),
        ("Scheme", Scheme::VALUES),
        ("ContainerGroupSku", ContainerGroupSku::VALUES),
        ("ContainerGroupPriority", ContainerGroupPriority::VALUES),
        ("ResourceIdentityType", ResourceIdentityType::VALUES),
        (
            "ContainerGroupProvisioningState",
            ContainerGroupProvisioningState::VALUES,
        ),
        ("IpAddress", DnsNameLabelReusePolicy::VALUES),
    ] {
        assert_eq!(values(name), ours, "{name}");
    }
}

#[test]
fn answers_with_unknown_values_still_parse() {
    let g: ContainerGroup = serde_json::from_value(json!({
        "id": "/x", "name": "g", "location": "westeurope", "somethingNew": {"a": 1},
        "properties": {
            "provisioningState": "Migrating", "osType": "Plan9", "sku": "Premium", "restartPolicy": "Sometimes",
            "containers": [{"name": "web", "properties": {
                "image": "nginx", "resources": {"requests": {"cpu": 1, "memoryInGB": 1.5, "gpu": {"count": 1, "sku": "H100"}}},
                "ports": [{"port": 80, "protocol": "SCTP"}],
                "instanceView": {"restartCount": 0, "currentState": {"state": "Running", "startTime": "not a time"},
                                 "events": [{"name": "Pulled", "firstTimestamp": "2026-11-25T21:40:00"}]}}}],
            "ipAddress": {"type": "Internal", "ports": [], "ip": "10.0.0.4"},
            "volumes": [{"name": "e", "emptyDir": {}}]
        }
    }))
    .unwrap();
    let p = &g.properties;
    assert_eq!(
        p.provisioning_state,
        Some(ContainerGroupProvisioningState::Other("Migrating".into()))
    );
    assert_eq!(
        p.os_type.as_ref().map(OperatingSystemTypes::as_str),
        Some("Plan9")
    );
    let c = &p.containers[0].properties;
    assert_eq!(
        c.resources.requests.gpu.as_ref().unwrap().sku,
        GpuSku::Other("H100".into())
    );
    let view = c.instance_view.as_ref().unwrap();
    assert_eq!(
        view.current_state.as_ref().unwrap().start_time,
        None,
        "an unparsable time is absent"
    );
    assert_eq!(
        view.events[0].first_timestamp.unwrap().as_second(),
        1_795_642_800,
        "no offset: UTC"
    );
    assert_eq!(p.volumes[0].empty_dir, Some(EmptyDir {}));
    // unknown enum values are written back unchanged
    let back = serde_json::to_value(&g).unwrap();
    assert_eq!(back["properties"]["sku"], "Premium");
    assert_eq!(back["properties"]["ipAddress"]["type"], "Internal");
    assert_eq!(back["properties"]["volumes"][0]["emptyDir"], json!({}));
}

#[test]
fn round_trips_and_debug_redacts_secrets() {
    let g = full_group();
    let text = serde_json::to_string(&g).unwrap();
    let back: ContainerGroup = serde_json::from_str(&text).unwrap();
    assert_eq!(back, g);
    assert!(
        text.contains("hunter2")
            && text.contains("pa55")
            && text.contains("c2VjcmV0")
            && text.contains("a2V5")
    );
    let debug = format!("{g:?}");
    for secret in ["hunter2", "pa55", "c2VjcmV0", "a2V5"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(
        debug.contains("\"f\""),
        "secret volume file names stay visible"
    );
}
