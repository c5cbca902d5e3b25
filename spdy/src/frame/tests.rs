//! Tests of the frame layer: Go-generated vectors, hand-built wire bytes,
//! round trips, truncation, limits and garbage.

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress};

use super::go_vectors::{self as go, hex};
use super::zlib::{DICTIONARY, DICTIONARY_ADLER32};
use super::*;
use crate::Error;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

/// Decodes exactly one frame from `bytes`, which must be consumed entirely.
fn decode_one(decoder: &mut FrameDecoder, bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = decoder
        .decode(&mut buf)
        .expect("decode")
        .expect("a whole frame");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frame
}

fn decode_err(bytes: &[u8]) -> Error {
    let mut buf = BytesMut::from(bytes);
    match FrameDecoder::new().decode(&mut buf) {
        Err(e) => e,
        Ok(f) => panic!("expected an error, got {f:?}"),
    }
}

fn encode(encoder: &mut FrameEncoder, frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    encoder.encode(frame, &mut out).expect("encode");
    out
}

/// A compressor set up the way Go's `zlib.NewWriterLevelDict` sets it up.
fn go_like_compressor() -> Compress {
    let mut c = Compress::new(Compression::best(), true);
    c.set_dictionary(DICTIONARY).expect("set dictionary");
    c
}

