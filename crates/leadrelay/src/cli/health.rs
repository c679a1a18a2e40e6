//! `leadrelay healthcheck`: asks a running server's `/readyz` whether it is
//! ready (storage reachable, schema current), for container health checks
//! in images without curl. Exit 0 when ready, 1 otherwise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::output::{errln, outln};
use crate::config::HumanDuration;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The server's URL (default: from `server.listen` in the configuration,
    /// with 0.0.0.0 or :: asked on loopback). `/readyz` is added unless the
    /// URL has a path.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Longest wait for the answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: HumanDuration,
}

fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    humantime::parse_duration(s)
        .map(HumanDuration)
        .map_err(|e| format!("{s:?}: {e}; write e.g. 5s"))
}

/// Where `/readyz` of a server listening on `listen` is reached from here.
fn url_for(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/readyz", SocketAddr::new(ip, listen.port()))
}

/// `URL` with `/readyz` added when it has no path.
fn readyz(url: &str) -> Result<reqwest::Url, String> {
    let mut u = reqwest::Url::parse(url.trim())
        .map_err(|e| format!("--url {url:?}: {e}; write e.g. http://127.0.0.1:8080"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("--url {url:?}: use http:// or https://"));
    }
    if u.path() == "/" || u.path().is_empty() {
        u.set_path("/readyz");
    }
    Ok(u)
}

pub async fn healthcheck(config_path: Option<&PathBuf>, args: HealthArgs) -> ExitCode {
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            // Secrets are not needed to know where the server listens.
            let Ok(loaded) =
                super::load_config_with(config_path, crate::config::Secrets::Optional, false)
            else {
                return ExitCode::FAILURE;
            };
            url_for(loaded.config.server.listen)
        }
    };
    let url = match readyz(&url) {
        Ok(u) => u,
        Err(e) => {
            errln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout: Duration = args.timeout.get();
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            errln!("cannot make an HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(url.clone()).send().await {
        Ok(r) if r.status().is_success() => {
            outln!("ready: {url} answered {}", r.status());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            let excerpt: String = body.chars().take(300).collect();
            errln!("not ready: {url} answered {status}: {}", excerpt.trim());
            ExitCode::FAILURE
        }
        Err(e) if e.is_timeout() => {
            errln!("not ready: {url} did not answer within {}", args.timeout);
            ExitCode::FAILURE
        }
        Err(e) => {
            errln!("not ready: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            url_for("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080/readyz"
        );
        assert_eq!(url_for("[::]:9".parse().unwrap()), "http://[::1]:9/readyz");
        assert_eq!(
            url_for("10.1.2.3:80".parse().unwrap()),
            "http://10.1.2.3:80/readyz"
        );
        assert_eq!(
            readyz("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080/readyz"
        );
        assert_eq!(
            readyz("http://h:1/custom/ready").unwrap().as_str(),
            "http://h:1/custom/ready"
        );
        assert!(readyz("ftp://h/").is_err());
        assert!(readyz("not a url").is_err());
    }
}
