//! `parley healthcheck`: asks a service's `/health` over HTTP and exits 0 on a
//! 2xx answer, 1 otherwise. Container images on a distroless base have no curl,
//! so the image's `HEALTHCHECK` (and anyone's `exec` probe) runs this instead.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::HealthcheckArgs;

/// The URL to ask: `--url` when given, else `/health` on the port of `--listen`
/// (`PARLEY_LISTEN`, the service's own setting), on loopback when the service
/// listens on every address.
pub fn target(args: &HealthcheckArgs) -> String {
    if let Some(url) = &args.url {
        return url.clone();
    }
    let ip = match args.listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/health", SocketAddr::new(ip, args.listen.port()))
}

/// Asks `url` once; Ok with the status when it is 2xx.
pub async fn check(url: &str, timeout: Duration) -> anyhow::Result<u16> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .context("building the HTTP client")?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    Ok(status.as_u16())
}

/// `parley healthcheck`: prints one line; the error (non-zero exit) when unhealthy.
pub async fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let url = target(&args);
    let status = check(&url, Duration::from_millis(args.timeout_ms)).await?;
    println!("GET {url}: {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;

    fn args(listen: &str, url: Option<&str>) -> HealthcheckArgs {
        HealthcheckArgs {
            url: url.map(str::to_string),
            listen: listen.parse().unwrap(),
            timeout_ms: 2000,
        }
    }

    #[test]
    fn the_default_url_is_health_on_the_services_port_on_loopback() {
        assert_eq!(
            target(&args("0.0.0.0:8081", None)),
            "http://127.0.0.1:8081/health"
        );
        assert_eq!(target(&args("[::]:8082", None)), "http://[::1]:8082/health");
        assert_eq!(
            target(&args("10.1.2.3:8083", None)),
            "http://10.1.2.3:8083/health"
        );
        assert_eq!(
            target(&args("0.0.0.0:8081", Some("http://x:1/health/ready"))),
            "http://x:1/health/ready"
        );
    }

    async fn serve(status: StatusCode) -> SocketAddr {
        let app = Router::new().route("/health", get(move || async move { status }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn a_2xx_answer_is_healthy_anything_else_is_not() {
        let ok = serve(StatusCode::OK).await;
        let down = serve(StatusCode::SERVICE_UNAVAILABLE).await;
        let timeout = Duration::from_secs(2);
        assert_eq!(
            check(&format!("http://{ok}/health"), timeout)
                .await
                .unwrap(),
            200
        );
        assert!(check(&format!("http://{down}/health"), timeout)
            .await
            .is_err());
        assert!(check(&format!("http://{ok}/nowhere"), timeout)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn nothing_listening_is_unhealthy() {
        // Bind, note the port, close: nothing answers there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/health");
        assert!(check(&url, Duration::from_secs(2)).await.is_err());
    }
}
