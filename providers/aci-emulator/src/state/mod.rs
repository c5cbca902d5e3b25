//! Container groups, their simulated containers and the long-running
//! operations: the emulator's whole world, behind one mutex in
//! [`crate::App`]: the [`Store`] here, [`Group`]s ([`group`]) of
//! containers ([`container`]) with their instance-view events
//! ([`events`]), brought to life by [`simulate()`] ([`mod@simulate`]).
//!
//! Each group generation (create, update, start, restart) gets a
//! [`CancellationToken`] and one task that waits `create_delay`, marks the
//! group `Succeeded`, runs the init containers in order and then every
//! container concurrently, each its own program in the toy shell of
//! `skylet-toysh` (one that understands nothing in its command, or has
//! none, is a server: it runs until stopped). When a program ends the
//! container is `Terminated` with its exit code and the group's
//! `restartPolicy` decides whether it starts again (`restartCount + 1`,
//! `previousState` = the terminated state, another `Started` event). Stop,
//! delete and replace cancel the generation.
//!
//! [`CancellationToken`]: tokio_util::sync::CancellationToken

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use serde_json::Value;

mod container;
mod events;
mod group;
mod simulate;

pub(crate) use container::{Ctr, Load, Output, sandbox};
pub(crate) use group::Group;
pub(crate) use simulate::simulate;

/// A group's key: its resource group and name, both lowercased (ARM names
/// are case-insensitive).
pub(crate) type Key = (String, String);

/// The key of `rg`/`name`.
pub(crate) fn key(rg: &str, name: &str) -> Key {
    (rg.to_ascii_lowercase(), name.to_ascii_lowercase())
}

/// The whole state.
#[derive(Default)]
pub(crate) struct Store {
    pub(crate) groups: BTreeMap<Key, Group>,
    pub(crate) operations: HashMap<String, OpRecord>,
    ip_counter: u32,
}

/// What a long-running operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// PUT (create or update).
    Create,
    /// DELETE.
    Delete,
    /// POST start.
    Start,
}

/// A long-running operation's status resource.
#[derive(Clone, Debug)]
pub(crate) struct OpRecord {
    pub(crate) kind: OpKind,
    pub(crate) status: &'static str,
    pub(crate) started: Timestamp,
    pub(crate) ended: Option<Timestamp>,
    pub(crate) error: Option<(String, String)>,
}

impl Store {
    /// Records a new operation, `InProgress` or already `Succeeded`.
    pub(crate) fn new_operation(&mut self, kind: OpKind, done: bool) -> String {
        let id = crate::token::uuid();
        let now = Timestamp::now();
        let record = OpRecord {
            kind,
            status: if done { "Succeeded" } else { "InProgress" },
            started: now,
            ended: done.then_some(now),
            error: None,
        };
        self.operations.insert(id.clone(), record);
        id
    }

    /// Ends an operation.
    pub(crate) fn finish_operation(
        &mut self,
        id: &str,
        status: &'static str,
        error: Option<(String, String)>,
    ) {
        if let Some(op) = self.operations.get_mut(id)
            && op.status == "InProgress"
        {
            op.status = status;
            op.ended = Some(Timestamp::now());
            op.error = error;
        }
    }

    /// The next simulated IP: private `10.0.x.y` or public `20.x.y.z`.
    pub(crate) fn next_ip(&mut self, private: bool) -> String {
        self.ip_counter += 1;
        let n = self.ip_counter;
        if private {
            format!("10.0.{}.{}", (n >> 8) & 0xff, (n & 0xff).max(4))
        } else {
            format!(
                "20.{}.{}.{}",
                50 + ((n >> 16) & 0x7f),
                (n >> 8) & 0xff,
                (n & 0xff).max(1)
            )
        }
    }
}

/// The sum of the CPU requests of a group body's containers.
pub(crate) fn requested_cpu(body: &Value) -> f64 {
    body.pointer("/properties/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.pointer("/properties/resources/requests/cpu")?.as_f64())
                .sum()
        })
        .unwrap_or(0.0)
}

/// Whether a group body asks for Spot capacity (`properties.priority`).
pub(crate) fn is_spot(body: &Value) -> bool {
    body.pointer("/properties/priority")
        .and_then(Value::as_str)
        .is_some_and(|p| p.eq_ignore_ascii_case("Spot"))
}
