//! Webhook deliveries: where a subscription may point, and one signed POST.
//!
//! A subscription's URL is resolved when it is registered and again at every delivery, and
//! the request goes to exactly the addresses that were checked (no second lookup a DNS answer
//! could change in between). Loopback, private, link-local and other non-public addresses are
//! refused unless the deployment allows them (`ORCH_SUBSCRIPTIONS_ALLOW_PRIVATE`), so a
//! subscription cannot make the service call into its own network. Redirects are not followed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>` when the subscription has a
/// secret.
pub const SIGNATURE_HEADER: &str = "X-Orchestration-Signature";

/// A checked destination: the URL and the addresses it may be reached at.
#[derive(Debug, Clone)]
pub struct Destination {
    pub url: reqwest::Url,
    pub addrs: Vec<SocketAddr>,
}

/// Parses and resolves `url` and checks every address it resolves to. The error says why it
/// may not be used.
pub async fn destination(url: &str, allow_private: bool) -> Result<Destination, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("url {url:?}: only http and https are allowed"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "url {url:?}: credentials in the URL are not allowed"
        ));
    }
    let Some(host) = parsed.host_str() else {
        return Err(format!("url {url:?} names no host"));
    };
    let port = parsed.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((host, port)),
        )
        .await
        .map_err(|_| format!("url {url:?}: resolving {host} timed out"))?
        .map_err(|e| format!("url {url:?}: cannot resolve {host}: {e}"))?
        .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("url {url:?}: {host} resolves to no address"));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "url {url:?} resolves to {}, a loopback, private or link-local address; \
             set ORCH_SUBSCRIPTIONS_ALLOW_PRIVATE=true to allow such destinations",
            bad.ip()
        ));
    }
    Ok(Destination { url: parsed, addrs })
}

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // Shared address space (carrier-grade NAT), benchmarking, reserved.
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
                || a == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local fc00::/7 and link-local fe80::/10.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body under secret>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// POSTs `body` to a checked destination, signed with `secret` when there is one. A 2xx
/// answer is a delivery; anything else is an error that says what happened.
pub async fn post(
    destination: &Destination,
    body: &[u8],
    secret: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let host = destination.url.host_str().unwrap_or_default().to_string();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .resolve_to_addrs(&host, &destination.addrs)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut request = client
        .post(destination.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "orchestration-webhooks")
        .body(body.to_vec());
    if let Some(secret) = secret {
        request = request.header(SIGNATURE_HEADER, signature(secret, body));
    }
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("no answer within {} s", timeout.as_secs())
        } else {
            format!("request failed: {e}")
        }
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let tail: String = text.chars().take(200).collect();
    Err(format!("HTTP {}: {tail}", status.as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn private_destinations_are_refused_unless_allowed() {
        let refused = destination("http://127.0.0.1:9/hook", false)
            .await
            .unwrap_err();
        assert!(
            refused.contains("ORCH_SUBSCRIPTIONS_ALLOW_PRIVATE"),
            "{refused}"
        );
        assert!(destination("http://127.0.0.1:9/hook", true).await.is_ok());
        assert!(destination("ftp://example.com/", true).await.is_err());
        assert!(
            destination("http://user:pw@127.0.0.1/", true)
                .await
                .is_err()
        );
        let localhost = destination("http://localhost:9/", false).await.unwrap_err();
        assert!(localhost.contains("loopback"), "{localhost}");
    }
}
