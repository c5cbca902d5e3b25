//! [`Lanes`]: where reconciles wait for their turn, first come first served.
//!
//! kube-runtime's own concurrency limit holds the reconciles beyond it in a
//! hash set and starts them in no particular order, so under a burst a pod
//! could wait for the whole burst (p99 24.5 s at 10,000 pods, p50 1.9 s;
//! BENCHMARKS.md). skylet lets the controller start every reconcile and
//! queues them here on fair semaphores instead, in two lanes: reconciles
//! that call the backend (create, delete) and those that only write a status
//! the backend already reported (`--concurrency`, `--status-concurrency`).
//! A slow cloud create then never holds up the status of a pod that is
//! already running, and each lane bounds the connections it can open.

use tokio::sync::{Semaphore, SemaphorePermit};

/// Which lane a reconcile waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// It may call the backend.
    Backend,
    /// It only writes a status the backend reported.
    Status,
}

/// The two lanes.
#[derive(Debug)]
pub(crate) struct Lanes {
    backend: Option<Semaphore>,
    status: Option<Semaphore>,
}

impl Lanes {
    /// Lanes of `backend` and `status` reconciles at once; 0 = unbounded.
    pub(crate) fn new(backend: u16, status: u16) -> Self {
        let lane = |n: u16| (n > 0).then(|| Semaphore::new(usize::from(n)));
        Self {
            backend: lane(backend),
            status: lane(status),
        }
    }

    /// Waits for a turn in `lane` (at once when it is unbounded); the turn
    /// lasts as long as the permit.
    pub(crate) async fn turn(&self, lane: Lane) -> Option<SemaphorePermit<'_>> {
        let sem = match lane {
            Lane::Backend => self.backend.as_ref(),
            Lane::Status => self.status.as_ref(),
        }?;
        sem.acquire().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_lane_does_not_hold_up_the_other() {
        let lanes = Lanes::new(1, 1);
        let _busy = lanes.turn(Lane::Backend).await;
        let status = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            lanes.turn(Lane::Status),
        )
        .await;
        assert!(status.is_ok(), "the status lane is free");
        let backend = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            lanes.turn(Lane::Backend),
        )
        .await;
        assert!(backend.is_err(), "the backend lane is taken");
        assert!(
            Lanes::new(0, 0).turn(Lane::Backend).await.is_none(),
            "unbounded: no permit needed"
        );
    }
}
