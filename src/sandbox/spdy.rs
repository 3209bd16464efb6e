//! SPDY/3.1, the server side of what kubectl speaks for exec, attach and port-forward when
//! WebSocket is refused or turned off (`KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`,
//! `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`), and what its port-forward tunnels inside WebSocket
//! since 1.31 (`SPDY/3.1+portforward.k8s.io`).
//!
//! Only what those clients use: SYN_STREAM/SYN_REPLY with zlib-compressed header blocks (one
//! compression context per direction, primed with the protocol's dictionary), DATA with FIN,
//! PING, and the frames that can be ignored (SETTINGS, WINDOW_UPDATE, RST_STREAM, GOAWAY).

use std::collections::HashMap;
use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 1;

/// The SPDY/3 header compression dictionary (draft 3, §2.6.10.1): length-prefixed header names
/// and common values, then a run of status codes, reason phrases, dates and content types.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
            "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
            "charset=iso-8859-1,utf-,*,enq=0."
        );
        let mut dict = Vec::new();
        for word in WORDS {
            dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
            dict.extend_from_slice(word.as_bytes());
        }
        dict.extend_from_slice(TAIL.as_bytes());
        dict
    })
}

/// One frame as read from the connection.
#[derive(Debug)]
pub enum Frame {
    /// A stream the client opened, with its headers.
    SynStream {
        id: u32,
        headers: HashMap<String, String>,
        fin: bool,
    },
    Data {
        id: u32,
        data: Vec<u8>,
        fin: bool,
    },
    Ping(u32),
    GoAway,
    /// Frames that change nothing here (SETTINGS, WINDOW_UPDATE, RST_STREAM, HEADERS).
    Other,
}

/// A SPDY/3.1 connection's framing and header compression.
pub struct Conn<S> {
    io: S,
    inflate: Decompress,
    deflate: Compress,
    deflate_primed: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(io: S) -> Conn<S> {
        Conn {
            io,
            inflate: Decompress::new(true),
            deflate: Compress::new(Compression::default(), true),
            deflate_primed: false,
        }
    }

    /// The next frame, or None when the client closed the connection.
    pub async fn read(&mut self) -> std::io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match self.io.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            return Ok(Some(Frame::Data {
                id,
                data: payload,
                fin: flags & FLAG_FIN != 0,
            }));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let word = |at: usize| {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                .ok_or_else(|| bad("short control frame"))
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                let id = word(0)?;
                let block = payload.get(10..).ok_or_else(|| bad("short SYN_STREAM"))?;
                let headers = self.inflate_headers(block)?;
                Frame::SynStream {
                    id,
                    headers,
                    fin: flags & FLAG_FIN != 0,
                }
            }
            PING => Frame::Ping(word(0)?),
            GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        }))
    }

    fn inflate_headers(&mut self, block: &[u8]) -> std::io::Result<HashMap<String, String>> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            out.reserve(1024);
            let before_in = self.inflate.total_in();
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            match result {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| bad(&format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(bad(&format!("header block: {e}"))),
            }
        }
        parse_header_block(&out).ok_or_else(|| bad("malformed header block"))
    }

    fn deflate_headers(&mut self, headers: &[(&str, &str)]) -> std::io::Result<Vec<u8>> {
        let mut block = Vec::new();
        block.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for part in [name, value] {
                block.extend_from_slice(&(part.len() as u32).to_be_bytes());
                block.extend_from_slice(part.as_bytes());
            }
        }
        if !self.deflate_primed {
            self.deflate
                .set_dictionary(dictionary())
                .map_err(|e| bad(&format!("header dictionary: {e}")))?;
            self.deflate_primed = true;
        }
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = &block[..];
        loop {
            out.reserve(256);
            let before_in = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| bad(&format!("header compression: {e}")))?;
            let used = (self.deflate.total_in() - before_in) as usize;
            input = &input[used..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    pub async fn syn_reply(&mut self, id: u32, headers: &[(&str, &str)]) -> std::io::Result<()> {
        let block = self.deflate_headers(headers)?;
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&block);
        self.control(SYN_REPLY, 0, &payload).await
    }

    pub async fn ping(&mut self, id: u32) -> std::io::Result<()> {
        self.control(PING, 0, &id.to_be_bytes()).await
    }

    async fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = vec![0x80, 3];
        frame.extend_from_slice(&kind.to_be_bytes());
        frame.push(flags);
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(payload);
        self.io.write_all(&frame).await?;
        self.io.flush().await
    }

    /// Sends `data` on stream `id` (in frames of at most 64 KiB), with FIN when `fin`.
    pub async fn data(&mut self, id: u32, data: &[u8], fin: bool) -> std::io::Result<()> {
        let mut chunks: Vec<&[u8]> = data.chunks(64 * 1024).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut frame = (id & 0x7fff_ffff).to_be_bytes().to_vec();
            frame.push(if fin && i == last { FLAG_FIN } else { 0 });
            frame.extend_from_slice(&(chunk.len() as u32).to_be_bytes()[1..]);
            frame.extend_from_slice(chunk);
            self.io.write_all(&frame).await?;
        }
        self.io.flush().await
    }

    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("spdy: {msg}"))
}

/// `u32 count, (u32 len, name, u32 len, value)*`; several values of one name are NUL-separated.
fn parse_header_block(block: &[u8]) -> Option<HashMap<String, String>> {
    let mut at = 4;
    let mut word = || -> Option<&[u8]> {
        let len = u32::from_be_bytes(block.get(at..at + 4)?.try_into().ok()?) as usize;
        let value = block.get(at + 4..at + 4 + len)?;
        at += 4 + len;
        Some(value)
    };
    let count = u32::from_be_bytes(block.get(..4)?.try_into().ok()?) as usize;
    let mut headers = HashMap::new();
    for _ in 0..count {
        let name = String::from_utf8_lossy(word()?).to_lowercase();
        let value = String::from_utf8_lossy(word()?).into_owned();
        headers.insert(name, value);
    }
    Some(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_has_the_specified_length() {
        assert_eq!(dictionary().len(), 1423);
        assert!(dictionary().ends_with(b"enq=0."));
    }

    #[tokio::test]
    async fn header_blocks_round_trip_through_two_connections() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut server = Conn::new(a);
        let mut client = Conn::new(b);
        for i in 1..=3u32 {
            server
                .syn_reply(i, &[("streamtype", "stdout"), ("n", &i.to_string())])
                .await
                .unwrap();
        }
        // The peer's reader sees SYN_REPLY as Other; decode by hand with its inflater.
        for i in 1..=3u32 {
            let mut head = [0u8; 8];
            client.io.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
            let mut payload = vec![0u8; len];
            client.io.read_exact(&mut payload).await.unwrap();
            let headers = client.inflate_headers(&payload[4..]).unwrap();
            assert_eq!(headers["streamtype"], "stdout");
            assert_eq!(headers["n"], i.to_string());
        }
    }
}
