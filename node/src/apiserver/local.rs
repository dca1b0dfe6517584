//! The in-process transport: the controllers, the scheduler and the agent of
//! `skiff server` reach the API server through [`skiff_sdk::client`] like any
//! client, but their requests go straight to its router, as a fixed user
//! (no TLS, no HTTP framing). Authorization, admission and validation are
//! the same as for a request over HTTPS.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use skiff_sdk::client::{self, Transport};

use super::auth::User;
use super::{ApiServer, Body};

pub struct LocalTransport {
    server: Arc<ApiServer>,
    user: User,
}

impl LocalTransport {
    pub fn new(server: Arc<ApiServer>, user: User) -> LocalTransport {
        LocalTransport { server, user }
    }
}

impl Transport for LocalTransport {
    fn send(
        &self,
        req: Request<Bytes>,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<Response<client::Body>, client::Error>> + Send + '_>,
    > {
        Box::pin(async move {
            let req = req.map(|b| {
                Full::new(b)
                    .map_err(|e: std::convert::Infallible| match e {})
                    .boxed()
            });
            let resp: Response<Body> = self.server.handle_local(req, &self.user).await;
            Ok(resp)
        })
    }
}

/// A client acting inside this process as `name` in `groups`.
pub fn client(server: &Arc<ApiServer>, name: &str, groups: &[&str]) -> client::Client {
    client::Client::new(LocalTransport::new(
        server.clone(),
        User {
            name: name.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        },
    ))
}
