//! Leader election: with `--leader-elect`, several replicas of skylet run
//! and one of them, per virtual node, does the node's work; the others
//! wait to take over.
//!
//! Each virtual node has its own Lease, `skylet-<node>` in skylet's own
//! namespace (not `kube-node-lease`, whose Leases are the nodes'
//! heartbeats). The algorithm is client-go's `leaderelection`, with its
//! timings as defaults (lease 15 s, renew deadline 10 s, retry 2 s):
//!
//! - **Acquire**: a candidate watches the Lease and tries to take it every
//!   retry period and at the moment it expires. It takes a Lease that is
//!   free, or whose record has not changed for a whole lease duration *as
//!   measured on the candidate's own monotonic clock* (never by comparing
//!   the holder's `renewTime` with the local wall clock, so clock skew
//!   between machines cannot make two leaders). The watch is where skylet
//!   improves on client-go, which polls every retry period: the candidate
//!   sees each renewal as it happens, so it knows the expiry to the
//!   millisecond and takes over at most a lease duration after the
//!   leader's last renewal (client-go: up to two retry periods later).
//!   Without the watch (RBAC without `watch` on leases) it polls as
//!   client-go does. Every write is an update guarded by the Lease's
//!   resourceVersion: of two candidates, one wins and the other gets a
//!   conflict.
//! - **Renew**: the leader renews every retry period. Each attempt is
//!   bounded by a timeout; its success is stamped with the monotonic
//!   instant the attempt *started* (the apiserver stored it no earlier).
//! - **Fencing**: if no renewal has succeeded for the renew deadline, the
//!   leader stops: it exits the process at once (as kube-controller-manager
//!   and kube-scheduler do), so nothing it started can write after the
//!   deadline, and the lease duration minus the renew deadline (5 s) is the
//!   margin before another replica may take over. skylet's client does not
//!   retry requests on its own when leader election is on
//!   (`Config::default_retry` off), so a write is one request, never a
//!   string of retries that could land after the deadline.
//!
//! On SIGTERM the leader finishes the node's shutdown (its last writes),
//! then releases its Lease, so a standby takes over without waiting for it
//! to expire.
//!
//! # RBAC
//! `leases` (coordination.k8s.io) in skylet's namespace: get, create, update;
//! list and watch for the candidate's watch.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client, ResourceExt,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Leader election settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The namespace of the Leases (skylet's own).
    pub namespace: String,
    /// This replica's name in the Leases (`holderIdentity`).
    pub identity: String,
    /// How long a Lease is held without renewal before others may take it.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops.
    pub renew_deadline: Duration,
    /// How often candidates try and the leader renews.
    pub retry_period: Duration,
}

impl Config {
    /// Checks the timings as client-go does: lease > deadline > retry.
    ///
    /// # Errors
    /// A message naming the setting.
    pub fn check(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err(
                "leader-elect-lease-duration must be longer than leader-elect-renew-deadline"
                    .into(),
            );
        }
        if self.renew_deadline <= self.retry_period {
            return Err(
                "leader-elect-renew-deadline must be longer than leader-elect-retry-period".into(),
            );
        }
        if self.retry_period.is_zero() {
            return Err("leader-elect-retry-period must be at least 1 second".into());
        }
        Ok(())
    }
}

/// What a candidate saw of a Lease: its record and when it last changed,
/// on this process's clock.
#[derive(Clone, Debug, PartialEq)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    resource_version: Option<String>,
    since: Instant,
}

/// The election of one virtual node.
pub struct Elector {
    leases: Api<Lease>,
    name: String,
    config: Config,
}

/// Why a write was not made: leadership is lost or about to be.
#[derive(Debug, thiserror::Error)]
#[error("not the leader of {0} any more")]
pub struct Fenced(pub String);

/// Proof of leadership, valid until its deadline. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Fence {
    name: String,
    last_renewal: Arc<Mutex<Instant>>,
    /// `None`: never expires (leader election off).
    renew_deadline: Option<Duration>,
    lost: CancellationToken,
}

impl Fence {
    /// A fence that never expires (leader election off).
    pub fn always() -> Self {
        Self {
            name: String::new(),
            last_renewal: Arc::new(Mutex::new(Instant::now())),
            renew_deadline: None,
            lost: CancellationToken::new(),
        }
    }

