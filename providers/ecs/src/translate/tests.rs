//! Tests of [`plan`](super::plan) as a whole; each step's own tests sit
//! with it. The fixtures here serve both.

use aws_sdk_ecs::types::ContainerCondition;
use base64::Engine;
use k8s_openapi::api::core::v1::Container;
use ring::hmac;
use serde_json::json;
use skylet_provider::{ProviderError, ResolvedPod, Value, VolumeFile, testing};

use super::*;
use crate::names::{ANNOTATION_CAPACITY, ANNOTATION_TASK_ROLE, FILES_CONTAINER};

/// Every plain value of a plan, for tests that look for leaks.
fn everything_sent(plan: &Plan, secret_arn: &str) -> String {
    format!(
        "{:?}{:?}{:?}{:?}",
        plan.task.container_definitions(Some(secret_arn)).unwrap(),
        plan.container_overrides(),
        plan.tags,
        plan.family
    )
}

/// Environment of a container by name (tests).
fn env_of(plan: &Plan, container: &str) -> std::collections::HashMap<String, String> {
    plan.task
        .containers
        .iter()
        .find(|c| c.name == container)
        .map(|c| c.environment.iter().cloned().collect())
        .unwrap_or_default()
}

pub(super) fn settings() -> Settings {
    Settings {
        node: "burst-1".into(),
        family_prefix: "skylet-abcd1234-".into(),
        log_group: "/skylet/test".into(),
        region: "us-east-1".into(),
        execution_role_arn: Some("arn:aws:iam::1:role/exec".into()),
        task_role_arn: None,
        files_image: "busybox".into(),
        service_account_token: ServiceAccountToken::Omit,
    }
}

pub(super) fn key() -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, b"test-key")
}

/// A pod fixture: `spec` merged into a minimal pod named `name`.
pub(super) fn pod(name: &str, spec: serde_json::Value) -> ResolvedPod {
    testing::pod("shop", name).spec(spec).resolved()
}

/// A file of a volume, mode 0644.
pub(super) fn file(path: &str, value: Value) -> VolumeFile {
    VolumeFile {
        path: path.into(),
        mode: 0o644,
        value,
    }
}

