//! The Capgo WebSocket upgrade: checks the handshake, takes a connection slot and a place
//! among the subject's streams, answers `101`, and starts the [`Session`] on the upgraded
//! connection with codec buffers sized for an idle reader.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming as IncomingBody;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use super::deflate::{self, Deflater};
use super::inflate_io::InflateIo;
use super::ws::Session;
use crate::app::App;
use crate::auth::{token_from_request, AuthError, JobClaims};
use crate::body::{empty, Body};
use crate::error::ApiError;
use crate::handlers;
use crate::job_id::JobId;

/// Client frames are small JSON objects; anything bigger is refused by the codec.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// The codec's read buffer, allocated up front per reader (tungstenite's default is
/// 128 KiB): client frames are heartbeats of a few dozen bytes, and a bigger one grows it.
/// Writes are not buffered (`write_buffer_size(0)`): each frame goes out as it is sent.
const READ_BUFFER: usize = 1024;

/// Answers an upgrade request to `{prefix}/{job}/stream` whose token was checked: `101`
/// now, the session once hyper hands over the connection.
pub(crate) async fn upgrade(
    app: &Arc<App>,
    id: &JobId,
    mut req: Request<IncomingBody>,
    claims: &JobClaims,
) -> Result<Response<Body>, ApiError> {
    if app.is_draining() {
        return Err(ApiError::Draining);
    }
    let accept = handshake_accept(req.headers())?;
    let token = token_from_request(req.headers(), req.uri().query()).ok_or(AuthError::Missing)?;
    // hyper lets go of the connection (and its slot) once it is upgraded: the session
    // holds a slot of its own, so WebSocket readers count in --max-connections.
    let slot = Arc::clone(&app.connection_slots)
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded)?;
    let subject = handlers::claim_stream(app, claims)?;
    let job = handlers::job(app, id).await?;
    let key = app.capgo.confirmations.key(id, job.life(), &token);
    let attached = handlers::attach_reader(app, &job, id)?;
    // permessage-deflate when the client offers it and compression is on.
    let agreed = app
        .capgo
        .compressors
        .as_ref()
        .and_then(|all| Some((deflate::negotiate(req.headers())?, all)));
    let extension = agreed.map(|(a, _)| a.response());
    let deflater = agreed.map(|(a, all)| Deflater::new(a, Arc::clone(all)));
    let inflate = deflater.is_some();
    let session = Session::new(app, attached, key, (slot, subject), deflater);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let span = tracing::info_span!("capgo_ws", job.id = %id);
    app.capgo.sessions.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let config = WebSocketConfig::default()
                        .read_buffer_size(READ_BUFFER)
                        .write_buffer_size(0)
                        .max_message_size(Some(MAX_CLIENT_MESSAGE))
                        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
                    let io = InflateIo::new(TokioIo::new(upgraded), inflate, MAX_CLIENT_MESSAGE);
                    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                    session.run(ws).await;
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        }
        .instrument(span),
    );

    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| ApiError::UpgradeRequired)?,
    );
    if let Some(extension) = extension.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, extension);
    }
    Ok(resp)
}

/// Checks the request is a WebSocket (version 13) upgrade; returns the accept key.
fn handshake_accept(headers: &HeaderMap) -> Result<String, ApiError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(ApiError::UpgradeRequired);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(ApiError::UpgradeRequired);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|v| v.as_bytes())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::BadRequest("Sec-WebSocket-Key is missing".into()))?;
    Ok(derive_accept_key(key))
}
