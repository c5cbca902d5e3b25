#![allow(clippy::unwrap_used)]
//! The ARM client, logs and exec/attach against the ACI emulator
//! (in-process, HTTPS with its own CA, as contract 1 says).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use serde_json::{Value, json};
use skylet_aci::{
    client::{ArmClient, ArmError, Auth, ClientConfig},
    logs, stream,
};
use skylet_aci_emulator::{Config as EmulatorConfig, Emulator};
use skylet_provider::{ExecIo, ExitStatus, LogOptions, ProviderError, TermSize, metrics::Outcome};
use tokio::io::AsyncReadExt;

const RG: &str = "skylet-rg";

struct Env {
    emulator: Emulator,
    client: Arc<ArmClient>,
    _dir: tempfile::TempDir,
}

async fn env_with(config: EmulatorConfig, secret: Option<&str>) -> Env {
    let emulator = Emulator::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    emulator.write_ca(&ca).unwrap();
    let cfg = emulator.config().clone();
    let mut client_cfg = ClientConfig::new(
        cfg.subscription_id.clone(),
        Auth::ClientSecret {
            tenant_id: cfg.tenant_id.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: secret.map_or(cfg.client_secret.clone(), str::to_owned),
        },
    );
    client_cfg.arm_endpoint = emulator.url();
    client_cfg.metrics_endpoint = emulator.url();
    client_cfg.authority_host = Some(emulator.url());
    client_cfg.ca_file = Some(ca);
    let client = Arc::new(ArmClient::new(client_cfg).await.unwrap());
    Env {
        emulator,
        client,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with(EmulatorConfig::default(), None).await
}

fn group(name: &str, command: &[&str]) -> Value {
    json!({
        "location": "westeurope",
        "tags": {"skylet-pod-name": name},
        "properties": {
            "osType": "Linux",
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "properties": {
                    "image": "busybox:1.36",
                    "command": command,
                    "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.5}}
                }
            }]
        }
    })
}

async fn create(env: &Env, name: &str, command: &[&str]) {
    let put = env
        .client
        .put_group(RG, name, &group(name, command))
        .await
        .unwrap();
    assert!(put.created);
    let op = put.operation.expect("an operation to follow");
    env.client.wait(&op, Duration::from_secs(20)).await.unwrap();
}

