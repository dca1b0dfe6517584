//! `/loop` spins forever, `/bomb` allocates until it is stopped, `/trap`
//! traps, `/sleep?<ms>` answers after a pause; anything else answers `ok`.
//! For the runtime's containment tests.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Misbehave;

fn respond(out: ResponseOutparam, text: &str) {
    let headers = Fields::from_list(&[(
        "content-length".to_string(),
        text.len().to_string().into_bytes(),
    )])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("stream is taken once");
    stream
        .blocking_write_and_flush(text.as_bytes())
        .expect("writing the body");
    drop(stream);
    OutgoingBody::finish(body, None).expect("finishing the body");
}

impl wasi::exports::http::incoming_handler::Guest for Misbehave {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (path, query) = path.split_once('?').unwrap_or((&path, ""));
        match path {
            "/loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "/bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "/trap" => panic!("misbehave-http asked to trap"),
            "/sleep" => {
                let ms: u64 = query.parse().unwrap_or(100);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                respond(out, &format!("slept {ms} ms\n"));
            }
            _ => respond(out, "ok\n"),
        }
    }
}

wasi::http::proxy::export!(Misbehave);
