//! skylet
