//! What a backend reports through its [`skylet_provider::Sink`]: status
//! changes wake the pod's reconcile; Events go to a task of their own, so a
//! burst of them never delays a status.

use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, Recorder, Reporter},
};
use skylet_provider::{BackendEvent, PodEvent, Provider, SinkReceiver};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Ctx;

/// Applies the backend's reports until `shutdown` or until the backend
/// drops its sink.
pub(super) async fn push_loop<P: Provider>(
    ctx: Arc<Ctx<P>>,
    mut events: SinkReceiver,
    shutdown: CancellationToken,
) {
    let (to_recorder, recorder_queue) = mpsc::unbounded_channel();
    tokio::spawn(
        record(
            ctx.client.clone(),
            ctx.config.node_name.clone(),
            recorder_queue,
        )
        .in_current_span(),
    );
    loop {
        let ev = tokio::select! {
            () = shutdown.cancelled() => return,
            ev = events.recv() => ev,
        };
        match ev {
            Some(BackendEvent::Status(bp)) => {
                let pod = bp.pod.clone();
                if ctx.table.report(*bp) {
                    ctx.trigger(&pod);
                }
            }
            Some(BackendEvent::Gone(pod)) => {
                if ctx.table.report_gone(&pod.uid) {
                    ctx.signals.held_pods(ctx.table.backend_len());
                    ctx.trigger(&pod);
                }
            }
            Some(BackendEvent::Event(e)) => {
                let _ = to_recorder.send(*e);
            }
            None => {
                tracing::debug!("the backend dropped its sink; relying on sweeps");
                return;
            }
        }
    }
}

/// Records backends' Events on their pods, one recorder per reporting
/// component, until the queue closes.
async fn record(client: Client, node: String, mut queue: mpsc::UnboundedReceiver<PodEvent>) {
    let mut recorders: HashMap<&'static str, Recorder> = HashMap::new();
    while let Some(e) = queue.recv().await {
        let recorder = recorders.entry(e.reporter).or_insert_with(|| {
            Recorder::new(
                client.clone(),
                Reporter {
                    controller: e.reporter.into(),
                    instance: Some(node.clone()),
                },
            )
        });
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(e.pod.namespace.clone()),
            name: Some(e.pod.name.clone()),
            uid: Some(e.pod.uid.clone()),
            ..Default::default()
        };
        let event = Event {
            type_: e.type_,
            reason: e.reason,
            note: Some(e.note),
            action: e.action.into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %err, pod = %e.pod, reason = %event.reason, "failed to record a backend event");
        }
    }
}
