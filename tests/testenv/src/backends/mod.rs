//! Every backend as the crash and fault suites drive it ([`crate::crash`],
//! [`crate::faults`]): the simulated backend, ECS on moto, ACI on the
//! in-repo emulator and another Kubernetes cluster with kwok, each through
//! the shared hooks ([`BackendUnderTest`]), and the three with an API of
//! their own also behind a [`FaultProxy`] ([`BehindProxy`]).
//!
//! The shared scenarios ([`crate::suite`]) run the same hooks on the
//! simulated backend, ECS and ACI (tests/backends.rs, tests/ecs.rs,
//! tests/aci.rs). They hold 200 pods (listings paginate).
//!
//! [`BackendUnderTest`]: crate::suite::BackendUnderTest
//! [`BehindProxy`]: crate::suite::BehindProxy
//! [`FaultProxy`]: crate::proxy::FaultProxy

mod aci;
mod cloudwatch;
mod ecs;
mod mock;
mod remote;

use std::path::PathBuf;

pub use aci::Aci;
pub use ecs::{Ecs, task_tag};
pub use mock::Mock;
pub use remote::{Remote, start_skylet as start_remote_skylet};

/// The `skylet` binary: `$SKYLET_BIN` when set (the soak, `hack/soak`),
/// else the one cargo built next to the running test binary
/// (`target/<profile>/skylet`; test binaries are in `deps/` below it).
///
/// # Panics
/// If it is not there (a test of another package than skylet's).
pub fn skylet_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SKYLET_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("skylet"))
        .expect("target/<profile>/");
    assert!(
        bin.is_file(),
        "no skylet binary at {}: run the test from skylet's package",
        bin.display()
    );
    bin
}
