//! `kubectl exec` on ECS: ECS Exec (`ExecuteCommand`) and the AWS Session
//! Manager data channel it opens ([`channel`], [`message`]).
//!
//! # Turning it on
//! ECS Exec works only for tasks started with `enableExecuteCommand`:
//! skylet sets it for a pod whose annotation `skylet.io/ecs-exec` is
//! `"true"`, or, without the annotation, when the node runs with
//! `--ecs-enable-exec` (`ecs: enable-exec: true`); `"false"` turns it off
//! for one pod. It cannot be turned on for a running task: exec on a pod
//! without it answers 400 with how to turn it on (the pod must be
//! recreated). The task also needs a task role that allows
//! `ssmmessages:CreateControlChannel`, `CreateDataChannel`,
//! `OpenControlChannel` and `OpenDataChannel` (deploy/aws/README.md), and
//! skylet's role `ecs:ExecuteCommand`.
//!
//! # A session
//! `ExecuteCommand` (interactive: ECS Exec offers nothing else) answers a
//! session: a WebSocket URL and a token. ECS Exec reports no exit code
//! for interactive sessions, so the command runs as `/bin/sh -c '<argv,
//! quoted>; printf ...'` and its exit code comes back in a marker that
//! skylet cuts out of the output ([`skylet_provider::exit_marker`]); the
//! image needs a `/bin/sh`. The session runs in a terminal on the agent's
//! side whether or not the client asked for one: stderr is merged into
//! stdout, and without a client terminal `\r\n` becomes `\n` ([`channel`]).
//!
//! # Attach
//! ECS has no API to attach to a container's main process (ECS Exec
//! starts new processes): attach answers 501 saying so.
//!
//! # Errors before the session
//! No running task, no such container, or ECS Exec off for the task are
//! told before the first wait, so they become HTTP statuses (404, 404,
//! 400). ECS's own refusals (`InvalidParameterException`,
//! `TargetNotConnectedException`: the agent is not connected, usually a
//! task role without the `ssmmessages:*` permissions) reach the client as
//! messages on the error stream.

pub mod channel;
pub mod message;

use skylet_provider::{ExecIo, ExitStatus, PodRef, ProviderError, Result, exit_marker};
use tokio_tungstenite::{
    Connector, connect_async_tls_with_config, tungstenite::client::IntoClientRequest,
};

use crate::{
    EcsProvider,
    client::{ECS, aws},
};

/// The pod annotation that turns ECS Exec on (`"true"`) or off (`"false"`)
/// for one pod.
pub const ANNOTATION: &str = "skylet.io/ecs-exec";

/// How long opening the data channel's WebSocket may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether `pod`'s task runs with ECS Exec: its annotation, else the
/// node's default.
///
/// # Errors
/// An annotation that is neither `"true"` nor `"false"`.
pub fn enabled(pod: &k8s_openapi::api::core::v1::Pod, default: bool) -> Result<bool> {
    let value = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION));
    match value.map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(ProviderError::InvalidPod {
            reason: "InvalidAnnotation".into(),
            message: format!(
                "annotation {ANNOTATION} must be \"true\" or \"false\", not {other:?}"
            ),
        }),
    }
}

/// The ECS Exec `command` that runs `argv` and prints its exit code.
pub fn command(argv: &[String]) -> String {
    exit_marker::quote(&[
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        exit_marker::script(argv),
    ])
}

