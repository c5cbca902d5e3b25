//! Exec and attach over WebSockets on the emulator's TLS port.

// Helpers outside #[test] fns panic on purpose.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, simple_group};
use futures::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use skylet_aci_emulator::{Config, Emulator};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn setup(command: &[&str]) -> (Emulator, Client) {
    let (emu, mut client) = common::start(Config::default()).await;
    client.login().await;
    client.create("box", &simple_group(command)).await;
    client
        .wait_group("box", |g| {
            g["properties"]["containers"][0]["properties"]["instanceView"]["currentState"]["state"]
                == "Running"
        })
        .await;
    (emu, client)
}

/// POSTs exec or attach and returns (webSocketUri, password).
async fn session(client: &Client, what: &str, body: Option<&Value>) -> (String, String) {
    let r = client
        .group_call(
            Method::POST,
            "box",
            &format!("/containers/app/{what}"),
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let uri = r.json["webSocketUri"].as_str().unwrap().to_owned();
    assert!(
        uri.starts_with(&client.base.replace("https://", "wss://")),
        "{uri}"
    );
    (uri, r.json["password"].as_str().unwrap().to_owned())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Everything the server sends until it closes: (output, close code).
async fn drain(ws: &mut Ws) -> (String, Option<CloseCode>) {
    let mut out = Vec::new();
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg.unwrap() {
                Message::Binary(b) => out.extend_from_slice(&b),
                Message::Text(t) => panic!("exec output must be binary, got text {t}"),
                Message::Close(frame) => return frame.map(|f| f.code),
                _ => {}
            }
        }
        None
    };
    let code = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the server never closed");
    (String::from_utf8(out).unwrap(), code)
}

async fn exec(client: &Client, body: Value, stdin: &[&str]) -> (String, Option<CloseCode>) {
    let (uri, password) = session(client, "exec", Some(&body)).await;
    let mut ws = client.websocket(&uri, &[]).await;
    ws.send(Message::Text(password.into())).await.unwrap();
    for chunk in stdin {
        ws.send(Message::Binary(chunk.as_bytes().to_vec().into()))
            .await
            .unwrap();
    }
    drain(&mut ws).await
}

#[tokio::test]
async fn exec_builtins() {
    let (emu, client) = setup(&[]).await;
    let (out, code) = exec(&client, json!({"command": "echo a b"}), &[]).await;
    assert_eq!((out.as_str(), code), ("a b\n", Some(CloseCode::Normal)));
    // The quoted-argv path: /bin/sh, then `exec <quoted argv>` on stdin.
    let (out, _) = exec(
        &client,
        json!({"command": "/bin/sh"}),
        &["exec echo 'x y'\n"],
    )
    .await;
    assert_eq!(out, "x y\n");
    // A shell runs several lines until exit.
    let (out, _) = exec(
        &client,
        json!({"command": "sh"}),
        &["hostname\nnope\n", "echo \"q r\"\nexit\necho never\n"],
    )
    .await;
    assert_eq!(out, "box\nnope: command not found\nq r\n");
    // env shows secure values: the container sees them.
    let (out, _) = exec(&client, json!({"command": "env"}), &[]).await;
    assert!(
        out.contains("SECRET=hunter2\n") && out.contains("PLAIN=visible\n"),
        "{out}"
    );
    // Unknown commands say so and close.
    let (out, code) = exec(&client, json!({"command": "frobnicate --now"}), &[]).await;
    assert_eq!(
        (out.as_str(), code),
        ("frobnicate: command not found\n", Some(CloseCode::Normal))
    );
    // With a terminal, lines end in \r\n.
    let (out, _) = exec(
        &client,
        json!({"command": "echo a b", "terminalSize": {"rows": 24, "cols": 80}}),
        &[],
    )
    .await;
    assert_eq!(out, "a b\r\n");
    assert_eq!(emu.stats().count("Containers_ExecuteCommand"), 6);
    emu.shutdown().await;
}

#[tokio::test]
async fn exec_cat_echoes_stdin_until_the_client_closes() {
    let (emu, client) = setup(&[]).await;
    let (uri, password) = session(&client, "exec", Some(&json!({"command": "cat"}))).await;
    let mut ws = client.websocket(&uri, &[]).await;
    ws.send(Message::Text(password.into())).await.unwrap();
    for word in ["hello ", "world\n"] {
        ws.send(Message::Binary(word.as_bytes().to_vec().into()))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got, Message::Binary(word.as_bytes().to_vec().into()));
    }
    ws.close(None).await.unwrap();
    let (rest, _) = drain(&mut ws).await;
    assert_eq!(rest, "");
    emu.shutdown().await;
}

#[tokio::test]
async fn exec_wrong_password_closes_with_policy_violation() {
    let (emu, client) = setup(&[]).await;
    let (uri, _) = session(
        &client,
        "exec",
        Some(&json!({"command": "echo secret output"})),
    )
    .await;
    let mut ws = client.websocket(&uri, &[]).await;
    ws.send(Message::Text("wrong".into())).await.unwrap();
    let (out, code) = drain(&mut ws).await;
    assert_eq!((out.as_str(), code), ("", Some(CloseCode::Policy)));
    // Sessions are single-use.
    let tls = client.websocket_status(&uri).await;
    assert_eq!(tls, StatusCode::NOT_FOUND);
    emu.shutdown().await;
}

#[tokio::test]
async fn exec_needs_a_running_container() {
    let (emu, client) = setup(&["sleep", "infinity"]).await;
    emu.set_container_exit("skylet-rg", "box", "app", 0);
    client
        .wait_group("box", |g| {
            g["properties"]["containers"][0]["properties"]["instanceView"]["currentState"]["state"]
                == "Terminated"
        })
        .await;
    for (container, refusal) in [
        ("app", (StatusCode::CONFLICT, "ContainerNotRunning")),
        ("nope", (StatusCode::NOT_FOUND, "ContainerNotFound")),
    ] {
        let r = client
            .group_call(
                Method::POST,
                "box",
                &format!("/containers/{container}/exec"),
                Some(&json!({"command": "ls"})),
            )
            .await;
        assert_eq!((r.status, r.code()), refusal, "{container}");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn attach_streams_new_output_until_the_container_ends() {
    let (emu, client) = setup(&[
        "sh",
        "-c",
        "echo before; while true; do echo tick; sleep 0.05; done",
    ])
    .await;
    let (uri, password) = session(&client, "attach", None).await;
    let mut ws = client
        .websocket(&uri, &[("authorization", &password)])
        .await;
    let mut seen = String::new();
    while seen.matches("tick\n").count() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Binary(b) => seen.push_str(std::str::from_utf8(&b).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        !seen.contains("before"),
        "attach shows new output only: {seen}"
    );
    // The container ends (restartPolicy Never): the stream closes.
    emu.set_container_exit("skylet-rg", "box", "app", 0);
    let (_, code) = drain(&mut ws).await;
    assert_eq!(code, Some(CloseCode::Normal));
    emu.shutdown().await;
}

#[tokio::test]
async fn attach_wrong_password_closes_with_policy_violation() {
    let (emu, client) = setup(&["sh", "-c", "while true; do echo tick; sleep 0.05; done"]).await;
    let (uri, _) = session(&client, "attach", None).await;
    let mut ws = client.websocket(&uri, &[("authorization", "wrong")]).await;
    let (out, code) = drain(&mut ws).await;
    assert_eq!((out.as_str(), code), ("", Some(CloseCode::Policy)));
    emu.shutdown().await;
}
