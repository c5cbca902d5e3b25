//! ARM behaviour over real HTTPS: tokens and auth, the create/get/list/
//! delete lifecycle with its operation status resources, paging, throttling,
//! logs, restarts, stop/start, usages and the request counters.

// Helpers outside #[test] fns panic on purpose.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, simple_group};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use skylet_aci_emulator::{Config, Emulator};

async fn setup(config: Config) -> (Emulator, Client) {
    let (emu, mut client) = common::start(config).await;
    client.login().await;
    (emu, client)
}

fn container(g: &Value) -> &Value {
    &g["properties"]["containers"][0]["properties"]["instanceView"]
}

#[tokio::test]
async fn tokens_and_authentication() {
    let (emu, mut client) = common::start(Config::default()).await;
    // No token, then a made-up one.
    let r = client.get_group("g").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "AuthenticationFailed")
    );
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer "));
    client.token = Some("forged".into());
    let r = client.get_group("g").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "AuthenticationFailed")
    );
    // Wrong secret and wrong client: 401 invalid_client.
    for (id, secret) in [("skylet-test", "wrong"), ("someone-else", "test-secret")] {
        let r = client.token_request(id, secret).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json["error"], "invalid_client");
        assert!(
            r.json["error_description"]
                .as_str()
                .unwrap()
                .starts_with("AADSTS7000215")
        );
    }
    // The right credentials give a usable bearer token.
    let r = client.token_request("skylet-test", "test-secret").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], 3599);
    assert_eq!(r.json["ext_expires_in"], 3599);
    client.token = Some(r.json["access_token"].as_str().unwrap().to_owned());
    let r = client.get_group("g").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );
    let stats = emu.stats();
    assert_eq!(stats.count("Token"), 3);
    assert_eq!(stats.count("ContainerGroups_Get"), 3);
    assert_eq!(stats.rejected, 5);
    emu.shutdown().await;
}

