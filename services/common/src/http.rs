//! The HTTP face every Lifeboat service shows its deployment: liveness (`/healthz`), readiness
//! of the components it registered (`/readyz`) and Prometheus metrics (`/metrics`). Services
//! with an API of their own merge their router into [`router`]'s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Liveness: answers 200 while the process serves HTTP at all.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness: 200 when every registered component is ready, 503 otherwise.
pub const READYZ_PATH: &str = "/readyz";
/// Prometheus scrape endpoint.
pub const METRICS_PATH: &str = "/metrics";
/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reason of a component that registered and has not said it is ready yet.
const STARTING: &str = "starting";

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("http server failed")]
    Serve(#[source] std::io::Error),
    #[error("http server task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}

pub type Result<T, E = HttpError> = std::result::Result<T, E>;

/// The readiness of a process's components (bus consumers, stores, API listeners). Cheap to
/// clone; every clone sees the same components.
#[derive(Clone, Debug, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, ComponentStatus>>>,
}

/// One component as `/readyz` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    pub ready: bool,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The body of `/readyz`: `status` is `ready` or `not_ready`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub status: &'static str,
    pub components: BTreeMap<String, ComponentStatus>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.components.values().all(|c| c.ready)
    }
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle of component `name`, registering it as not ready ("starting") if it is new.
    /// The process is not ready until it says so.
    pub fn component(&self, name: impl Into<String>) -> Component {
        let name: String = name.into();
        self.lock()
            .entry(name.clone())
            .or_insert_with(|| ComponentStatus { ready: false, reason: Some(STARTING.to_string()) });
        Component { name: name.into(), health: self.clone() }
    }

    /// Every component's state; ready when all are (also when none registered).
    pub fn readiness(&self) -> Readiness {
        let components = self.lock().clone();
        let ready = components.values().all(|c| c.ready);
        Readiness { status: if ready { "ready" } else { "not_ready" }, components }
    }

    fn set(&self, name: &str, status: ComponentStatus) {
        self.lock().insert(name.to_string(), status);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ComponentStatus>> {
        // Only plain inserts happen under the lock; a panic elsewhere leaves the map intact.
        self.components.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A registered component that reports its own readiness.
#[derive(Clone, Debug)]
pub struct Component {
    name: Arc<str>,
    health: Health,
}

impl Component {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ready(&self) {
        self.health.set(&self.name, ComponentStatus { ready: true, reason: None });
    }

    pub fn not_ready(&self, reason: impl Into<String>) {
        self.health.set(&self.name, ComponentStatus { ready: false, reason: Some(reason.into()) });
    }
}

#[derive(Clone)]
struct Probes {
    health: Health,
    metrics: PrometheusHandle,
}

/// `GET /healthz`, `GET /readyz`, `GET /metrics`, and a JSON 404 for every other path. Merge
/// API routers into it (`router(..).merge(api)`); a merged router must not set a fallback of
/// its own (axum refuses two).
pub fn router(health: Health, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route(HEALTHZ_PATH, get(healthz))
        .route(READYZ_PATH, get(readyz))
        .route(METRICS_PATH, get(render_metrics))
        .fallback(not_found)
        .with_state(Probes { health, metrics })
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(probes): State<Probes>) -> Response {
    let readiness = probes.health.readiness();
    let status = if readiness.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness)).into_response()
}

async fn render_metrics(State(probes): State<Probes>) -> Response {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], probes.metrics.render()).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let error = format!("no route for {method} {}", uri.path());
    (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": error }))).into_response()
}

/// A running HTTP server.
pub struct HttpServer {
    local_addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Where it listens (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the server has shut down after the shutdown token was cancelled and open
    /// requests were answered.
    pub async fn wait(self) -> Result<()> {
        self.task.await.map_err(HttpError::Task)?.map_err(HttpError::Serve)
    }
}

/// Listens on `addr` and serves `router` in a spawned task until `shutdown` is cancelled. Returns
/// once the socket is bound, so a port-0 caller learns the port from [`HttpServer::local_addr`].
pub async fn serve(addr: SocketAddr, router: Router, shutdown: CancellationToken) -> Result<HttpServer> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
    info!(addr = %local_addr, "http server listening");
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        info!(addr = %local_addr, "http server stopped");
        served
    });
    Ok(HttpServer { local_addr, task })
}
