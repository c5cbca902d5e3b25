//! The SPDY frame decoder, whole and in chunks (see
//! `skylet_spdy::fuzzing::decode`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| skylet_spdy::fuzzing::decode(input));
