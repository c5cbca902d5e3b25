//! Small helpers for talking to the remote cluster: quantities, and exec,
//! attach and port-forward over kube-rs's WebSocket client.

use std::{
    pin::Pin,
    task::{Context as TaskCx, Poll},
};

use futures::SinkExt;
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Status};
use kube::api::{AttachParams, AttachedProcess, TerminalSize};
use skylet_provider::{ExecIo, ExitStatus, PortStream, ProviderError, Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{
    calls::{Calls, op},
    classify,
};

/// A quantity in base units (cores, bytes, count); `None` if malformed.
pub(crate) fn parse_quantity(q: &str) -> Option<f64> {
    skylet_provider::quantity::Quantity::parse(q.trim())
        .map(skylet_provider::quantity::Quantity::as_f64)
}

/// A quantity string for a sum of `resource`.
pub(crate) fn format_quantity(resource: &str, v: f64) -> String {
    if resource == "cpu" {
        format!("{}m", (v * 1000.0).floor() as u64)
    } else {
        format!("{}", v.floor() as u64)
    }
}

/// Runs `command` (exec) or attaches (`None`) in a remote pod, wired to `io`.
pub(crate) async fn exec(
    api: &kube::Api<Pod>,
    calls: &Calls,
    name: &str,
    container: &str,
    command: Option<Vec<String>>,
    io: ExecIo,
) -> Result<ExitStatus> {
    let ExecIo {
        stdin,
        stdout,
        stderr,
        tty,
        resize,
    } = io;
    let ap = AttachParams {
        container: Some(container.to_owned()),
        stdin: stdin.is_some(),
        stdout: stdout.is_some(),
        stderr: stderr.is_some() && !tty,
        tty,
        ..Default::default()
    };
    let mut proc: AttachedProcess = match command {
        Some(cmd) => calls
            .run(op::EXEC, api.exec(name, cmd, &ap))
            .await
            .map_err(|e| classify("exec in the remote pod", e))?,
        None => calls
            .run(op::ATTACH, api.attach(name, &ap))
            .await
            .map_err(|e| classify("attach to the remote pod", e))?,
    };
    let status = proc.take_status();
    let mut tasks = Vec::new();
    if let (Some(mut from), Some(mut to)) = (stdin, proc.stdin()) {
        tasks.push(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut to).await;
        }));
    }
    let mut outputs = Vec::new();
    if let (Some(mut from), Some(mut to)) = (proc.stdout(), stdout) {
        outputs.push(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut to).await;
        }));
    }
    if let (Some(mut from), Some(mut to)) = (proc.stderr(), stderr) {
        outputs.push(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut to).await;
        }));
    }
    if let (Some(mut rx), Some(mut tx)) = (resize, proc.terminal_size()) {
        tasks.push(tokio::spawn(async move {
            while let Some(s) = rx.recv().await {
                if tx
                    .send(TerminalSize {
                        width: s.width,
                        height: s.height,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }));
    }
    let status = match status {
        Some(fut) => fut.await,
        None => None,
    };
    for t in outputs {
        let _ = t.await;
    }
    for t in tasks {
        t.abort();
    }
    let _ = proc.join().await;
    Ok(ExitStatus::Code(exit_code(status.as_ref())))
}

/// The exit code in the Status that ends a remote exec (0 on Success).
fn exit_code(status: Option<&Status>) -> i32 {
    let Some(s) = status else { return 0 };
    if s.status.as_deref() == Some("Success") {
        return 0;
    }
    s.details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref()?.parse().ok())
        .unwrap_or(1)
}

/// A forwarded connection that keeps its forwarder alive.
struct Forwarded {
    stream: tokio::io::DuplexStream,
    _forwarder: kube::api::Portforwarder,
}

impl AsyncRead for Forwarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Forwarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Opens a connection to `port` of a remote pod through its apiserver.
pub(crate) async fn port_forward(
    api: &kube::Api<Pod>,
    calls: &Calls,
    name: &str,
    port: u16,
) -> Result<PortStream> {
    let mut pf = calls
        .run(op::PORT_FORWARD, api.portforward(name, &[port]))
        .await
        .map_err(|e| classify("port-forward to the remote pod", e))?;
    let stream = pf.take_stream(port).ok_or_else(|| {
        ProviderError::transient(format!(
            "the remote apiserver opened no stream for port {port}"
        ))
    })?;
    Ok(Box::new(Forwarded {
        stream,
        _forwarder: pf,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_and_format() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("4"), Some(4.0));
        assert_eq!(
            parse_quantity("16Gi"),
            Some(16.0 * 1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(parse_quantity("1k"), Some(1000.0));
        assert_eq!(parse_quantity("x"), None);
        assert_eq!(format_quantity("cpu", 2.5), "2500m");
        assert_eq!(format_quantity("memory", 1024.0), "1024");
    }

    #[test]
    fn exit_codes_come_from_the_status() {
        let ok: Status = serde_json::from_value(serde_json::json!({"status": "Success"})).unwrap();
        assert_eq!(exit_code(Some(&ok)), 0);
        let failed: Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
        }))
        .unwrap();
        assert_eq!(exit_code(Some(&failed)), 3);
        assert_eq!(exit_code(None), 0);
    }
}
