//! From a resolved pod to the container group skylet PUTs. Pure functions;
//! no I/O.
//!
//! [`container_group`] checks the pod-level fields, then assembles the group
//! from one module per part of the pod:
//!
//! | part | module |
//! |---|---|
//! | containers and init containers: command, env, ports, mounts, security context | [`containers`] |
//! | requests, limits and GPUs | [`resources`] |
//! | liveness and readiness probes; those ACI cannot run left out with a note ([`probes_not_run`]) | [`probes`] |
//! | pod volumes → ACI volumes (secret files, Azure Files, emptyDir, gitRepo) | [`volumes`] |
//! | the group's IP address, subnets and DNS | [`network`] |
//! | the `skylet.io/aci-*` annotations; SKU, priority, zone, identity, OS | [`annotations`] |
//! | image pull Secrets → registry credentials | [`pull_secrets`] |
//!
//! Container names must follow ARM's rule (no `--`, [`names::is_valid_name`]);
//! the restart policy is the pod's (`Always`, `OnFailure`, `Never`).
//! Native sidecars (init containers with `restartPolicy: Always`) are
//! regular containers of the group: ACI's init containers run to
//! completion. They start with the app containers, not before them, and
//! with restart policy `Never` or `OnFailure` a sidecar that keeps running
//! keeps the group running after the app containers ended.
//!
//! # Refused (`InvalidPod`, the field named, what to change)
//! hostNetwork/hostPID/hostIPC, shareProcessNamespace, hostAliases, sysctls,
//! pod-level resources, resource claims, `workingDir`, lifecycle hooks,
//! `httpGet.host`, SCTP ports, a
//! `hostPort` other than the container port, `subPath`, volume devices,
//! seccomp profiles other than RuntimeDefault,
//! Windows host-process containers, unknown annotation values.
//!
//! # Ignored (best effort, as on a shared node)
//! `readOnlyRootFilesystem`, `runAsNonRoot`, fsGroup and supplemental
//! groups, SELinux/AppArmor options, `stdin`/`tty` (attach still streams
//! output), `imagePullPolicy`, file modes, emptyDir medium and size,
//! termination messages, scheduling fields, `activeDeadlineSeconds` (the
//! core's business).

mod annotations;
mod containers;
mod network;
mod probes;
mod pull_secrets;
mod resources;
mod volumes;

#[cfg(test)]
mod fixtures;

use k8s_openapi::api::core::v1::PodSpec;
use skylet_provider::{
    ProviderError, ResolvedPod,
    checks::{self, unsupported},
};

pub use annotations::{
    ANNOTATION_AZURE_FILE_PREFIX, ANNOTATION_CCE_POLICY, ANNOTATION_DNS_NAME_LABEL,
    ANNOTATION_GPU_SKU, ANNOTATION_IDENTITY, ANNOTATION_IP, ANNOTATION_OS_TYPE,
    ANNOTATION_PRIORITY, ANNOTATION_SKU, ANNOTATION_SUBNET_IDS, ANNOTATION_ZONE, ANNOTATIONS,
};
pub use pull_secrets::registry_credentials;
pub use resources::GPU_RESOURCE;
pub use volumes::{ACCOUNT_KEY_KEY, ACCOUNT_NAME_KEY, AZURE_FILE_CSI_DRIVER};

use crate::{
    models::{
        ContainerGroup, ContainerGroupPropertiesProperties, ContainerGroupRestartPolicy,
        OperatingSystemTypes,
    },
    names,
};

/// DNS settings of the node's groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dns {
    /// Name servers (the cluster DNS, reachable from the subnets).
    pub nameservers: Vec<String>,
    /// Search domains.
    pub search_domains: Vec<String>,
    /// resolv.conf options, space-separated (`ndots:5`).
    pub options: Option<String>,
}

