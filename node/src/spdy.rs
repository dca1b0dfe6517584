//! SPDY/3.1 framing, as much as `kubectl port-forward` needs: kubectl
//! 1.30+ tunnels a SPDY session inside WebSocket binary messages
//! (subprotocol `SPDY/3.1+portforward.k8s.io`); older clients, and kubectl
//! when WebSocket is refused, upgrade the HTTP/1.1 connection to SPDY
//! itself. Either way the server side reads the same frames.
//!
//! ```text
//! control: 1 | version 15 (3) | type 16 | flags 8 | length 24 | payload
//! data:    0 | stream id 31   | flags 8 | length 24 | bytes   (flag FIN = 1)
//! ```
//!
//! Header blocks (`count u32`, then `len u32 | name | len u32 | value`
//! pairs) are compressed with zlib and SPDY/3's preset dictionary, one
//! zlib stream per direction for the whole session, flushed at the end of
//! each frame. Ours are written as stored (uncompressed) deflate blocks,
//! each frame's ending in an empty one as a sync flush does: any inflater
//! reads them, and they hold a few bytes. Theirs are inflated
//! with the dictionary as history ([`HeaderInflater`]).
//!
//! Flow control (WINDOW_UPDATE) is read and ignored, as Kubernetes' own
//! SPDY implementation does.

use std::io;

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
use tokio::io::{AsyncRead, AsyncReadExt};

/// SPDY/3's header compression dictionary (draft 3, section 2.6.10.1).
pub const DICTIONARY: &[u8; 1423] = include_bytes!("spdy3.dict");

const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM and GOAWAY status codes.
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;

/// A frame read from the peer. Header blocks are left compressed: they
/// must be inflated in the order they arrived ([`HeaderInflater`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        block: Vec<u8>,
    },
    SynReply {
        id: u32,
        fin: bool,
        block: Vec<u8>,
    },
    Headers {
        id: u32,
        fin: bool,
        block: Vec<u8>,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Settings,
    Ping(u32),
    GoAway {
        last: u32,
        status: u32,
    },
    WindowUpdate {
        id: u32,
        delta: u32,
    },
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// A control frame type SPDY/3 does not define: to be ignored.
    Unknown(u16),
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn u32_at(b: &[u8], at: usize) -> io::Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| bad("a control frame is shorter than its type needs"))
}

/// Reads the next frame; `None` at the end of the stream between frames.
/// A frame longer than `max` is an error (the length field allows 16 MiB).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let flags = head[4];
    let fin = flags & FLAG_FIN != 0;
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > max {
        return Err(bad(format!("a frame of {len} bytes (at most {max} taken)")));
    }
    let mut p = vec![0u8; len];
    r.read_exact(&mut p).await?;
    if head[0] & 0x80 == 0 {
        let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        return Ok(Some(Frame::Data { id, fin, data: p }));
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(bad(format!(
            "SPDY version {version} (this server speaks 3)"
        )));
    }
    let stream = |p: &[u8]| u32_at(p, 0).map(|v| v & 0x7fff_ffff);
    let kind = u16::from_be_bytes([head[2], head[3]]);
    Ok(Some(match kind {
        SYN_STREAM => {
            let id = stream(&p)?;
            if p.len() < 10 {
                return Err(bad("a SYN_STREAM is shorter than 10 bytes"));
            }
            Frame::SynStream {
                id,
                fin,
                block: p[10..].to_vec(),
            }
        }
        SYN_REPLY | HEADERS => {
            let id = stream(&p)?;
            let block = p[4..].to_vec();
            if kind == SYN_REPLY {
                Frame::SynReply { id, fin, block }
            } else {
                Frame::Headers { id, fin, block }
            }
        }
        RST_STREAM => Frame::RstStream {
            id: stream(&p)?,
            status: u32_at(&p, 4)?,
        },
        SETTINGS => Frame::Settings,
        PING => Frame::Ping(u32_at(&p, 0)?),
        GOAWAY => Frame::GoAway {
            last: stream(&p)?,
            status: u32_at(&p, 4).unwrap_or(0),
        },
        WINDOW_UPDATE => Frame::WindowUpdate {
            id: stream(&p)?,
            delta: u32_at(&p, 4)? & 0x7fff_ffff,
        },
        other => Frame::Unknown(other),
    }))
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

