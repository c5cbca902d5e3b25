//! Kubernetes containers as ECS container definitions: app containers
//! essential, init containers (`init_<name>`) before them in a chain of
//! `dependsOn`, each with its image, command, user, environment, ports and
//! mounts.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use skylet_provider::{ProviderError, ResolvedPod, Value, checks::unsupported};

use super::{
    ContainerSpec, DEFAULT_RESERVATION_MIB, invalid,
    sizing::{Needs, Resources},
    values::PodValues,
    volumes::VolumeLayout,
};
use crate::names;

/// What translating a container reads besides the container.
pub(super) struct Ctx<'a> {
    pub(super) rp: &'a ResolvedPod,
    pub(super) spec: &'a PodSpec,
    pub(super) volumes: &'a VolumeLayout,
    pub(super) stop_timeout: u32,
}

/// Every container has an image.
///
/// # Errors
/// `InvalidImageName` naming the first container without one.
pub(super) fn check_images(spec: &PodSpec) -> Result<(), ProviderError> {
    let init = spec.init_containers.iter().flatten();
    match spec
        .containers
        .iter()
        .chain(init)
        .find(|c| c.image.as_deref().is_none_or(str::is_empty))
    {
        Some(c) => Err(invalid(
            "InvalidImageName",
            format!("container {:?} has no image", c.name),
        )),
        None => Ok(()),
    }
}

/// The task's containers, app containers first, then the files container
/// (`files`), then init containers; and what they need of the task.
/// Containers start in a chain: the files container, each init container
/// in turn, then the app containers.
pub(super) fn containers(
    ctx: &Ctx<'_>,
    files: Option<ContainerSpec>,
    values: &mut PodValues,
) -> Result<(Vec<ContainerSpec>, Needs), ProviderError> {
    let mut needs = Needs::default();
    let mut after = files.as_ref().map(|f| (f.name.clone(), "SUCCESS"));
    let mut init = Vec::new();
    for c in ctx.spec.init_containers.iter().flatten() {
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let (cs, res) = init_container(ctx, c, sidecar, after.take(), values)?;
        if sidecar {
            needs.running(&res, cs.memory_reservation);
        } else {
            needs.init(&res, cs.memory_reservation);
        }
        after = Some((cs.name.clone(), if sidecar { "START" } else { "SUCCESS" }));
        init.push(cs);
    }
    let mut out = Vec::new();
    for c in &ctx.spec.containers {
        let (cs, res) = app_container(ctx, c, after.clone(), values)?;
        needs.running(&res, cs.memory_reservation);
        out.push(cs);
    }
    if let Some(f) = files {
        needs.reserve(f.memory_reservation);
        out.push(f);
    }
    out.extend(init);
    Ok((out, needs))
}

/// An init container: `init_<name>`, not essential, started `after` the
/// previous one. A sidecar (`restartPolicy: Always`) restarts and has its
/// CPU and memory reserved; the others run alone and reserve the minimum.
fn init_container(
    ctx: &Ctx<'_>,
    c: &Container,
    sidecar: bool,
    after: Option<(String, &'static str)>,
    values: &mut PodValues,
) -> Result<(ContainerSpec, Resources), ProviderError> {
    let res = Resources::of(c)?;
    let mut cs = container_spec(ctx, c, &names::ecs_container(&c.name, true), values)?;
    cs.essential = false;
    cs.depends_on = after.into_iter().collect();
    cs.memory_reservation = DEFAULT_RESERVATION_MIB;
    cs.memory = res.memory_limit_mib.map(|m| m.max(DEFAULT_RESERVATION_MIB));
    if sidecar {
        cs.restart = Some(Vec::new());
        cs.cpu = res.cpu_units();
        cs.memory_reservation = res.memory_request_mib().max(DEFAULT_RESERVATION_MIB);
    }
    Ok((cs, res))
}

/// An app container: essential, started `after` the last init container,
/// with the pod's restart policy and its own CPU and memory.
fn app_container(
    ctx: &Ctx<'_>,
    c: &Container,
    after: Option<(String, &'static str)>,
    values: &mut PodValues,
) -> Result<(ContainerSpec, Resources), ProviderError> {
    let res = Resources::of(c)?;
    let mut cs = container_spec(ctx, c, &c.name, values)?;
    cs.essential = true;
    cs.depends_on = after.into_iter().collect();
    cs.cpu = res.cpu_units();
    cs.memory_reservation = res.memory_request_mib().max(DEFAULT_RESERVATION_MIB);
    cs.memory = res.memory_limit_mib.map(|m| m.max(cs.memory_reservation));
    cs.restart = restart_policy(ctx.spec);
    cs.health_check = super::probes::health_check(c);
    Ok((cs, res))
}

/// The ECS restart policy of app containers: `None` (never) or the exit
/// codes that do not restart.
fn restart_policy(spec: &PodSpec) -> Option<Vec<i32>> {
    match spec.restart_policy.as_deref() {
        None | Some("Always") => Some(Vec::new()),
        Some("OnFailure") => Some(vec![0]),
        _ => None,
    }
}

/// What every container shares: image, command, user, environment, ports,
/// mounts; essential, without resources, restart or dependencies (the
/// caller sets those).
///
/// # Errors
/// `UnsupportedPodSpec` for a privileged container, a port or a mount
/// Fargate cannot have.
fn container_spec(
    ctx: &Ctx<'_>,
    c: &Container,
    ecs_name: &str,
    values: &mut PodValues,
) -> Result<ContainerSpec, ProviderError> {
    let sc = c.security_context.as_ref();
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Err(unsupported(format!(
            "container {:?} is privileged; Fargate does not run privileged containers",
            c.name
        )));
    }
    let env = environment(ctx.rp, c, ecs_name, values);
    Ok(ContainerSpec {
        name: ecs_name.to_owned(),
        image: c.image.clone().unwrap_or_default(),
        essential: true,
        entry_point: c.command.clone().filter(|v| !v.is_empty()),
        command: c.args.clone().filter(|v| !v.is_empty()),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        user: user(c, ctx.spec),
        environment: env.environment,
        secrets: env.secrets,
        ports: ports(c)?,
        mounts: mounts(c, ctx.volumes)?,
        depends_on: Vec::new(),
        cpu: None,
        memory: None,
        memory_reservation: DEFAULT_RESERVATION_MIB,
        stop_timeout: ctx.stop_timeout,
        readonly_root: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        restart: None,
        interactive: c.stdin.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        health_check: None,
    })
}

/// `uid[:gid]` from `runAsUser`/`runAsGroup`, the container's over the pod's.
fn user(c: &Container, spec: &PodSpec) -> Option<String> {
    let sc = c.security_context.as_ref();
    let pod_sc = spec.security_context.as_ref();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => Some(format!("0:{g}")),
        (None, None) => None,
    }
}