/// Compresses `input` into the zlib stream of `c`, ending with a sync flush.
fn compress_sync(c: &mut Compress, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + 64);
    let start = c.total_in();
    loop {
        let done = usize::try_from(c.total_in() - start).expect("fits");
        c.compress_vec(&input[done..], &mut out, FlushCompress::Sync)
            .expect("compress");
        if c.total_in() - start == input.len() as u64 && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

/// The uncompressed header block layout, built by hand.
fn raw_block(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (pairs.len() as u32).to_be_bytes().to_vec();
    for (name, value) in pairs {
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(value.len() as u32).to_be_bytes());
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// A control frame header for version 3.
fn control_header(frame_type: u16, flags: u8, len: usize) -> Vec<u8> {
    let mut b = vec![0x80, 0x03];
    b.extend_from_slice(&frame_type.to_be_bytes());
    b.push(flags);
    b.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    b
}

fn syn_stream_bytes(stream_id: u32, flags: u8, priority: u8, compressed: &[u8]) -> Vec<u8> {
    let mut b = control_header(1, flags, 10 + compressed.len());
    b.extend_from_slice(&stream_id.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.push(priority << 5);
    b.push(0);
    b.extend_from_slice(compressed);
    b
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    b << 16 | a
}

#[test]
fn dictionary_is_the_spdy3_dictionary() {
    assert_eq!(DICTIONARY.len(), 1423);
    assert_eq!(adler32(DICTIONARY), DICTIONARY_ADLER32);
    assert!(DICTIONARY.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
    assert!(DICTIONARY.ends_with(b"utf-,*,enq=0."));
}

#[test]
fn decodes_go_syn_streams_sharing_one_zlib_stream() {
    let mut d = FrameDecoder::new();
    assert_eq!(
        decode_one(&mut d, &hex(go::SYN_STREAM_1)),
        Frame::SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: headers(&[("streamtype", "error")]),
        }
    );
    assert_eq!(
        decode_one(&mut d, &hex(go::SYN_STREAM_3)),
        Frame::SynStream {
            stream_id: 3,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: headers(&[("streamtype", "stdin")]),
        }
    );
    assert_eq!(
        decode_one(&mut d, &hex(go::SYN_STREAM_5_FIN)),
        Frame::SynStream {
            stream_id: 5,
            associated_stream_id: 0,
            priority: 2,
            slot: 0,
            fin: true,
            unidirectional: false,
            headers: headers(&[("port", "8080")]),
        }
    );
    let mut multi = Headers::new();
    multi.append("a", "x");
    multi.append("a", "y");
    assert_eq!(
        decode_one(&mut d, &hex(go::HEADERS_5)),
        Frame::Headers {
            stream_id: 5,
            fin: false,
            headers: multi,
        }
    );
}

#[test]
fn decodes_go_frames_from_one_buffer() {
    let mut buf = BytesMut::new();
    for v in [
        go::SYN_STREAM_1,
        go::DATA_1,
        go::SYN_STREAM_3,
        go::PING_1,
        go::SYN_STREAM_5_FIN,
        go::HEADERS_5,
        go::DATA_1_FIN,
    ] {
        buf.extend_from_slice(&hex(v));
    }
    let mut d = FrameDecoder::new();
    let mut names = Vec::new();
    while let Some(frame) = d.decode(&mut buf).expect("decode") {
        names.push(frame.name());
    }
    assert!(buf.is_empty());
    assert_eq!(
        names,
        [
            "SYN_STREAM",
            "DATA",
            "SYN_STREAM",
            "PING",
            "SYN_STREAM",
            "HEADERS",
            "DATA"
        ]
    );
}

#[test]
fn decodes_go_syn_replies() {
    let mut d = FrameDecoder::new();
    for (vector, id) in [(go::SYN_REPLY_1, 1), (go::SYN_REPLY_3, 3)] {
        assert_eq!(
            decode_one(&mut d, &hex(vector)),
            Frame::SynReply {
                stream_id: id,
                fin: false,
                headers: Headers::new(),
            }
        );
    }
}

#[test]
fn uncompressed_frames_match_go_byte_for_byte() {
    let cases = [
        (
            go::DATA_1,
            Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
        ),
        (
            go::DATA_1_FIN,
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::new(),
            },
        ),
        (go::PING_1, Frame::Ping { id: 1 }),
        (
            go::GOAWAY,
            Frame::GoAway {
                last_good_stream_id: 7,
                status: GoAwayStatus::OK,
            },
        ),
        (
            go::RST_3_CANCEL,
            Frame::RstStream {
                stream_id: 3,
                status: RstStatus::CANCEL,
            },
        ),
        (
            go::SETTINGS,
            Frame::Settings {
                clear_settings: false,
                settings: vec![Setting {
                    flags: 1,
                    id: Setting::INITIAL_WINDOW_SIZE,
                    value: 65536,
                }],
            },
        ),
        (
            go::WINDOW_UPDATE,
            Frame::WindowUpdate {
                stream_id: 1,
                delta_window_size: 1024,
            },
        ),
    ];
    for (vector, frame) in cases {
        let bytes = hex(vector);
        assert_eq!(decode_one(&mut FrameDecoder::new(), &bytes), frame);
        assert_eq!(
            &encode(&mut FrameEncoder::new(), &frame)[..],
            &bytes[..],
            "{frame:?}"
        );
    }
}

#[test]
fn our_syn_reply_starts_the_zlib_stream_like_go() {
    // Compression levels differ, so the bytes after the zlib header may
    // differ; the header with FDICT and the dictionary id must not.
    let bytes = encode(
        &mut FrameEncoder::new(),
        &Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new(),
        },
    );
    assert_eq!(
        &bytes[..5],
        &[0x80, 0x03, 0x00, 0x02, 0x00],
        "control header"
    );
    assert_eq!(
        u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]) as usize,
        bytes.len() - 8,
        "length"
    );
    assert_eq!(&bytes[8..12], &1u32.to_be_bytes());
    assert_eq!(bytes[12] & 0x0f, 8, "deflate method");
    assert_ne!(bytes[13] & 0x20, 0, "FDICT");
    assert_eq!(u16::from_be_bytes([bytes[12], bytes[13]]) % 31, 0, "FCHECK");
    assert_eq!(&bytes[14..18], &DICTIONARY_ADLER32.to_be_bytes());
    assert!(bytes.ends_with(&[0, 0, 0xff, 0xff]), "sync flush");
}