/// What [`container_group`] needs besides the pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Node name (tags).
    pub node: String,
    /// Azure region of the groups.
    pub location: String,
    /// Subnets of private groups (empty: public groups).
    pub subnet_ids: Vec<String>,
    /// DNS for pods with dnsPolicy ClusterFirst.
    pub dns: Option<Dns>,
    /// Cluster domain (`cluster.local`): adds the kubelet's search domains
    /// (`<ns>.svc.<domain> svc.<domain> <domain>`) to [`Settings::dns`].
    pub cluster_domain: Option<String>,
    /// Availability zones of the node; with exactly one, groups go there.
    pub zones: Vec<String>,
    /// OS of pods that do not say.
    pub default_os_type: OperatingSystemTypes,
    /// CPU cores of a container without a CPU request or limit.
    pub default_cpu: f64,
    /// Memory (GB) of a container without a memory request or limit.
    pub default_memory_gb: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node: String::new(),
            location: String::new(),
            subnet_ids: Vec::new(),
            dns: None,
            cluster_domain: None,
            zones: Vec::new(),
            default_os_type: OperatingSystemTypes::Linux,
            default_cpu: 1.0,
            default_memory_gb: 1.5,
        }
    }
}

fn invalid(reason: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::invalid(reason, message)
}

fn bad_annotation(key: &str, value: &str, want: &str) -> ProviderError {
    invalid(
        "InvalidAnnotation",
        format!("metadata.annotations[{key}]: {value:?} is not valid; {want}"),
    )
}

/// Matches `value` case-insensitively against an enum's spec values.
fn enum_value<'a>(values: &[&'a str], value: &str) -> Option<&'a str> {
    values
        .iter()
        .copied()
        .find(|v| v.eq_ignore_ascii_case(value.trim()))
}

/// The probes of `spec`'s containers that ACI does not run, with what
/// applies instead: one note each, for a Warning Event (the `probes`
/// module).
pub fn probes_not_run(spec: &PodSpec) -> Vec<String> {
    spec.containers
        .iter()
        .enumerate()
        .flat_map(|(i, c)| probes::not_run(c, &format!("spec.containers[{i}]")))
        .collect()
}

/// Derives the container group of `rp`.
///
/// # Errors
/// [`ProviderError::InvalidPod`] for a pod ACI cannot run as specified: the
/// message names the field (`spec.containers[0].args`, an annotation) and
/// says what to change.
pub fn container_group(rp: &ResolvedPod, s: &Settings) -> Result<ContainerGroup, ProviderError> {
    let pod = &rp.pod;
    let Some(spec) = pod.spec.as_ref() else {
        return Err(unsupported("spec: the pod has no spec"));
    };
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    check_pod_level(spec)?;

    let (volumes, file_volumes) = volumes::volumes(rp, spec, &ann)?;
    let gpu_sku = resources::gpu_sku(&ann)?;

    let mut containers = containers::containers(rp, spec, &file_volumes, gpu_sku.as_ref(), s)?;
    containers.extend(containers::sidecars(
        rp,
        spec,
        &file_volumes,
        gpu_sku.as_ref(),
        s,
    )?);
    let init_containers = containers::init_containers(rp, spec, &file_volumes)?;
    let ports = network::group_ports(&containers);
    let (ip_address, subnet_ids) = network::network(&ann, s, ports)?;
    let restart_policy = Some(restart_policy(spec)?);
    let (sku, confidential_compute_properties) = annotations::sku(&ann)?;
    let priority = annotations::priority(&ann)?;
    let zones = annotations::zones(&ann, s)?;

    Ok(ContainerGroup {
        location: Some(s.location.clone()),
        tags: Some(names::tags(&rp.pod_ref(), &s.node)),
        zones,
        identity: annotations::identity(&ann)?,
        properties: ContainerGroupPropertiesProperties {
            containers,
            init_containers,
            image_registry_credentials: registry_credentials(&rp.image_pull_secrets),
            restart_policy,
            ip_address,
            subnet_ids,
            os_type: Some(annotations::os_type(spec, &ann, s)?),
            volumes,
            dns_config: network::dns_config(spec, s, &namespace),
            sku,
            confidential_compute_properties,
            priority,
            ..Default::default()
        },
        ..Default::default()
    })
}

/// The group's restart policy: the pod's.
fn restart_policy(spec: &PodSpec) -> Result<ContainerGroupRestartPolicy, ProviderError> {
    match spec.restart_policy.as_deref() {
        None | Some("Always") => Ok(ContainerGroupRestartPolicy::Always),
        Some("OnFailure") => Ok(ContainerGroupRestartPolicy::OnFailure),
        Some("Never") => Ok(ContainerGroupRestartPolicy::Never),
        Some(other) => Err(unsupported(format!(
            "spec.restartPolicy: {other:?} is not Always, OnFailure or Never"
        ))),
    }
}

