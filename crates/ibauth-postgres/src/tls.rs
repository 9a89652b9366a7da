//! TLS for tokio-postgres on the workspace's rustls (aws-lc-rs): a `MakeTlsConnect` of our
//! own, so no TLS adapter crate (and neither `ring` nor a second rustls) is pulled in.
//!
//! The server's chain and name are always verified. The stream offers SCRAM's
//! `tls-server-end-point` channel binding (RFC 5929: the hash of the server's certificate
//! with its signature's digest, SHA-256 for MD5 and SHA-1), so `SCRAM-SHA-256-PLUS` works.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ibauth::coord::CoordError;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::Socket;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::config::Roots;

/// The rustls configuration for `roots`: TLS 1.2+, ALPN `postgresql`.
pub(crate) fn client_config(roots: &Roots) -> Result<Arc<ClientConfig>, CoordError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let fail = |e: rustls::Error| CoordError::Config(format!("TLS setup failed: {e}"));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(fail)?;
    let mut config = match roots {
        Roots::Platform => {
            let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(fail)?;
            builder
                .dangerous()
                // Not "dangerous": the platform verifier, as ibauth's HTTPS client uses.
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        Roots::Only(certs) => {
            let mut store = rustls::RootCertStore::empty();
            for cert in certs {
                store.add(cert.clone()).map_err(fail)?;
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
    };
    // PostgreSQL 17's direct TLS negotiation requires it; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

/// Makes a verified TLS connector per host; `None` for a plain-only target (tokio-postgres
/// makes one for every connection, and uses it only when TLS is asked for).
#[derive(Clone)]
pub(crate) struct MakeRustls(pub(crate) Option<Arc<ClientConfig>>);

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        // Errors wait for the handshake: a plain connection never gets there.
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| format!("cannot verify TLS for host {domain:?}: {e}"));
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

/// One TLS handshake to come.
pub(crate) struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    name: Result<ServerName<'static>, String>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| {
                io::Error::new(io::ErrorKind::Unsupported, "TLS is not configured")
            })?;
            let name = self
                .name
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A TLS connection to the server.
pub(crate) struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| end_point(cert.as_ref()))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// `tls-server-end-point` (RFC 5929 §4.1) of a DER certificate: its hash with the digest of
/// its signature algorithm (MD5 and SHA-1 become SHA-256); `None` for algorithms without
/// one (Ed25519, RSA-PSS) or a certificate that does not parse.
pub(crate) fn end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use aws_lc_rs::digest;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    let oid = signature_oid(cert)?;
    let algorithm = if let Some(last) = oid.strip_prefix(RSA) {
        match last {
            // md5WithRSA, sha1WithRSA, sha256WithRSA
            [0x04] | [0x05] | [0x0b] => &digest::SHA256,
            [0x0c] => &digest::SHA384,
            [0x0d] => &digest::SHA512,
            _ => return None,
        }
    } else if let Some(last) = oid.strip_prefix(ECDSA_SHA2) {
        match last {
            [0x02] => &digest::SHA256,
            [0x03] => &digest::SHA384,
            [0x04] => &digest::SHA512,
            _ => return None,
        }
    } else if oid == ECDSA_SHA1 {
        &digest::SHA256
    } else {
        return None;
    };
    Some(digest::digest(algorithm, cert).as_ref().to_vec())
}

/// The OID bytes of `Certificate.signatureAlgorithm.algorithm`.
fn signature_oid(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, certificate, _) = der(cert)? else {
        return None;
    };
    let (0x30, _tbs, rest) = der(certificate)? else {
        return None;
    };
    let (0x30, algorithm, _) = der(rest)? else {
        return None;
    };
    let (0x06, oid, _) = der(algorithm)? else {
        return None;
    };
    Some(oid)
}

/// One DER TLV: tag, contents, what follows.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_point_hash_follows_the_signature_algorithm() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().as_ref();
        let hash = end_point(der).expect("ecdsa-with-SHA384");
        assert_eq!(
            hash,
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, der).as_ref()
        );

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(end_point(cert.der().as_ref()).unwrap().len(), 32);

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            end_point(cert.der().as_ref()),
            None,
            "Ed25519 has no digest"
        );
    }

    #[test]
    fn damaged_certificates_do_not_panic() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x82, 0xff, 0xff, 0x30],
            &[0x30, 0x03, 0x30, 0x01, 0x00],
        ] {
            assert_eq!(end_point(bad), None);
        }
    }
}