#[test]
fn decodes_hand_built_syn_streams_compressed_like_go() {
    let mut zlib = go_like_compressor();
    let first = compress_sync(
        &mut zlib,
        &raw_block(&[("streamtype", "data"), ("port", "80")]),
    );
    let second = compress_sync(
        &mut zlib,
        &raw_block(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
    );
    // The stream starts with a zlib header that names the dictionary and
    // continues without one.
    assert_eq!(&first[2..6], &DICTIONARY_ADLER32.to_be_bytes());

    let mut d = FrameDecoder::new();
    let frame = decode_one(&mut d, &syn_stream_bytes(1, 0x02, 7, &first));
    assert_eq!(
        frame,
        Frame::SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 7,
            slot: 0,
            fin: false,
            unidirectional: true,
            headers: headers(&[("streamtype", "data"), ("port", "80")]),
        }
    );
    let Frame::SynStream { headers: h, .. } =
        decode_one(&mut d, &syn_stream_bytes(3, 0, 0, &second))
    else {
        panic!("not a SYN_STREAM");
    };
    assert_eq!(h.get("streamtype"), Some("error"));
    assert_eq!(h.get("port"), Some("80"));
    assert_eq!(h.get("requestid"), Some("0"));

    // A decoder that missed the first block cannot read the second.
    let mut fresh = FrameDecoder::new();
    let mut buf = BytesMut::from(&syn_stream_bytes(3, 0, 0, &second)[..]);
    assert!(fresh.decode(&mut buf).is_err());
}

#[test]
fn decodes_hand_built_control_frames() {
    let mut rst = control_header(3, 0, 8);
    rst.extend_from_slice(&[0x80, 0, 0, 5, 0, 0, 0, 3]); // reserved bit set
    assert_eq!(
        decode_one(&mut FrameDecoder::new(), &rst),
        Frame::RstStream {
            stream_id: 5,
            status: RstStatus::REFUSED_STREAM
        }
    );

    let mut settings = control_header(4, 1, 20);
    settings.extend_from_slice(&[0, 0, 0, 2]);
    settings.extend_from_slice(&[0x01, 0, 0, 4, 0, 0, 0, 100]);
    settings.extend_from_slice(&[0x02, 0, 0, 7, 0, 1, 0, 0]);
    assert_eq!(
        decode_one(&mut FrameDecoder::new(), &settings),
        Frame::Settings {
            clear_settings: true,
            settings: vec![
                Setting {
                    flags: 1,
                    id: Setting::MAX_CONCURRENT_STREAMS,
                    value: 100
                },
                Setting {
                    flags: 2,
                    id: Setting::INITIAL_WINDOW_SIZE,
                    value: 65536
                },
            ],
        }
    );

    let mut ping = control_header(6, 0, 4);
    ping.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(
        decode_one(&mut FrameDecoder::new(), &ping),
        Frame::Ping { id: 0xdead_beef }
    );

    let mut goaway = control_header(7, 0, 8);
    goaway.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 2]);
    assert_eq!(
        decode_one(&mut FrameDecoder::new(), &goaway),
        Frame::GoAway {
            last_good_stream_id: 9,
            status: GoAwayStatus::INTERNAL_ERROR
        }
    );

    let mut window = control_header(9, 0, 8);
    window.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(
        decode_one(&mut FrameDecoder::new(), &window),
        Frame::WindowUpdate {
            stream_id: 3,
            delta_window_size: 0x7fff_ffff
        }
    );

    let mut zlib = go_like_compressor();
    let block = compress_sync(&mut zlib, &raw_block(&[("status", "200")]));
    let mut reply = control_header(2, 1, 4 + block.len());
    reply.extend_from_slice(&[0, 0, 0, 2]);
    reply.extend_from_slice(&block);
    assert_eq!(
        decode_one(&mut FrameDecoder::new(), &reply),
        Frame::SynReply {
            stream_id: 2,
            fin: true,
            headers: headers(&[("status", "200")]),
        }
    );

    let data = [0, 0, 0, 7, 1, 0, 0, 3, b'a', b'b', b'c'];
    assert_eq!(
        decode_one(&mut FrameDecoder::new(), &data),
        Frame::Data {
            stream_id: 7,
            fin: true,
            data: Bytes::from_static(b"abc")
        }
    );
}

