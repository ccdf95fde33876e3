//! Outbound webhooks: outbox messages fanned out to subscriptions, and deliveries sent.
//!
//! A delivery is a POST of JSON `{"id", "event", "occurred_at", "data"}` with
//! `X-Voronka-Event-Id` (the same on every attempt, for the receiver's dedup),
//! `X-Voronka-Event`, `X-Voronka-Timestamp` (Unix seconds) and `X-Voronka-Signature:
//! sha256=HEX`, the HMAC-SHA256 of `"{timestamp}.{body}"` with the subscription's secret.
//! A 2xx answer delivers it; anything else (redirects included: they are never followed)
//! is retried with exponential back-off from 30 s, doubling, up to 6 h between tries, for
//! 24 h from the first try; then the delivery is dead-lettered and shown in the API and UI.
//!
//! The target is checked at every send, after DNS: the connection goes only to the
//! addresses that were checked, so a name that re-resolves to an internal address
//! (DNS rebinding) cannot reach one.

use crate::AppState;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use voronka_domain::webhook::{TargetError, check_resolved, check_target, sign};
use voronka_store::Ts;
use voronka_store::hooks::DeliveryJob;

/// How long deliveries are retried before they are dead-lettered.
pub const RETRY_WINDOW: chrono::Duration = chrono::Duration::hours(24);
const FIRST_DELAY_SECS: i64 = 30;
const MAX_DELAY_SECS: i64 = 6 * 3600;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The wait before try number `attempts + 1`.
pub fn backoff(attempts: i32) -> chrono::Duration {
    let exp = attempts.clamp(1, 20) - 1;
    chrono::Duration::seconds((FIRST_DELAY_SECS << exp).min(MAX_DELAY_SECS))
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("refused target: {0}")]
    Target(#[from] TargetError),
    #[error("the name could not be resolved: {0}")]
    Resolve(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("HTTP failed: {0}")]
    Http(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Where a checked URL may be connected to: the checked addresses, and the host name for
/// TLS and the `Host` header.
pub async fn resolve_checked(raw: &str, allow_loopback: bool) -> Result<(url::Url, Vec<SocketAddr>), SendError> {
    resolve_checked_with(raw, allow_loopback, |host, port| async move {
        tokio::net::lookup_host((host.as_str(), port)).await.map(|a| a.collect::<Vec<_>>()).map_err(|e| e.to_string())
    })
    .await
}

/// `resolve_checked` with the name lookup given (tests stand in for DNS with it).
pub async fn resolve_checked_with<F, Fut>(raw: &str, allow_loopback: bool, lookup: F) -> Result<(url::Url, Vec<SocketAddr>), SendError>
where
    F: FnOnce(String, u16) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<SocketAddr>, String>>,
{
    let url = check_target(raw, allow_loopback)?;
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(url::Host::Domain(d)) => lookup(d.to_string(), port).await.map_err(SendError::Resolve)?,
        None => return Err(TargetError::NoHost.into()),
    };
    if addrs.is_empty() {
        return Err(SendError::Resolve("no addresses".into()));
    }
    let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    check_resolved(&ips, allow_loopback)?;
    Ok((url, addrs))
}

fn tls_config() -> Result<Arc<tokio_rustls::rustls::ClientConfig>, SendError> {
    use tokio_rustls::rustls;
    static CFG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CFG.get_or_init(|| {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(SendError::Tls)
}

/// POSTs `body` to a checked target; returns the answer's status code.
pub async fn post(raw_url: &str, allow_loopback: bool, headers: &[(&str, String)], body: Vec<u8>) -> Result<u16, SendError> {
    tokio::time::timeout(SEND_TIMEOUT, post_inner(raw_url, allow_loopback, headers, body))
        .await
        .map_err(|_| SendError::Timeout(SEND_TIMEOUT))?
}

async fn post_inner(raw_url: &str, allow_loopback: bool, headers: &[(&str, String)], body: Vec<u8>) -> Result<u16, SendError> {
    let (url, addrs) = resolve_checked(raw_url, allow_loopback).await?;
    let mut last = String::new();
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e.to_string(),
        }
    }
    let stream = stream.ok_or(SendError::Connect(last))?;
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let host_header = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut req = hyper::Request::post(path)
        .header(hyper::header::HOST, host_header)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, concat!("Voronka-Webhooks/", env!("CARGO_PKG_VERSION")));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| SendError::Http(e.to_string()))?;
    let status = if url.scheme() == "https" {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host).map_err(|e| SendError::Tls(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config()?).connect(name, stream).await.map_err(|e| SendError::Tls(e.to_string()))?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(stream), req).await?
    };
    Ok(status)
}

