//! The gateway's certificate: the user's own PEM files, or a self-signed one made at first
//! start and kept (as the Client Portal Gateway keeps its `vertx.jks`), so clients that pin or
//! trust it keep working across restarts.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::GatewayError;

/// A certificate chain and its key, in PEM.
#[derive(Clone)]
pub(crate) struct Material {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material([key REDACTED])")
    }
}

fn file_error(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> GatewayError {
    let path = path.to_owned();
    move |source| GatewayError::File { what, path, source }
}

/// The user's certificate and key.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<Material, GatewayError> {
    Ok(Material {
        cert_pem: fs::read_to_string(cert)
            .map_err(file_error(cert, "cannot read the certificate"))?,
        key_pem: fs::read_to_string(key).map_err(file_error(key, "cannot read the key"))?,
    })
}

/// `dir/cert.pem` and `dir/key.pem`, made (self-signed for localhost, 127.0.0.1, ::1 and the
/// machine's name) when absent.
pub(crate) fn self_signed(dir: &Path) -> Result<Material, GatewayError> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.is_file() && key.is_file() {
        return load(&cert, &key);
    }
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() && host.len() < 254 {
            names.push(host.to_owned());
        }
    }
    let tls = |e: rcgen::Error| GatewayError::Tls(e.to_string());
    let key_pair = rcgen::KeyPair::generate().map_err(tls)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(tls)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ibauth gateway");
    let certificate = params.self_signed(&key_pair).map_err(tls)?;
    let material = Material {
        cert_pem: certificate.pem(),
        key_pem: key_pair.serialize_pem(),
    };
    create_private_dir(dir)?;
    write_new(&key, material.key_pem.as_bytes(), 0o600)?;
    write_new(&cert, material.cert_pem.as_bytes(), 0o644)?;
    tracing::info!(cert = %cert.display(), "made a self-signed certificate for the gateway");
    Ok(material)
}

fn create_private_dir(dir: &Path) -> Result<(), GatewayError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(file_error(dir, "cannot create the folder"))
}

/// Writes a new file (never through an existing file or link: `create_new`).
fn write_new(path: &PathBuf, bytes: &[u8], mode: u32) -> Result<(), GatewayError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(file_error(path, "cannot create"))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(file_error(path, "cannot write"))
}

/// A rustls server config for `material`, offering HTTP/2 and HTTP/1.1.
pub(crate) fn server_config(material: &Material) -> Result<rustls::ServerConfig, GatewayError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: &dyn std::fmt::Display| GatewayError::Tls(e.to_string());
    let certs = CertificateDer::pem_slice_iter(material.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(GatewayError::Tls(
            "the certificate file holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(material.key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(&e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| bad(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
