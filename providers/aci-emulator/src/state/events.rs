//! Instance-view events (`Pulling`, `Started`, `Killing`, ...) of a
//! container or a group, counted by name as ACI does.

use jiff::Timestamp;
use serde_json::{Value, json};

/// An instance-view event.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    name: &'static str,
    message: String,
    kind: &'static str,
    count: i32,
    first: Timestamp,
    last: Timestamp,
}

pub(super) fn add_event(
    events: &mut Vec<Event>,
    name: &'static str,
    kind: &'static str,
    message: String,
) {
    let now = Timestamp::now();
    match events.iter_mut().find(|e| e.name == name) {
        Some(e) => {
            e.count = e.count.saturating_add(1);
            e.last = now;
            e.message = message;
        }
        None => events.push(Event {
            name,
            message,
            kind,
            count: 1,
            first: now,
            last: now,
        }),
    }
}

pub(super) fn render_events(events: &[Event]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| {
                json!({
                    "count": e.count,
                    "firstTimestamp": e.first.to_string(),
                    "lastTimestamp": e.last.to_string(),
                    "name": e.name,
                    "message": e.message,
                    "type": e.kind,
                })
            })
            .collect(),
    )
}
