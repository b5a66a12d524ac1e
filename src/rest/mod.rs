//! The HTTP API of `popfault api`: Toxiproxy 2.x's REST paths, shapes,
//! status codes and error bodies (`{"error": "...", "status": N}`), and
//! popfault's own (profile, sessions, summary, events, metrics). Every
//! handler is a call on the [`Fleet`]; none waits for a session.
//! docs/API.md documents each endpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::Stream;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, FleetError, Line, ProxySpec, ProxyUpdate, ToxicSpec, ToxicUpdate};

/// The Toxiproxy API version popfault speaks, with its own as build
/// metadata (semver: it compares as the former).
pub const VERSION: &str = concat!("2.12.0+popfault.", env!("CARGO_PKG_VERSION"));

/// An error as Toxiproxy writes it.
struct ApiError(FleetError);

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> ApiError {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let mut body = json!({ "error": self.0.to_string(), "status": status });
        // popfault's own fields beside Toxiproxy's: where a profile failed.
        if let FleetError::Profile { error, toml } = &self.0 {
            body["field"] = json!(error.field);
            body["line"] = json!(error.line);
            body["column"] = json!(error.column);
            body["fix"] = json!(error.fix);
            body["toml"] = json!(toml);
        }
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body, or 400 `bad request body: …`.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError(FleetError::BadRequest(format!("bad request body: {e}"))))
}

/// A JSON body that may be empty (then `T::default()`).
fn body_or_default<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) { Ok(T::default()) } else { body(bytes) }
}

fn ok<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    (status, axum::Json(v)).into_response()
}

/// The API's routes over `fleet`.
pub fn router(fleet: Fleet) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/reset", post(reset))
        .route("/proxies", get(proxies).post(create))
        .route("/populate", post(populate))
        .route("/proxies/{proxy}", get(show).post(update).patch(update).delete(delete))
        .route("/proxies/{proxy}/toxics", get(toxics).post(add_toxic))
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(show_toxic).post(update_toxic).patch(update_toxic).delete(remove_toxic),
        )
        .route("/proxies/{proxy}/profile", get(profile).put(set_profile))
        .route("/proxies/{proxy}/sessions", get(sessions))
        .route("/proxies/{proxy}/sessions/{session}/cut", post(cut))
        .route("/proxies/{proxy}/summary", get(summary))
        .route("/proxies/{proxy}/summary/reset", post(reset_summary))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(FleetError::NotFound("not found")) })
        .method_not_allowed_fallback(|| async {
            let body = json!({ "error": "method not allowed", "status": 405 });
            (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body))
        })
        .with_state(fleet)
}

async fn version() -> Response {
    let mut r = format!("{{\"version\": \"{VERSION}\"}}\n").into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=utf-8"));
    r
}

async fn reset(State(f): State<Fleet>) -> ApiResult<StatusCode> {
    f.reset().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn proxies(State(f): State<Fleet>) -> Response {
    ok(StatusCode::OK, &f.list().await)
}

async fn create(State(f): State<Fleet>, b: Bytes) -> ApiResult<Response> {
    let spec: ProxySpec = body(&b)?;
    Ok(ok(StatusCode::CREATED, &f.create(spec).await?))
}

async fn populate(State(f): State<Fleet>, b: Bytes) -> ApiResult<Response> {
    let specs: Vec<ProxySpec> = body(&b)?;
    // Structs, not `json!`: fields in Toxiproxy's order.
    #[derive(serde::Serialize)]
    struct Populated<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        proxies: &'a [crate::fleet::ProxyInfo],
    }
    Ok(match f.populate(specs).await {
        Ok(done) => ok(StatusCode::CREATED, &Populated { error: None, status: None, proxies: &done }),
        Err((e, done)) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            ok(status, &Populated { error: Some(e.to_string()), status: Some(e.status()), proxies: &done })
        }
    })
}

async fn show(State(f): State<Fleet>, Path(p): Path<String>) -> ApiResult<Response> {
    Ok(ok(StatusCode::OK, &f.get(&p).await?))
}

async fn update(State(f): State<Fleet>, Path(p): Path<String>, b: Bytes) -> ApiResult<Response> {
    // Unknown proxy before a bad body, as Toxiproxy checks them.
    f.get(&p).await?;
    let u: ProxyUpdate = body_or_default(&b)?;
    Ok(ok(StatusCode::OK, &f.update(&p, u).await?))
}

