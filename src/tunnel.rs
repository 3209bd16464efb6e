//! One HTTP/2 stream as a byte stream: how the agent's tunnel carries connections.
//!
//! The tunnel is one TLS connection the agent dialled, over which the gateway is the HTTP/2
//! client (`h2`, the implementation under hyper). Each stream the gateway opens becomes a
//! [`Stream`], an `AsyncRead + AsyncWrite` that the relay engine uses like a TCP connection:
//! HTTP/1.1 runs on it, so short calls, watches and upgrades (exec, attach, port-forward over
//! WebSocket or SPDY) cross unchanged, spliced byte for byte. HTTP/2 gives the rest: per-stream
//! flow control (a slow watch reader holds back only its stream), PING for keepalive and round
//! trips, GOAWAY for a clean drain.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-stream receive window: what one stream may have in flight, unread, on either side (a
/// large list keeps moving over a long round trip; a reader that stops holds only this much).
pub const STREAM_WINDOW: u32 = 512 << 10;
/// The tunnel's receive window across all its streams: as large as HTTP/2 allows, so that
/// streams whose readers stopped never use up the connection's window and stall the others;
/// what is held is bounded per stream (`STREAM_WINDOW` × `MAX_STREAMS`).
pub const CONNECTION_WINDOW: u32 = (1 << 31) - 1;
/// Streams open at once on one tunnel: kept-alive connections and upgrades (exec,
/// port-forward); watches share one stream.
pub const MAX_STREAMS: u32 = 4096;
/// Largest header block accepted on the tunnel, either way.
pub const MAX_HEADER_LIST: u32 = 64 << 10;
/// How long the gateway waits for the agent to accept a stream it opened.
pub const ACCEPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest write sent as one DATA frame batch.
const MAX_CHUNK: usize = 64 << 10;

/// An HTTP/2 stream read and written as bytes.
pub struct Stream {
    send: SendStream<Bytes>,
    recv: Recv,
    buf: Bytes,
    /// Released when the stream is dropped (the gateway counts open streams with it).
    _guard: Option<Box<dyn Send + Sync>>,
}

enum Recv {
    /// The gateway's side: the agent's answer is awaited on the first read, not before the
    /// first write, so a request goes out without waiting a round trip; for at most
    /// `ACCEPT_TIMEOUT` (an agent that never accepts, or a stream queued behind its limit).
    Waiting(h2::client::ResponseFuture, Pin<Box<tokio::time::Sleep>>),
    Open(RecvStream),
    Failed(Option<io::Error>),
}

impl Stream {
    /// The agent's side of a stream it accepted (and answered `200`).
    pub fn accepted(send: SendStream<Bytes>, recv: RecvStream) -> Stream {
        Stream {
            send,
            recv: Recv::Open(recv),
            buf: Bytes::new(),
            _guard: None,
        }
    }

    /// The gateway's side of a stream it opened: the answer comes with the first read.
    pub fn opened(
        send: SendStream<Bytes>,
        response: h2::client::ResponseFuture,
        guard: Option<Box<dyn Send + Sync>>,
    ) -> Stream {
        Stream {
            send,
            recv: Recv::Waiting(response, Box::pin(tokio::time::sleep(ACCEPT_TIMEOUT))),
            buf: Bytes::new(),
            _guard: guard,
        }
    }
}

