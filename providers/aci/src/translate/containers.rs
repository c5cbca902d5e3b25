//! Containers and init containers.
//!
//! `image`; `command` + `args` → `command` (ACI has a single argv: `args`
//! without `command` would lose the image's entrypoint, so such a pod is
//! refused with the field named); env in Kubernetes order, Secret-derived
//! values as `secureValue`, never `value`; `ports` (TCP/UDP) → container
//! ports (their union becomes the group's IP address, [`super::network`]);
//! resources ([`super::resources`]) and liveness/readiness probes
//! ([`super::probes`]); volume mounts (whole volumes only); security
//! context (privileged, allowPrivilegeEscalation, capabilities,
//! runAsUser/runAsGroup, pod-level defaults included). Init containers
//! become `initContainers` (image, command, env, volume mounts, security
//! context) and run in order. Container names must follow ARM's rule (no
//! `--`, [`names::is_valid_name`]).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container as KubeContainer, PodSpec, SecurityContext};
use skylet_provider::{ProviderError, ResolvedPod, checks::unsupported};

use super::{
    Settings, invalid,
    probes::{probe, startup_budget},
    resources::resources,
};
use crate::{
    models::{
        Container, ContainerNetworkProtocol, ContainerPort, ContainerProbe, ContainerProperties,
        EnvironmentVariable, GpuSku, InitContainerDefinition, InitContainerPropertiesDefinition,
        SecretString, SecurityContextCapabilitiesDefinition, SecurityContextDefinition,
        VolumeMount,
    },
    names,
};

fn command(c: &KubeContainer, path: &str) -> Result<Vec<String>, ProviderError> {
    let cmd = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    if cmd.is_empty() && !args.is_empty() {
        return Err(unsupported(format!(
            "{path}.args: container {:?} sets args without command; ACI has a single command that replaces the image's entrypoint, \
             so the args alone cannot be passed: set command to the image's entrypoint as well",
            c.name
        )));
    }
    Ok(cmd.into_iter().chain(args).collect())
}

fn check_container(c: &KubeContainer, path: &str) -> Result<(), ProviderError> {
    if !names::is_valid_name(&c.name) {
        return Err(unsupported(format!(
            "{path}.name: {:?} is not a valid ACI container name (lowercase letters, digits and '-', no '--'); rename the container",
            c.name
        )));
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        return Err(invalid(
            "InvalidImageName",
            format!("{path}.image: container {:?} has no image", c.name),
        ));
    }
    if c.working_dir.as_deref().is_some_and(|w| !w.is_empty()) {
        return Err(unsupported(format!(
            "{path}.workingDir: ACI cannot set a container's working directory; set WORKDIR in the image, or cd in the command"
        )));
    }
    if c.lifecycle
        .as_ref()
        .is_some_and(|l| l.post_start.is_some() || l.pre_stop.is_some() || l.stop_signal.is_some())
    {
        return Err(unsupported(format!(
            "{path}.lifecycle: ACI runs no lifecycle hooks and sends no custom stop signal; remove them"
        )));
    }
    if c.volume_devices.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(unsupported(format!(
            "{path}.volumeDevices: ACI attaches no block devices; remove them"
        )));
    }
    if c.resources
        .as_ref()
        .and_then(|r| r.claims.as_ref())
        .is_some_and(|c| !c.is_empty())
    {
        return Err(unsupported(format!(
            "{path}.resources.claims: ACI has no dynamic resource allocation; remove them"
        )));
    }
    Ok(())
}

/// The container's environment: later entries win, the first position kept.
fn environment(rp: &ResolvedPod, c: &KubeContainer) -> Vec<EnvironmentVariable> {
    let mut env: Vec<EnvironmentVariable> = Vec::new();
    for (name, v) in rp.env.get(&c.name).into_iter().flatten() {
        let var = if v.secret {
            EnvironmentVariable {
                name: name.clone(),
                secure_value: Some(SecretString::new(v.as_str())),
                ..Default::default()
            }
        } else {
            EnvironmentVariable {
                name: name.clone(),
                value: Some(v.as_str().into_owned()),
                ..Default::default()
            }
        };
        match env.iter_mut().find(|e| e.name == *name) {
            Some(slot) => *slot = var,
            None => env.push(var),
        }
    }
    env
}