#[test]
fn skips_unknown_control_frames() {
    let mut bytes = control_header(10, 0, 3); // CREDENTIAL, unsupported
    bytes.extend_from_slice(&[1, 2, 3]);
    bytes.extend_from_slice(&hex(go::PING_1));
    assert_eq!(
        decode_one(&mut FrameDecoder::new(), &bytes),
        Frame::Ping { id: 1 }
    );
}

/// One frame of each type, with header blocks big enough to need several
/// inflate rounds.
fn sample_frames() -> Vec<Frame> {
    let mut big = Headers::new();
    for i in 0..200 {
        big.append(
            format!("x-header-{i}"),
            format!("value {i} {}", "v".repeat(i)),
        );
    }
    big.append("multi", "one");
    big.append("multi", "");
    big.append("multi", "three");
    vec![
        Frame::SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: headers(&[("streamtype", "error")]),
        },
        Frame::SynStream {
            stream_id: 0x7fff_ffff,
            associated_stream_id: 1,
            priority: 7,
            slot: 9,
            fin: true,
            unidirectional: true,
            headers: big.clone(),
        },
        Frame::SynReply {
            stream_id: 2,
            fin: false,
            headers: Headers::new(),
        },
        Frame::SynReply {
            stream_id: 4,
            fin: true,
            headers: headers(&[("status", "200 OK"), ("version", "HTTP/1.1")]),
        },
        Frame::RstStream {
            stream_id: 3,
            status: RstStatus(1234),
        },
        Frame::Settings {
            clear_settings: false,
            settings: Vec::new(),
        },
        Frame::Settings {
            clear_settings: true,
            settings: vec![Setting {
                flags: 3,
                id: 0xff_ffff,
                value: u32::MAX,
            }],
        },
        Frame::Ping { id: 0 },
        Frame::Ping { id: u32::MAX },
        Frame::GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::OK,
        },
        Frame::GoAway {
            last_good_stream_id: 0x7fff_ffff,
            status: GoAwayStatus(77),
        },
        Frame::Headers {
            stream_id: 5,
            fin: true,
            headers: big,
        },
        Frame::WindowUpdate {
            stream_id: 0,
            delta_window_size: 1,
        },
        Frame::Data {
            stream_id: 9,
            fin: false,
            data: Bytes::from(vec![0xab; 70_000]),
        },
        Frame::Data {
            stream_id: 9,
            fin: true,
            data: Bytes::new(),
        },
    ]
}

#[test]
fn every_frame_type_round_trips() {
    let frames = sample_frames();
    let mut encoder = FrameEncoder::new();
    let mut decoder = FrameDecoder::new();
    // Twice, so the second pass runs on a warmed-up zlib stream.
    for _ in 0..2 {
        for frame in &frames {
            let bytes = encode(&mut encoder, frame);
            assert_eq!(&decode_one(&mut decoder, &bytes), frame);
        }
    }
    // And all at once through one buffer.
    let mut buf = BytesMut::new();
    for frame in &frames {
        encoder.encode(frame, &mut buf).expect("encode");
    }
    for frame in &frames {
        assert_eq!(
            decoder.decode(&mut buf).expect("decode").as_ref(),
            Some(frame)
        );
    }
    assert_eq!(decoder.decode(&mut buf).expect("decode"), None);
}