fn io_error(err: h2::Error) -> io::Error {
    if err.is_io() {
        return err
            .into_io()
            .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into());
    }
    io::Error::new(io::ErrorKind::BrokenPipe, err)
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.buf.is_empty() {
            let recv = match &mut this.recv {
                Recv::Waiting(response, deadline) => {
                    let answer = match Pin::new(response).poll(cx) {
                        Poll::Ready(answer) => answer,
                        Poll::Pending => {
                            ready!(deadline.as_mut().poll(cx));
                            this.recv = Recv::Failed(Some(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!(
                                    "the agent did not accept the stream within {}s",
                                    ACCEPT_TIMEOUT.as_secs()
                                ),
                            )));
                            continue;
                        }
                    };
                    let next = match answer {
                        Ok(resp) if resp.status() == http::StatusCode::OK => {
                            Recv::Open(resp.into_body())
                        }
                        Ok(resp) => Recv::Failed(Some(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            format!("the agent refused the stream ({})", resp.status()),
                        ))),
                        Err(err) => Recv::Failed(Some(io_error(err))),
                    };
                    this.recv = next;
                    continue;
                }
                Recv::Failed(err) => {
                    return Poll::Ready(Err(err
                        .take()
                        .unwrap_or_else(|| io::ErrorKind::BrokenPipe.into())))
                }
                Recv::Open(recv) => recv,
            };
            match ready!(recv.poll_data(cx)) {
                // The other side ended the stream: end of file.
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => this.buf = data,
                Some(Err(err)) => {
                    return Poll::Ready(match err.reason() {
                        Some(h2::Reason::NO_ERROR) | Some(h2::Reason::CANCEL) => Ok(()),
                        _ => Err(io_error(err)),
                    })
                }
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        if let Recv::Open(recv) = &mut this.recv {
            let _ = recv.flow_control().release_capacity(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let send = &mut self.send;
        send.reserve_capacity(buf.len().min(MAX_CHUNK));
        loop {
            let capacity = send.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                send.send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(io_error)?;
                return Poll::Ready(Ok(n));
            }
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Poll::Ready(Err(io_error(err))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes frames as they are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // End of stream in our direction; an already ended or reset stream has nothing to end.
        let _ = self.send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

/// The gateway's side of a tunnel: the HTTP/2 client, which accepts no stream from the agent
/// (no server push) and bounds what each stream may hold.
pub fn client_builder() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .enable_push(false)
        .max_concurrent_streams(0)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_concurrent_reset_streams(1024);
    builder
}

/// The agent's side of a tunnel: the HTTP/2 server.
pub fn server_builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST);
    builder
}

/// Opens a byte stream on the tunnel behind `sender` (the gateway's side).
pub async fn open(
    sender: &h2::client::SendRequest<Bytes>,
    guard: Option<Box<dyn Send + Sync>>,
) -> Result<Stream, h2::Error> {
    let mut sender = sender.clone().ready().await?;
    let req = http::Request::post(crate::agent::protocol::STREAM_PATH)
        .body(())
        .expect("a constant request");
    let (response, send) = sender.send_request(req, false)?;
    Ok(Stream::opened(send, response, guard))
}

/// Sends a request with a small body on the tunnel and reads the whole answer (at most
/// `limit` bytes): the gateway's hello and certificate requests.
pub async fn call(
    sender: &h2::client::SendRequest<Bytes>,
    method: http::Method,
    path: &str,
    body: Bytes,
    limit: usize,
) -> Result<(http::StatusCode, Bytes), String> {
    let mut sender = sender
        .clone()
        .ready()
        .await
        .map_err(|e| format!("the tunnel is closed: {e}"))?;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .map_err(|e| e.to_string())?;
    let empty = body.is_empty();
    let (response, mut send) = sender
        .send_request(req, empty)
        .map_err(|e| format!("the tunnel is closed: {e}"))?;
    if !empty {
        send.send_data(body, true)
            .map_err(|e| format!("the tunnel is closed: {e}"))?;
    }
    let resp = response
        .await
        .map_err(|e| format!("no answer on the tunnel: {e}"))?;
    let status = resp.status();
    let body = read_all(resp.into_body(), limit).await?;
    Ok((status, body))
}

/// Reads a stream's body to its end, refusing more than `limit` bytes.
pub async fn read_all(mut recv: RecvStream, limit: usize) -> Result<Bytes, String> {
    let mut out = Vec::new();
    while let Some(data) = recv.data().await {
        let data = data.map_err(|e| format!("the body was cut: {e}"))?;
        let _ = recv.flow_control().release_capacity(data.len());
        if out.len() + data.len() > limit {
            return Err(format!("the body is larger than {limit} bytes"));
        }
        out.extend_from_slice(&data);
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client and a server over an in-memory pipe: bytes both ways, larger than the windows
    /// (flow control released as read), end of stream both ways, and many streams at once.
    #[tokio::test]
    async fn streams_carry_bytes_both_ways_with_flow_control() {
        let (a, b) = tokio::io::duplex(64 << 10);
        let server = tokio::spawn(async move {
            let mut conn = server_builder().handshake::<_, Bytes>(b).await.unwrap();
            while let Some(accepted) = conn.accept().await {
                let (req, mut respond) = accepted.unwrap();
                let send = respond
                    .send_response(http::Response::new(()), false)
                    .unwrap();
                let mut stream = Stream::accepted(send, req.into_body());
                // Echo everything back, then end.
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    stream.read_to_end(&mut data).await.unwrap();
                    stream.write_all(&data).await.unwrap();
                    stream.shutdown().await.unwrap();
                });
            }
        });
        let (sender, conn) = client_builder().handshake::<_, Bytes>(a).await.unwrap();
        tokio::spawn(conn);
        let mut tasks = Vec::new();
        for i in 0..20u8 {
            let sender = sender.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = open(&sender, None).await.unwrap();
                let sent: Vec<u8> = (0..3_000_000u32).map(|n| (n as u8) ^ i).collect();
                let (mut r, mut w) = tokio::io::split(&mut stream);
                let write = async {
                    w.write_all(&sent).await.unwrap();
                    w.shutdown().await.unwrap();
                };
                let mut got = Vec::new();
                let read = r.read_to_end(&mut got);
                let (_, n) = tokio::join!(write, read);
                n.unwrap();
                assert_eq!(got.len(), sent.len());
                assert!(got == sent, "stream {i} came back changed");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        drop(sender);
        server.abort();
    }

    /// Streams whose readers stopped (a stalled `exec`, a client that stopped reading a large
    /// list) hold at most their own window: many of them never stall a stream opened after.
    #[tokio::test]
    async fn stalled_streams_do_not_stall_the_others() {
        let (a, b) = tokio::io::duplex(256 << 10);
        let stalled = 48usize;
        let server = tokio::spawn(async move {
            let mut conn = server_builder().handshake::<_, Bytes>(b).await.unwrap();
            let mut n = 0;
            while let Some(accepted) = conn.accept().await {
                let (req, mut respond) = accepted.unwrap();
                let send = respond
                    .send_response(http::Response::new(()), false)
                    .unwrap();
                let mut stream = Stream::accepted(send, req.into_body());
                n += 1;
                if n <= stalled {
                    // More than its window: the reader never takes it.
                    tokio::spawn(async move {
                        let _ = stream.write_all(&vec![7u8; 2 << 20]).await;
                    });
                } else {
                    tokio::spawn(async move {
                        let mut line = vec![0u8; 5];
                        stream.read_exact(&mut line).await.unwrap();
                        stream.write_all(&line).await.unwrap();
                        stream.shutdown().await.unwrap();
                    });
                }
            }
        });
        let (sender, conn) = client_builder().handshake::<_, Bytes>(a).await.unwrap();
        tokio::spawn(conn);
        let mut held = Vec::new();
        for i in 0..stalled {
            let mut stream = open(&sender, None).await.unwrap();
            // One byte read: the stream is open and its data is arriving.
            let mut first = [0u8; 1];
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stream.read_exact(&mut first),
            )
            .await
            .unwrap_or_else(|_| panic!("stream {i} got nothing: the ones before stalled it"))
            .unwrap();
            held.push(stream);
        }
        // 48 × 512 KiB unread is far past a 16 MiB connection window: the next stream still
        // answers at once.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut stream = open(&sender, None).await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut back),
        )
        .await
        .expect("a stream opened after the stalled ones was stalled too")
        .unwrap();
        assert_eq!(back, b"hello");
        drop(held);
        server.abort();
    }

    /// A stream the agent never accepts fails after `ACCEPT_TIMEOUT` instead of hanging.
    #[tokio::test(start_paused = true)]
    async fn a_stream_never_accepted_fails_in_time() {
        let (a, b) = tokio::io::duplex(64 << 10);
        // A server that accepts the connection but answers no stream.
        let server = tokio::spawn(async move {
            let mut conn = server_builder().handshake::<_, Bytes>(b).await.unwrap();
            let mut pending = Vec::new();
            while let Some(accepted) = conn.accept().await {
                pending.push(accepted);
            }
        });
        let (sender, conn) = client_builder().handshake::<_, Bytes>(a).await.unwrap();
        tokio::spawn(conn);
        let mut stream = open(&sender, None).await.unwrap();
        let mut buf = [0u8; 1];
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        server.abort();
    }
}
