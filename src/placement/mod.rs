//! Placement by policy: the `PlacementPolicy` custom resource
//! (`skylet.io/v1alpha1`), which says where the pods it selects may run
//! (ordered tiers of nodes), and how they fail over, fail back and scale in.
//! See [`crd`].

pub mod crd;

pub use crd::{PlacementPolicy, PlacementPolicySpec, PlacementPolicyStatus};