async fn delete(State(f): State<Fleet>, Path(p): Path<String>) -> ApiResult<StatusCode> {
    f.delete(&p).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn toxics(State(f): State<Fleet>, Path(p): Path<String>) -> ApiResult<Response> {
    Ok(ok(StatusCode::OK, &f.toxics(&p).await?))
}

async fn add_toxic(State(f): State<Fleet>, Path(p): Path<String>, b: Bytes) -> ApiResult<Response> {
    f.get(&p).await?;
    let spec: ToxicSpec = body(&b)?;
    Ok(ok(StatusCode::OK, &f.add_toxic(&p, spec).await?))
}

async fn show_toxic(State(f): State<Fleet>, Path((p, t)): Path<(String, String)>) -> ApiResult<Response> {
    Ok(ok(StatusCode::OK, &f.toxic(&p, &t).await?))
}

async fn update_toxic(State(f): State<Fleet>, Path((p, t)): Path<(String, String)>, b: Bytes) -> ApiResult<Response> {
    f.toxic(&p, &t).await?;
    let u: ToxicUpdate = body_or_default(&b)?;
    Ok(ok(StatusCode::OK, &f.update_toxic(&p, &t, u).await?))
}

async fn remove_toxic(State(f): State<Fleet>, Path((p, t)): Path<(String, String)>) -> ApiResult<StatusCode> {
    f.remove_toxic(&p, &t).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn profile(State(f): State<Fleet>, Path(p): Path<String>) -> ApiResult<Response> {
    let profile = f.profile(&p)?;
    let mut r = profile.source.clone().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/toml"));
    Ok(r)
}

async fn set_profile(State(f): State<Fleet>, Path(p): Path<String>, b: Bytes) -> ApiResult<Response> {
    f.get(&p).await?;
    let text = std::str::from_utf8(&b).map_err(|_| FleetError::bad("bad request body: the profile is not UTF-8"))?;
    Ok(ok(StatusCode::OK, &f.set_profile_toml(&p, text).await?))
}

async fn sessions(State(f): State<Fleet>, Path(p): Path<String>) -> ApiResult<Response> {
    Ok(ok(StatusCode::OK, &f.sessions(&p)?))
}

async fn cut(State(f): State<Fleet>, Path((p, s)): Path<(String, String)>) -> ApiResult<StatusCode> {
    let id: u64 = s.parse().map_err(|_| FleetError::NotFound("session not found"))?;
    f.cut(&p, id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn summary(State(f): State<Fleet>, Path(p): Path<String>) -> ApiResult<Response> {
    Ok(ok(StatusCode::OK, &f.summary(&p)?))
}

async fn reset_summary(State(f): State<Fleet>, Path(p): Path<String>) -> ApiResult<StatusCode> {
    f.reset_summary(&p)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct EventsQuery {
    proxy: Option<String>,
}

/// Server-Sent Events: one `event: TYPE` / `data: JSON` per event line,
/// from now on; a subscriber that fell behind gets `event: dropped` with
/// how many it lost.
async fn events(
    State(f): State<Fleet>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    // A proxy that does not exist is a 404, as everywhere else (a typo
    // would otherwise look like a quiet proxy).
    if let Some(p) = &q.proxy {
        f.sessions(p)?;
    }
    let rx = f.subscribe();
    let stream = futures_util::stream::unfold((rx, q.proxy), |(mut rx, proxy)| async move {
        loop {
            match rx.recv().await {
                Ok(line) if wanted(&line, proxy.as_deref()) => {
                    let ev = SseEvent::default().event(line.event).data(line.json.clone());
                    return Some((Ok(ev), (rx, proxy)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    let ev = SseEvent::default().event("dropped").data(format!("{{\"dropped\":{n}}}"));
                    return Some((Ok(ev), (rx, proxy)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn wanted(line: &Arc<Line>, proxy: Option<&str>) -> bool {
    proxy.is_none_or(|p| p == line.proxy)
}

async fn metrics(State(f): State<Fleet>) -> Response {
    let mut r = f.metrics().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}

/// The API served in this process: for a Rust test suite that wants the
/// HTTP API (say, for a Toxiproxy client) next to its own [`Fleet`] calls.
#[derive(Debug)]
pub struct ApiServer {
    /// Where the API listens (the real port when asked for port 0).
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Serves `fleet`'s API on `listen`.
    pub async fn start(listen: SocketAddr, fleet: Fleet) -> std::io::Result<ApiServer> {
        let listener = TcpListener::bind(listen).await?;
        Ok(ApiServer::serve(listener, fleet))
    }

    /// Serves `fleet`'s API on a bound listener.
    pub fn serve(listener: TcpListener, fleet: Fleet) -> ApiServer {
        let addr = listener.local_addr().unwrap_or_else(|_| ([127, 0, 0, 1], 0).into());
        let stop = CancellationToken::new();
        let done = stop.clone();
        let task = tokio::spawn(async move {
            let serve =
                axum::serve(listener, router(fleet)).with_graceful_shutdown(async move { done.cancelled().await });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "the API server stopped");
            }
        });
        ApiServer { addr, stop, task }
    }

    /// Stops serving (open event streams are closed too).
    pub async fn stop(self) {
        self.stop.cancel();
        // An SSE stream keeps a connection open: do not wait on it forever.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
    }
}
