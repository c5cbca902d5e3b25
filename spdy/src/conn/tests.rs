//! Tests of [`Connection`] against a minimal client built on the same codec,
//! over an in-memory duplex pipe.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::time::timeout;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::*;
use crate::frame::go_vectors::{self as go, hex};
use crate::frame::{FrameDecoder, FrameEncoder, Headers, RstStatus};

const WAIT: Duration = Duration::from_secs(5);

/// The client end: its own compression contexts, as a Go spdystream client
/// has.
struct Client {
    rx: FramedRead<ReadHalf<DuplexStream>, FrameDecoder>,
    tx: ClientTx,
}

struct ClientTx(FramedWrite<WriteHalf<DuplexStream>, FrameEncoder>);

impl ClientTx {
    async fn send(&mut self, frame: Frame) {
        self.0.send(frame).await.expect("client send");
    }

    async fn data(&mut self, stream_id: StreamId, fin: bool, data: &[u8]) {
        self.send(Frame::Data {
            stream_id,
            fin,
            data: Bytes::copy_from_slice(data),
        })
        .await;
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.0.get_mut().write_all(bytes).await.expect("raw write");
    }
}

impl Client {
    async fn send(&mut self, frame: Frame) {
        self.tx.send(frame).await;
    }

    async fn recv(&mut self) -> Frame {
        timeout(WAIT, self.rx.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("unexpected EOF")
            .expect("decode")
    }

    async fn expect_eof(&mut self) {
        let next = timeout(WAIT, self.rx.next())
            .await
            .expect("timed out waiting for EOF");
        assert!(next.is_none(), "expected EOF, got {next:?}");
    }

    /// Opens a stream and waits for its SYN_REPLY, as apimachinery's
    /// `CreateStream` does.
    async fn open(&mut self, stream_id: StreamId, stream_type: &str) {
        self.send(syn_stream(stream_id, false, &[("streamtype", stream_type)]))
            .await;
        assert_eq!(self.recv().await, reply(stream_id));
    }
}

fn syn_stream(stream_id: StreamId, fin: bool, headers: &[(&str, &str)]) -> Frame {
    Frame::SynStream {
        stream_id,
        associated_stream_id: 0,
        priority: 0,
        slot: 0,
        fin,
        unidirectional: false,
        headers: headers.iter().copied().collect(),
    }
}

fn reply(stream_id: StreamId) -> Frame {
    Frame::SynReply {
        stream_id,
        fin: false,
        headers: Headers::new(),
    }
}

fn data(stream_id: StreamId, fin: bool, bytes: &'static [u8]) -> Frame {
    Frame::Data {
        stream_id,
        fin,
        data: Bytes::from_static(bytes),
    }
}

fn rst(stream_id: StreamId, status: RstStatus) -> Frame {
    Frame::RstStream { stream_id, status }
}

fn setup_with(config: Config, pipe: usize) -> (Connection, Client) {
    let (server, client) = tokio::io::duplex(pipe);
    let conn = Connection::with_config(server, config);
    let (r, w) = tokio::io::split(client);
    let client = Client {
        rx: FramedRead::new(r, FrameDecoder::new()),
        tx: ClientTx(FramedWrite::new(w, FrameEncoder::new())),
    };
    (conn, client)
}

fn setup() -> (Connection, Client) {
    setup_with(Config::default(), 64 * 1024)
}

async fn accept(conn: &mut Connection) -> Stream {
    timeout(WAIT, conn.accept())
        .await
        .expect("timed out accepting")
        .expect("connection ended")
}

async fn read_to_end(r: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    timeout(WAIT, r.read_to_end(&mut out))
        .await
        .expect("timed out reading")
        .expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_like_session() {
    let (mut conn, mut client) = setup();
    client.open(1, "error").await;
    client.open(3, "stdin").await;
    client.open(5, "stdout").await;

    let mut error = accept(&mut conn).await;
    let mut stdin = accept(&mut conn).await;
    let mut stdout = accept(&mut conn).await;
    assert_eq!((error.id(), stdin.id(), stdout.id()), (1, 3, 5));
    assert_eq!(error.header(crate::HEADER_STREAM_TYPE), Some("error"));
    assert_eq!(stdin.headers().get("StreamType"), Some("stdin"));
    assert_eq!(stdout.header("streamtype"), Some("stdout"));

    client.tx.data(3, false, b"hello ").await;
    client.tx.data(3, false, b"world").await;
    client.tx.data(3, true, b"").await;
    assert_eq!(read_to_end(&mut stdin).await, b"hello world");

    stdout.write_all(b"output").await.expect("write");
    stdout.shutdown().await.expect("shutdown");
    assert_eq!(client.recv().await, data(5, false, b"output"));
    assert_eq!(client.recv().await, data(5, true, b""));

    error.shutdown().await.expect("shutdown");
    assert_eq!(client.recv().await, data(1, true, b""));
    // A second shutdown sends nothing more, and writing after it fails.
    error.shutdown().await.expect("shutdown");
    let err = error
        .write_all(b"late")
        .await
        .expect_err("write after shutdown");
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);

    client.send(Frame::Ping { id: 7 }).await;
    assert_eq!(client.recv().await, Frame::Ping { id: 7 });
}

#[tokio::test]
async fn accepts_streams_opened_with_go_frames() {
    let (mut conn, mut client) = setup();
    for vector in [
        go::SYN_STREAM_1,
        go::DATA_1,
        go::SYN_STREAM_3,
        go::DATA_1_FIN,
    ] {
        client.tx.raw(&hex(vector)).await;
    }
    let mut error = accept(&mut conn).await;
    let stdin = accept(&mut conn).await;
    assert_eq!(error.header("streamtype"), Some("error"));
    assert_eq!(stdin.header("streamtype"), Some("stdin"));
    assert_eq!(read_to_end(&mut error).await, b"hello");
    assert_eq!(client.recv().await, reply(1));
    assert_eq!(client.recv().await, reply(3));
}

#[tokio::test]
async fn syn_reply_precedes_data() {
    let (mut conn, mut client) = setup();
    client
        .send(syn_stream(1, false, &[("streamtype", "stdout")]))
        .await;
    let mut stream = accept(&mut conn).await;
    stream.write_all(b"x").await.expect("write");
    assert_eq!(client.recv().await, reply(1));
    assert_eq!(client.recv().await, data(1, false, b"x"));
}

#[tokio::test]
async fn pings_from_the_client_are_echoed_others_ignored() {
    let (_conn, mut client) = setup();
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.recv().await, Frame::Ping { id: 1 });
    // Even ids would be answers to our pings; SETTINGS and WINDOW_UPDATE
    // are ignored like spdystream ignores them.
    client.send(Frame::Ping { id: 2 }).await;
    client
        .send(Frame::Settings {
            clear_settings: false,
            settings: vec![crate::frame::Setting {
                flags: 0,
                id: crate::frame::Setting::INITIAL_WINDOW_SIZE,
                value: 1,
            }],
        })
        .await;
    client
        .send(Frame::WindowUpdate {
            stream_id: 1,
            delta_window_size: 5,
        })
        .await;
    client.send(Frame::Ping { id: 3 }).await;
    assert_eq!(client.recv().await, Frame::Ping { id: 3 });
}