#[test]
fn codec_round_trips_through_tokio_util() {
    use futures::StreamExt;
    use tokio_util::codec::{Encoder, FramedRead};

    let frames = sample_frames();
    let mut wire = BytesMut::new();
    let mut codec = Codec::new();
    for frame in &frames {
        Encoder::<&Frame>::encode(&mut codec, frame, &mut wire).expect("encode");
    }
    let wire = wire.freeze();
    let decoded: Vec<Frame> = futures::executor::block_on(
        FramedRead::new(&wire[..], FrameDecoder::new())
            .map(|r| r.expect("decode"))
            .collect(),
    );
    assert_eq!(decoded, frames);
}

#[test]
fn truncated_input_needs_more_bytes() {
    let mut encoder = FrameEncoder::new();
    let mut decoder = FrameDecoder::new();
    for frame in sample_frames() {
        let bytes = encode(&mut encoder, &frame);
        // Every strict prefix is incomplete and left untouched; the zlib
        // state is not disturbed either, so the whole frame decodes after.
        let step = if bytes.len() > 4096 { 997 } else { 1 };
        for cut in (0..bytes.len()).step_by(step) {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(
                decoder.decode(&mut buf).expect("prefix"),
                None,
                "cut at {cut}"
            );
            assert_eq!(&buf[..], &bytes[..cut]);
        }
        assert_eq!(decode_one(&mut decoder, &bytes), frame);
    }
}

#[test]
fn incremental_feeding_decodes_everything() {
    let frames = sample_frames();
    let mut encoder = FrameEncoder::new();
    let mut wire = BytesMut::new();
    for frame in &frames {
        encoder.encode(frame, &mut wire).expect("encode");
    }
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for chunk in wire.chunks(333) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buf).expect("decode") {
            decoded.push(frame);
        }
    }
    assert_eq!(decoded, frames);
}

#[test]
fn oversized_frames_are_rejected_from_the_header_alone() {
    let limits = Limits {
        max_data_frame_len: 1024,
        max_control_frame_len: 100,
        max_header_block_len: 64,
    };
    let mut data = BytesMut::from(&[0, 0, 0, 1, 0, 0, 4, 1][..]);
    assert!(matches!(
        FrameDecoder::with_limits(limits).decode(&mut data),
        Err(Error::FrameTooLarge {
            kind: "data",
            len: 1025,
            max: 1024
        })
    ));
    let mut control = BytesMut::from(&control_header(1, 0, 101)[..]);
    assert!(matches!(
        FrameDecoder::with_limits(limits).decode(&mut control),
        Err(Error::FrameTooLarge {
            kind: "control",
            ..
        })
    ));
    // The defaults: more than 1 MiB of control frame is too much.
    assert!(matches!(
        decode_err(&control_header(8, 0, (1 << 20) + 1)),
        Error::FrameTooLarge {
            kind: "control",
            ..
        }
    ));

    // A small compressed block that inflates beyond the limit.
    let mut zlib = go_like_compressor();
    let block = compress_sync(&mut zlib, &raw_block(&[("a", &"b".repeat(1000))]));
    assert!(block.len() < 100);
    let mut buf = BytesMut::from(&syn_stream_bytes(1, 0, 0, &block)[..]);
    assert!(matches!(
        FrameDecoder::with_limits(limits).decode(&mut buf),
        Err(Error::HeaderBlockTooLarge { max: 64 })
    ));
}