#[tokio::test]
async fn group_lifecycle() {
    let env = env().await;
    let c = &env.client;
    assert!(c.get_group::<Value>(RG, "g1").await.unwrap().is_none());

    let body = group("g1", &["sh", "-c", "echo hi; sleep infinity"]);
    let put = c.put_group(RG, "g1", &body).await.unwrap();
    assert!(put.created);
    c.wait(&put.operation.unwrap(), Duration::from_secs(20))
        .await
        .unwrap();
    // the same body again: 200, not created
    let again = c.put_group(RG, "g1", &body).await.unwrap();
    assert!(!again.created);

    let got: Value = c.get_group(RG, "g1").await.unwrap().unwrap();
    assert_eq!(got["properties"]["provisioningState"], "Succeeded");

    c.stop_group(RG, "g1").await.unwrap();
    c.stop_group(RG, "missing").await.unwrap();

    let op = c
        .delete_group(RG, "g1")
        .await
        .unwrap()
        .expect("a delete operation");
    c.wait(&op, Duration::from_secs(20)).await.unwrap();
    assert!(c.get_group::<Value>(RG, "g1").await.unwrap().is_none());
    assert!(c.delete_group(RG, "g1").await.unwrap().is_none());
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn list_follows_every_page_and_counts_them() {
    let env = env_with(
        EmulatorConfig {
            page_size: 2,
            ..EmulatorConfig::default()
        },
        None,
    )
    .await;
    for i in 0..5 {
        let name = format!("g{i}");
        env.client
            .put_group(RG, &name, &group(&name, &["sleep", "infinity"]))
            .await
            .unwrap();
    }
    let pages = || {
        env.client
            .metrics()
            .calls("arm", "ContainerGroups_ListByResourceGroup")
    };
    let before = pages();
    let groups: Vec<Value> = env.client.list_groups(RG).await.unwrap();
    let mut names: Vec<_> = groups
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["g0", "g1", "g2", "g3", "g4"]);
    assert_eq!(pages() - before, 3, "one call per page");
    assert_eq!(
        env.emulator
            .stats()
            .count("ContainerGroups_ListByResourceGroup"),
        3
    );

    let e = env
        .client
        .list_groups::<Value>("no-such-rg")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(matches!(ProviderError::from(e), ProviderError::NotFound(_)));
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after() {
    let env = env().await;
    env.emulator.throttle(2, Duration::from_secs(1));
    let started = std::time::Instant::now();
    assert!(
        env.client
            .get_group::<Value>(RG, "nope")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    let m = env.client.metrics();
    let get = "ContainerGroups_Get";
    assert_eq!(m.calls("arm", get), 1, "retries are not calls");
    assert_eq!(m.requests("arm", get, Outcome::throttled), 2);
    assert_eq!(
        m.requests("arm", get, Outcome::client_error),
        1,
        "the last attempt's 404"
    );
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn throttling_past_max_attempts_is_throttled() {
    let env = env().await;
    env.emulator.throttle(10, Duration::from_secs(1));
    // the shared client retries 5 times; with 10 throttled answers it gives up
    let e = env.client.get_group::<Value>(RG, "nope").await.unwrap_err();
    assert_eq!(e.status(), Some(429));
    assert!(matches!(
        ProviderError::from(e),
        ProviderError::Throttled {
            retry_after: Some(_)
        }
    ));
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn a_wrong_secret_is_a_credential_error() {
    let env = env_with(EmulatorConfig::default(), Some("wrong")).await;
    let e = env.client.get_group::<Value>(RG, "g").await.unwrap_err();
    assert!(matches!(e, ArmError::Credential { .. }), "{e:?}");
    assert!(matches!(
        ProviderError::from(e),
        ProviderError::Transient(_)
    ));
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn invalid_bodies_fail_the_pod() {
    let env = env().await;
    let mut body = group("bad", &["sleep", "1"]);
    body["properties"]["containers"][0]["name"] = json!("Not_Valid");
    let e = env.client.put_group(RG, "bad", &body).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    match ProviderError::from(e) {
        ProviderError::InvalidPod { reason, message } => {
            assert_eq!(reason, "AciRejected");
            assert!(!message.is_empty());
        }
        other => panic!("{other:?}"),
    }
    env.emulator.shutdown().await;
}

/// Issue #16: one batch call of Azure Monitor's metrics API answers every
/// group's containers, what their programs use, per container; the
/// emulator checks the request against its typing of the spec (token
/// audience, query, body) and refuses one that breaks it.
#[tokio::test]
async fn one_batch_call_measures_many_groups_by_container() {
    let env = env().await;
    create(
        &env,
        "busy",
        &["sh", "-c", "load 750m 96Mi; sleep infinity"],
    )
    .await;
    create(&env, "idle", &["sleep", "infinity"]).await;
    let sub = &env.emulator.config().subscription_id;
    let id = |g: &str| {
        format!(
            "/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.ContainerInstance/containerGroups/{g}"
        )
    };
    let latest =
        |answer: &skylet_aci::client::monitor::MetricResultsResponse, group: &str, metric: &str| {
            let v = answer
                .values
                .iter()
                .flatten()
                .find(|v| v.resourceid.as_deref() == Some(id(group).as_str()))
                .unwrap();
            let m = v.value.iter().find(|m| m.name.value == metric).unwrap();
            skylet_aci::client::monitor::latest_by_container(m)
        };
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let a = env
                .client
                .group_metrics(&[id("busy"), id("idle")], 5)
                .await
                .unwrap();
            if latest(&a, "busy", "CpuUsage") == [("main".to_owned(), 750.0)] {
                break a;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the busy container's load in its metrics");
    assert_eq!(
        latest(&answer, "busy", "MemoryUsage"),
        [("main".to_owned(), f64::from(96 << 20))]
    );
    // a program without `load`: the default 5 millicores
    assert_eq!(
        latest(&answer, "idle", "CpuUsage"),
        [("main".to_owned(), 5.0)]
    );
    assert_eq!(
        env.emulator.stats().count("Batch"),
        env.emulator.requests("Batch").len() as u64
    );
    let body = env.emulator.requests("Batch").pop().unwrap();
    assert_eq!(body, json!({"resourceids": [id("busy"), id("idle")]}));
    // more than 50 resources in one call: refused as the service does
    let many: Vec<String> = (0..51).map(|i| id(&format!("g{i}"))).collect();
    match env.client.group_metrics(&many, 5).await {
        Err(ArmError::Status { status: 400, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn usages_are_listed() {
    let env = env().await;
    let usages = env.client.usages("westeurope").await.unwrap();
    assert!(
        usages
            .iter()
            .any(|u| u.name.as_ref().and_then(|n| n.value.as_deref()) == Some("ContainerGroups"))
    );
    env.emulator.shutdown().await;
}

async fn read_all(stream: skylet_provider::LogStream) -> String {
    let chunks: Vec<_> = stream.collect().await;
    chunks
        .into_iter()
        .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn logs_with_and_without_timestamps() {
    let env = env().await;
    create(
        &env,
        "logs",
        &["sh", "-c", "echo one; echo two; echo three; sleep infinity"],
    )
    .await;
    let c = Arc::clone(&env.client);
    let poll = Duration::from_millis(200);
    // the container prints right after it starts
    let mut text = String::new();
    for _ in 0..50 {
        text = read_all(
            logs::logs(
                Arc::clone(&c),
                RG,
                "logs",
                "main",
                LogOptions::default(),
                poll,
            )
            .await
            .unwrap(),
        )
        .await;
        if text.lines().count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(text, "one\ntwo\nthree\n");

    let opts = LogOptions {
        tail_lines: Some(1),
        timestamps: true,
        ..LogOptions::default()
    };
    let tail = read_all(
        logs::logs(Arc::clone(&c), RG, "logs", "main", opts, poll)
            .await
            .unwrap(),
    )
    .await;
    let (ts, rest) = tail.trim_end().split_once(' ').unwrap();
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{tail:?}");
    assert_eq!(rest, "three");

    let opts = LogOptions {
        limit_bytes: Some(6),
        ..LogOptions::default()
    };
    assert_eq!(
        read_all(
            logs::logs(Arc::clone(&c), RG, "logs", "main", opts, poll)
                .await
                .unwrap()
        )
        .await,
        "one\ntw"
    );

    let e = logs::logs(
        Arc::clone(&c),
        RG,
        "nope",
        "main",
        LogOptions::default(),
        poll,
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(e, ProviderError::NotFound(_)), "{e:?}");
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn follow_sees_new_lines_once_and_ends_when_the_group_goes() {
    let env = env().await;
    create(
        &env,
        "ticker",
        &["sh", "-c", "while true; do echo tick; sleep 0.3; done"],
    )
    .await;
    let c = Arc::clone(&env.client);
    let opts = LogOptions {
        follow: true,
        timestamps: true,
        ..LogOptions::default()
    };
    let mut stream = logs::logs(
        Arc::clone(&c),
        RG,
        "ticker",
        "main",
        opts,
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    let mut lines = Vec::new();
    while lines.len() < 6 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        lines.extend(
            String::from_utf8(chunk.to_vec())
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
    }
    // each line once: timestamps strictly increase
    let times: Vec<jiff::Timestamp> = lines
        .iter()
        .map(|l| l.split_once(' ').unwrap().0.parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
    let op = c.delete_group(RG, "ticker").await.unwrap().unwrap();
    c.wait(&op, Duration::from_secs(20)).await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(rest.is_ok(), "the follow ends once the group is gone");
    env.emulator.shutdown().await;
}

fn exec_io(
    stdin: Option<&'static [u8]>,
    tty: bool,
) -> (
    ExecIo,
    tokio::io::DuplexStream,
    Option<tokio::sync::mpsc::Sender<TermSize>>,
) {
    let (out_w, out_r) = tokio::io::duplex(64 * 1024);
    let (resize_tx, resize_rx) = if tty {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let io = ExecIo {
        stdin: stdin.map(|b| Box::new(b) as skylet_provider::Reader),
        stdout: Some(Box::new(out_w)),
        stderr: None,
        tty,
        resize: resize_rx,
    };
    (io, out_r, resize_tx)
}

#[tokio::test]
async fn exec_keeps_arguments_apart() {
    let env = env().await;
    create(&env, "ex", &["sleep", "infinity"]).await;
    let c = &env.client;

    // without the exit-code wrapper, plain: sent as it is
    let (io, mut out, _) = exec_io(None, false);
    let argv = vec!["echo".to_owned(), "plain".to_owned(), "words".to_owned()];
    let status = stream::exec(c, RG, ("ex", "main"), &argv, false, io)
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::Code(0));
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    assert_eq!(text, "plain words\n");

    // an argument with spaces: through /bin/sh and the quoted preamble,
    // with the wrapper or without
    for wrapped in [true, false] {
        let (io, mut out, _) = exec_io(None, false);
        let argv = vec!["echo".to_owned(), "two  spaces".to_owned()];
        let status = stream::exec(c, RG, ("ex", "main"), &argv, wrapped, io)
            .await
            .unwrap();
        assert_eq!(status, ExitStatus::Code(0));
        let mut text = String::new();
        out.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "two  spaces\n", "wrapped: {wrapped}");
    }

    // the wrapper learns the exit code; without it, ACI says nothing: 0
    for (wrapped, code) in [(true, 3), (false, 0)] {
        let (io, mut out, _) = exec_io(None, false);
        let argv: Vec<String> = ["sh", "-c", "echo bye; exit 3"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let status = stream::exec(c, RG, ("ex", "main"), &argv, wrapped, io)
            .await
            .unwrap();
        assert_eq!(status, ExitStatus::Code(code), "wrapped: {wrapped}");
        let mut text = String::new();
        out.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "bye\n");
    }

    // stdin goes to the command (a shell reading it; `exit` ends the
    // session, as ACI cannot be told that stdin ended)
    let (io, mut out, _) = exec_io(Some(b"echo from stdin\nexit\n"), false);
    let argv = vec!["sh".to_owned()];
    let (status, text) = tokio::time::timeout(Duration::from_secs(10), async {
        let status = stream::exec(c, RG, ("ex", "main"), &argv, true, io);
        let read = async {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text).await;
            text
        };
        tokio::join!(status, read)
    })
    .await
    .unwrap();
    assert_eq!(status.unwrap(), ExitStatus::Code(0));
    assert_eq!(text, "from stdin\n");

    // missing container: NotFound before any socket
    let (io, _out, _) = exec_io(None, false);
    let e = stream::exec(c, RG, ("ex", "nope"), &argv, true, io)
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::NotFound(_)), "{e:?}");
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn exec_with_a_terminal_waits_for_its_size() {
    let env = env().await;
    create(&env, "tty", &["sleep", "infinity"]).await;
    let (io, mut out, resize) = exec_io(None, true);
    resize
        .unwrap()
        .send(TermSize {
            width: 100,
            height: 30,
        })
        .await
        .unwrap();
    let argv = vec!["echo".to_owned(), "hi".to_owned()];
    let status = stream::exec(&env.client, RG, ("tty", "main"), &argv, true, io)
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::Code(0));
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    assert_eq!(text, "hi\r\n");
    let requests = env.emulator.requests("Containers_ExecuteCommand");
    assert_eq!(
        requests.last().unwrap()["terminalSize"],
        json!({"rows": 30, "cols": 100})
    );
    env.emulator.shutdown().await;
}

#[tokio::test]
async fn attach_streams_output_until_the_container_ends() {
    let env = env().await;
    create(
        &env,
        "att",
        &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
    )
    .await;
    let (io, mut out, _) = exec_io(Some(b"ignored input"), false);
    let c = Arc::clone(&env.client);
    let session = tokio::spawn(async move { stream::attach(&c, RG, "att", "main", io).await });
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), out.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("tick"));
    env.emulator.set_container_exit(RG, "att", "main", 0);
    let status = tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status, ExitStatus::Code(0));
    env.emulator.shutdown().await;
}

/// The provider as the core builds it: sweeps count their list pages,
/// ACI events reach the core through the sink, failed calls are counted by
/// ARM error code.
#[tokio::test]
async fn the_provider_reports_through_the_sink_and_the_api_metrics() {
    use prometheus_client::{encoding::text::encode, registry::Registry};
    use skylet_aci::{AciProvider, Config, config::AuthMode};
    use skylet_provider::{
        BackendEvent, Provider, ResolvedPod, Sink, metrics::BackendApiMetrics, testing::pod,
    };

    let emulator = Emulator::start(EmulatorConfig {
        page_size: 2,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    emulator.write_ca(&ca).unwrap();
    let e = emulator.config().clone();
    let mut config = Config::new("aci-node", e.subscription_id, RG, e.location);
    config.arm_endpoint = emulator.url();
    config.authority_host = Some(emulator.url());
    config.ca_file = Some(ca);
    config.auth = AuthMode::ClientSecret;
    config.tenant_id = Some(e.tenant_id);
    config.client_id = Some(e.client_id);
    config.client_secret = Some(e.client_secret);
    config.max_attempts = 2;
    let mut registry = Registry::with_prefix("skylet");
    let metrics = BackendApiMetrics::register(&mut registry).for_backend("azure-aci");
    let (sink, mut events) = Sink::channel();
    let provider = AciProvider::new(config, sink, metrics).await.unwrap();

    for name in ["a", "b", "c"] {
        let p = pod("shop", name)
            .node("aci-node")
            .container_json(json!({"name": "main", "image": "busybox:1.36",
                "command": ["sleep", "infinity"],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}))
            .build();
        provider.create_pod(&ResolvedPod::bare(p)).await.unwrap();
    }
    let mut running = 0;
    for _ in 0..100 {
        let pods = provider.list_pods().await.unwrap();
        assert_eq!(pods.len(), 3);
        running = pods
            .iter()
            .filter(|p| p.status.phase.as_deref() == Some("Running"))
            .count();
        if running == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running, 3);
    // a Pulling, Pulled and Started per container, each once
    let mut seen = Vec::new();
    while let Ok(BackendEvent::Event(ev)) = events.try_recv() {
        assert_eq!((ev.reporter, ev.action), ("skylet-aci", "Aci"));
        seen.push((ev.pod.name.clone(), ev.reason.clone()));
    }
    seen.sort();
    for name in ["a", "b", "c"] {
        for reason in ["Pulled", "Pulling", "Started"] {
            assert_eq!(
                seen.iter()
                    .filter(|(n, r)| n == name && r == reason)
                    .count(),
                1,
                "{name} {reason}: {seen:?}"
            );
        }
    }

    // two throttled answers: the ping's one retry is throttled too
    emulator.throttle(2, Duration::from_secs(1));
    let e = provider.ping().await.unwrap_err();
    assert!(matches!(e, ProviderError::Throttled { .. }), "{e:?}");

    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    for line in [
        // three groups in pages of two
        r#"skylet_backend_sweep_api_calls{backend="azure-aci",service="arm",operation="ContainerGroups_ListByResourceGroup"} 2"#,
        r#"skylet_backend_api_calls_total{backend="azure-aci",service="arm",operation="ContainerGroups_CreateOrUpdate"} 3"#,
        r#"skylet_backend_api_requests_total{backend="azure-aci",service="arm",operation="Location_ListUsage",outcome="throttled"} 2"#,
        r#"skylet_backend_api_errors_total{backend="azure-aci",service="arm",operation="Location_ListUsage",code="TooManyRequests"} 1"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    emulator.shutdown().await;
}

/// The provider on `emulator`, as the core builds it, and its node name.
async fn provider_on(emulator: &Emulator, dir: &tempfile::TempDir) -> skylet_aci::AciProvider {
    use skylet_aci::{AciProvider, Config, config::AuthMode};
    use skylet_provider::{ApiMetrics, Sink};
    let ca = dir.path().join("ca.pem");
    emulator.write_ca(&ca).unwrap();
    let e = emulator.config().clone();
    let mut config = Config::new("aci-node", e.subscription_id, RG, e.location);
    config.arm_endpoint = emulator.url();
    config.authority_host = Some(emulator.url());
    config.ca_file = Some(ca);
    config.auth = AuthMode::ClientSecret;
    config.tenant_id = Some(e.tenant_id);
    config.client_id = Some(e.client_id);
    config.client_secret = Some(e.client_secret);
    config.max_attempts = 2;
    AciProvider::new(config, Sink::discard(), ApiMetrics::detached("azure-aci"))
        .await
        .unwrap()
}

fn small_pod(name: &str) -> skylet_provider::ResolvedPod {
    use skylet_provider::testing::pod;
    skylet_provider::ResolvedPod::bare(
        pod("shop", name)
            .node("aci-node")
            .container_json(json!({"name": "main", "image": "busybox:1.36",
                "command": ["sleep", "infinity"],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}))
            .build(),
    )
}

/// A quota used up and a location without room are `Capacity` errors
/// that name what is missing (the core then fails a controller's pod so
/// that it is replaced elsewhere); a 429 stays `Throttled`.
#[tokio::test]
async fn quota_and_location_refusals_are_capacity_errors_naming_the_cause() {
    use skylet_provider::Provider;
    let emulator = Emulator::start(EmulatorConfig {
        container_group_quota: 1,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let provider = provider_on(&emulator, &dir).await;
    provider.create_pod(&small_pod("a")).await.unwrap();
    let e = provider.create_pod(&small_pod("b")).await.unwrap_err();
    let ProviderError::Capacity(message) = &e else {
        panic!("{e:?}")
    };
    assert!(
        message.contains("ContainerGroupQuotaReached")
            && message.contains("quota 'ContainerGroups' exceeded in region 'westeurope'"),
        "{message}"
    );
    emulator.set_capacity_available(false);
    let e = provider.create_pod(&small_pod("b")).await.unwrap_err();
    let ProviderError::Capacity(message) = &e else {
        panic!("{e:?}")
    };
    assert!(
        message.contains("ServiceUnavailable")
            && message.contains("not available in the location 'westeurope'"),
        "{message}"
    );
    // an existing group's create repeats fine (a PUT of the same body)
    provider.create_pod(&small_pod("a")).await.unwrap();
    emulator.throttle(2, Duration::from_secs(1));
    let e = provider.create_pod(&small_pod("b")).await.unwrap_err();
    assert!(matches!(e, ProviderError::Throttled { .. }), "{e:?}");
    assert_eq!(emulator.stats().invalid_responses, 0);
    emulator.shutdown().await;
}

/// A delete is `Gone` only on ARM's 404, after at most one GET: a graceful
/// delete stops the group and the sweep deletes it once its containers
/// ended; a delete at once is a DELETE and one GET; a repeat while the
/// DELETE runs costs nothing; the sweep's listing confirms the rest.
#[tokio::test]
async fn deletes_are_confirmed_by_the_sweeps_listing_without_a_get() {
    use skylet_provider::{Deleted, Provider};
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let provider = provider_on(&emulator, &dir).await;
    let (a, b) = (small_pod("a"), small_pod("b"));
    provider.create_pod(&a).await.unwrap();
    provider.create_pod(&b).await.unwrap();
    let listed =
        |pods: &[skylet_provider::BackendPod], name: &str| pods.iter().any(|p| p.pod.name == name);
    for _ in 0..100 {
        let pods = provider.list_pods().await.unwrap();
        let running = pods
            .iter()
            .filter(|p| p.status.phase.as_deref() == Some("Running"))
            .count();
        if running == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = |op: &str| emulator.stats().count(op);

    // graceful: Stop, no GET; the next sweep lists it stopped and deletes it
    let d = provider
        .delete_pod(&a.pod_ref(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(d, Deleted::Stopping);
    assert_eq!(calls("ContainerGroups_Stop"), 1);
    assert_eq!(calls("ContainerGroups_Delete"), 0);
    let pods = provider.list_pods().await.unwrap();
    assert!(listed(&pods, "a"), "not gone before ARM says so");
    assert_eq!(calls("ContainerGroups_Delete"), 1, "the sweep deleted it");
    // the core's repeat (an orphan's next sweep, the grace period over)
    // while the DELETE runs: no call
    let d = provider
        .delete_pod(&a.pod_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(d, Deleted::Stopping);
    assert_eq!(calls("ContainerGroups_Delete"), 1);

    // at once: DELETE, and no GET: the sweep's listing confirms (#19)
    let d = provider
        .delete_pod(&b.pod_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(d, Deleted::Stopping, "a DELETE's answer is no confirmation");
    assert_eq!(calls("ContainerGroups_Delete"), 2);
    assert_eq!(calls("ContainerGroups_Get"), 0);
    let d = provider
        .delete_pod(&b.pod_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(d, Deleted::Stopping);
    assert_eq!(
        (
            calls("ContainerGroups_Delete"),
            calls("ContainerGroups_Get")
        ),
        (2, 0),
        "no GET, no second DELETE while one runs"
    );

    // the sweep's listing confirms both
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pods = provider.list_pods().await.unwrap();
    assert!(!listed(&pods, "a") && !listed(&pods, "b"), "{pods:?}");
    // a delete of a group ARM no longer has: one DELETE (204), still no
    // GET; the next listing (without it) is the confirmation
    let d = provider
        .delete_pod(&b.pod_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(d, Deleted::Stopping);
    assert_eq!(
        (
            calls("ContainerGroups_Delete"),
            calls("ContainerGroups_Get")
        ),
        (3, 0)
    );
    let d = provider
        .delete_pod(&small_pod("never").pod_ref(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        d,
        Deleted::Stopping,
        "a Stop's 404 is not a confirmation either: the sweep confirms"
    );
    assert_eq!(emulator.stats().invalid_responses, 0);
    emulator.shutdown().await;
}