    fn last(&self) -> Instant {
        *self
            .last_renewal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How long this leader may still write, `None` once the deadline has
    /// passed.
    pub fn time_left(&self) -> Option<Duration> {
        if self.lost.is_cancelled() {
            return None;
        }
        let Some(renew_deadline) = self.renew_deadline else {
            return Some(Duration::MAX);
        };
        let deadline = self.last().checked_add(renew_deadline)?;
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }

    /// Runs `write` if leadership still holds, and abandons it when the
    /// deadline passes first.
    ///
    /// # Errors
    /// [`Fenced`] when leadership is lost before or during the write.
    pub async fn guard<T>(&self, write: impl Future<Output = T>) -> Result<T, Fenced> {
        let Some(left) = self.time_left() else {
            return Err(Fenced(self.name.clone()));
        };
        tokio::time::timeout(left, write)
            .await
            .map_err(|_| Fenced(self.name.clone()))
    }

    /// Cancelled when leadership is lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }
}

impl Elector {
    /// The election of node `node`.
    pub fn new(client: Client, node: &str, config: Config) -> Self {
        Self {
            leases: Api::namespaced(client, &config.namespace),
            name: format!("skylet-{node}"),
            config,
        }
    }

    /// The Lease's name.
    pub fn lease_name(&self) -> &str {
        &self.name
    }

