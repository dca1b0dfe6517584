//! Echoes the request line, the request headers, the environment (sorted)
//! and the config file at `$CONFIG_FILE` (default `/config/app.conf`), as a
//! Pod would see them.

use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Echo;

impl wasi::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = match request.method() {
            Method::Get => "GET".to_string(),
            Method::Head => "HEAD".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            Method::Connect => "CONNECT".to_string(),
            Method::Options => "OPTIONS".to_string(),
            Method::Trace => "TRACE".to_string(),
            Method::Patch => "PATCH".to_string(),
            Method::Other(m) => m,
        };
        let path = request.path_with_query().unwrap_or_default();
        let mut text = format!("{method} {path}\n");
        // (wasi:http gives the `Host` header as the authority)
        if let Some(a) = request.authority() {
            text.push_str(&format!("authority {a}\n"));
        }
        let mut headers: Vec<(String, Vec<u8>)> = request.headers().entries();
        headers.sort();
        for (k, v) in headers {
            text.push_str(&format!("header {k}: {}\n", String::from_utf8_lossy(&v)));
        }
        let mut env: Vec<(String, String)> = std::env::vars().collect();
        env.sort();
        for (k, v) in env {
            text.push_str(&format!("env {k}={v}\n"));
        }
        let config = std::env::var("CONFIG_FILE").unwrap_or_else(|_| "/config/app.conf".into());
        match std::fs::read_to_string(&config) {
            Ok(c) => text.push_str(&format!("config {config}:\n{c}")),
            Err(e) => text.push_str(&format!("config {config}: {e}\n")),
        }
        eprintln!("echo-http: {method} {path}");
        let headers = Fields::from_list(&[
            ("content-type".to_string(), b"text/plain".to_vec()),
            (
                "content-length".to_string(),
                text.len().to_string().into_bytes(),
            ),
        ])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("stream is taken once");
        for chunk in text.as_bytes().chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .expect("writing the body");
        }
        drop(stream);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}

wasi::http::proxy::export!(Echo);
