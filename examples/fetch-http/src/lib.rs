//! Fetches the `http://` URL in its query (`GET /?url=http://hello/path`)
//! with an outgoing wasi:http request and answers with what came back:
//! `status N` and the body, or a 502 saying why the fetch failed. It shows
//! a wasm pod calling another Service by its cluster DNS name.

use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

struct Fetch;

/// One GET of `url`: (status, body).
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are fetched"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http))
        .map_err(|()| "scheme refused".to_string())?;
    req.set_authority(Some(authority))
        .map_err(|()| format!("authority {authority:?} refused"))?;
    req.set_path_with_query(Some(path))
        .map_err(|()| format!("path {path:?} refused"))?;
    let pending = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let resp = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "the response was taken")?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp.consume().map_err(|()| "no body")?;
    let stream = body.stream().map_err(|()| "no body stream")?;
    let mut out = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        out.extend(chunk);
    }
    Ok((status, out))
}

impl wasi::exports::http::incoming_handler::Guest for Fetch {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let url = query
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|p| p.strip_prefix("url=")))
            .unwrap_or("");
        let (status, body) = match fetch(url) {
            Ok((status, body)) => {
                let mut text = format!("status {status}\n").into_bytes();
                text.extend(body);
                (200, text)
            }
            Err(e) => (502, format!("fetch failed: {e}\n").into_bytes()),
        };
        let headers = Fields::from_list(&[
            ("content-type".to_string(), b"text/plain".to_vec()),
            (
                "content-length".to_string(),
                body.len().to_string().into_bytes(),
            ),
        ])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(status).expect("a valid status");
        let out_body = response.body().expect("body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = out_body.write().expect("stream is taken once");
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .expect("writing the body");
        }
        drop(stream);
        OutgoingBody::finish(out_body, None).expect("finishing the body");
    }
}

wasi::http::proxy::export!(Fetch);
