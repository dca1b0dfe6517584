//! The parts of RFC 6455 (WebSocket) that `kubectl exec` and `attach` need,
//! server side: the handshake's accept key, unmasked frames out, masked
//! frames in (fragmented messages joined, control frames as they come).
//!
//! On top of it, Kubernetes' channel protocols (`v4.channel.k8s.io`,
//! `v5.channel.k8s.io`): every binary message starts with its channel —
//! 0 stdin, 1 stdout, 2 stderr, 3 the final `Status`, 4 terminal resizes —
//! and, in v5, a message `[255, n]` from the client closes its channel n.

use base64::Engine as _;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::apiserver::{Body, full};

/// The channel protocols served, best first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// RFC 6455's key suffix.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` closes a channel.
pub const CLOSE: u8 = 255;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{WS_GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Checks a WebSocket handshake for `what` (exec, attach): an upgrade to
/// WebSocket with a key, offering a channel protocol we speak. Returns the
/// key and the protocol chosen, or why the request is refused.
pub fn handshake(headers: &http::HeaderMap, what: &str) -> Result<(String, &'static str), String> {
    let get = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let key = get(header::SEC_WEBSOCKET_KEY);
    if !get(header::UPGRADE).eq_ignore_ascii_case("websocket") || key.is_empty() {
        return Err(format!(
            "skiff serves {what} over WebSocket only (v5.channel.k8s.io, v4.channel.k8s.io); \
             SPDY is not supported: use kubectl 1.30 or newer"
        ));
    }
    let offered = get(header::SEC_WEBSOCKET_PROTOCOL);
    match choose_protocol(offered) {
        Some(p) => Ok((key.to_string(), p)),
        None => Err(format!(
            "none of the WebSocket subprotocols {offered:?} is served; skiff speaks {PROTOCOLS:?}"
        )),
    }
}

/// The channel protocol to answer a client offering `offered` (the
/// `Sec-WebSocket-Protocol` header), if we speak one of them.
pub fn choose_protocol(offered: &str) -> Option<&'static str> {
    let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
    PROTOCOLS.iter().copied().find(|p| offered.contains(p))
}

/// The `101 Switching Protocols` answer to a WebSocket handshake.
pub fn switching_protocols(key: &str, protocol: &str) -> Response<Body> {
    let mut resp = full(StatusCode::SWITCHING_PROTOCOLS, "", Bytes::new());
    let h = resp.headers_mut();
    h.remove(header::CONTENT_TYPE);
    h.insert(header::UPGRADE, "websocket".parse().expect("header"));
    h.insert(header::CONNECTION, "Upgrade".parse().expect("header"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        accept_key(key).parse().expect("base64 is a header value"),
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        protocol.parse().expect("header"),
    );
    resp
}

/// One unmasked server frame (FIN set).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= u16::MAX as usize => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// A binary message on one of the channels.
pub fn message(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    frame(OP_BINARY, &m)
}

/// A close frame with a status code (1000: normal).
pub fn close(code: u16) -> Vec<u8> {
    frame(OP_CLOSE, &code.to_be_bytes())
}

/// A message from the client: a whole data message (its fragments joined)
/// or a control frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub opcode: u8,
    pub data: Vec<u8>,
}

/// Reads client frames (which RFC 6455 requires to be masked) into
/// messages. A fragmented message in progress is kept across calls, since a
/// control frame may come between its fragments.
#[derive(Default)]
pub struct MessageReader {
    pending: Option<Message>,
}

