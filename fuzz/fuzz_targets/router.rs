//! The kubelet API router with arbitrary requests: paths, query strings of
//! containerLogs, exec, attach and portForward, headers, bodies, upgrade
//! handshakes; or the raw bytes of a whole connection (see
//! `skylet::server::fuzzing::router`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| skylet::server::fuzzing::router(input));
