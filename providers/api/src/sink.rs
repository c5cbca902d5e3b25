//! [`Sink`]: how a backend tells the core what happened, without holding a
//! client of the home cluster: status changes, pods gone, and Kubernetes
//! Events to record on a pod. The core records every Event.

use kube::runtime::events::EventType;
use tokio::sync::mpsc;

use crate::{BackendPod, PodRef};

/// An Event about a pod, for the core to record on it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodEvent {
    /// The pod.
    pub pod: PodRef,
    /// Normal or Warning.
    pub type_: EventType,
    /// PascalCase reason (`Pulled`, `BackOff`, ...).
    pub reason: String,
    /// What happened, for humans.
    pub note: String,
    /// What the reporter was doing (`Aci`, `Remote`): the Event's action.
    pub action: &'static str,
    /// The reporting component (`skylet-aci`, `skylet-kube`).
    pub reporter: &'static str,
}

/// What a backend reports.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendEvent {
    /// A pod's status changed (or the pod appeared).
    Status(Box<BackendPod>),
    /// The backend no longer holds the pod.
    Gone(PodRef),
    /// An Event to record on a pod.
    Event(Box<PodEvent>),
}

/// Where a backend sends [`BackendEvent`]s. Cheap to clone; sending never
/// blocks. Once the core stops listening (shutdown), sends are dropped.
#[derive(Clone, Debug)]
pub struct Sink {
    tx: mpsc::UnboundedSender<BackendEvent>,
}

/// What the core reads a backend's [`Sink`] from.
pub type SinkReceiver = mpsc::UnboundedReceiver<BackendEvent>;

impl Sink {
    /// A sink and the receiver its events arrive at.
    pub fn channel() -> (Self, SinkReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// A sink whose events go nowhere (unit tests, tools).
    pub fn discard() -> Self {
        Self::channel().0
    }

    /// Sends any event.
    pub fn send(&self, event: BackendEvent) {
        let _ = self.tx.send(event);
    }

    /// A pod's status changed, or the pod appeared.
    pub fn status(&self, pod: BackendPod) {
        self.send(BackendEvent::Status(Box::new(pod)));
    }

    /// The backend no longer holds `pod`.
    pub fn gone(&self, pod: PodRef) {
        self.send(BackendEvent::Gone(pod));
    }

    /// An Event for the core to record on a pod.
    pub fn event(&self, event: PodEvent) {
        self.send(BackendEvent::Event(Box::new(event)));
    }
}