#[tokio::test]
async fn peer_reset_ends_reads_and_fails_writes() {
    let (mut conn, mut client) = setup();
    client.open(1, "stdin").await;
    let mut stream = accept(&mut conn).await;
    client.tx.data(1, false, b"abc").await;
    client.send(rst(1, RstStatus::CANCEL)).await;
    assert_eq!(read_to_end(&mut stream).await, b"abc");
    assert!(stream.is_reset());
    let err = stream.write_all(b"x").await.expect_err("write after reset");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    // Dropping a reset stream sends no FIN.
    drop(stream);
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.recv().await, Frame::Ping { id: 1 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_reset_sends_rst_and_ends_reads() {
    let (mut conn, mut client) = setup();
    client.open(1, "data").await;
    let (mut recv, mut send) = accept(&mut conn).await.into_split();
    let reading = tokio::spawn(async move { read_to_end(&mut recv).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    send.reset(RstStatus::CANCEL);
    assert_eq!(client.recv().await, rst(1, RstStatus::CANCEL));
    assert_eq!(reading.await.expect("join"), b"");
    // Data the client had in flight is discarded.
    client.tx.data(1, false, b"late").await;
    drop(send);
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.recv().await, Frame::Ping { id: 1 });
}

#[tokio::test]
async fn dropping_the_send_half_sends_fin() {
    let (mut conn, mut client) = setup();
    client.open(1, "stdout").await;
    let (recv, mut send) = accept(&mut conn).await.into_split();
    send.write_all(b"bye").await.expect("write");
    drop(send);
    assert_eq!(client.recv().await, data(1, false, b"bye"));
    assert_eq!(client.recv().await, data(1, true, b""));
    drop(recv);
}

#[tokio::test]
async fn fin_on_syn_stream_means_nothing_to_read() {
    let (mut conn, mut client) = setup();
    client
        .send(syn_stream(1, true, &[("streamtype", "resize")]))
        .await;
    assert_eq!(client.recv().await, reply(1));
    let mut stream = accept(&mut conn).await;
    assert_eq!(read_to_end(&mut stream).await, b"");
    stream.write_all(b"still writable").await.expect("write");
    assert_eq!(client.recv().await, data(1, false, b"still writable"));
}

#[tokio::test]
async fn out_of_sequence_stream_ids_are_refused() {
    let (mut conn, mut client) = setup();
    client.send(syn_stream(2, false, &[])).await;
    assert_eq!(client.recv().await, rst(2, RstStatus::PROTOCOL_ERROR));
    client.open(5, "error").await;
    client.send(syn_stream(3, false, &[])).await;
    assert_eq!(client.recv().await, rst(3, RstStatus::PROTOCOL_ERROR));
    assert_eq!(accept(&mut conn).await.id(), 5);
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused() {
    let config = Config {
        max_streams: 1,
        ..Config::default()
    };
    let (mut conn, mut client) = setup_with(config, 64 * 1024);
    client.open(1, "data").await;
    client.send(syn_stream(3, false, &[])).await;
    assert_eq!(client.recv().await, rst(3, RstStatus::REFUSED_STREAM));
    // Once the first stream is finished by the client, there is room again.
    client.tx.data(1, true, b"").await;
    client.open(5, "data").await;
    assert_eq!(accept(&mut conn).await.id(), 1);
    assert_eq!(accept(&mut conn).await.id(), 5);
}

#[tokio::test]
async fn goaway_from_the_peer_ends_accept_but_not_streams() {
    let (mut conn, mut client) = setup();
    client.open(1, "data").await;
    client
        .send(Frame::GoAway {
            last_good_stream_id: 0,
            status: crate::frame::GoAwayStatus::OK,
        })
        .await;
    let mut stream = accept(&mut conn).await;
    assert!(
        timeout(WAIT, conn.accept())
            .await
            .expect("accept")
            .is_none()
    );
    client.send(syn_stream(3, false, &[])).await;
    assert_eq!(client.recv().await, rst(3, RstStatus::REFUSED_STREAM));
    client.tx.data(1, true, b"still here").await;
    assert_eq!(read_to_end(&mut stream).await, b"still here");
    stream.write_all(b"me too").await.expect("write");
    assert_eq!(client.recv().await, data(1, false, b"me too"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_sends_goaway_and_shuts_down() {
    let (mut conn, mut client) = setup();
    client.open(1, "error").await;
    client.open(3, "stdout").await;
    let mut error = accept(&mut conn).await;
    let _stdout = accept(&mut conn).await;
    timeout(WAIT, conn.close())
        .await
        .expect("close")
        .expect("close ok");
    assert!(conn.is_closed());
    assert_eq!(
        client.recv().await,
        Frame::GoAway {
            last_good_stream_id: 3,
            status: crate::frame::GoAwayStatus::OK,
        }
    );
    client.expect_eof().await;
    assert_eq!(read_to_end(&mut error).await, b"");
    let err = error.write_all(b"x").await.expect_err("write after close");
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    assert!(conn.accept().await.is_none());
    // Closing again is a no-op.
    conn.close().await.expect("second close");
}

#[tokio::test]
async fn dropping_the_connection_closes_it() {
    let (conn, mut client) = setup();
    drop(conn);
    assert_eq!(
        client.recv().await,
        Frame::GoAway {
            last_good_stream_id: 0,
            status: crate::frame::GoAwayStatus::OK,
        }
    );
    client.expect_eof().await;
}

#[tokio::test]
async fn protocol_errors_close_the_connection() {
    let (mut conn, mut client) = setup();
    client.open(1, "data").await;
    let mut stream = accept(&mut conn).await;
    // A SPDY/2 PING.
    client
        .tx
        .raw(&[0x80, 0x02, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])
        .await;
    assert_eq!(
        client.recv().await,
        Frame::GoAway {
            last_good_stream_id: 1,
            status: crate::frame::GoAwayStatus::PROTOCOL_ERROR,
        }
    );
    client.expect_eof().await;
    timeout(WAIT, conn.closed()).await.expect("closed");
    assert_eq!(read_to_end(&mut stream).await, b"");
    assert!(conn.accept().await.is_none());
}

#[tokio::test]
async fn peer_eof_closes_the_connection() {
    let (mut conn, mut client) = setup();
    client.open(1, "data").await;
    let mut stream = accept(&mut conn).await;
    client.tx.data(1, false, b"partial").await;
    client.tx.0.get_mut().shutdown().await.expect("shutdown");
    assert_eq!(read_to_end(&mut stream).await, b"partial");
    timeout(WAIT, conn.closed()).await.expect("closed");
    client.expect_eof().await;
}

#[tokio::test]
async fn writes_are_split_into_frames() {
    let config = Config {
        max_write_frame: 1000,
        ..Config::default()
    };
    let (mut conn, mut client) = setup_with(config, 64 * 1024);
    client.open(1, "stdout").await;
    let mut stream = accept(&mut conn).await;
    stream.write_all(&[7; 2500]).await.expect("write");
    for len in [1000, 1000, 500] {
        match client.recv().await {
            Frame::Data {
                stream_id: 1,
                fin: false,
                data,
            } => assert_eq!(data.len(), len),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_receive_buffer_stops_reading_the_socket() {
    let config = Config {
        stream_receive_buffer: 1024,
        ..Config::default()
    };
    let (mut conn, client) = setup_with(config, 4096);
    let Client { mut rx, mut tx } = client;
    tx.send(syn_stream(1, false, &[("streamtype", "stdin")]))
        .await;
    let mut stream = accept(&mut conn).await;

    // 64 KiB in 1 KiB frames cannot all be taken while nobody reads.
    let sending = tokio::spawn(async move {
        for _ in 0..64 {
            tx.data(1, false, &[1; 1024]).await;
        }
        tx.data(1, true, b"").await;
        tx
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!sending.is_finished(), "the client was never pushed back");

    // Other traffic is stuck behind it as well (spdystream behaves alike).
    let received = read_to_end(&mut stream).await;
    assert_eq!(received.len(), 64 * 1024);
    let mut tx = timeout(WAIT, sending).await.expect("sender").expect("join");
    tx.send(Frame::Ping { id: 9 }).await;
    let frames: Vec<Frame> = (&mut rx)
        .take(2)
        .map(|f| f.expect("decode"))
        .collect()
        .await;
    assert_eq!(frames, [reply(1), Frame::Ping { id: 9 }]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_buffer_makes_writers_wait() {
    let config = Config {
        write_buffer: 2048,
        max_write_frame: 1024,
        ..Config::default()
    };
    let (mut conn, client) = setup_with(config, 1024);
    let Client { mut rx, mut tx } = client;
    tx.send(syn_stream(1, false, &[("streamtype", "stdout")]))
        .await;
    let mut stream = accept(&mut conn).await;
    let writing = tokio::spawn(async move {
        stream.write_all(&[2; 32 * 1024]).await.expect("write");
        stream.shutdown().await.expect("shutdown");
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writing.is_finished(), "the writer was never pushed back");

    let mut total = 0;
    assert_eq!(rx.next().await.expect("frame").expect("decode"), reply(1));
    loop {
        match timeout(WAIT, rx.next())
            .await
            .expect("frame")
            .expect("eof")
            .expect("decode")
        {
            Frame::Data { fin: true, .. } => break,
            Frame::Data { data, .. } => total += data.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(total, 32 * 1024);
    timeout(WAIT, writing).await.expect("writer").expect("join");
}

#[tokio::test]
async fn dropped_receive_halves_do_not_block_the_connection() {
    let config = Config {
        stream_receive_buffer: 1024,
        ..Config::default()
    };
    let (mut conn, mut client) = setup_with(config, 64 * 1024);
    client.open(1, "stdin").await;
    client.open(3, "stdin").await;
    let (recv1, _send1) = accept(&mut conn).await.into_split();
    let mut stream3 = accept(&mut conn).await;
    drop(recv1);
    for _ in 0..16 {
        client.tx.data(1, false, &[0; 1024]).await;
    }
    client.tx.data(3, true, b"through").await;
    assert_eq!(read_to_end(&mut stream3).await, b"through");
}

#[tokio::test]
async fn close_gives_up_on_a_peer_that_does_not_read() {
    let config = Config {
        close_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let (mut conn, mut client) = setup_with(config, 1024);
    client.open(1, "stdout").await;
    let mut stream = accept(&mut conn).await;
    // Nobody reads on the client side from here on.
    let writing = tokio::spawn(async move { stream.write_all(&[0; 1 << 20]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = timeout(WAIT, conn.close())
        .await
        .expect("close returned")
        .expect_err("close cannot finish");
    assert!(matches!(err, Error::Io(e) if e.kind() == io::ErrorKind::TimedOut));
    assert!(conn.is_closed());
    let write = timeout(WAIT, writing)
        .await
        .expect("writer woke")
        .expect("join");
    assert_eq!(
        write.expect_err("write fails").kind(),
        io::ErrorKind::BrokenPipe
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_receive_buffer_bounds_all_streams_together() {
    // Each stream could take 64 KiB, but the connection only 2 KiB.
    let config = Config {
        stream_receive_buffer: 64 << 10,
        connection_receive_buffer: 2048,
        ..Config::default()
    };
    let (mut conn, client) = setup_with(config, 4096);
    let Client { rx, mut tx } = client;
    let mut streams = Vec::new();
    for id in [1, 3, 5, 7] {
        tx.send(syn_stream(id, false, &[("streamtype", "data")]))
            .await;
        streams.push(accept(&mut conn).await);
    }
    let sending = tokio::spawn(async move {
        for id in [1, 3, 5, 7] {
            for _ in 0..4 {
                tx.data(id, false, &[7; 1024]).await;
            }
            tx.data(id, true, b"").await;
        }
        tx
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !sending.is_finished(),
        "16 KiB went into a 2 KiB connection buffer"
    );
    for mut stream in streams {
        assert_eq!(read_to_end(&mut stream).await.len(), 4 * 1024);
    }
    let mut tx = timeout(WAIT, sending).await.expect("sender").expect("join");
    tx.send(Frame::Ping { id: 9 }).await;
    // Replies and the FINs of the dropped streams, then the echo.
    let mut client = Client { rx, tx };
    while client.recv().await != (Frame::Ping { id: 9 }) {}
}

#[tokio::test]
async fn streams_over_the_rate_are_refused() {
    let config = Config {
        stream_rate: Some(StreamRate {
            per_second: 2,
            burst: 3,
        }),
        ..Config::default()
    };
    let (mut conn, mut client) = setup_with(config, 64 * 1024);
    for id in [1, 3, 5] {
        client.open(id, "data").await;
    }
    client.send(syn_stream(7, false, &[])).await;
    assert_eq!(client.recv().await, rst(7, RstStatus::REFUSED_STREAM));
    // 0.6 s later one more token is there, and only one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.open(9, "data").await;
    client.send(syn_stream(11, false, &[])).await;
    assert_eq!(client.recv().await, rst(11, RstStatus::REFUSED_STREAM));
    for id in [1, 3, 5, 9] {
        assert_eq!(accept(&mut conn).await.id(), id);
    }
}