fn mounts(
    c: &KubeContainer,
    path: &str,
    file_volumes: &BTreeSet<String>,
) -> Result<Vec<VolumeMount>, ProviderError> {
    let mut out = Vec::new();
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        if m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
            || m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty())
        {
            return Err(unsupported(format!(
                "{path}.volumeMounts[{j}].subPath: ACI mounts whole volumes only; mount volume {:?} as a directory",
                m.name
            )));
        }
        let read_only = m
            .read_only
            .filter(|r| *r)
            .or(file_volumes.contains(&m.name).then_some(true));
        out.push(VolumeMount {
            name: m.name.clone(),
            mount_path: m.mount_path.clone(),
            read_only,
        });
    }
    Ok(out)
}

fn security_context(
    c: Option<&SecurityContext>,
    spec: &PodSpec,
    path: &str,
) -> Result<Option<SecurityContextDefinition>, ProviderError> {
    let pod = spec.security_context.as_ref();
    let int = |v: Option<i64>, field: &str| {
        v.map(|v| {
            i32::try_from(v).map_err(|_| {
                unsupported(format!(
                    "{path}.securityContext.{field}: {v} is out of range for ACI (32 bits)"
                ))
            })
        })
        .transpose()
    };
    let windows = c
        .and_then(|c| c.windows_options.as_ref())
        .or(pod.and_then(|p| p.windows_options.as_ref()));
    if windows.and_then(|w| w.host_process) == Some(true) {
        return Err(unsupported(format!(
            "{path}.securityContext.windowsOptions.hostProcess: ACI has no host; remove it"
        )));
    }
    let seccomp = c
        .and_then(|c| c.seccomp_profile.as_ref())
        .or(pod.and_then(|p| p.seccomp_profile.as_ref()));
    if let Some(p) = seccomp.filter(|p| p.type_ != "RuntimeDefault") {
        return Err(unsupported(format!(
            "{path}.securityContext.seccompProfile: type {} cannot be expressed on ACI, which applies its default profile; use RuntimeDefault",
            p.type_
        )));
    }
    let capabilities =
        c.and_then(|c| c.capabilities.as_ref())
            .map(|caps| SecurityContextCapabilitiesDefinition {
                add: caps.add.clone().unwrap_or_default(),
                drop: caps.drop.clone().unwrap_or_default(),
            });
    let def = SecurityContextDefinition {
        privileged: c.and_then(|c| c.privileged),
        allow_privilege_escalation: c.and_then(|c| c.allow_privilege_escalation),
        capabilities: capabilities.filter(|c| !c.add.is_empty() || !c.drop.is_empty()),
        run_as_group: int(
            c.and_then(|c| c.run_as_group)
                .or(pod.and_then(|p| p.run_as_group)),
            "runAsGroup",
        )?,
        run_as_user: int(
            c.and_then(|c| c.run_as_user)
                .or(pod.and_then(|p| p.run_as_user)),
            "runAsUser",
        )?,
        seccomp_profile: None,
    };
    Ok((def != SecurityContextDefinition::default()).then_some(def))
}

/// The liveness probe, waiting out the startup probe's budget if there is
/// one (ACI has no startup probes: `probes::not_run`).
fn liveness(c: &KubeContainer, path: &str) -> Result<Option<ContainerProbe>, ProviderError> {
    let Some(p) = &c.liveness_probe else {
        return Ok(None);
    };
    let mut live = probe(p, &format!("{path}.livenessProbe"), c)?;
    if let (Some(live), Some(startup)) = (live.as_mut(), &c.startup_probe) {
        live.initial_delay_seconds = Some(
            live.initial_delay_seconds
                .unwrap_or(0)
                .saturating_add(startup_budget(startup)),
        );
    }
    Ok(live)
}

/// The group's containers, in the pod's order.
pub(super) fn containers(
    rp: &ResolvedPod,
    spec: &PodSpec,
    file_volumes: &BTreeSet<String>,
    gpu_sku: Option<&GpuSku>,
    s: &Settings,
) -> Result<Vec<Container>, ProviderError> {
    let mut out = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        out.push(container(rp, spec, c, &path, file_volumes, gpu_sku, s)?);
    }
    Ok(out)
}

