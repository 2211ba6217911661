//! Just enough HTTP/1.1 for the simulator's single port: read one request head, tell a
//! WebSocket upgrade from a REST call, write a response, and hand an upgrade's bytes (head
//! included) to the WebSocket handshake.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The largest request head accepted.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Headers parsed at most.
const HEADERS_MAX: usize = 64;

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The query without `?`.
    pub query: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The raw bytes of the head, for replay into the WebSocket handshake.
    pub raw: Vec<u8>,
    /// Bytes read past the head (a pipelined request or early frames).
    pub rest: Vec<u8>,
}

impl Head {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request asks for a WebSocket upgrade.
    pub fn is_websocket(&self) -> bool {
        self.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    }
}

/// Reads one request head; `Ok(None)` on a clean end of stream before any byte.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
) -> io::Result<Option<Head>> {
    loop {
        if let Some(head) = parse(&buf)? {
            return Ok(Some(head));
        }
        if buf.len() >= HEAD_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a request head",
                ))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let status = request
        .parse(buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let httparse::Status::Complete(len) = status else {
        return Ok(None);
    };
    let target = request.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(Head {
        method: request.method.unwrap_or("GET").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: request
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        raw: buf[..len].to_vec(),
        rest: buf[len..].to_vec(),
    }))
}

/// Writes a complete response with a body.
pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    headers: &[(String, String)],
    body: &str,
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    ));
    out.push_str(body);
    stream.write_all(out.as_bytes()).await?;
    stream.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// A stream that first yields bytes already read (the request head) and then reads on.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, preceded by `prefix`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let start = self.at;
            buf.put_slice(&self.prefix[start..start + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The value of `key` in a query string, percent-decoded for the characters stream lists use.
pub fn query_value<'q>(query: &'q str, key: &str) -> Option<std::borrow::Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            if v.contains('%') {
                std::borrow::Cow::Owned(
                    v.replace("%2F", "/")
                        .replace("%2f", "/")
                        .replace("%40", "@"),
                )
            } else {
                std::borrow::Cow::Borrowed(v)
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heads_parse_in_pieces_and_keep_what_follows() {
        let text = b"GET /stream?streams=btcusdt@trade HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-MBX-APIKEY: k\r\n\r\nEXTRA";
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for chunk in text.chunks(7) {
                client.write_all(chunk).await.expect("write");
            }
            client
        });
        let head = read_head(&mut server, Vec::new())
            .await
            .expect("reads")
            .expect("a head");
        let _client = writer.await.expect("joined");
        assert_eq!(head.path, "/stream");
        assert_eq!(
            query_value(&head.query, "streams").as_deref(),
            Some("btcusdt@trade")
        );
        assert!(head.is_websocket());
        assert_eq!(head.header("x-mbx-apikey"), Some("k"));
        let mut rest = head.rest.clone();
        if rest.len() < 5 {
            let mut more = vec![0u8; 5 - rest.len()];
            server.read_exact(&mut more).await.expect("the rest");
            rest.extend(more);
        }
        assert_eq!(rest, b"EXTRA");
        let mut replay = Prefixed::new(head.raw.clone(), tokio::io::empty());
        let mut again = Vec::new();
        replay.read_to_end(&mut again).await.expect("replays");
        assert_eq!(again, head.raw);
    }

    #[test]
    fn percent_encoded_stream_lists_decode() {
        assert_eq!(
            query_value("a=1&streams=x%40trade%2Fy%40depth", "streams").as_deref(),
            Some("x@trade/y@depth")
        );
        assert_eq!(query_value("a=1", "streams"), None);
    }
}