#[test]
fn malformed_frames_are_errors() {
    let with_payload = |frame_type: u16, flags: u8, payload: &[u8]| {
        let mut b = control_header(frame_type, flags, payload.len());
        b.extend_from_slice(payload);
        b
    };
    let compressed =
        |pairs: &[(&str, &str)]| compress_sync(&mut go_like_compressor(), &raw_block(pairs));
    let mut zero_id_syn = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    zero_id_syn.extend_from_slice(&compressed(&[("a", "b")]));

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("SPDY/2", vec![0x80, 0x02, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
        ("HTTP request", b"\x80GET / HTTP/1.1\r\n".to_vec()),
        ("data on stream 0", vec![0, 0, 0, 0, 0, 0, 0, 1, 0]),
        ("short ping", with_payload(6, 0, &[0, 0, 1])),
        ("long ping", with_payload(6, 0, &[0, 0, 0, 1, 0])),
        ("short goaway", with_payload(7, 0, &[0, 0, 0, 1])),
        (
            "rst status 0",
            with_payload(3, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
        ),
        (
            "rst stream 0",
            with_payload(3, 0, &[0, 0, 0, 0, 0, 0, 0, 1]),
        ),
        (
            "rst too long",
            with_payload(3, 0, &[0, 0, 0, 1, 0, 0, 0, 1, 0]),
        ),
        ("window update short", with_payload(9, 0, &[0, 0, 0, 1])),
        (
            "settings count mismatch",
            with_payload(4, 0, &[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1]),
        ),
        (
            "settings huge count",
            with_payload(4, 0, &[0xff, 0xff, 0xff, 0xff]),
        ),
        ("settings empty", with_payload(4, 0, &[])),
        (
            "syn_stream too short",
            with_payload(1, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0]),
        ),
        (
            "syn_stream without block",
            with_payload(1, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
        ),
        ("syn_stream stream 0", with_payload(1, 0, &zero_id_syn)),
        ("syn_reply too short", with_payload(2, 0, &[0, 0, 1])),
        (
            "headers garbage block",
            with_payload(8, 0, &[0, 0, 0, 1, 0x78, 0xf9, 1, 2, 3, 4, 5, 6]),
        ),
        (
            "not zlib",
            with_payload(8, 0, &[0, 0, 0, 1, 1, 2, 3, 4, 5, 6]),
        ),
    ];
    for (what, bytes) in cases {
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(
            FrameDecoder::new().decode(&mut buf).is_err(),
            "{what} was accepted"
        );
    }
}

#[test]
fn malformed_header_blocks_are_errors() {
    let frame_for = |block: &[u8]| {
        let compressed = compress_sync(&mut go_like_compressor(), block);
        syn_stream_bytes(1, 0, 0, &compressed)
    };
    let mut trailing = raw_block(&[("a", "b")]);
    trailing.push(0);
    let mut huge_count = raw_block(&[("a", "b")]);
    huge_count[..4].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut long_name = raw_block(&[("a", "b")]);
    long_name[4..8].copy_from_slice(&1000u32.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("uppercase name", raw_block(&[("Streamtype", "error")])),
        ("duplicate name", raw_block(&[("a", "1"), ("a", "2")])),
        ("empty name", raw_block(&[("", "x")])),
        ("trailing bytes", trailing),
        ("count beyond block", huge_count),
        ("name beyond block", long_name),
        ("truncated count", vec![0, 0]),
        ("empty block", Vec::new()),
        ("non-UTF-8 value", {
            let mut b = raw_block(&[("a", "xy")]);
            let n = b.len();
            b[n - 1] = 0xff;
            b
        }),
    ];
    for (what, block) in cases {
        let mut buf = BytesMut::from(&frame_for(&block)[..]);
        let result = FrameDecoder::new().decode(&mut buf);
        assert!(
            matches!(result, Err(Error::InvalidHeaderBlock(_))),
            "{what}: {result:?}"
        );
    }
}

#[test]
fn invalid_frames_are_not_encoded() {
    let syn = |stream_id, priority, headers| Frame::SynStream {
        stream_id,
        associated_stream_id: 0,
        priority,
        slot: 0,
        fin: false,
        unidirectional: false,
        headers,
    };
    let mut nul = Headers::new();
    nul.insert("a", "x\0y");
    let cases = vec![
        syn(0, 0, Headers::new()),
        syn(0x8000_0000, 0, Headers::new()),
        syn(1, 8, Headers::new()),
        syn(1, 0, nul),
        syn(1, 0, headers(&[("", "x")])),
        syn(1, 0, headers(&[("a\0b", "x")])),
        Frame::RstStream {
            stream_id: 1,
            status: RstStatus(0),
        },
        Frame::Data {
            stream_id: 0,
            fin: false,
            data: Bytes::new(),
        },
        Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![0; MAX_FRAME_LEN + 1]),
        },
        Frame::Settings {
            clear_settings: false,
            settings: vec![Setting {
                flags: 0,
                id: 0x100_0000,
                value: 0,
            }],
        },
    ];
    let mut encoder = FrameEncoder::new();
    for frame in cases {
        let mut out = BytesMut::new();
        assert!(encoder.encode(&frame, &mut out).is_err(), "{frame:?}");
        assert!(out.is_empty());
    }
    // The failures left the compression context usable.
    let frame = syn(1, 0, headers(&[("streamtype", "stdout")]));
    let bytes = encode(&mut encoder, &frame);
    assert_eq!(decode_one(&mut FrameDecoder::new(), &bytes), frame);
}