    /// Waits until this replica leads, then renews in the background until
    /// [`Leadership::release`] or until a renewal deadline is missed (the
    /// fence is then lost). `None` if `shutdown` came first.
    pub async fn lead(self, shutdown: CancellationToken) -> Option<Leadership> {
        let Self {
            leases,
            name,
            config,
        } = self;
        let mut seen: Option<Observed> = None;
        let mut tick = tokio::time::interval(config.retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = watcher(
            leases.clone(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        )
        .default_backoff()
        .applied_objects()
        .boxed();
        let acquired = loop {
            let expiry = seen
                .as_ref()
                .filter(|s| s.holder.is_some() && s.holder.as_deref() != Some(&config.identity))
                .map(|s| s.since + config.lease_duration);
            tokio::select! {
                () = shutdown.cancelled() => return None,
                _ = tick.tick() => {}
                () = sleep_until(expiry), if expiry.is_some() => {}
                Some(change) = changes.next() => {
                    match change {
                        Ok(lease) => observe(&mut seen, &lease, Instant::now()),
                        Err(e) => tracing::debug!(lease = %name, error = %e, "leader election: no watch on the Lease; polling"),
                    }
                    continue;
                }
            }
            let started = Instant::now();
            match try_acquire(&leases, &name, &config, &mut seen).await {
                Ok(true) => break started,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(lease = %name, error = %e, "leader election: cannot acquire yet")
                }
            }
        };
        tracing::info!(lease = %name, identity = %config.identity, "leader election: acquired; this replica leads");
        let fence = Fence {
            name: name.clone(),
            last_renewal: Arc::new(Mutex::new(acquired)),
            renew_deadline: Some(config.renew_deadline),
            lost: CancellationToken::new(),
        };
        let stop = CancellationToken::new();
        let renewing = tokio::spawn(renew(
            leases.clone(),
            name.clone(),
            config.clone(),
            fence.clone(),
            stop.clone(),
        ));
        Some(Leadership {
            fence,
            leases,
            name,
            config,
            stop,
            renewing,
        })
    }
}

/// This replica leads a node: the Lease is renewed until released.
pub struct Leadership {
    fence: Fence,
    leases: Api<Lease>,
    name: String,
    config: Config,
    stop: CancellationToken,
    renewing: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// The fence of this leadership.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Stops renewing and gives the Lease up, so a standby takes over at
    /// once (after a graceful stop, once the node's last writes are done).
    pub async fn release(self) {
        self.stop.cancel();
        let _ = self.renewing.await;
        if self.fence.time_left().is_some() {
            release(&self.leases, &self.name, &self.config).await;
        }
    }
}

/// One acquisition attempt: `Ok(true)` if this replica now holds the Lease.
async fn try_acquire(
    leases: &Api<Lease>,
    name: &str,
    config: &Config,
    seen: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let now = Instant::now();
    let Some(lease) = leases.get_opt(name).await? else {
        let created = leases
            .create(&PostParams::default(), &record(name, config, None, 0))
            .await;
        return match created {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    observe(seen, &lease, now);
    let Some(observed) = seen.clone() else {
        return Ok(false);
    };
    let unchanged_since = observed.since;
    let ours = observed.holder.as_deref() == Some(config.identity.as_str());
    let expired = now.saturating_duration_since(unchanged_since) >= config.lease_duration;
    if observed.holder.is_some() && !ours && !expired {
        return Ok(false);
    }
    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
    let mut next = record(
        name,
        config,
        spec.acquire_time.filter(|_| ours),
        transitions,
    );
    next.metadata.resource_version = observed.resource_version;
    match leases.replace(name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Records `lease` as seen at `now`: the record's age on our own clock is
/// reset whenever its holder or renewal changes.
fn observe(seen: &mut Option<Observed>, lease: &Lease, now: Instant) {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let renew_time = spec.renew_time.map(|t| t.0);
    let since = match seen.as_ref() {
        Some(s) if s.holder == holder && s.renew_time == renew_time => s.since,
        _ => now,
    };
    *seen = Some(Observed {
        holder,
        renew_time,
        resource_version: lease.resource_version(),
        since,
    });
}

/// Sleeps until `at` (forever without one: the branch is disabled then).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The Lease held by this replica, renewed now.
fn record(name: &str, config: &Config, acquired: Option<MicroTime>, transitions: i32) -> Lease {
    let now = MicroTime(Timestamp::now());
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(config.namespace.clone()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(config.lease_duration.as_secs()).unwrap_or(15),
            ),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    }
}

/// Renews every retry period until `stop`; cancels the fence when no
/// renewal succeeded for the renew deadline.
async fn renew(
    leases: Api<Lease>,
    name: String,
    config: Config,
    fence: Fence,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.retry_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let attempt =
            tokio::time::timeout(config.retry_period, renew_once(&leases, &name, &config)).await;
        match attempt {
            Ok(Ok(())) => {
                *fence
                    .last_renewal
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = started;
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %name, error = %e, "leader election: renewal failed")
            }
            Err(_) => tracing::warn!(lease = %name, "leader election: renewal timed out"),
        }
        if fence.time_left().is_none() {
            tracing::error!(lease = %name, deadline = ?config.renew_deadline, "leader election: no renewal within the deadline; leadership lost");
            fence.lost.cancel();
            return;
        }
    }
}

/// Renews the Lease if this replica still holds it.
async fn renew_once(leases: &Api<Lease>, name: &str, config: &Config) -> Result<(), String> {
    let lease = leases.get(name).await.map_err(|e| e.to_string())?;
    let spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Err(format!("the Lease is held by {:?}", spec.holder_identity));
    }
    let mut next = record(
        name,
        config,
        spec.acquire_time,
        spec.lease_transitions.unwrap_or(0),
    );
    next.metadata.resource_version = lease.resource_version();
    leases
        .replace(name, &PostParams::default(), &next)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Gives the Lease up (holder cleared), so a standby takes over at once.
async fn release(leases: &Api<Lease>, name: &str, config: &Config) {
    let Ok(Some(lease)) = leases.get_opt(name).await else {
        return;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    let mut next = lease.clone();
    next.spec = Some(LeaseSpec {
        holder_identity: None,
        renew_time: Some(MicroTime(Timestamp::now())),
        lease_duration_seconds: Some(1),
        ..spec
    });
    match leases.replace(name, &PostParams::default(), &next).await {
        Ok(_) => tracing::info!(lease = %name, "leader election: released"),
        Err(e) => tracing::warn!(lease = %name, error = %e, "leader election: cannot release"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_are_checked_as_client_go_does() {
        let ok = Config {
            namespace: "skylet".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        assert!(ok.check().is_ok());
        let bad = Config {
            renew_deadline: Duration::from_secs(15),
            ..ok.clone()
        };
        assert!(bad.check().unwrap_err().contains("lease-duration"));
        let bad = Config {
            retry_period: Duration::from_secs(10),
            ..ok
        };
        assert!(bad.check().unwrap_err().contains("renew-deadline"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_guards_writes_until_the_deadline() {
        let fence = Fence {
            name: "skylet-n".into(),
            last_renewal: Arc::new(Mutex::new(Instant::now())),
            renew_deadline: Some(Duration::from_secs(10)),
            lost: CancellationToken::new(),
        };
        assert!(fence.guard(async { 1 }).await.is_ok());
        // a write still running at the deadline is abandoned
        let slow = fence
            .guard(tokio::time::sleep(Duration::from_secs(60)))
            .await;
        assert!(slow.is_err());
        assert!(fence.time_left().is_none());
        assert!(
            fence.guard(async { 1 }).await.is_err(),
            "no write after the deadline"
        );
        assert!(Fence::always().time_left().is_some());
    }
}