/// A data frame (at most 16 MiB − 1 of `data`; callers send less).
pub fn data(id: u32, fin: bool, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    f.push(if fin { FLAG_FIN } else { 0 });
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

pub fn syn_reply(id: u32, fin: bool, block: &[u8]) -> Vec<u8> {
    let mut p = (id & 0x7fff_ffff).to_be_bytes().to_vec();
    p.extend_from_slice(block);
    control(SYN_REPLY, if fin { FLAG_FIN } else { 0 }, &p)
}

pub fn rst_stream(id: u32, status: u32) -> Vec<u8> {
    let mut p = (id & 0x7fff_ffff).to_be_bytes().to_vec();
    p.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &p)
}

pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

pub fn goaway(last: u32, status: u32) -> Vec<u8> {
    let mut p = (last & 0x7fff_ffff).to_be_bytes().to_vec();
    p.extend_from_slice(&status.to_be_bytes());
    control(GOAWAY, 0, &p)
}

/// An uncompressed header block.
pub fn encode_headers(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (headers.len() as u32).to_be_bytes().to_vec();
    for (n, v) in headers {
        for s in [n, v] {
            b.extend_from_slice(&(s.len() as u32).to_be_bytes());
            b.extend_from_slice(s.as_bytes());
        }
    }
    b
}

/// Reads an uncompressed header block; names are lowercase on the wire
/// (SPDY/3 requires it), values with several parts keep their NULs.
pub fn decode_headers(b: &[u8]) -> io::Result<Vec<(String, String)>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> io::Result<&[u8]> {
        let s = b
            .get(at..at + n)
            .ok_or_else(|| bad("a header block ends early"))?;
        at += n;
        Ok(s)
    };
    let len = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = len(take(4)?);
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = len(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).into_owned();
        let n = len(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        out.push((name, value));
    }
    Ok(out)
}

/// The writing side's header compression: one zlib stream for the
/// session, with SPDY's dictionary, of stored blocks.
#[derive(Default)]
pub struct HeaderDeflater {
    started: bool,
}

impl HeaderDeflater {
    /// The compressed form of `headers`, to put in one frame.
    pub fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let raw = encode_headers(headers);
        let mut out = Vec::with_capacity(raw.len() + 16);
        if !self.started {
            // CMF: deflate, 32 KiB window. FLG: FDICT, and FCHECK making
            // CMF·256 + FLG a multiple of 31.
            let cmf = 0x78u8;
            let flg = 0x20u8;
            let check = 31 - ((u16::from(cmf) << 8 | u16::from(flg)) % 31) as u8;
            out.extend_from_slice(&[cmf, flg | (check % 31)]);
            out.extend_from_slice(&adler32(DICTIONARY).to_be_bytes());
            self.started = true;
        }
        // Stored blocks, not final.
        for chunk in raw.chunks(u16::MAX as usize) {
            let n = chunk.len() as u16;
            out.push(0);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&(!n).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // An empty stored block, as a sync flush ends with: inflaters
        // (Go's) hand over what they hold only when they reach it, and
        // must not look past the frame for the next block.
        out.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
        out
    }
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    b << 16 | a
}

/// The reading side: the peer's zlib stream, inflated frame by frame with
/// the dictionary as the history it refers back to.
pub struct HeaderInflater {
    state: Box<DecompressorOxide>,
    /// Everything inflated so far (the last 32 KiB at least), after the
    /// dictionary: deflate's back references reach into it.
    window: Vec<u8>,
    /// The zlib header still to read (2 bytes, then 4 of dictionary id).
    header: Vec<u8>,
}

impl Default for HeaderInflater {
    fn default() -> Self {
        HeaderInflater {
            state: Box::default(),
            window: DICTIONARY.to_vec(),
            header: Vec::new(),
        }
    }
}

/// Deflate's largest back reference.
const WINDOW: usize = 32 * 1024;
/// The most a header block may inflate to.
const MAX_BLOCK: usize = 1 << 20;

