//! A throwaway CA and a server certificate for `localhost`, `127.0.0.1` and `::1`, so clients
//! verify the sandbox like any real host once they trust the CA.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// PEM material of a freshly generated CA and server certificate. `Debug` shows the
/// certificates, never the key.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The CA certificate clients should trust.
    pub ca_pem: String,
    /// The server certificate followed by the CA.
    pub chain_pem: String,
    /// The server's private key.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem)
            .field("chain_pem", &self.chain_pem)
            .finish_non_exhaustive()
    }
}

/// Generates a CA and a server certificate for the loopback names.
pub fn generate() -> Result<TlsMaterial, rcgen::Error> {
    generate_for(&[])
}

/// Generates a CA and a server certificate for the loopback names and `more` (host names or
/// IP addresses).
pub fn generate_for(more: &[String]) -> Result<TlsMaterial, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ibauth sandbox CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(more.iter().cloned());
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "ibauth sandbox");
    let cert = params.signed_by(&key, &issuer)?;
    Ok(TlsMaterial {
        ca_pem: ca_cert.pem(),
        chain_pem: format!("{}{}", cert.pem(), ca_cert.pem()),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_certificates_and_never_the_key() {
        let material = generate().unwrap();
        let shown = format!("{material:?}");
        assert!(shown.contains("BEGIN CERTIFICATE"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(!shown.contains(material.key_pem.lines().nth(1).unwrap()));
    }
}