impl EcsProvider {
    /// Runs `argv` in `container` of `pod`'s task through ECS Exec.
    pub(crate) async fn exec_command(
        &self,
        pod: &PodRef,
        container: &str,
        argv: Vec<String>,
        io: ExecIo,
    ) -> Result<ExitStatus> {
        if argv.is_empty() || argv.iter().all(String::is_empty) {
            return Err(ProviderError::InvalidPod {
                reason: "NoCommand".into(),
                message: "exec needs a command".into(),
            });
        }
        self.ensure_listed().await?;
        let (arn, exec) = {
            let st = self.state();
            let entry = st
                .entries(&pod.uid)
                .into_iter()
                .find(|(_, e)| !e.stopped)
                .map(|(arn, e)| (arn, e.exec, e.containers.iter().any(|c| c == container)));
            match entry {
                None => {
                    return Err(ProviderError::NotFound(format!(
                        "pod {}/{} has no running ECS task",
                        pod.namespace, pod.name
                    )));
                }
                Some((_, _, false)) => {
                    return Err(ProviderError::NotFound(format!(
                        "container {container:?} is not in pod {}/{}'s ECS task",
                        pod.namespace, pod.name
                    )));
                }
                Some((arn, exec, true)) => (arn, exec),
            }
        };
        if !exec {
            return Err(ProviderError::InvalidPod {
                reason: "ExecNotEnabled".into(),
                message: format!(
                    "ECS Exec is off for pod {}/{}: its task started without enableExecuteCommand, \
                     which cannot be turned on for a running task. Recreate the pod with the \
                     annotation {ANNOTATION}: \"true\" (or run the node with --ecs-enable-exec); \
                     its task role needs ssmmessages:CreateControlChannel, CreateDataChannel, \
                     OpenControlChannel and OpenDataChannel",
                    pod.namespace, pod.name
                ),
            });
        }
        let out = self
            .inner
            .clients
            .ecs
            .execute_command()
            .cluster(&self.inner.config.cluster)
            .task(&arn)
            .container(container)
            .interactive(true)
            .command(command(&argv))
            .send()
            .await
            .map_err(aws(ECS, "ExecuteCommand", self.m()));
        let out = match out {
            Ok(out) => out,
            Err(e) if e.is("InvalidParameterException") || e.is("TargetNotConnectedException") => {
                return Err(ProviderError::InvalidPod {
                    reason: "ExecRefused".into(),
                    message: format!(
                        "ECS refused ExecuteCommand: {} (the task's agent must be connected: its \
                         task role needs the ssmmessages:* permissions of ECS Exec)",
                        e.message()
                    ),
                });
            }
            Err(e) if e.is("AccessDeniedException") => {
                return Err(ProviderError::transient(format!(
                    "ECS refused ExecuteCommand: {}: skylet's role needs ecs:ExecuteCommand",
                    e.message()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let session = out
            .session()
            .ok_or_else(|| ProviderError::transient("ExecuteCommand answered no session"))?;
        let (Some(url), Some(token)) = (session.stream_url(), session.token_value()) else {
            return Err(ProviderError::transient(
                "ExecuteCommand answered a session without a stream URL or token",
            ));
        };
        tracing::debug!(task = %arn, container, session = ?session.session_id(), "ECS Exec session");
        let request = url
            .into_client_request()
            .map_err(|e| ProviderError::transient(format!("invalid ECS Exec stream URL: {e}")))?;
        let connector = Connector::Rustls(self.inner.exec_tls.clone());
        let connecting = connect_async_tls_with_config(request, None, true, Some(connector));
        let ws = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                return Err(ProviderError::transient(format!(
                    "could not open the ECS Exec data channel: {e}"
                )));
            }
            Err(_) => {
                return Err(ProviderError::transient(
                    "timed out opening the ECS Exec data channel",
                ));
            }
        };
        let ExecIo {
            stdin,
            stdout,
            stderr,
            tty,
            resize,
        } = io;
        let streams = channel::Streams {
            stdin,
            stdout,
            stderr,
            tty,
            resize,
        };
        channel::run(ws, token, streams).await
    }
}

/// The TLS configuration of data channel connections: the system's roots,
/// as the AWS clients trust.
///
/// # Errors
/// When *ring* offers none of the default protocol versions (never).
pub(crate) fn tls_config() -> Result<std::sync::Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "could not load some system root certificates");
    }
    roots.add_parsable_certificates(native.certs);
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_overrides_the_nodes_default() {
        let pod = |a: Option<&str>| {
            let mut p = k8s_openapi::api::core::v1::Pod::default();
            if let Some(v) = a {
                p.metadata.annotations = Some([(ANNOTATION.to_owned(), v.to_owned())].into());
            }
            p
        };
        assert!(!enabled(&pod(None), false).unwrap());
        assert!(enabled(&pod(None), true).unwrap());
        assert!(enabled(&pod(Some("true")), false).unwrap());
        assert!(!enabled(&pod(Some("false")), true).unwrap());
        let e = enabled(&pod(Some("yes")), true).unwrap_err();
        assert!(
            matches!(&e, ProviderError::InvalidPod { reason, .. } if reason == "InvalidAnnotation"),
            "{e:?}"
        );
    }

    #[test]
    fn the_command_runs_argv_under_sh_and_prints_its_code() {
        let argv: Vec<String> = ["echo", "a  b", "it's"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let words = shlex::split(&command(&argv)).unwrap();
        assert_eq!(words[..2], ["/bin/sh", "-c"]);
        assert_eq!(words[2], exit_marker::script(&argv));
    }
}