pub(super) fn web() -> serde_json::Value {
    json!({"containers": [{"name": "web", "image": "nginx", "command": ["nginx"], "args": ["-g", "daemon off;"],
                           "ports": [{"containerPort": 80}],
                           "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                   {"name": "MODE", "value": "prod"},
                                   {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
                           "resources": {"requests": {"cpu": "300m", "memory": "600Mi"}}}],
           "terminationGracePeriodSeconds": 300})
}

fn with_env(mut rp: ResolvedPod) -> ResolvedPod {
    let name = rp.pod.metadata.name.clone().unwrap();
    rp.env.insert(
        "web".into(),
        vec![
            ("POD_NAME".into(), Value::plain(name)),
            ("MODE".into(), Value::plain("prod")),
            ("PASSWORD".into(), Value::secret("hunter2")),
        ],
    );
    rp
}

#[test]
fn replicas_share_one_task_definition_and_per_pod_values_go_to_overrides() {
    let a = plan(&with_env(pod("web-a", web())), &settings(), &key()).unwrap();
    let b = plan(&with_env(pod("web-b", web())), &settings(), &key()).unwrap();
    assert_eq!(a.family, b.family, "same template, same family");
    assert_eq!(a.task, b.task);
    assert!(a.family.starts_with("skylet-abcd1234-"));
    assert_eq!(
        a.overrides,
        [(
            "web".to_owned(),
            vec![("POD_NAME".to_owned(), "web-a".to_owned())]
        )]
    );
    assert_eq!(env_of(&a, "web")["MODE"], "prod");
    let web = &a.task.containers[0];
    assert_eq!(web.entry_point.as_deref(), Some(&["nginx".to_owned()][..]));
    assert_eq!(web.command.as_ref().unwrap()[0], "-g");
    assert_eq!(web.ports, [(80, "tcp")]);
    assert_eq!(web.stop_timeout, 120, "grace period capped at 120 s");
    assert_eq!(
        (a.task.cpu, a.task.memory),
        (512, 1024),
        "300m/600Mi rounds up to 0.5 vCPU / 1 GiB"
    );
    assert_eq!(
        web.restart,
        Some(vec![]),
        "restartPolicy Always restarts the container"
    );
    assert!(
        a.tags
            .contains(&("skylet.io/pod-uid".into(), "uid-web-a".into()))
    );
}

#[test]
fn secret_values_never_leave_in_plain_text() {
    let p = plan(&with_env(pod("web-a", web())), &settings(), &key()).unwrap();
    let payload = p.secret.as_ref().expect("a secret");
    assert!(payload.to_json().contains("hunter2"));
    assert!(!format!("{payload:?}").contains("hunter2"), "Debug redacts");
    assert!(
        !format!("{p:?}").contains("hunter2"),
        "the plan's Debug neither"
    );
    let sent = everything_sent(
        &p,
        "arn:aws:secretsmanager:us-east-1:1:secret:skylet/n/x-AbCdEf",
    );
    assert!(!sent.contains("hunter2"), "{sent}");
    let defs = p.task.container_definitions(Some("arn:s")).unwrap();
    let s = &defs[0].secrets()[0];
    assert_eq!(
        (s.name(), s.value_from()),
        (
            "PASSWORD",
            format!("arn:s:{}::", p.task.containers[0].secrets[0].1).as_str()
        )
    );
    // a different secret value is a different template (and secret)
    let mut other = with_env(pod("web-b", web()));
    other.env.get_mut("web").unwrap()[2].1 = Value::secret("changed");
    assert_ne!(plan(&other, &settings(), &key()).unwrap().family, p.family);
    // the family reveals nothing without the key
    let other_key = hmac::Key::new(hmac::HMAC_SHA256, b"another");
    assert_ne!(
        plan(&with_env(pod("web-a", web())), &settings(), &other_key)
            .unwrap()
            .family,
        p.family
    );
    assert!(
        p.task.container_definitions(None).is_err(),
        "secrets need the secret's ARN"
    );
}

#[test]
fn init_containers_run_in_order_before_app_containers() {
    let rp = pod(
        "job",
        json!({"restartPolicy": "Never",
               "initContainers": [{"name": "migrate", "image": "app", "resources": {"requests": {"cpu": "2", "memory": "3Gi"}}},
                                  {"name": "proxy", "image": "envoy", "restartPolicy": "Always"}],
               "containers": [{"name": "main", "image": "app", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
                              {"name": "side", "image": "app"}]}),
    );
    let p = plan(&rp, &settings(), &key()).unwrap();
    let names: Vec<&str> = p.task.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["main", "side", "init_migrate", "init_proxy"],
        "app containers first"
    );
    let by = |n: &str| p.task.containers.iter().find(|c| c.name == n).unwrap();
    assert!(!by("init_migrate").essential && by("main").essential);
    assert!(by("init_migrate").depends_on.is_empty());
    assert_eq!(
        by("init_proxy").depends_on,
        [("init_migrate".to_owned(), "SUCCESS")]
    );
    assert_eq!(
        by("main").depends_on,
        [("init_proxy".to_owned(), "START")],
        "a sidecar need only start"
    );
    assert_eq!(by("main").restart, None, "restartPolicy Never");
    assert_eq!(by("init_proxy").restart, Some(vec![]), "sidecars restart");
    // the init container's 2 vCPU / 3 GiB dominates the app's 0.25 vCPU
    assert_eq!((p.task.cpu, p.task.memory), (2048, 4096));
    let defs = p.task.container_definitions(None).unwrap();
    assert_eq!(
        defs[0].depends_on()[0].condition(),
        &ContainerCondition::Start
    );
}

#[test]
fn too_large_or_unreadable_resources_fail_the_pod() {
    let rp = pod(
        "big",
        json!({"containers": [{"name": "x", "image": "i", "resources": {"requests": {"memory": "200Gi"}}}]}),
    );
    assert!(matches!(
        plan(&rp, &settings(), &key()),
        Err(ProviderError::InvalidPod { .. })
    ));
    let rp = pod(
        "bad",
        json!({"containers": [{"name": "x", "image": "i", "resources": {"requests": {"cpu": "lots"}}}]}),
    );
    assert!(
        plan(&rp, &settings(), &key())
            .unwrap_err()
            .to_string()
            .contains("\"lots\" is not a quantity")
    );
}

#[test]
fn volumes_become_files_written_by_the_files_container() {
    let mut rp = pod(
        "cfg",
        json!({"containers": [{"name": "app", "image": "app",
                               "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"},
                                                {"name": "creds", "mountPath": "/creds"},
                                                {"name": "info", "mountPath": "/info"},
                                                {"name": "scratch", "mountPath": "/tmp"},
                                                {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
               "volumes": [{"name": "conf", "configMap": {"name": "conf"}},
                           {"name": "creds", "secret": {"secretName": "creds"}},
                           {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                           {"name": "scratch", "emptyDir": {}},
                           {"name": "kube-api-access", "projected": {"sources": [
                               {"serviceAccountToken": {"path": "token"}},
                               {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}]}),
    );
    rp.volumes.insert(
        "conf".into(),
        vec![
            file("app.yaml", Value::plain("port: 80\n")),
            file("sub/x.txt", Value::plain("x")),
        ],
    );
    rp.volumes
        .insert("creds".into(), vec![file("pw", Value::secret("s3cret"))]);
    rp.volumes
        .insert("info".into(), vec![file("name", Value::plain("cfg"))]);
    rp.volumes.insert(
        "kube-api-access".into(),
        vec![
            file("token", Value::secret("eyJhbGciOi")),
            file("ca.crt", Value::plain("-----BEGIN CERTIFICATE-----")),
        ],
    );
    let p = plan(&rp, &settings(), &key()).unwrap();
    let files = p
        .task
        .containers
        .iter()
        .find(|c| c.name == FILES_CONTAINER)
        .unwrap();
    let app = &p.task.containers[0];
    assert_eq!(app.depends_on, [(FILES_CONTAINER.to_owned(), "SUCCESS")]);
    assert!(
        app.mounts.contains(&("v0".into(), "/etc/app".into(), true)),
        "file volumes are read-only"
    );
    assert!(app.mounts.contains(&("v3".into(), "/tmp".into(), false)));
    assert_eq!(
        p.task.volumes,
        ["v0", "v1", "v2", "v3", "v4"],
        "named by position"
    );
    let script = &files.command.as_ref().unwrap()[0];
    assert!(
        script.contains("mkdir -p '/skylet/volumes/v0/sub'"),
        "{script}"
    );
    assert!(
        script.contains("base64 -d > '/skylet/volumes/v0/app.yaml'; chmod 644"),
        "{script}"
    );
    assert!(
        !script.contains("token"),
        "the service-account token is omitted by default: {script}"
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert!(
        files
            .environment
            .iter()
            .any(|(_, v)| *v == b64("port: 80\n"))
    );
    assert!(
        files
            .environment
            .iter()
            .any(|(_, v)| *v == b64("-----BEGIN CERTIFICATE-----"))
    );
    assert_eq!(
        files.secrets.len(),
        1,
        "the secret file comes from Secrets Manager"
    );
    assert_eq!(
        p.overrides,
        [(
            FILES_CONTAINER.to_owned(),
            vec![("SKYLET_F2_0".to_owned(), b64("cfg"))]
        )],
        "downward API is per pod"
    );
    let sent = everything_sent(&p, "arn:x");
    assert!(!sent.contains(&b64("s3cret")) && !sent.contains("s3cret"));
    // with tokens mounted, the token travels as a secret
    let mut s = settings();
    s.service_account_token = ServiceAccountToken::Mount;
    let p = plan(&rp, &s, &key()).unwrap();
    assert_eq!(p.secret.unwrap().keys().count(), 2);
    let script = &p
        .task
        .containers
        .iter()
        .find(|c| c.name == FILES_CONTAINER)
        .unwrap()
        .command
        .as_ref()
        .unwrap()[0];
    assert!(script.contains("/skylet/volumes/v4/token"), "{script}");
}

#[test]
fn what_fargate_cannot_run_fails_with_a_reason() {
    for (spec, reason, needle) in [
        (
            json!({"containers": [{"name": "a", "image": "i"}], "volumes": [{"name": "d", "hostPath": {"path": "/"}}]}),
            "UnsupportedVolume",
            "hostPath",
        ),
        (
            json!({"containers": [{"name": "a", "image": "i", "securityContext": {"privileged": true}}]}),
            "UnsupportedPodSpec",
            "privileged",
        ),
        (
            json!({"containers": [{"name": "a", "image": "i"}], "hostNetwork": true}),
            "UnsupportedPodSpec",
            "spec.hostNetwork: Fargate tasks have no host to share",
        ),
        (
            json!({"containers": [{"name": "a", "image": "i", "volumeMounts": [{"name": "e", "mountPath": "/x", "subPath": "y"}]}],
                "volumes": [{"name": "e", "emptyDir": {}}]}),
            "UnsupportedPodSpec",
            "subPath",
        ),
        (
            json!({"containers": [{"name": "a", "image": "i", "ports": [{"containerPort": 9, "protocol": "SCTP"}]}]}),
            "UnsupportedPodSpec",
            "SCTP",
        ),
    ] {
        let e = plan(&pod("p", spec), &settings(), &key()).unwrap_err();
        match &e {
            ProviderError::InvalidPod { reason: r, message } => {
                assert_eq!(r, reason);
                assert!(message.contains(needle), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    let pod = || testing::pod("shop", "p").container("a", "i");
    let cheap = pod().annotation(ANNOTATION_CAPACITY, "cheap").resolved();
    let e = plan(&cheap, &settings(), &key()).unwrap_err();
    assert!(e.to_string().contains("spot"), "{e}");
    let spot = pod()
        .annotation(ANNOTATION_CAPACITY, "spot")
        .annotation(ANNOTATION_TASK_ROLE, "arn:aws:iam::1:role/pod")
        .resolved();
    let p = plan(&spot, &settings(), &key()).unwrap();
    assert!(p.spot);
    assert_eq!(
        p.task.task_role_arn.as_deref(),
        Some("arn:aws:iam::1:role/pod")
    );
}

#[test]
fn memory_limits_are_hard_limits_above_the_reservation() {
    let rp = pod(
        "p",
        json!({"containers": [
        {"name": "guaranteed", "image": "i", "resources": {"requests": {"memory": "512Mi"}, "limits": {"memory": "512Mi"}}},
        {"name": "burstable", "image": "i", "resources": {"requests": {"memory": "128Mi"}, "limits": {"memory": "1Gi"}}}]}),
    );
    let p = plan(&rp, &settings(), &key()).unwrap();
    assert_eq!(
        (p.task.cpu, p.task.memory),
        (256, 1024),
        "640 MiB of requests"
    );
    let defs = p.task.container_definitions(None).unwrap();
    assert_eq!(
        (defs[0].memory(), defs[0].memory_reservation()),
        (Some(512), None),
        "request = limit: the limit alone"
    );
    assert_eq!(
        (defs[1].memory(), defs[1].memory_reservation()),
        (Some(1024), Some(128))
    );
}

#[test]
fn replicas_with_random_token_volume_names_share_a_template() {
    // the ServiceAccount admission plugin names the volume kube-api-access-<random>
    let replica = |name: &str, suffix: &str| {
        let vol = format!("kube-api-access-{suffix}");
        let mut rp = pod(
            name,
            json!({"containers": [{"name": "a", "image": "i",
                "volumeMounts": [{"name": vol, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
            "volumes": [{"name": vol, "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}]}),
        );
        rp.volumes.insert(
            vol,
            vec![
                file("token", Value::secret(format!("token-of-{name}"))),
                file("namespace", Value::plain("shop")),
            ],
        );
        plan(&rp, &settings(), &key()).unwrap()
    };
    let (a, b) = (replica("a", "x7k2p"), replica("b", "q9z4m"));
    assert_eq!(a.family, b.family);
    assert!(a.secret.is_none(), "the token is omitted by default");
}

#[test]
fn oversized_overrides_move_into_the_task_definition() {
    let mut rp = pod(
        "p",
        json!({"containers": [{"name": "web", "image": "i",
        "env": [{"name": "BIG", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['big']"}}}]}]}),
    );
    rp.env.insert(
        "web".into(),
        vec![("BIG".into(), Value::plain("x".repeat(9000)))],
    );
    let p = plan(&rp, &settings(), &key()).unwrap();
    assert!(p.overrides.is_empty());
    assert_eq!(env_of(&p, "web")["BIG"].len(), 9000);
}

pub(super) fn container(c: serde_json::Value) -> Container {
    serde_json::from_value(c).unwrap()
}

pub(super) fn reason(e: ProviderError) -> String {
    match e {
        ProviderError::InvalidPod { reason, .. } => reason,
        other => panic!("{other:?}"),
    }
}