impl HeaderInflater {
    /// Inflates one frame's header block and reads its pairs.
    pub fn block(&mut self, compressed: &[u8]) -> io::Result<Vec<(String, String)>> {
        let mut input = compressed;
        if self.header.len() < 6 {
            let need = 6 - self.header.len();
            let n = need.min(input.len());
            self.header.extend_from_slice(&input[..n]);
            input = &input[n..];
            if self.header.len() == 6 {
                let (cmf, flg) = (self.header[0], self.header[1]);
                if cmf & 0x0f != 8 || (u16::from(cmf) << 8 | u16::from(flg)) % 31 != 0 {
                    return Err(bad("the header block is not a zlib stream"));
                }
                let id = u32::from_be_bytes(self.header[2..6].try_into().expect("4 bytes"));
                if flg & 0x20 == 0 || id != adler32(DICTIONARY) {
                    return Err(bad("the header block does not use SPDY/3's dictionary"));
                }
            } else {
                return decode_headers(&[]);
            }
        }
        let start = self.window.len();
        let flags = inflate_flags::TINFL_FLAG_HAS_MORE_INPUT
            | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        loop {
            let pos = self.window.len();
            self.window.resize(pos + (input.len() * 4).max(4096), 0);
            let (status, used, wrote) =
                decompress(&mut self.state, input, &mut self.window, pos, flags);
            self.window.truncate(pos + wrote);
            input = &input[used..];
            match status {
                TINFLStatus::NeedsMoreInput if input.is_empty() => break,
                TINFLStatus::HasMoreOutput | TINFLStatus::NeedsMoreInput => {}
                TINFLStatus::Done => break,
                other => return Err(bad(format!("inflating a header block: {other:?}"))),
            }
            if self.window.len() - start > MAX_BLOCK {
                return Err(bad("a header block inflates to more than 1 MiB"));
            }
        }
        let headers = decode_headers(&self.window[start..]);
        // Keep what later references can reach.
        if self.window.len() > 4 * WINDOW {
            self.window.drain(..self.window.len() - WINDOW);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dictionary's id as SPDY/3 implementations know it.
    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options"));
    }

    /// Our header blocks read back through the inflater.
    #[test]
    fn header_blocks_round_trip() {
        let mut d = HeaderDeflater::default();
        let mut i = HeaderInflater::default();
        let a = [
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0"),
        ];
        let b = [("streamtype", "data"), ("port", "8080"), ("requestid", "0")];
        for hs in [&a[..], &b[..], &[][..]] {
            let got = i.block(&d.block(hs)).unwrap();
            let want: Vec<(String, String)> = hs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want);
        }
    }

    /// A peer's blocks as zlib itself compresses them (Python's zlib at
    /// level 9 with SPDY's dictionary and a sync flush per frame, as Go's
    /// SPDY writer does): the second refers back into the first.
    #[test]
    fn zlib_compressed_blocks_inflate_across_frames() {
        let hex = |h: &str| -> Vec<u8> {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        };
        let first = hex(
            "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff",
        );
        let second = hex("c2aa19540e2512d60b000000ffff");
        let mut i = HeaderInflater::default();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            i.block(&first).unwrap(),
            pairs(&[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", "0")
            ])
        );
        assert_eq!(
            i.block(&second).unwrap(),
            pairs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
        );
    }

    #[test]
    fn a_wrong_dictionary_or_garbage_is_an_error_not_a_panic() {
        let mut i = HeaderInflater::default();
        assert!(i.block(&[0x78, 0x9c, 1, 2, 3, 4]).is_err());
        let mut i = HeaderInflater::default();
        let mut block = HeaderDeflater::default().block(&[("a", "b")]);
        block[7] ^= 0xff; // the stored block's length no longer matches
        assert!(i.block(&block).is_err() || i.block(&[0xff; 8]).is_err());
        assert!(decode_headers(&[0, 0, 0, 2, 0, 0, 0, 9, b'x']).is_err());
    }

    #[tokio::test]
    async fn frames_read_back_as_written() {
        let mut wire = Vec::new();
        wire.extend(syn_reply(3, false, b"hdr"));
        wire.extend(data(3, true, b"payload"));
        wire.extend(ping(7));
        wire.extend(rst_stream(5, REFUSED_STREAM));
        wire.extend(goaway(9, 0));
        let mut r = &wire[..];
        let want = [
            Frame::SynReply {
                id: 3,
                fin: false,
                block: b"hdr".to_vec(),
            },
            Frame::Data {
                id: 3,
                fin: true,
                data: b"payload".to_vec(),
            },
            Frame::Ping(7),
            Frame::RstStream {
                id: 5,
                status: REFUSED_STREAM,
            },
            Frame::GoAway { last: 9, status: 0 },
        ];
        for w in want {
            assert_eq!(read_frame(&mut r, 1 << 20).await.unwrap().unwrap(), w);
        }
        assert!(read_frame(&mut r, 1 << 20).await.unwrap().is_none());
        // A frame over the limit, and SPDY/2, are refused.
        let big = data(1, false, &[0; 100]);
        assert!(read_frame(&mut &big[..], 10).await.is_err());
        let mut v2 = ping(1);
        v2[1] = 2;
        assert!(read_frame(&mut &v2[..], 100).await.is_err());
    }
}
