//! A throttling proxy in front of moto: EC2's documented request token buckets, enforced per
//! action family, so tests and the bench see `RequestLimitExceeded` where AWS would send it
//! (moto never throttles). Every request is counted per action, throttled or not, which also
//! makes it the bench's EC2 call counter when its buckets are off.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

/// The largest request body the proxy reads (EC2 query requests are small).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A token bucket's size and refill, as AWS documents them for EC2 request throttling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub burst: f64,
    pub per_second: f64,
}

impl Rate {
    pub const fn new(burst: f64, per_second: f64) -> Self {
        Self { burst, per_second }
    }
}

/// The families EC2 throttles separately. An action belongs to the first that names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    CreateVolume,
    RunInstances,
    CopyImage,
    /// Describe*, Get*, List*: the non-mutating actions.
    Describe,
    /// Every other action, CopySnapshot and CreateSnapshot among them.
    Mutating,
}

impl Family {
    pub fn of(action: &str) -> Self {
        match action {
            "CreateVolume" => Self::CreateVolume,
            "RunInstances" => Self::RunInstances,
            "CopyImage" => Self::CopyImage,
            _ if ["Describe", "Get", "List"].iter().any(|p| action.starts_with(p)) => Self::Describe,
            _ => Self::Mutating,
        }
    }
}

/// Which buckets the proxy enforces; a family without one passes freely.
#[derive(Clone, Debug, Default)]
pub struct Limits(BTreeMap<Family, Rate>);

impl Limits {
    /// No throttling: the proxy only counts.
    pub fn none() -> Self {
        Self::default()
    }

    /// EC2's documented defaults: CreateVolume 100 burst refilled at 5/s, other mutating 50/5,
    /// Describe* 100/20, RunInstances 5/2, CopyImage 100/1.
    pub fn ec2() -> Self {
        Self::none()
            .with(Family::CreateVolume, Rate::new(100.0, 5.0))
            .with(Family::Mutating, Rate::new(50.0, 5.0))
            .with(Family::Describe, Rate::new(100.0, 20.0))
            .with(Family::RunInstances, Rate::new(5.0, 2.0))
            .with(Family::CopyImage, Rate::new(100.0, 1.0))
    }

    pub fn with(mut self, family: Family, rate: Rate) -> Self {
        self.0.insert(family, rate);
        self
    }
}

/// What the proxy saw of one action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionCount {
    /// Requests received, throttled ones included.
    pub calls: u64,
    /// Requests answered `RequestLimitExceeded`.
    pub throttled: u64,
}

impl ActionCount {
    /// Requests that reached moto.
    pub fn passed(&self) -> u64 {
        self.calls - self.throttled
    }
}

struct Bucket {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate) -> Self {
        Self { rate, tokens: rate.burst, at: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate.per_second;
        self.tokens = (self.tokens + refill).min(self.rate.burst);
        self.at = now;
        let taken = self.tokens >= 1.0;
        if taken {
            self.tokens -= 1.0;
        }
        taken
    }
}

#[derive(Default)]
struct Ledger {
    buckets: BTreeMap<Family, Bucket>,
    /// Keyed by EC2 action; other services' as `service:Action` (STS), requests without one
    /// (JSON protocols: SQS, DynamoDB) under "".
    counts: BTreeMap<String, ActionCount>,
}

struct Shared {
    moto_url: String,
    http: reqwest::Client,
    ledger: Mutex<Ledger>,
}

impl Shared {
    /// Counts the call and whether its family's bucket had a token for it (EC2's only).
    fn admit(&self, service: &str, action: &str) -> bool {
        let mut ledger = self.ledger.lock().expect("ledger");
        let ec2 = service == "ec2";
        let admitted = !ec2 || ledger.buckets.get_mut(&Family::of(action)).is_none_or(Bucket::take);
        let key = if ec2 || action.is_empty() { action.to_string() } else { format!("{service}:{action}") };
        let count = ledger.counts.entry(key).or_default();
        count.calls += 1;
        count.throttled += u64::from(!admitted);
        admitted
    }
}

/// The proxy, serving on a free loopback port until dropped.
pub struct ThrottlingProxy {
    pub url: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl ThrottlingProxy {
    /// Serves in front of `moto_url`, enforcing `limits` (buckets start full).
    pub async fn start(moto_url: &str, limits: Limits) -> Self {
        let ledger = Ledger {
            buckets: limits.0.iter().map(|(family, rate)| (*family, Bucket::full(*rate))).collect(),
            counts: BTreeMap::new(),
        };
        let shared = Arc::new(Shared {
            moto_url: moto_url.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            ledger: Mutex::new(ledger),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let shutdown = CancellationToken::new();
        let router = axum::Router::new().fallback(forward).with_state(shared.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await.expect("proxy")
        });
        Self { url, shared, shutdown }
    }

    /// Calls and throttles per action so far.
    pub fn counts(&self) -> BTreeMap<String, ActionCount> {
        self.shared.ledger.lock().expect("ledger").counts.clone()
    }

    /// One action's calls and throttles so far.
    pub fn count(&self, action: &str) -> ActionCount {
        self.counts().get(action).copied().unwrap_or_default()
    }

    /// Calls and throttles of every EC2 action.
    pub fn ec2_counts(&self) -> BTreeMap<String, ActionCount> {
        self.counts().into_iter().filter(|(action, _)| !action.is_empty() && !action.contains(':')).collect()
    }

    /// Calls of every EC2 action, throttled ones included.
    pub fn ec2_calls(&self) -> u64 {
        self.ec2_counts().values().map(|count| count.calls).sum()
    }

    /// Forgets the counts (the buckets keep their tokens), e.g. after seeding.
    pub fn reset_counts(&self) {
        self.shared.ledger.lock().expect("ledger").counts.clear();
    }
}

impl Drop for ThrottlingProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The `Action` of a query-protocol request: in the form body (the SDKs) or the query string.
fn action_of(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> String {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let from = |text: &[u8]| {
        text.split(|b| *b == b'&')
            .find_map(|pair| pair.strip_prefix(b"Action="))
            .map(|action| String::from_utf8_lossy(action).into_owned())
    };
    query.and_then(|q| from(q.as_bytes())).or_else(|| form.then(|| from(body)).flatten()).unwrap_or_default()
}

/// The service a SigV4-signed request is for, from its credential scope
/// (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`).
fn service_of(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|credential| credential.split('/').nth(3))
        .unwrap_or_default()
}

/// EC2's answer to a throttled call.
fn request_limit_exceeded() -> Response {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>\
                <Message>Request limit exceeded.</Message></Error></Errors>\
                <RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>";
    (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/xml;charset=UTF-8")], body).into_response()
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    if !shared.admit(service_of(&parts.headers), &action_of(parts.uri.query(), &parts.headers, &body)) {
        return request_limit_exceeded();
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    // reqwest sets both for the body it sends.
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let sent = shared
        .http
        .request(parts.method, format!("{}{path}", shared.moto_url))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => return (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    };
    let (status, mut headers) = (answer.status(), answer.headers().clone());
    let Ok(bytes) = answer.bytes().await else { return StatusCode::BAD_GATEWAY.into_response() };
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONTENT_LENGTH);
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
