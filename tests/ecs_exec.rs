#![allow(clippy::unwrap_used)]
//! `kubectl exec` on the aws-ecs backend (issue #16) against the real
//! control plane: skylet starts tasks with ECS Exec where a pod asks for
//! it, calls ExecuteCommand on moto (hack/moto-server.py answers with a
//! session) and speaks the Session Manager data channel to skylet's
//! emulator of the agent's side (`skylet-ssm-emulator`, which reorders
//! output, acknowledges input and records protocol errors). Output,
//! stdin, the command's exit code, the terminal and its resize reach
//! kubectl; a pod without ECS Exec gets a message saying how to turn it
//! on; attach says why it cannot work.

use std::{path::Path, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use skylet_testenv::{
    ControlPlane, Moto, Skylet,
    k8s::{namespace, node_ready, node_template, output_with_stdin, pods_where, running_with_ip},
    tty::kubectl_exec_tty,
    unique_name as unique,
};

const BIN: &str = env!("CARGO_BIN_EXE_skylet");

/// Runs kubectl with `args`, writing `stdin` to it.
fn kubectl(cp: &ControlPlane, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut cmd = cp.kubectl();
    cmd.args(args);
    output_with_stdin(cmd, stdin)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The ECS tasks of `node`, described.
async fn tasks(moto: &Moto, node: &str) -> Vec<aws_sdk_ecs::types::Task> {
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config());
    let arns = ecs
        .list_tasks()
        .cluster(&moto.cluster)
        .started_by(node)
        .send()
        .await
        .unwrap()
        .task_arns()
        .to_vec();
    if arns.is_empty() {
        return Vec::new();
    }
    ecs.describe_tasks()
        .cluster(&moto.cluster)
        .set_tasks(Some(arns))
        .include(aws_sdk_ecs::types::TaskField::Tags)
        .send()
        .await
        .unwrap()
        .tasks()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ecs_exec_streams_returns_the_exit_code_and_resizes_the_terminal() {
    let cp = ControlPlane::shared();
    let moto = Moto::shared();
    let client = cp.client().await.unwrap();
    let node = &unique("ecs-exec");
    let mut args = moto.skylet_args();
    args.extend(["--ecs-gc-grace".to_owned(), "0".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _s = Skylet::start_with_env(cp, Path::new(BIN), node, &args, &moto.skylet_env());
    node_ready(&client, node).await;
    let ns = &namespace(&client, "ecs-exec").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for (name, annotation) in [("on", Some("true")), ("off", None)] {
        let mut p = node_template(node, name, "sleep 3600");
        p["metadata"]["name"] = name.into();
        if let Some(a) = annotation {
            p["metadata"]["annotations"] = serde_json::json!({"skylet.io/ecs-exec": a});
        }
        let p: Pod = serde_json::from_value(p).unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    for app in ["on", "off"] {
        pods_where(
            &client,
            ns,
            app,
            1,
            Duration::from_secs(90),
            "Running with an IP",
            running_with_ip,
        )
        .await;
    }

    // the annotation chose enableExecuteCommand per task
    let described = tasks(moto, node).await;
    let exec_of = |pod: &str| {
        described
            .iter()
            .find(|t| {
                t.tags()
                    .iter()
                    .any(|tag| tag.key() == Some("skylet.io/pod-name") && tag.value() == Some(pod))
            })
            .map(aws_sdk_ecs::types::Task::enable_execute_command)
    };
    assert_eq!(exec_of("on"), Some(true), "{described:#?}");
    assert_eq!(exec_of("off"), Some(false));

    // output, arguments kept apart, the exit code
    let out = kubectl(
        cp,
        &["exec", "-n", ns, "on", "--", "echo", "a  b", "c"],
        b"",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "a  b c\n");
    let out = kubectl(
        cp,
        &[
            "exec",
            "-n",
            ns,
            "on",
            "--",
            "sh",
            "-c",
            "echo failing; exit 3",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stdout), "failing\n");
    assert!(
        text(&out.stderr).contains("command terminated with exit code 3"),
        "{out:?}"
    );

    // stdin, to its end: ECS Exec runs commands in a terminal, which
    // echoes the input before `cat` copies it
    let out = kubectl(cp, &["exec", "-i", "-n", ns, "on", "--", "cat"], b"hello\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "hello\nhello\n");

    // a terminal: its size, then its resize, reach the shell; the exit code too
    let out = kubectl_exec_tty(cp, ns, "on", &[]);
    let transcript = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{transcript}\n{}",
        text(&out.stderr)
    );
    assert!(
        transcript.contains("stty size\r\n24 80\r\n"),
        "{transcript}"
    );
    assert!(
        transcript.contains("stty size\r\n40 120\r\n"),
        "{transcript}"
    );

    // a pod without ECS Exec: refused, saying how to turn it on
    let out = kubectl(cp, &["exec", "-n", ns, "off", "--", "true"], b"");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("ECS Exec is off") && err.contains("skylet.io/ecs-exec"),
        "{err}"
    );

    // attach: ECS has no API for it, and says so
    let out = kubectl(cp, &["attach", "-n", ns, "on"], b"");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ECS has no API to attach"),
        "{out:?}"
    );

    // the data channel as the emulator saw it
    let stats = moto.data_channel().stats();
    assert!(
        stats.errors.is_empty(),
        "protocol errors: {:?}",
        stats.errors
    );
    assert_eq!(stats.unacknowledged, 0, "{stats:?}");
    assert!(
        stats.sessions >= 4 && stats.acks > 0 && stats.reordered > 0,
        "{stats:?}"
    );
    assert!(
        stats.sizes.contains(&(80, 24)) && stats.sizes.contains(&(120, 40)),
        "{stats:?}"
    );
    assert!(
        stats.commands.iter().all(|c| c.starts_with("/bin/sh -c ")),
        "{stats:?}"
    );
}