impl MessageReader {
    /// The next message; `None` at the end of the stream between messages.
    /// A message larger than `max` is an error, as is an unmasked frame.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        max: usize,
    ) -> std::io::Result<Option<Message>> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        loop {
            let mut head = [0u8; 2];
            match r.read_exact(&mut head[..1]).await {
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::UnexpectedEof && self.pending.is_none() =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
            r.read_exact(&mut head[1..]).await?;
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            if head[1] & 0x80 == 0 {
                return Err(bad("a client frame is not masked"));
            }
            let len = match head[1] & 0x7f {
                126 => u64::from(r.read_u16().await?),
                127 => r.read_u64().await?,
                n => u64::from(n),
            };
            let mut mask = [0u8; 4];
            r.read_exact(&mut mask).await?;
            let have = self.pending.as_ref().map_or(0, |p| p.data.len());
            if len > (max.saturating_sub(have)) as u64 {
                return Err(bad("a message is larger than allowed"));
            }
            let mut data = vec![0u8; len as usize];
            r.read_exact(&mut data).await?;
            for (i, b) in data.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            if opcode >= OP_CLOSE {
                // Control frames are never fragmented and may come between
                // the fragments of a message.
                return Ok(Some(Message { opcode, data }));
            }
            match (&mut self.pending, opcode) {
                (None, OP_CONTINUATION) => return Err(bad("a continuation frame starts nothing")),
                (None, _) => self.pending = Some(Message { opcode, data }),
                (Some(p), OP_CONTINUATION) => p.data.extend(data),
                (Some(_), _) => return Err(bad("a new message inside a fragmented one")),
            }
            if fin {
                return Ok(self.pending.take());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as a browser or kubectl sends it.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn the_handshake_key_is_rfc_6455s() {
        // The example in RFC 6455, section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            choose_protocol("v4.channel.k8s.io, v5.channel.k8s.io"),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(
            choose_protocol("v4.channel.k8s.io"),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(choose_protocol("SPDY/3.1+portforward.k8s.io"), None);
    }

    #[test]
    fn frames_carry_their_length() {
        assert_eq!(frame(0x2, b"ab"), [0x82, 2, b'a', b'b']);
        let f = frame(0x2, &[0; 300]);
        assert_eq!(&f[..4], &[0x82, 126, 1, 44]);
        assert_eq!(f.len(), 304);
        let f = frame(0x2, &vec![0; 70_000]);
        assert_eq!(&f[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
        assert_eq!(message(STDERR, b"x"), [0x82, 2, 2, b'x']);
    }

    #[tokio::test]
    async fn client_messages_are_unmasked_and_joined() {
        let mut wire = client_frame(true, OP_BINARY, b"\x00hello");
        // A fragmented message with a ping between its fragments.
        wire.extend(client_frame(false, OP_BINARY, b"\x04{\"Width\":"));
        wire.extend(client_frame(true, OP_PING, b"p"));
        wire.extend(client_frame(true, OP_CONTINUATION, &[b'x'; 200]));
        wire.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let mut r = &wire[..];
        let mut reader = MessageReader::default();
        let m = reader.next(&mut r, 1 << 20).await.unwrap().unwrap();
        assert_eq!((m.opcode, &m.data[..]), (OP_BINARY, &b"\x00hello"[..]));
        let m = reader.next(&mut r, 1 << 20).await.unwrap().unwrap();
        assert_eq!((m.opcode, &m.data[..]), (OP_PING, &b"p"[..]));
        let m = reader.next(&mut r, 1 << 20).await.unwrap().unwrap();
        assert_eq!(m.opcode, OP_BINARY);
        assert_eq!(m.data.len(), 10 + 200);
        assert!(m.data.starts_with(b"\x04{\"Width\":x"));
        let m = reader.next(&mut r, 1 << 20).await.unwrap().unwrap();
        assert_eq!(m.opcode, OP_CLOSE);
        assert_eq!(reader.next(&mut r, 1 << 20).await.unwrap(), None);

        // Unmasked, oversized and truncated input is an error, not a panic.
        let mut unmasked = &frame(OP_BINARY, b"x")[..];
        assert!(
            MessageReader::default()
                .next(&mut unmasked, 100)
                .await
                .is_err()
        );
        let big = client_frame(true, OP_BINARY, &[0; 300]);
        assert!(
            MessageReader::default()
                .next(&mut &big[..], 100)
                .await
                .is_err()
        );
        let cut = client_frame(true, OP_BINARY, b"abcdef");
        assert!(
            MessageReader::default()
                .next(&mut &cut[..5], 100)
                .await
                .is_err()
        );
        let orphan = client_frame(true, OP_CONTINUATION, b"x");
        assert!(
            MessageReader::default()
                .next(&mut &orphan[..], 100)
                .await
                .is_err()
        );
    }
}
