//! Deleting a pod's container group, confirmed by ARM.
//!
//! ACI can keep a group running (and billing) after a DELETE was answered,
//! so a DELETE's answer alone never says the group is gone: only the
//! sweep's listing does, once it no longer holds the group. What is asked
//! of ARM, per deleted pod:
//!
//! | when | calls | answer to the core |
//! |---|---|---|
//! | first delete with a grace period | `ContainerGroups_Stop` (ARM ends the containers) | `Stopping` |
//! | a sweep lists the stopped group with no container running | `ContainerGroups_Delete` (from the sweep) | |
//! | delete at once (no grace, the grace period over, an orphan's second call) | `ContainerGroups_Delete` | `Stopping` |
//! | a DELETE sent less than [`REDELETE_AFTER`] ago | none | `Stopping` |
//! | a sweep still lists the group, not `Deleting`, [`REDELETE_AFTER`] after its DELETE | `ContainerGroups_Delete` again (from the sweep) | |
//!
//! So a delete costs a Stop and a Delete (two writes of ARM's buckets, one
//! of ACI's deletes), never a GET, let alone one per second while a group
//! stops: the core learns that the group is gone from the sweep's listing
//! (one call per 100 groups for the whole node), which it already uses to
//! finalize pods whose instance the backend no longer reports.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use skylet_provider::{Deleted, PodRef, Result};

use crate::{
    AciProvider,
    models::{ContainerGroup, ContainerGroupProvisioningState},
    status,
};

/// How long a DELETE may be under way before the sweep sends it again for
/// a group it still lists and that ARM does not show `Deleting`.
pub(crate) const REDELETE_AFTER: Duration = Duration::from_secs(60);

/// DELETEs a sweep sends at once.
const SWEEP_DELETES: usize = 8;

/// A group skylet is deleting.
#[derive(Clone, Debug)]
pub(crate) struct Deleting {
    /// The group's name.
    pub(crate) name: String,
    /// When its DELETE was sent; `None` while it is stopping.
    pub(crate) delete_sent: Option<Instant>,
}

impl AciProvider {
    /// [`skylet_provider::Provider::delete_pod`] (see the module docs).
    pub(crate) async fn delete(&self, pod: &PodRef, grace: Duration) -> Result<Deleted> {
        let name = self.group_of(pod);
        let prior = self.state().deleting.get(&pod.uid).cloned();
        match prior {
            None if !grace.is_zero() => {
                self.inner.client.stop_group(self.rg(), &name).await?;
                tracing::info!(pod = %pod, group = %name, "container group stopped; the sweep deletes it once its containers ended");
                self.state().deleting.insert(
                    pod.uid.clone(),
                    Deleting {
                        name,
                        delete_sent: None,
                    },
                );
                Ok(Deleted::Stopping)
            }
            Some(Deleting {
                delete_sent: Some(at),
                ..
            }) if at.elapsed() < REDELETE_AFTER => Ok(Deleted::Stopping),
            _ => self.delete_and_confirm(pod, name).await,
        }
    }

    /// DELETE; the sweep confirms: the core learns the group is gone when a
    /// listing no longer holds it (`Stopping` until then).
    async fn delete_and_confirm(&self, pod: &PodRef, name: String) -> Result<Deleted> {
        let client = &self.inner.client;
        // recorded before it is sent: while it waits out a Retry-After, a
        // sweep must not send a DELETE of its own for the group (#15)
        self.state().deleting.insert(
            pod.uid.clone(),
            Deleting {
                name: name.clone(),
                delete_sent: Some(Instant::now()),
            },
        );
        if let Err(e) = client.delete_group(self.rg(), &name).await {
            if let Some(d) = self.state().deleting.get_mut(&pod.uid) {
                d.delete_sent = None;
            }
            return Err(e.into());
        }
        tracing::info!(pod = %pod, group = %name, "container group deleting; the sweep confirms when it is gone");
        Ok(Deleted::Stopping)
    }

    /// The sweep's part (see the module docs): forgets deletions whose
    /// group is no longer listed, and DELETEs the stopped groups that are
    /// due. `listed` holds this node's groups by pod UID.
    pub(crate) async fn advance_deletions(&self, listed: &[(&str, &ContainerGroup)]) {
        let due: Vec<(String, String)> = {
            let mut st = self.state();
            if st.deleting.is_empty() {
                return;
            }
            st.deleting
                .retain(|uid, _| listed.iter().any(|(u, _)| u == uid));
            let now = Instant::now();
            listed
                .iter()
                .filter_map(|(uid, g)| {
                    let d = st.deleting.get_mut(*uid)?;
                    let due = match d.delete_sent {
                        None => status::all_terminated(g),
                        Some(at) => {
                            now.duration_since(at) >= REDELETE_AFTER
                                && !matches!(
                                    g.properties.provisioning_state,
                                    Some(ContainerGroupProvisioningState::Deleting)
                                )
                        }
                    };
                    due.then(|| {
                        d.delete_sent = Some(now);
                        ((*uid).to_owned(), d.name.clone())
                    })
                })
                .collect()
        };
        let client = &self.inner.client;
        let failed: Vec<String> = futures::stream::iter(due)
            .map(|(uid, name)| async move {
                match client.delete_group(self.rg(), &name).await {
                    Ok(_) => {
                        tracing::info!(group = %name, "container group stopped; deleting it");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(group = %name, error = %e, "cannot delete a stopped container group; the next sweep tries again");
                        Some(uid)
                    }
                }
            })
            .buffer_unordered(SWEEP_DELETES)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let mut st = self.state();
        for uid in failed {
            if let Some(d) = st.deleting.get_mut(&uid) {
                d.delete_sent = None;
            }
        }
    }
}
