//! The simulated backend's state file: what a cloud would remember across a
//! skylet restart (which pods run, their IPs and container states). Logs and
//! running scripts are not kept.

use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::pod::CState;

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub(crate) creates: u32,
    pub(crate) next_ip: u32,
    pub(crate) pods: Vec<SavedPod>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SavedPod {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) created: Timestamp,
    pub(crate) ip: String,
    pub(crate) init: Vec<SavedContainer>,
    pub(crate) app: Vec<SavedContainer>,
    /// `kubectl debug`'s containers.
    #[serde(default)]
    pub(crate) ephemeral: Vec<SavedContainer>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SavedContainer {
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) state: CState,
    #[serde(default)]
    pub(crate) restarts: i32,
}

/// Reads the state file; a missing file is an empty backend, a corrupt one
/// is logged and treated as empty.
pub(crate) fn load(path: &Path) -> Saved {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "mock state file is corrupt; starting empty");
            Saved::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read mock state file; starting empty");
            Saved::default()
        }
    }
}

/// Writes the state file atomically (temp file, then rename).
pub(crate) fn store(path: &Path, saved: &Saved) {
    let tmp = path.with_extension("tmp");
    let r = serde_json::to_vec(saved)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "cannot write mock state file");
    }
}