/// The group's init containers, in the pod's order; sidecars (init
/// containers with `restartPolicy: Always`) are not among them.
pub(super) fn init_containers(
    rp: &ResolvedPod,
    spec: &PodSpec,
    file_volumes: &BTreeSet<String>,
) -> Result<Vec<InitContainerDefinition>, ProviderError> {
    let mut out = Vec::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        if is_sidecar(c) {
            continue;
        }
        let path = format!("spec.initContainers[{i}]");
        out.push(init_container(rp, spec, c, &path, file_volumes)?);
    }
    Ok(out)
}

/// The pod's native sidecars (init containers with `restartPolicy:
/// Always`) as regular containers of the group: ACI has no sidecars, and
/// its init containers run to completion. They start with the app
/// containers rather than before them, and restart per the group's
/// restart policy.
pub(super) fn sidecars(
    rp: &ResolvedPod,
    spec: &PodSpec,
    file_volumes: &BTreeSet<String>,
    gpu_sku: Option<&GpuSku>,
    s: &Settings,
) -> Result<Vec<Container>, ProviderError> {
    let mut out = Vec::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        if is_sidecar(c) {
            let path = format!("spec.initContainers[{i}]");
            out.push(container(rp, spec, c, &path, file_volumes, gpu_sku, s)?);
        }
    }
    Ok(out)
}