#[test]
fn headers_are_an_ordered_case_insensitive_multimap() {
    let mut h = Headers::new();
    assert!(h.is_empty());
    h.insert("StreamType", "stdin");
    h.append("Port", "80");
    h.append("port", "81");
    assert_eq!(h.len(), 2);
    assert_eq!(h.get("streamtype"), Some("stdin"));
    assert_eq!(h.get("STREAMTYPE"), Some("stdin"));
    assert_eq!(h.get_all("port"), ["80", "81"]);
    assert!(h.get_all("missing").is_empty());
    assert_eq!(
        h.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        ["streamtype", "port"]
    );
    h.insert("PORT", "82");
    assert_eq!(h.get_all("port"), ["82"]);
    assert_eq!(h.remove("Port"), Some(vec!["82".to_owned()]));
    assert!(!h.contains("port"));
    assert_eq!(format!("{h:?}"), r#"{"streamtype": ["stdin"]}"#);
}

/// xorshift64*: a tiny deterministic PRNG, so the test needs no crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Feeds `input` to a decoder the way the fuzz target does: until it errors
/// or needs more bytes.
fn drain(decoder: &mut FrameDecoder, input: &[u8]) {
    let mut buf = BytesMut::from(input);
    while let Ok(Some(_)) = decoder.decode(&mut buf) {}
}

#[test]
fn decode_never_panics() {
    let limits = Limits {
        max_data_frame_len: 4096,
        max_control_frame_len: 4096,
        max_header_block_len: 4096,
    };
    let mut rng = Rng(0x5eed_5eed_5eed_5eed);
    let mut encoder = FrameEncoder::new();
    let mut valid = BytesMut::new();
    for frame in sample_frames()
        .iter()
        .filter(|f| !matches!(f, Frame::Data { .. }))
    {
        encoder.encode(frame, &mut valid).expect("encode");
    }
    let go_stream: Vec<u8> = [
        go::SYN_STREAM_1,
        go::SYN_STREAM_3,
        go::SYN_STREAM_5_FIN,
        go::HEADERS_5,
    ]
    .iter()
    .flat_map(|v| hex(v))
    .collect();

    for round in 0..4000 {
        let input = match round % 4 {
            // Pure noise.
            0 => {
                let n = rng.below(64);
                rng.bytes(n)
            }
            // A plausible control header with a matching random payload.
            1 => {
                let len = rng.below(48);
                let mut b = control_header((rng.below(12)) as u16, rng.next() as u8, len);
                b.extend(rng.bytes(len));
                b
            }
            // Valid frames with a few bytes flipped.
            2 => {
                let mut b = valid.to_vec();
                for _ in 0..=rng.below(4) {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
                b
            }
            // Go's zlib stream, truncated and mutated.
            _ => {
                let mut b = go_stream[..rng.below(go_stream.len())].to_vec();
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
                b
            }
        };
        drain(&mut FrameDecoder::with_limits(limits), &input);
        drain(&mut FrameDecoder::new(), &input);
    }
}
