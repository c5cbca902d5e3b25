//! CloudWatch for the ECS tests: moto 5.2.5 serves CloudWatch over the
//! awsQuery and awsJson1_0 protocols only, while aws-sdk-cloudwatch (the
//! SDK skylet uses, and real CloudWatch) speaks Smithy RPC v2 CBOR
//! (`POST /service/GraniteServiceVersion20100801/operation/<Op>`,
//! `application/cbor`). This shim sits between them on loopback: it turns
//! each CBOR request into moto's JSON one (`X-Amz-Target:
//! GraniteServiceVersion20100801.<Op>`, the same member names) and moto's
//! JSON answer back into CBOR, timestamps as CBOR tag 1. It knows only
//! what CloudWatch's shapes need (maps, lists, text, numbers, booleans,
//! timestamps); skylet is pointed at it with `--ecs-cloudwatch-endpoint-url`.
//! Hand-written: no crate translates between the two protocols.

// slices of checked lengths into arrays, loopback sockets: a test's shim
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Map, Number, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Members whose values are timestamps (CBOR tag 1, epoch seconds).
const TIMESTAMPS: &[&str] = &[
    "Timestamp",
    "Timestamps",
    "StartTime",
    "EndTime",
    "StateUpdatedTimestamp",
    "StateTransitionedTimestamp",
    "AlarmConfigurationUpdatedTimestamp",
    "LastModified",
];

/// The shim, listening on loopback until the test binary ends.
pub(super) struct Shim {
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub(super) url: String,
}

/// Starts a shim in front of moto at `moto` (`http://127.0.0.1:PORT`).
pub(super) async fn start(moto: &str) -> Shim {
    let upstream: SocketAddr = moto
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("moto's address");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/service/{service}/operation/{op}", post(forward))
        .with_state(upstream);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Shim { url }
}

async fn forward(
    State(upstream): State<SocketAddr>,
    Path((service, op)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = if body.is_empty() {
        Value::Object(Map::new())
    } else {
        match decode(&body, &mut 0) {
            Ok(v) => v,
            Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
        }
    };
    let json = json.to_string();
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: {upstream}\r\nContent-Type: application/x-amz-json-1.0\r\n\
         X-Amz-Target: {service}.{op}\r\nContent-Length: {}\r\nConnection: close\r\n",
        json.len()
    );
    for name in ["authorization", "x-amz-date"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            request.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    request.push_str("\r\n");
    request.push_str(&json);
    let (status, answer) = match roundtrip(upstream, request.as_bytes()).await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let value: Value = serde_json::from_slice(&answer).unwrap_or(Value::Object(Map::new()));
    let mut out = Vec::new();
    encode(&value, false, &mut out);
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        [
            (header::CONTENT_TYPE, "application/cbor"),
            (
                header::HeaderName::from_static("smithy-protocol"),
                "rpc-v2-cbor",
            ),
        ],
        out,
    )
        .into_response()
}

/// One HTTP/1.1 exchange with moto (it answers with a Content-Length and
/// closes): the status and the body.
async fn roundtrip(upstream: SocketAddr, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut tcp = tokio::net::TcpStream::connect(upstream).await?;
    tcp.write_all(request).await?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "moto answered chunked: {head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok((status, raw[split + 4..].to_vec()))
}

fn take<'a>(b: &'a [u8], i: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let s = b.get(*i..*i + n).ok_or("truncated CBOR")?;
    *i += n;
    Ok(s)
}

/// The argument of an initial byte: its value, `None` when indefinite.
fn argument(b: &[u8], i: &mut usize, info: u8) -> Result<Option<u64>, String> {
    Ok(Some(match info {
        0..=23 => u64::from(info),
        24 => u64::from(take(b, i, 1)?[0]),
        25 => u64::from(u16::from_be_bytes(take(b, i, 2)?.try_into().unwrap())),
        26 => u64::from(u32::from_be_bytes(take(b, i, 4)?.try_into().unwrap())),
        27 => u64::from_be_bytes(take(b, i, 8)?.try_into().unwrap()),
        31 => return Ok(None),
        _ => return Err(format!("reserved CBOR additional info {info}")),
    }))
}