async fn send<T>(io: T, req: hyper::Request<Full<Bytes>>) -> Result<u16, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| SendError::Http(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| SendError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    // Read (and drop) at most 64 KiB of the answer, briefly, so the connection ends cleanly;
    // a receiver cannot make the server hold a large answer.
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024);
    let _ = tokio::time::timeout(Duration::from_secs(2), body.collect()).await;
    driver.abort();
    Ok(status)
}

/// The headers of one attempt.
pub fn signed_headers(job: &DeliveryJob, now_secs: i64) -> Vec<(&'static str, String)> {
    vec![
        ("x-voronka-event-id", job.id.to_string()),
        ("x-voronka-event", job.topic.clone()),
        ("x-voronka-timestamp", now_secs.to_string()),
        ("x-voronka-signature", format!("sha256={}", sign(job.secret.as_bytes(), now_secs, job.payload.as_bytes()))),
    ]
}

/// Sends every due delivery once (a few at a time); returns how many were tried.
pub async fn deliver_once(state: &AppState, worker: &str) -> anyhow::Result<usize> {
    let jobs = state.store.claim_deliveries(worker, 32, chrono::Duration::seconds(60)).await?;
    let n = jobs.len();
    let allow = state.cfg.webhook_allow_loopback;
    let results = futures_util::future::join_all(jobs.into_iter().map(|job| async move {
        let now = state.store.clock().now();
        let headers = signed_headers(&job, now.timestamp());
        let refs: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, v.clone())).collect();
        let r = post(&job.url, allow, &refs, job.payload.clone().into_bytes()).await;
        (job, r)
    }))
    .await;
    for (job, r) in results {
        let (code, error) = match r {
            Ok(s) if (200..300).contains(&s) => {
                state.store.finish_delivery(job.id, worker, "delivered", Some(i32::from(s)), None).await?;
                crate::ops::record_webhook("delivered");
                continue;
            }
            Ok(s) if (300..400).contains(&s) => (Some(i32::from(s)), format!("HTTP {s}: redirects are not followed")),
            Ok(s) => (Some(i32::from(s)), format!("HTTP {s}")),
            Err(e) => (None, e.to_string()),
        };
        let now = state.store.clock().now();
        let next = now + backoff(job.attempts);
        if next > job.created_at.0 + RETRY_WINDOW {
            tracing::warn!(delivery = %job.id, error, "webhook delivery dead-lettered");
            state.store.finish_delivery(job.id, worker, "dead", code, Some(&error)).await?;
            crate::ops::record_webhook("dead");
        } else {
            tracing::info!(delivery = %job.id, error, attempts = job.attempts, "webhook delivery failed; will retry");
            state.store.retry_delivery(job.id, worker, Ts::from(next), code, &error).await?;
            crate::ops::record_webhook("retry");
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name is checked against every address it resolves to: one internal answer among
    /// public ones (DNS rebinding, a split answer) refuses it; all-public answers pass and
    /// are exactly what the connection may use.
    #[tokio::test]
    async fn names_are_checked_after_resolution() {
        let answer = |ips: &'static [&'static str]| {
            move |_host: String, port: u16| async move {
                Ok::<_, String>(ips.iter().map(|ip| SocketAddr::new(ip.parse().expect("ip"), port)).collect::<Vec<_>>())
            }
        };
        for ips in [&["10.0.0.5"][..], &["93.184.216.34", "127.0.0.1"], &["::ffff:169.254.169.254"], &["fd00::1"], &["100.64.1.1"]] {
            let r = resolve_checked_with("https://hooks.example.com/x", false, answer(ips)).await;
            assert!(matches!(r, Err(SendError::Target(TargetError::Internal(_)))), "{ips:?} passed: {r:?}");
        }
        let (url, addrs) =
            resolve_checked_with("https://hooks.example.com:8443/x", false, answer(&["93.184.216.34", "2606:2800:220:1::1"]))
                .await
                .expect("public answers pass");
        assert_eq!(url.host_str(), Some("hooks.example.com"));
        assert_eq!(addrs.len(), 2);
        assert!(addrs.iter().all(|a| a.port() == 8443));
        let none = resolve_checked_with("https://hooks.example.com/x", false, answer(&[])).await;
        assert!(matches!(none, Err(SendError::Resolve(_))), "{none:?}");
        let failed = resolve_checked_with("https://hooks.example.com/x", false, |_h: String, _p: u16| async {
            Err::<Vec<SocketAddr>, _>("NXDOMAIN".to_string())
        })
        .await;
        assert!(matches!(failed, Err(SendError::Resolve(_))), "{failed:?}");
        // Loopback names pass only when explicitly allowed, and only loopback.
        assert!(resolve_checked_with("http://hooks.example.com/x", true, answer(&["127.0.0.1"])).await.is_ok());
        assert!(resolve_checked_with("http://hooks.example.com/x", true, answer(&["192.168.1.1"])).await.is_err());
    }
}