#[tokio::test]
async fn create_get_delete_lifecycle() {
    let (emu, client) = setup(Config::default()).await;
    let body = simple_group(&["/bin/sh", "-c", "echo started; sleep infinity"]);
    let r = client.put_group("web", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["properties"]["provisioningState"], "Creating");
    assert_eq!(container(&r.json)["currentState"]["state"], "Waiting");
    assert_eq!(
        container(&r.json)["currentState"]["detailStatus"],
        "ContainerCreating"
    );
    assert_eq!(
        r.json["id"],
        format!("{}/containerGroups/web", client.rg_path())
    );
    assert!(
        r.header("x-ms-ratelimit-remaining-subscription-writes")
            .is_some()
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    let op = r.header("azure-asyncoperation").unwrap().to_owned();
    assert_eq!(r.header("location"), Some(op.as_str()));
    assert!(op.starts_with(&format!(
        "{}/subscriptions/{}/providers/Microsoft.ContainerInstance/locations/westeurope/operations/",
        client.base, client.sub
    )));
    assert!(op.ends_with("?api-version=2026-05-01"));
    let status = client.arm(Method::GET, &op, None).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json["status"], "InProgress");
    assert_eq!(
        status.json["name"],
        op.rsplit('/').next().unwrap().split('?').next().unwrap()
    );
    assert_eq!(client.wait_operation(&op).await.json["status"], "Succeeded");

    let g = client
        .wait_group("web", |g| {
            container(g)["currentState"]["state"] == "Running"
        })
        .await;
    assert_eq!(g["properties"]["provisioningState"], "Succeeded");
    assert_eq!(g["properties"]["instanceView"]["state"], "Running");
    assert!(
        container(&g)["currentState"]["startTime"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    let events = container(&g)["events"].as_array().unwrap();
    let names: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Pulling", "Pulled", "Started"]);
    for e in events {
        assert_eq!(e["type"], "Normal");
        assert_eq!(e["count"], 1);
        assert!(
            e["firstTimestamp"].is_string()
                && e["lastTimestamp"].is_string()
                && e["message"].is_string()
        );
    }
    // secureValue is never returned; the plain value is.
    let env = &g["properties"]["containers"][0]["properties"]["environmentVariables"];
    assert_eq!(env[0], json!({"name": "PLAIN", "value": "visible"}));
    assert_eq!(env[1], json!({"name": "SECRET"}));
    assert!(!g.to_string().contains("hunter2"));

    let r = client
        .arm(Method::DELETE, &client.group_path("web"), None)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.header("location").unwrap().to_owned();
    assert!(r.header("azure-asyncoperation").is_some());
    let first = client.arm(Method::GET, &location, None).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.json["status"], "InProgress");
    let mut done = first;
    for _ in 0..100 {
        if done.status != StatusCode::ACCEPTED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        done = client.arm(Method::GET, &location, None).await;
    }
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.json["status"], "Succeeded");
    assert_eq!(client.get_group("web").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        client
            .arm(Method::DELETE, &client.group_path("web"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(emu.stats().invalid_responses, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn list_pages_follow_next_link() {
    let (emu, client) = setup(Config {
        page_size: 2,
        ..Config::default()
    })
    .await;
    for i in 0..5 {
        let r = client.put_group(&format!("g{i}"), &simple_group(&[])).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let mut names = Vec::new();
    let mut url = format!("{}/containerGroups", client.rg_path());
    let mut pages = 0;
    loop {
        let r = client.arm(Method::GET, &url, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        pages += 1;
        for item in r.json["value"].as_array().unwrap() {
            names.push(item["name"].as_str().unwrap().to_owned());
            // List items carry no group-level instance view, and no secrets.
            assert!(item["properties"].get("instanceView").is_none());
            assert!(!item.to_string().contains("hunter2"));
        }
        match r.json.get("nextLink").and_then(Value::as_str) {
            Some(next) => {
                assert!(next.starts_with(&client.base), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    names.sort();
    assert_eq!(names, ["g0", "g1", "g2", "g3", "g4"]);
    assert_eq!(pages, 3);
    assert_eq!(emu.stats().count("ContainerGroups_ListByResourceGroup"), 3);
    // The subscription-wide list sees the same groups.
    let all = client
        .arm(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.ContainerInstance/containerGroups",
                client.sub
            ),
            None,
        )
        .await;
    assert_eq!(all.json["value"].as_array().unwrap().len(), 2);
    let usages = client
        .arm(Method::GET, &format!("/subscriptions/{}/providers/Microsoft.ContainerInstance/locations/westeurope/usages", client.sub), None)
        .await;
    let groups = usages.json["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"]["value"] == "ContainerGroups")
        .unwrap()
        .clone();
    assert_eq!(groups["currentValue"], 5);
    assert!(groups["limit"].as_i64().unwrap() >= 5);
    assert_eq!(emu.stats().invalid_responses, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let (emu, client) = setup(Config::default()).await;
    emu.throttle(2, Duration::from_secs(1));
    for _ in 0..2 {
        let r = client.get_group("g").await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
        );
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    let r = client.get_group("g").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.header("x-ms-ratelimit-remaining-subscription-reads")
            .is_some()
    );
    let stats = emu.stats();
    assert_eq!(stats.throttled, 2);
    assert_eq!(stats.count("ContainerGroups_Get"), 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn rate_limit_buckets_answer_429_when_empty_as_arm_and_aci_do() {
    use skylet_aci_emulator::limits::{Covers, RateLimit};
    let (emu, client) = setup(Config {
        rate_limits: vec![
            RateLimit::new("reads", Covers::Reads, 2, 0.01),
            RateLimit::new("writes", Covers::Writes, 3, 0.01),
            RateLimit::new("creates-5m", Covers::GroupCreates, 1, 0.01),
        ],
        ..Config::default()
    })
    .await;
    // ARM's subscription reads: 2, then 429 with the wait in whole seconds
    for _ in 0..2 {
        assert_eq!(client.get_group("g").await.status, StatusCode::NOT_FOUND);
    }
    let r = client.get_group("g").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
    );
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((90..=100).contains(&after), "{after}");
    // ACI's creates: the first group, then 429; an update of it is no create
    let g = simple_group(&[]);
    assert_eq!(client.put_group("a", &g).await.status, StatusCode::CREATED);
    let r = client.put_group("b", &g).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.json);
    assert_eq!(client.put_group("a", &g).await.status, StatusCode::OK);
    // the writes bucket (3) is empty now: the layer before ACI's answers
    let r = client.put_group("a", &g).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let stats = emu.stats();
    assert_eq!(stats.throttled, 3);
    assert_eq!(
        (
            stats.limits["reads"].admitted,
            stats.limits["reads"].throttled
        ),
        (2, 1)
    );
    assert_eq!(
        (
            stats.limits["writes"].admitted,
            stats.limits["writes"].throttled
        ),
        (3, 1)
    );
    assert_eq!(
        (
            stats.limits["creates-5m"].admitted,
            stats.limits["creates-5m"].throttled
        ),
        (1, 1)
    );
    assert_eq!(stats.invalid_responses, 0);
    emu.shutdown().await;
}

async fn logs(client: &Client, group: &str, query: &str) -> String {
    let r = client
        .group_call(
            Method::GET,
            group,
            &format!("/containers/app/logs{query}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    r.json["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn logs_with_tail_and_timestamps() {
    let (emu, client) = setup(Config::default()).await;
    client
        .create(
            "logs",
            &simple_group(&["sh", "-c", "echo one; echo 'two  spaced'; env; exit 0"]),
        )
        .await;
    client
        .wait_group("logs", |g| {
            container(g)["currentState"]["state"] == "Terminated"
        })
        .await;
    let all = logs(&client, "logs", "").await;
    assert!(all.starts_with("one\ntwo  spaced\n"), "{all}");
    // `env` shows the secure value: the container sees it.
    assert!(
        all.contains("SECRET=hunter2\n") && all.contains("PLAIN=visible\n"),
        "{all}"
    );
    let lines = all.lines().count();
    assert_eq!(logs(&client, "logs", "?tail=1").await.lines().count(), 1);
    assert_eq!(
        logs(&client, "logs", &format!("?tail={}", lines - 1)).await,
        all.split_once('\n').unwrap().1
    );
    let stamped = logs(&client, "logs", "?timestamps=true&tail=2").await;
    for line in stamped.lines() {
        let (ts, _) = line.split_once(' ').unwrap();
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{line}");
        let fraction = ts.split_once('.').unwrap().1;
        assert_eq!(fraction.len(), 10, "nanoseconds then Z: {ts}");
    }
    // Never: the group ends Succeeded with exit code 0.
    let g = client.get_group("logs").await.json;
    assert_eq!(container(&g)["currentState"]["exitCode"], 0);
    assert_eq!(g["properties"]["instanceView"]["state"], "Succeeded");
    assert_eq!(emu.stats().invalid_responses, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn restart_policies_and_forced_exits() {
    let (emu, client) = setup(Config::default()).await;
    // Always: a forced exit restarts the container.
    let mut always = simple_group(&["sh", "-c", "echo up; sleep infinity"]);
    always["properties"]["restartPolicy"] = json!("Always");
    client.create("always", &always).await;
    client
        .wait_group("always", |g| {
            container(g)["currentState"]["state"] == "Running"
        })
        .await;
    emu.set_container_exit("skylet-rg", "always", "app", 3);
    let g = client
        .wait_group("always", |g| {
            container(g)["restartCount"] == 1 && container(g)["currentState"]["state"] == "Running"
        })
        .await;
    let view = container(&g);
    assert_eq!(view["previousState"]["state"], "Terminated");
    assert_eq!(view["previousState"]["exitCode"], 3);
    let started = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "Started")
        .unwrap();
    assert_eq!(started["count"], 2);
    // Never: exit 2 ends the group Failed.
    client
        .create("never", &simple_group(&["sh", "-c", "exit 2"]))
        .await;
    let g = client
        .wait_group("never", |g| {
            g["properties"]["instanceView"]["state"] == "Failed"
        })
        .await;
    assert_eq!(container(&g)["currentState"]["exitCode"], 2);
    assert_eq!(container(&g)["restartCount"], 0);
    // OnFailure: a clean exit is not restarted.
    let mut on_failure = simple_group(&["echo", "done"]);
    on_failure["properties"]["restartPolicy"] = json!("OnFailure");
    client.create("onfail", &on_failure).await;
    client
        .wait_group("onfail", |g| {
            g["properties"]["instanceView"]["state"] == "Succeeded"
        })
        .await;
    assert_eq!(emu.stats().invalid_responses, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn stop_and_start() {
    let (emu, client) = setup(Config::default()).await;
    client.create("svc", &simple_group(&[])).await;
    client
        .wait_group("svc", |g| {
            container(g)["currentState"]["state"] == "Running"
        })
        .await;
    let r = client.group_call(Method::POST, "svc", "/stop", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let g = client.get_group("svc").await.json;
    assert_eq!(g["properties"]["instanceView"]["state"], "Stopped");
    assert_eq!(container(&g)["currentState"]["state"], "Terminated");
    assert_eq!(container(&g)["currentState"]["exitCode"], 137);
    let r = client.group_call(Method::POST, "svc", "/start", None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let op = r.header("azure-asyncoperation").unwrap().to_owned();
    assert_eq!(client.wait_operation(&op).await.json["status"], "Succeeded");
    client
        .wait_group("svc", |g| {
            g["properties"]["instanceView"]["state"] == "Running"
        })
        .await;
    let r = client
        .group_call(Method::POST, "svc", "/restart", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    client
        .wait_group("svc", |g| {
            container(g)["restartCount"] == 1 && container(g)["currentState"]["state"] == "Running"
        })
        .await;
    let stats = emu.stats();
    assert_eq!(
        (
            stats.count("ContainerGroups_Stop"),
            stats.count("ContainerGroups_Start")
        ),
        (1, 1)
    );
    assert_eq!(stats.invalid_responses, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn http_controls() {
    let (emu, client) = setup(Config::default()).await;
    let r = client
        .send(
            Method::POST,
            "/_emulator/throttle",
            &[("content-type", "application/json")],
            Some(br#"{"requests":1,"retryAfterSeconds":2}"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = client.get_group("g").await;
    assert_eq!(
        (r.status, r.header("retry-after")),
        (StatusCode::TOO_MANY_REQUESTS, Some("2"))
    );
    let stats = client
        .send(Method::GET, "/_emulator/stats", &[], None)
        .await;
    assert_eq!(stats.json["throttled"], 1);
    assert_eq!(stats.json["requests"]["ContainerGroups_Get"], 1);
    let ca = client.send(Method::GET, "/_emulator/ca", &[], None).await;
    assert_eq!(std::str::from_utf8(&ca.body).unwrap(), emu.ca_pem());
    let dir = tempfile::tempdir().unwrap();
    emu.write_ca(dir.path().join("ca.pem")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
        emu.ca_pem()
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn public_ip_fqdn_and_tag_updates() {
    let (emu, client) = setup(Config::default()).await;
    let mut body = simple_group(&[]);
    body["properties"]["containers"][0]["properties"]["ports"] =
        json!([{"port": 80, "protocol": "TCP"}]);
    body["properties"]["ipAddress"] = json!({"type": "Public", "dnsNameLabel": "skylet-web", "ports": [{"port": 80, "protocol": "TCP"}]});
    let g = client.create("web", &body).await;
    let ip = &g["properties"]["ipAddress"];
    assert!(!ip["ip"].as_str().unwrap().starts_with("10."), "{ip}");
    assert_eq!(ip["fqdn"], "skylet-web.westeurope.azurecontainer.io");
    // PATCH changes tags only, and checks them.
    let path = client.group_path("web");
    let r = client
        .arm(
            Method::PATCH,
            &path,
            Some(&json!({"tags": {"skylet-node": "other"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["tags"], json!({"skylet-node": "other"}));
    let r = client
        .arm(Method::PATCH, &path, Some(&json!({"tags": {"a<b": "x"}})))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "InvalidTagNameCharacters")
    );
    assert_eq!(
        client.get_group("web").await.json["tags"],
        json!({"skylet-node": "other"})
    );
    assert_eq!(emu.stats().invalid_responses, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn quotas_and_a_full_location_refuse_new_groups_as_arm_does() {
    let (emu, client) = setup(Config {
        container_group_quota: 3,
        core_quota: 1,
        spot_core_quota: 1,
        ..Config::default()
    })
    .await;
    let with = |cpu: f64, spot: bool| {
        let mut g = simple_group(&[]);
        g["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"] = json!(cpu);
        if spot {
            g["properties"]["priority"] = json!("Spot");
        }
        g
    };
    let quota = |r: &common::Resp, name: &str, limit: u32, usage: u32, requested: u32| {
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::CONFLICT, "ContainerGroupQuotaReached"),
            "{}",
            r.json
        );
        assert_eq!(
            r.json["error"]["message"],
            format!(
                "Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota '{name}' exceeded in region 'westeurope'. Limit: '{limit}', Usage: '{usage}', Requested: '{requested}'."
            )
        );
    };
    // StandardCores: 0.5 + 0.5 fit in one core, a third half does not
    assert_eq!(
        client.put_group("a", &with(0.5, false)).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        client.put_group("b", &with(0.5, false)).await.status,
        StatusCode::CREATED
    );
    quota(
        &client.put_group("c", &with(0.5, false)).await,
        "StandardCores",
        1,
        1,
        1,
    );
    // Spot groups count against StandardSpotCores
    quota(
        &client.put_group("s", &with(2.0, true)).await,
        "StandardSpotCores",
        1,
        0,
        2,
    );
    assert_eq!(
        client.put_group("s", &with(1.0, true)).await.status,
        StatusCode::CREATED
    );
    // ContainerGroups: three groups exist
    quota(
        &client.put_group("d", &with(0.1, false)).await,
        "ContainerGroups",
        3,
        3,
        1,
    );
    // an existing group may still be updated
    let mut update = with(0.5, false);
    update["tags"]["x"] = json!("y");
    assert_eq!(client.put_group("a", &update).await.status, StatusCode::OK);
    let usages = client
        .arm(Method::GET, &format!("/subscriptions/{}/providers/Microsoft.ContainerInstance/locations/westeurope/usages", client.sub), None)
        .await;
    let current = |name: &str| {
        usages.json["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"]["value"] == name)
            .map(|u| u["currentValue"].clone())
    };
    assert_eq!(current("StandardCores"), Some(json!(1)));
    assert_eq!(current("StandardSpotCores"), Some(json!(1)));

    // a location without room: 409 ServiceUnavailable for new groups only
    let r = client
        .arm(Method::DELETE, &client.group_path("b"), None)
        .await;
    assert!(r.status.is_success());
    client
        .wait_group("b", |g| g["error"]["code"] == "ResourceNotFound")
        .await;
    emu.set_capacity_available(false);
    let r = client.put_group("e", &with(0.25, false)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "ServiceUnavailable"),
        "{}",
        r.json
    );
    assert_eq!(
        r.json["error"]["message"],
        "The requested resource is not available in the location 'westeurope' at this moment. Please retry with a different resource request or in another location. Resource requested: '0.25' CPU '0.5' GB memory 'Linux' OS"
    );
    assert_eq!(
        client.put_group("a", &with(0.5, false)).await.status,
        StatusCode::OK
    );
    // and over HTTP
    let r = client
        .send(
            Method::POST,
            "/_emulator/capacity",
            &[("content-type", "application/json")],
            Some(br#"{"available":true}"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        client.put_group("e", &with(0.25, false)).await.status,
        StatusCode::CREATED
    );
    assert_eq!(emu.stats().invalid_responses, 0);
    emu.shutdown().await;
}
