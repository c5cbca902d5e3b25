//! Real nodes (`hack/node`: kubelet v1.36.3, containerd, runc, the bridge
//! CNI plugin) for a control plane, so that pods run as real containers.
//! Needs root and what `hack/setup test` installs; a node that cannot
//! start fails the test with `hack/node`'s own message.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use crate::{ControlPlane, hack_dir};

/// The real node of one control plane, stopped (and everything it set up
/// undone, its links too) when dropped, or by its watcher when the test
/// binary exits.
#[derive(Debug)]
pub struct RealNode {
    cluster: String,
    /// The Node's name (`<cluster>-node`).
    pub name: String,
}

/// Runs `hack/node args...`; its stdout, or a panic with its stderr.
fn node(args: &[&str]) -> String {
    let out: Output = Command::new(hack_dir().join("node"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("hack/node {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "hack/node {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RealNode {
    /// Starts the real node of `cp` with `hack/node up` and `args` (such
    /// as `--dns`), and waits until it is Ready.
    ///
    /// # Panics
    /// If it does not start (not root, a tool missing, ...).
    pub fn up(cp: &ControlPlane, args: &[&str]) -> RealNode {
        let pid = std::process::id().to_string();
        let mut all = vec!["up", cp.name.as_str(), "--owner-pid", &pid];
        all.extend_from_slice(args);
        let name = node(&all).trim().to_owned();
        RealNode {
            cluster: cp.name.clone(),
            name,
        }
    }

    /// Routes between this node's pods and `other`'s (`hack/node link`).
    pub fn link(&self, other: &RealNode) {
        node(&["link", &self.cluster, &other.cluster]);
    }

    /// The directory of its state (`$SKYLET_NODES/<cluster>`).
    pub fn dir(&self) -> PathBuf {
        std::env::var("SKYLET_NODES")
            .map_or_else(|_| PathBuf::from("/tmp/skylet-nodes"), PathBuf::from)
            .join(&self.cluster)
    }

    /// Its address on its bridge (the pods' gateway, the kubelet's and,
    /// with `--dns`, the cluster DNS's).
    pub fn ip(&self) -> String {
        std::fs::read_to_string(self.dir().join("ip"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|e| panic!("the address of node {}: {e}", self.name))
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        let _ = Command::new(hack_dir().join("node"))
            .args(["down", &self.cluster])
            .status();
    }
}
