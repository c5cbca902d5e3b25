//! exec, attach and port-forward sessions after the upgrade: the WebSocket
//! channel protocols (v5, v4, base64, port-forward channels), SPDY, and SPDY
//! in a WebSocket, with client frames the fuzzer chooses (see
//! `skylet::server::fuzzing::channels`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| skylet::server::fuzzing::channels(input));