/// What of a container's environment its definition holds.
#[derive(Debug, Default)]
struct ContainerEnv {
    /// Values every pod of the template shares.
    environment: Vec<(String, String)>,
    /// Secret values: variable and JSON key of the pod's secret.
    secrets: Vec<(String, String)>,
}

/// The container's environment, three ways: secret values go into the
/// pod's secret (the definition references their keys), per-pod values
/// into `values`' overrides, the rest stays in the task definition.
fn environment(
    rp: &ResolvedPod,
    c: &Container,
    ecs_name: &str,
    values: &mut PodValues,
) -> ContainerEnv {
    let per_pod = per_pod_vars(c);
    let mut out = ContainerEnv::default();
    let env = rp.env.get(&c.name).map_or(&[][..], Vec::as_slice);
    for (j, (name, value)) in last_wins(env).into_iter().enumerate() {
        if value.secret {
            let key = format!("e.{ecs_name}.{j}");
            values.secret(key.clone(), value.as_str().into_owned());
            out.secrets.push((name, key));
        } else if per_pod.contains(&name) {
            values.per_pod(ecs_name, name, value.as_str().into_owned());
        } else {
            out.environment.push((name, value.as_str().into_owned()));
        }
    }
    out
}

/// One value per variable: later entries win, the first position stays.
fn last_wins(env: &[(String, Value)]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for (k, v) in env {
        match out.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}

/// Names of the variables of `c` whose values differ between pods of one
/// template: `fieldRef`s, and values with `$(VAR)` expansions (which may
/// expand one).
fn per_pod_vars(c: &Container) -> BTreeSet<String> {
    c.env
        .iter()
        .flatten()
        .filter(|e| {
            e.value_from.as_ref().is_some_and(|f| f.field_ref.is_some())
                || e.value.as_deref().is_some_and(|v| v.contains("$("))
        })
        .map(|e| e.name.clone())
        .collect()
}

/// Port mappings: container port and `tcp`/`udp`.
///
/// # Errors
/// `UnsupportedPodSpec` for SCTP, a `hostPort` other than the container
/// port, or a port out of range.
fn ports(c: &Container) -> Result<Vec<(u16, &'static str)>, ProviderError> {
    let mut ports = Vec::new();
    for p in c.ports.iter().flatten() {
        let proto = match p.protocol.as_deref() {
            None | Some("TCP") => "tcp",
            Some("UDP") => "udp",
            Some(other) => {
                return Err(unsupported(format!(
                    "container {:?} port {}: protocol {other} is not supported by ECS (TCP and UDP are)",
                    c.name, p.container_port
                )));
            }
        };
        if p.host_port.is_some_and(|h| h != p.container_port) {
            return Err(unsupported(format!(
                "container {:?}: hostPort {} differs from containerPort {}; on Fargate (awsvpc) a port is exposed on the task's own address as is",
                c.name,
                p.host_port.unwrap_or_default(),
                p.container_port
            )));
        }
        let port = u16::try_from(p.container_port).map_err(|_| {
            unsupported(format!(
                "container {:?}: port {} is out of range",
                c.name, p.container_port
            ))
        })?;
        ports.push((port, proto));
    }
    Ok(ports)
}

/// Mount points: task volume, path, read-only (always for file volumes).
///
/// # Errors
/// `UnsupportedPodSpec` for a `subPath` mount.
fn mounts(
    c: &Container,
    layout: &VolumeLayout,
) -> Result<Vec<(String, String, bool)>, ProviderError> {
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        if m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
            || m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty())
        {
            return Err(unsupported(format!(
                "container {:?} mounts a subPath of volume {:?} at {}; ECS mounts whole volumes only: mount the volume as a directory",
                c.name, m.name, m.mount_path
            )));
        }
        let volume = layout
            .names
            .get(&m.name)
            .cloned()
            .unwrap_or_else(|| m.name.clone());
        let read_only = m.read_only.unwrap_or(false) || layout.files.contains(&volume);
        mounts.push((volume, m.mount_path.clone(), read_only));
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::tests::{container, pod, reason};
    use serde_json::json;

    #[test]
    fn every_container_needs_an_image() {
        let spec: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "a", "image": "i"}],
            "initContainers": [{"name": "b", "image": ""}, {"name": "c"}]}))
        .unwrap();
        let e = check_images(&spec).unwrap_err();
        assert!(e.to_string().contains("\"b\" has no image"), "{e}");
    }

    #[test]
    fn user_is_uid_and_gid_the_container_over_the_pod() {
        let spec = |sc: serde_json::Value| -> PodSpec {
            serde_json::from_value(json!({"containers": [], "securityContext": sc})).unwrap()
        };
        let c = container(json!({"name": "c", "securityContext": {"runAsUser": 5}}));
        assert_eq!(user(&c, &spec(json!({}))).as_deref(), Some("5"));
        assert_eq!(
            user(&c, &spec(json!({"runAsUser": 1, "runAsGroup": 2}))).as_deref(),
            Some("5:2")
        );
        let bare = container(json!({"name": "c"}));
        assert_eq!(
            user(&bare, &spec(json!({"runAsGroup": 2}))).as_deref(),
            Some("0:2")
        );
        assert_eq!(user(&bare, &spec(json!({}))), None);
    }

    #[test]
    fn environment_goes_to_the_secret_the_overrides_or_the_task_definition() {
        let mut rp = pod("p", json!({"containers": []}));
        let c = container(json!({"name": "app", "env": [
            {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "URL", "value": "http://$(ME)"}]}));
        rp.env.insert(
            "app".into(),
            vec![
                ("MODE".into(), Value::plain("dev")),
                ("ME".into(), Value::plain("p")),
                ("PW".into(), Value::secret("pw")),
                ("URL".into(), Value::plain("http://p")),
                ("MODE".into(), Value::plain("prod")),
            ],
        );
        let mut values = PodValues::default();
        let env = environment(&rp, &c, "init_app", &mut values);
        assert_eq!(
            env.environment,
            [("MODE".to_owned(), "prod".to_owned())],
            "the last wins, first place"
        );
        assert_eq!(env.secrets, [("PW".to_owned(), "e.init_app.2".to_owned())]);
        assert_eq!(values.secret["e.init_app.2"], "pw");
        assert_eq!(
            values.overrides["init_app"],
            [("ME", "p"), ("URL", "http://p")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn ports_map_as_is_and_file_volumes_mount_read_only() {
        let c = container(json!({"name": "c", "ports": [
            {"containerPort": 80, "hostPort": 80}, {"containerPort": 53, "protocol": "UDP"}]}));
        assert_eq!(ports(&c).unwrap(), [(80, "tcp"), (53, "udp")]);
        for bad in [
            json!({"containerPort": 80, "hostPort": 8080}),
            json!({"containerPort": 70000}),
        ] {
            let c = container(json!({"name": "c", "ports": [bad]}));
            assert_eq!(reason(ports(&c).unwrap_err()), "UnsupportedPodSpec");
        }
        let layout = VolumeLayout {
            volumes: vec!["v0".into(), "v1".into()],
            names: [("conf", "v0"), ("data", "v1")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            files: ["v0".to_owned()].into(),
        };
        let c = container(json!({"name": "c", "volumeMounts": [
            {"name": "conf", "mountPath": "/etc/c"},
            {"name": "data", "mountPath": "/data"},
            {"name": "data", "mountPath": "/ro", "readOnly": true}]}));
        assert_eq!(
            mounts(&c, &layout).unwrap(),
            [
                ("v0", "/etc/c", true),
                ("v1", "/data", false),
                ("v1", "/ro", true)
            ]
            .map(|(v, p, ro)| (v.to_owned(), p.to_owned(), ro))
        );
    }
}
