//! A small HTTP/1.1 listener in front of one HTTP-handler container, for
//! tests, the benchmark and development. In a node the service proxy calls
//! [`WasmRuntime::handle_request`] itself.

use skiff_sdk::runtime::ContainerId;
use tokio::net::TcpListener;
use wasmtime_wasi_http::io::TokioIo;

use crate::WasmRuntime;

/// Accepts connections on `listener` and hands every request to the
/// container `id` until the returned future is dropped.
pub async fn serve(
    runtime: WasmRuntime,
    id: ContainerId,
    listener: TcpListener,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let runtime = runtime.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let runtime = runtime.clone();
                let id = id.clone();
                async move {
                    match runtime.handle_request(&id, req).await {
                        Ok(resp) => Ok::<_, std::convert::Infallible>(resp),
                        Err(e) => Ok(crate::runtime::text_response(404, format!("{e}\n"))),
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
