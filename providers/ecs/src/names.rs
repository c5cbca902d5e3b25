//! Names and tags skylet gives ECS resources, and how it reads them back.
//!
//! | resource | name | found again by |
//! |---|---|---|
//! | task | (ECS id) | `startedBy` = [`started_by`] of the node, tag [`TAG_POD_UID`] |
//! | task definition | family `skylet-<node hash>-<template hash>` | family prefix [`family_prefix`] |
//! | secret | `skylet/<node>/<template hash>` | name prefix [`secret_prefix`] |
//! | log stream | `<namespace>/<container>/<task id>` | computed |
//!
//! Kubernetes container names are DNS labels (`[a-z0-9-]`), so ECS names
//! with an underscore cannot clash with them: init containers are
//! `init_<name>`, the files container is [`FILES_CONTAINER`].

use ring::digest;

/// Task tag: the pod's UID (how a task is matched to its pod).
pub const TAG_POD_UID: &str = "skylet.io/pod-uid";
/// Task tag: the pod's namespace.
pub const TAG_POD_NAMESPACE: &str = "skylet.io/pod-namespace";
/// Task tag: the pod's name.
pub const TAG_POD_NAME: &str = "skylet.io/pod-name";
/// Task, task definition and secret tag: the node name.
pub const TAG_NODE: &str = "skylet.io/node";
/// Task tag: the ECS names of the containers with a health check,
/// space-separated (their Ready waits for HEALTHY).
pub const TAG_HEALTH_CHECKED: &str = "skylet.io/health-checked";

/// Pod annotation: the IAM role the pod's code runs as.
pub const ANNOTATION_TASK_ROLE: &str = "skylet.io/aws-task-role-arn";
/// Pod annotation: `spot` runs the task on FARGATE_SPOT, `on-demand` (or
/// absent) on FARGATE.
pub const ANNOTATION_CAPACITY: &str = "skylet.io/aws-capacity";

/// The ECS name of the container that writes volume files.
pub const FILES_CONTAINER: &str = "skylet_files";
/// Prefix of the ECS names of init containers.
pub const INIT_PREFIX: &str = "init_";

/// Prefix of `stoppedReason` when skylet stopped a task; such tasks are
/// finished business once STOPPED.
pub const STOP_REASON_PREFIX: &str = "Deleted by skylet";

/// Longest `startedBy` skylet uses. The API model allows 128 characters
/// today; older documentation (and some SDKs' validation) say 36, so skylet
/// stays within 36.
pub const STARTED_BY_MAX: usize = 36;

fn sha256_hex(data: &[u8]) -> String {
    digest::digest(&digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `startedBy` for the node's tasks: the node name when it fits in 36
/// characters of `[A-Za-z0-9_-]`; otherwise the first 27 characters with
/// other characters replaced by `-`, a `-`, and 8 hex digits of the SHA-256
/// of the full name (unique per node, stable across restarts).
pub fn started_by(node: &str) -> String {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if node.len() <= STARTED_BY_MAX && node.chars().all(ok) && !node.is_empty() {
        return node.to_owned();
    }
    let head: String = node
        .chars()
        .take(27)
        .map(|c| if ok(c) { c } else { '-' })
        .collect();
    format!("{head}-{}", &sha256_hex(node.as_bytes())[..8])
}

/// 8 hex digits that identify (cluster, node) in family names.
pub fn node_hash(cluster: &str, node: &str) -> String {
    sha256_hex(format!("{cluster}/{node}").as_bytes())[..8].to_owned()
}

/// Family prefix of every task definition of this node.
pub fn family_prefix(node_hash: &str) -> String {
    format!("skylet-{node_hash}-")
}

/// Name prefix of every secret of this node.
pub fn secret_prefix(node: &str) -> String {
    format!("skylet/{node}/")
}

/// SHA-256 of `data` as 16 hex digits (template hashes).
pub fn short_hash(data: &[u8]) -> String {
    sha256_hex(data)[..16].to_owned()
}

/// The ECS container name of Kubernetes container `name`.
pub fn ecs_container(name: &str, init: bool) -> String {
    if init {
        format!("{INIT_PREFIX}{name}")
    } else {
        name.to_owned()
    }
}

/// What an ECS container name stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerKind<'a> {
    /// An app container of this name.
    App(&'a str),
    /// An init (or sidecar) container of this name.
    Init(&'a str),
    /// skylet's own files container.
    Files,
}

/// Parses an ECS container name skylet gave.
pub fn container_kind(ecs_name: &str) -> ContainerKind<'_> {
    if ecs_name == FILES_CONTAINER {
        ContainerKind::Files
    } else if let Some(n) = ecs_name.strip_prefix(INIT_PREFIX) {
        ContainerKind::Init(n)
    } else {
        ContainerKind::App(ecs_name)
    }
}

/// The task id (last part of a task ARN).
pub fn task_id(task_arn: &str) -> &str {
    task_arn.rsplit('/').next().unwrap_or(task_arn)
}

/// The CloudWatch Logs stream of a container of a task (the awslogs driver
/// names it `<prefix>/<container>/<task id>`, and the prefix is the pod's
/// namespace).
pub fn log_stream(namespace: &str, ecs_container: &str, task_arn: &str) -> String {
    format!("{namespace}/{ecs_container}/{}", task_id(task_arn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_by_keeps_short_names_and_hashes_long_or_dotted_ones() {
        assert_eq!(started_by("burst-1"), "burst-1");
        let long = started_by("a-very-long-node-name-that-exceeds-the-limit");
        assert_eq!(long.len(), 36);
        assert!(long.starts_with("a-very-long-node-name-that-"), "{long}");
        let dotted = started_by("node.example.com");
        assert!(dotted.starts_with("node-example-com-"), "{dotted}");
        assert_ne!(
            started_by("node.example.com"),
            started_by("node-example-com"),
            "distinct nodes stay distinct"
        );
        assert_eq!(started_by("node.example.com"), dotted, "stable");
    }

    #[test]
    fn container_names_round_trip() {
        assert_eq!(
            container_kind(&ecs_container("setup", true)),
            ContainerKind::Init("setup")
        );
        assert_eq!(
            container_kind(&ecs_container("web", false)),
            ContainerKind::App("web")
        );
        assert_eq!(container_kind(FILES_CONTAINER), ContainerKind::Files);
        assert_eq!(
            log_stream("shop", "web", "arn:aws:ecs:us-east-1:1:task/c/abc"),
            "shop/web/abc"
        );
    }
}