/// Whether an init container is a native sidecar.
fn is_sidecar(c: &KubeContainer) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn container(
    rp: &ResolvedPod,
    spec: &PodSpec,
    c: &KubeContainer,
    path: &str,
    file_volumes: &BTreeSet<String>,
    gpu_sku: Option<&GpuSku>,
    s: &Settings,
) -> Result<Container, ProviderError> {
    check_container(c, path)?;
    let mut ports = Vec::new();
    for (j, p) in c.ports.iter().flatten().enumerate() {
        let protocol = match p.protocol.as_deref() {
            None | Some("TCP") => ContainerNetworkProtocol::Tcp,
            Some("UDP") => ContainerNetworkProtocol::Udp,
            Some(other) => {
                return Err(unsupported(format!(
                    "{path}.ports[{j}].protocol: {other} is not supported by ACI; use TCP or UDP"
                )));
            }
        };
        if p.host_port.is_some_and(|h| h != p.container_port) {
            return Err(unsupported(format!(
                "{path}.ports[{j}].hostPort: {} differs from containerPort {}; an ACI group exposes a port on its own address as is",
                p.host_port.unwrap_or_default(),
                p.container_port
            )));
        }
        if !(1..=65535).contains(&p.container_port) {
            return Err(unsupported(format!(
                "{path}.ports[{j}].containerPort: {} is out of range",
                p.container_port
            )));
        }
        let port = ContainerPort {
            protocol: Some(protocol),
            port: p.container_port,
        };
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(Container {
        name: c.name.clone(),
        properties: ContainerProperties {
            image: c.image.clone().unwrap_or_default(),
            command: command(c, path)?,
            ports,
            environment_variables: environment(rp, c),
            resources: resources(c.resources.as_ref(), path, gpu_sku, s)?,
            volume_mounts: mounts(c, path, file_volumes)?,
            liveness_probe: liveness(c, path)?,
            readiness_probe: c
                .readiness_probe
                .as_ref()
                .map(|p| probe(p, &format!("{path}.readinessProbe"), c))
                .transpose()?
                .flatten(),
            security_context: security_context(c.security_context.as_ref(), spec, path)?,
            ..Default::default()
        },
    })
}

fn init_container(
    rp: &ResolvedPod,
    spec: &PodSpec,
    c: &KubeContainer,
    path: &str,
    file_volumes: &BTreeSet<String>,
) -> Result<InitContainerDefinition, ProviderError> {
    check_container(c, path)?;
    // probes and ports of init containers mean nothing to Kubernetes
    // either; resources: ACI runs init containers within the group's
    Ok(InitContainerDefinition {
        name: c.name.clone(),
        properties: InitContainerPropertiesDefinition {
            image: c.image.clone(),
            command: command(c, path)?,
            environment_variables: environment(rp, c),
            volume_mounts: mounts(c, path, file_volumes)?,
            security_context: security_context(c.security_context.as_ref(), spec, path)?,
            ..Default::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use skylet_provider::Value;

    use super::super::{
        container_group,
        fixtures::{group, one, pod, refusal, settings},
    };
    use crate::models::{EmptyDir, HttpHeader, Scheme};

    #[test]
    fn args_without_command_and_other_container_fields_are_refused_by_name() {
        for (c, needle) in [
            (
                json!({"name": "a", "image": "i", "args": ["x"]}),
                "spec.containers[0].args",
            ),
            (
                json!({"name": "a", "image": "i", "workingDir": "/app"}),
                "spec.containers[0].workingDir",
            ),
            (
                json!({"name": "a--b", "image": "i"}),
                "spec.containers[0].name",
            ),
            (
                json!({"name": "a", "image": "i", "ports": [{"containerPort": 9, "protocol": "SCTP"}]}),
                "spec.containers[0].ports[0].protocol",
            ),
            (
                json!({"name": "a", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}),
                "spec.containers[0].ports[0].hostPort",
            ),
            (
                json!({"name": "a", "image": "i", "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}}}),
                "spec.containers[0].lifecycle",
            ),
            (
                json!({"name": "a", "image": "i", "readinessProbe": {"httpGet": {"port": "web"}}}),
                "spec.containers[0].readinessProbe.httpGet.port",
            ),
            (
                json!({"name": "a", "image": "i", "readinessProbe": {"httpGet": {"port": 80, "host": "x"}}}),
                "httpGet.host",
            ),
            (
                json!({"name": "a", "image": "i", "resources": {"limits": {"example.com/fpga": "1"}}}),
                "resources.limits[example.com/fpga]",
            ),
            (
                json!({"name": "a", "image": "i", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
                "seccompProfile",
            ),
        ] {
            let (reason, message) = refusal(container_group(&one(c.clone()), &settings()));
            assert_eq!(reason, "UnsupportedPodSpec", "{c}");
            assert!(message.contains(needle), "{needle} not in {message}");
        }
        let (reason, message) = refusal(container_group(&one(json!({"name": "a"})), &settings()));
        assert_eq!(reason, "InvalidImageName");
        assert!(message.contains("spec.containers[0].image"));
        let (reason, message) = refusal(container_group(
            &one(json!({"name": "a", "image": "i", "resources": {"requests": {"cpu": "lots"}}})),
            &settings(),
        ));
        assert_eq!(reason, "InvalidResources");
        assert!(message.contains("\"lots\" is not a quantity"), "{message}");
    }

    #[test]
    fn probes_aci_cannot_run_are_left_out_with_a_note_each() {
        let rp = pod(json!({"containers": [{"name": "web", "image": "app",
            "startupProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 5, "periodSeconds": 2, "failureThreshold": 10},
            "livenessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 3},
            "readinessProbe": {"tcpSocket": {"port": 80}}},
            {"name": "side", "image": "app", "livenessProbe": {"grpc": {"port": 9}}}]}));
        let g = group(&rp);
        let web = &g.properties.containers[0].properties;
        assert_eq!(
            web.liveness_probe.as_ref().unwrap().initial_delay_seconds,
            Some(3 + 5 + 2 * 10),
            "the liveness probe waits out the startup probe's budget"
        );
        assert!(web.readiness_probe.is_none());
        assert!(
            g.properties.containers[1]
                .properties
                .liveness_probe
                .is_none()
        );
        let notes = super::super::probes_not_run(rp.pod.spec.as_ref().unwrap());
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].starts_with("spec.containers[0].startupProbe is not run"));
        assert!(notes[0].contains("starts 25 s later"), "{}", notes[0]);
        assert!(notes[1].starts_with("spec.containers[0].readinessProbe.tcpSocket is not run"));
        assert!(notes[1].contains("ready once running"));
        assert!(notes[2].starts_with("spec.containers[1].livenessProbe.grpc is not run"));
    }

    #[test]
    fn native_sidecars_are_regular_containers_of_the_group() {
        // issue #16: an init container with restartPolicy Always
        let g = group(&pod(json!({
            "initContainers": [
                {"name": "migrate", "image": "app", "command": ["migrate"]},
                {"name": "proxy", "image": "envoy", "restartPolicy": "Always",
                 "ports": [{"containerPort": 9901}],
                 "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}}}],
            "containers": [{"name": "web", "image": "app"}]})));
        let names: Vec<&str> = g
            .properties
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["web", "proxy"], "the sidecar runs beside the app");
        let inits: Vec<&str> = g
            .properties
            .init_containers
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(inits, ["migrate"], "only run-to-completion init containers");
        let proxy = &g.properties.containers[1].properties;
        assert_eq!(proxy.image, "envoy");
        assert_eq!(proxy.ports[0].port, 9901);
    }

    #[test]
    fn probes_security_context_and_init_containers() {
        let mut rp = pod(json!({
            "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000},
            "initContainers": [{"name": "migrate", "image": "app", "command": ["migrate"], "args": ["up"],
                                "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}]}],
            "containers": [{"name": "web", "image": "app", "ports": [{"name": "http", "containerPort": 8080}],
                "securityContext": {"runAsUser": 1, "allowPrivilegeEscalation": false, "privileged": false,
                                    "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                                    "seccompProfile": {"type": "RuntimeDefault"}, "readOnlyRootFilesystem": true},
                "livenessProbe": {"exec": {"command": ["cat", "/tmp/ok"]}, "initialDelaySeconds": 5, "periodSeconds": 10,
                                  "failureThreshold": 3, "successThreshold": 1, "timeoutSeconds": 2},
                "readinessProbe": {"httpGet": {"port": "http", "path": "/ready", "scheme": "HTTPS",
                                               "httpHeaders": [{"name": "X-Probe", "value": "1"}]}},
                "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}]}],
            "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]}));
        rp.env.insert(
            "migrate".into(),
            vec![("DB".into(), Value::secret("postgres://u:pw@db"))],
        );
        let g = group(&rp);
        let web = &g.properties.containers[0].properties;
        let live = web.liveness_probe.as_ref().unwrap();
        assert_eq!(live.exec.as_ref().unwrap().command, ["cat", "/tmp/ok"]);
        assert_eq!(
            (
                live.initial_delay_seconds,
                live.period_seconds,
                live.failure_threshold,
                live.success_threshold,
                live.timeout_seconds
            ),
            (Some(5), Some(10), Some(3), Some(1), Some(2))
        );
        let ready = web
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (ready.port, ready.path.as_deref(), ready.scheme.clone()),
            (8080, Some("/ready"), Some(Scheme::Https)),
            "named port resolved"
        );
        assert_eq!(
            ready.http_headers,
            [HttpHeader {
                name: Some("X-Probe".into()),
                value: Some("1".into())
            }]
        );
        let sc = web.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.run_as_user, sc.run_as_group),
            (Some(1), Some(3000)),
            "container wins, pod fills in"
        );
        assert_eq!(
            (sc.privileged, sc.allow_privilege_escalation),
            (Some(false), Some(false))
        );
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(
            (caps.add.as_slice(), caps.drop.as_slice()),
            (
                &["NET_BIND_SERVICE".to_owned()][..],
                &["ALL".to_owned()][..]
            )
        );
        assert_eq!(sc.seccomp_profile, None, "RuntimeDefault is ACI's default");
        let init = &g.properties.init_containers[0];
        assert_eq!(init.name, "migrate");
        assert_eq!(init.properties.image.as_deref(), Some("app"));
        assert_eq!(init.properties.command, ["migrate", "up"]);
        assert!(
            init.properties.environment_variables[0]
                .secure_value
                .is_some()
                && init.properties.environment_variables[0].value.is_none()
        );
        assert_eq!(init.properties.volume_mounts[0].mount_path, "/tmp");
        assert_eq!(
            init.properties
                .security_context
                .as_ref()
                .unwrap()
                .run_as_user,
            Some(1000),
            "pod-level default"
        );
        assert_eq!(g.properties.volumes[0].empty_dir, Some(EmptyDir {}));
        assert_eq!(
            g.properties.ip_address.as_ref().unwrap().ports[0].port,
            8080
        );
    }
}
