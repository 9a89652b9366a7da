//! The caller's public IPv4 address, which IBKR binds the SSO session to.

use std::net::Ipv4Addr;

use url::Url;

use crate::error::{Error, Step};
use crate::http::HttpClient;

/// Asks each URL in turn until one answers with an IPv4 address (trimmed, validated).
pub(crate) async fn lookup(http: &HttpClient, urls: &[Url]) -> Result<Ipv4Addr, Error> {
    let mut failures = Vec::new();
    for url in urls {
        let answer = match http
            .send(Step::PublicIp, http.reqwest().get(url.clone()))
            .await
        {
            Ok(reply) if (200..300).contains(&reply.status) => reply.body,
            Ok(reply) => {
                failures.push(format!("{url}: HTTP {}", reply.status));
                continue;
            }
            Err(e) => {
                failures.push(format!("{url}: {e}"));
                continue;
            }
        };
        match parse_answer(&answer) {
            Some(ip) => {
                tracing::debug!(%url, %ip, "public IP found");
                return Ok(ip);
            }
            None => failures.push(format!("{url}: answer is not an IPv4 address")),
        }
    }
    Err(Error::PublicIp {
        detail: failures.join("; "),
    })
}

/// A lookup service's answer: an IPv4 address, with surrounding whitespace.
pub(crate) fn parse_answer(body: &[u8]) -> Option<Ipv4Addr> {
    String::from_utf8_lossy(body).trim().parse().ok()
}