fn half(bits: u16) -> f64 {
    let exp = (bits >> 10) & 0x1f;
    let mant = f64::from(bits & 0x3ff);
    let v = match exp {
        0 => mant * 2f64.powi(-24),
        31 => {
            if mant == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => (mant + 1024.0) * 2f64.powi(i32::from(e) - 25),
    };
    if bits & 0x8000 != 0 { -v } else { v }
}

fn number(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// One CBOR data item as JSON (tag 1 becomes its epoch seconds; a byte
/// string its UTF-8 text).
fn decode(b: &[u8], i: &mut usize) -> Result<Value, String> {
    let first = take(b, i, 1)?[0];
    let (major, info) = (first >> 5, first & 0x1f);
    if major == 7 {
        return Ok(match info {
            20 => Value::Bool(false),
            21 => Value::Bool(true),
            22 | 23 => Value::Null,
            25 => number(half(u16::from_be_bytes(take(b, i, 2)?.try_into().unwrap()))),
            26 => number(f64::from(f32::from_be_bytes(
                take(b, i, 4)?.try_into().unwrap(),
            ))),
            27 => number(f64::from_be_bytes(take(b, i, 8)?.try_into().unwrap())),
            _ => return Err(format!("unexpected CBOR simple value {info}")),
        });
    }
    let arg = argument(b, i, info)?;
    let at_break = |b: &[u8], i: &mut usize| {
        if b.get(*i) == Some(&0xff) {
            *i += 1;
            true
        } else {
            false
        }
    };
    Ok(match major {
        0 => Value::Number(arg.ok_or("indefinite uint")?.into()),
        1 => Value::Number((-1 - i64::try_from(arg.ok_or("indefinite nint")?).unwrap()).into()),
        2 | 3 => {
            let mut text = Vec::new();
            match arg {
                Some(n) => text.extend_from_slice(take(b, i, usize::try_from(n).unwrap())?),
                None => {
                    while !at_break(b, i) {
                        match decode(b, i)? {
                            Value::String(s) => text.extend_from_slice(s.as_bytes()),
                            _ => return Err("bad string chunk".into()),
                        }
                    }
                }
            }
            Value::String(String::from_utf8_lossy(&text).into_owned())
        }
        4 => {
            let mut items = Vec::new();
            match arg {
                Some(n) => {
                    for _ in 0..n {
                        items.push(decode(b, i)?);
                    }
                }
                None => {
                    while !at_break(b, i) {
                        items.push(decode(b, i)?);
                    }
                }
            }
            Value::Array(items)
        }
        5 => {
            let mut map = Map::new();
            let mut entry = |b: &[u8], i: &mut usize| -> Result<(), String> {
                let Value::String(k) = decode(b, i)? else {
                    return Err("a map key that is not text".into());
                };
                map.insert(k, decode(b, i)?);
                Ok(())
            };
            match arg {
                Some(n) => {
                    for _ in 0..n {
                        entry(b, i)?;
                    }
                }
                None => {
                    while !at_break(b, i) {
                        entry(b, i)?;
                    }
                }
            }
            Value::Object(map)
        }
        // tag 1 (epoch seconds) and any other tag: the item itself
        6 => decode(b, i)?,
        _ => unreachable!("major types are 0..=7"),
    })
}

fn head(major: u8, n: u64, out: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend(n.to_be_bytes());
        }
    }
}

/// JSON as CBOR: numbers as doubles; under a timestamp member, tag 1.
fn encode(v: &Value, timestamp: bool, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0xf6),
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Number(n) => {
            if timestamp {
                out.push(0xc1);
            }
            out.push(0xfb);
            out.extend(n.as_f64().unwrap_or_default().to_be_bytes());
        }
        Value::String(s) if timestamp => {
            let secs = s
                .parse::<jiff::Timestamp>()
                .map_or(0.0, |t| t.as_millisecond() as f64 / 1000.0);
            out.push(0xc1);
            out.push(0xfb);
            out.extend(secs.to_be_bytes());
        }
        Value::String(s) => {
            head(3, s.len() as u64, out);
            out.extend(s.as_bytes());
        }
        Value::Array(items) => {
            head(4, items.len() as u64, out);
            for item in items {
                encode(item, timestamp, out);
            }
        }
        Value::Object(map) => {
            head(5, map.len() as u64, out);
            for (k, item) in map {
                encode(&Value::String(k.clone()), false, out);
                encode(item, TIMESTAMPS.contains(&k.as_str()), out);
            }
        }
    }
}

#[cfg(test)]
#[test]
fn cbor_round_trips_what_cloudwatch_sends() {
    let v = serde_json::json!({
        "MetricDataQueries": [{"Id": "c0", "MetricStat": {"Period": 60, "Stat": "Average"}}],
        "Values": [1.5, -2.0],
        "Timestamps": [1_800_000_000.0],
        "Flag": true,
    });
    let mut out = Vec::new();
    encode(&v, false, &mut out);
    let back = decode(&out, &mut 0).unwrap();
    assert_eq!(back["MetricDataQueries"][0]["Id"], "c0");
    assert_eq!(back["MetricDataQueries"][0]["MetricStat"]["Period"], 60.0);
    assert_eq!(back["Values"], serde_json::json!([1.5, -2.0]));
    assert_eq!(back["Timestamps"][0], 1_800_000_000.0);
    assert_eq!(back["Flag"], true);
    // an indefinite map with a half-precision float and a negative int
    let bytes = [0xbf, 0x61, b'a', 0xf9, 0x3c, 0x00, 0x61, b'b', 0x20, 0xff];
    assert_eq!(
        decode(&bytes, &mut 0).unwrap(),
        serde_json::json!({"a": 1.0, "b": -1})
    );
}
