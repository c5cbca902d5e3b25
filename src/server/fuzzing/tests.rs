//! The seed corpus of every fuzz target (`fuzz/corpus/<target>/`), replayed
//! as ordinary tests so that every `cargo test` runs it, and each input
//! that once found a bug with it.

use std::path::{Path, PathBuf};

use super::*;

/// The files of `fuzz/corpus/<target>/`, sorted.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

/// Runs every input of `target`'s corpus through `entry`, naming the file
/// that fails.
fn replay(target: &str, entry: fn(&[u8])) {
    for file in corpus(target) {
        let input = std::fs::read(&file).expect("a corpus file");
        if let Err(panic) = std::panic::catch_unwind(|| entry(&input)) {
            eprintln!("fuzz input {} fails", file.display());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn router_corpus() {
    replay("router", router);
}

#[test]
fn channels_corpus() {
    replay("channels", channels);
}

#[test]
fn spdy_frames_corpus() {
    replay("spdy_frames", skylet_spdy::fuzzing::decode);
}

#[test]
fn frame_builders_make_what_they_say() {
    // one masked binary WebSocket frame
    assert_eq!(
        ws_frames(&[0x82, 2, 1, b'x']),
        [0x82, 0x82, 0x37, 0xfa, 0x21, 0x3d, 1 ^ 0x37, b'x' ^ 0xfa]
    );
    // SYN_STREAM 3 (stdin) then DATA with FIN on it
    let bytes = spdy_frames(&[0, 1, 1, 80, 0, 1, 1, 1, 2, b'h', b'i']);
    let mut decoder = skylet_spdy::frame::FrameDecoder::new();
    let mut buf = BytesMut::from(&bytes[..]);
    let syn = decoder.decode(&mut buf).expect("decodes").expect("a frame");
    assert!(
        matches!(&syn, Frame::SynStream { stream_id: 3, headers, .. } if headers.get("streamtype") == Some("stdin")),
        "{syn:?}"
    );
    let data = decoder.decode(&mut buf).expect("decodes").expect("a frame");
    assert_eq!(
        data,
        Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::from_static(b"hi")
        }
    );
}

/// The seeds reach what they are for: each upgrade is accepted, and what
/// the client sent before leaving is acted on.
#[test]
fn channel_seeds_upgrade_and_get_answers() {
    for file in corpus("channels") {
        let input = std::fs::read(&file).expect("a corpus file");
        let request = channels_request(&input).expect("a request");
        let answer = exchange(&request);
        assert!(
            answer.starts_with(b"HTTP/1.1 101"),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&answer)
        );
    }
    // port-forward over WebSocket: the ports are announced on their channels
    let answer = exchange(
        &channels_request(
            &std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("fuzz/corpus/channels/ws-portforward-two-ports"),
            )
            .expect("the seed"),
        )
        .expect("a request"),
    );
    assert!(
        answer.windows(4).any(|w| w == [0x82, 3, 0, 80]),
        "{answer:?}"
    );
}