/// Refuses the pod-level fields ACI cannot honour.
fn check_pod_level(spec: &PodSpec) -> Result<(), ProviderError> {
    checks::refuse_host_namespaces(spec, "ACI container groups")?;
    if spec.share_process_namespace == Some(true) {
        return Err(unsupported(
            "spec.shareProcessNamespace: ACI containers cannot see each other's processes; remove it",
        ));
    }
    if spec.host_aliases.as_ref().is_some_and(|h| !h.is_empty()) {
        return Err(unsupported(
            "spec.hostAliases: ACI cannot add /etc/hosts entries; use DNS names instead",
        ));
    }
    if spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref())
        .is_some_and(|s| !s.is_empty())
    {
        return Err(unsupported(
            "spec.securityContext.sysctls: ACI sets no sysctls; remove them",
        ));
    }
    if spec.resources.is_some() {
        return Err(unsupported(
            "spec.resources: ACI sizes containers, not pods; set resources on each container instead",
        ));
    }
    if spec.resource_claims.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(unsupported(
            "spec.resourceClaims: ACI has no dynamic resource allocation; remove them",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skylet_provider::{PodRef, Value};

    use super::fixtures::{b64, file, group, pod, pod_with, refusal, settings};
    use crate::models::{ContainerGroupIpAddressType, ContainerNetworkProtocol, SecretString};

    /// A pod of two containers with ports, resources and env.
    fn web() -> ResolvedPod {
        let mut rp = pod_with(
            "web-1",
            json!({}),
            json!({"restartPolicy": "OnFailure",
                   "containers": [{"name": "web", "image": "nginx", "command": ["nginx"], "args": ["-g", "daemon off;"],
                                   "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
                                   "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2G"}}},
                                  {"name": "metrics", "image": "exporter", "ports": [{"containerPort": 80}, {"containerPort": 9100}]}]}),
        );
        rp.env.insert(
            "web".into(),
            vec![
                ("MODE".into(), Value::plain("dev")),
                ("PASSWORD".into(), Value::secret("hunter2")),
                ("MODE".into(), Value::plain("prod")),
            ],
        );
        rp
    }

    #[test]
    fn containers_env_ports_and_resources() {
        let g = group(&web());
        assert_eq!(g.location.as_deref(), Some("westeurope"));
        assert_eq!(
            g.tags,
            Some(names::tags(
                &PodRef::new("shop", "web-1", "uid-web-1"),
                "burst-1"
            ))
        );
        let p = &g.properties;
        assert_eq!(
            p.restart_policy,
            Some(ContainerGroupRestartPolicy::OnFailure)
        );
        assert_eq!(p.os_type, Some(OperatingSystemTypes::Linux));
        let web = &p.containers[0].properties;
        assert_eq!(web.image, "nginx");
        assert_eq!(
            web.command,
            ["nginx", "-g", "daemon off;"],
            "command and args make one argv"
        );
        let names: Vec<&str> = web
            .environment_variables
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["MODE", "PASSWORD"], "order kept, later entries win");
        assert_eq!(web.environment_variables[0].value.as_deref(), Some("prod"));
        assert_eq!(
            web.environment_variables[1].value, None,
            "a Secret value is never a plain value"
        );
        assert_eq!(
            web.environment_variables[1]
                .secure_value
                .as_ref()
                .map(SecretString::expose),
            Some("hunter2")
        );
        assert_eq!(web.ports.len(), 2);
        assert_eq!(web.ports[1].protocol, Some(ContainerNetworkProtocol::Udp));
        // 250m -> 0.25; 1Gi = 1.07 GB -> 1.1; limits 1 core, 2G -> 2.0
        assert_eq!(
            (
                web.resources.requests.cpu,
                web.resources.requests.memory_in_gb
            ),
            (0.25, 1.1)
        );
        let limits = web.resources.limits.as_ref().unwrap();
        assert_eq!((limits.cpu, limits.memory_in_gb), (Some(1.0), Some(2.0)));
        let metrics = &p.containers[1].properties;
        assert!(
            metrics.command.is_empty(),
            "no command: the image's entrypoint"
        );
        assert_eq!(
            (
                metrics.resources.requests.cpu,
                metrics.resources.requests.memory_in_gb
            ),
            (1.0, 1.5),
            "defaults"
        );
        assert_eq!(metrics.resources.limits, None);
        // group ports: the union, 80/TCP once
        let ip = p.ip_address.as_ref().unwrap();
        assert_eq!(
            ip.type_,
            ContainerGroupIpAddressType::Public,
            "ports and no subnets: public"
        );
        let ports: Vec<(i32, &str)> = ip
            .ports
            .iter()
            .map(|p| (p.port, p.protocol.as_ref().unwrap().as_str()))
            .collect();
        assert_eq!(ports, [(80, "TCP"), (53, "UDP"), (9100, "TCP")]);
        assert!(p.subnet_ids.is_empty());
    }

    #[test]
    fn secret_values_stay_out_of_plain_text_and_debug() {
        let mut rp = web();
        rp.pod.spec.as_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(json!({"name": "creds", "secret": {"secretName": "c"}}))
                .unwrap(),
        ]);
        rp.volumes
            .insert("creds".into(), vec![file("pw", Value::secret("s3cret"))]);
        rp.image_pull_secrets = vec![(
            "reg".into(),
            Value::secret(r#"{"auths":{"r.io":{"username":"u","password":"pullpass"}}}"#),
        )];
        let g = group(&rp);
        let debug = format!("{g:?}");
        for secret in ["hunter2", "s3cret", &b64("s3cret"), "pullpass"] {
            assert!(!debug.contains(secret), "{secret} in Debug output");
        }
        let body = serde_json::to_value(&g).unwrap();
        let envs = &body["properties"]["containers"][0]["properties"]["environmentVariables"];
        assert_eq!(
            envs[1],
            json!({"name": "PASSWORD", "secureValue": "hunter2"})
        );
        assert_eq!(
            body["properties"]["volumes"][0]["secret"]["pw"],
            b64("s3cret")
        );
        assert_eq!(
            body["properties"]["imageRegistryCredentials"][0]["password"],
            "pullpass"
        );
    }

    #[test]
    fn pod_level_fields_aci_cannot_honour_are_refused() {
        for (extra, needle) in [
            (json!({"hostNetwork": true}), "spec.hostNetwork"),
            (json!({"hostPID": true}), "spec.hostPID"),
            (json!({"hostIPC": true}), "spec.hostIPC"),
            (
                json!({"shareProcessNamespace": true}),
                "spec.shareProcessNamespace",
            ),
            (
                json!({"hostAliases": [{"ip": "1.2.3.4", "hostnames": ["x"]}]}),
                "spec.hostAliases",
            ),
            (
                json!({"securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}}),
                "sysctls",
            ),
            (
                json!({"resources": {"requests": {"cpu": "1"}}}),
                "spec.resources",
            ),
            (json!({"restartPolicy": "Sometimes"}), "spec.restartPolicy"),
            (
                json!({"nodeSelector": {"kubernetes.io/os": "plan9"}}),
                "spec.nodeSelector[kubernetes.io/os]",
            ),
            (
                json!({"initContainers": [{"name": "setup", "image": "i", "args": ["x"]}]}),
                "spec.initContainers[0].args",
            ),
        ] {
            let mut spec = json!({"containers": [{"name": "a", "image": "i"}]});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let (reason, message) = refusal(container_group(&pod(spec), &settings()));
            assert_eq!(reason, "UnsupportedPodSpec", "{message}");
            assert!(message.contains(needle), "{needle} not in {message}");
        }
        let spec = json!({"hostNetwork": true, "containers": [{"name": "a", "image": "i"}]});
        let (_, message) = refusal(container_group(&pod(spec), &settings()));
        assert_eq!(
            message,
            "spec.hostNetwork: ACI container groups have no host to share; remove it"
        );
    }

    #[test]
    fn the_body_follows_the_spec() {
        let Some(spec) = crate::spec_check::spec() else {
            return;
        };
        let mut rp = web();
        rp.pod.metadata.annotations = Some(
            [
                (ANNOTATION_PRIORITY, "Spot"),
                (ANNOTATION_SKU, "Confidential"),
                (ANNOTATION_CCE_POLICY, "cG9saWN5"),
                (ANNOTATION_GPU_SKU, "K80"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let body = serde_json::to_value(group(&rp)).unwrap();
        let errors = crate::spec_check::spec_errors(&spec, "ContainerGroup", &body);
        assert!(errors.is_empty(), "{errors:#?}");
    }
}
