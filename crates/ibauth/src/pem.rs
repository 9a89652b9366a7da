//! A small PEM reader that keeps what a generic parser throws away: the label and the RFC 1421
//! headers, which is how an encrypted legacy key (`Proc-Type: 4,ENCRYPTED`) is told apart from a
//! broken one. Tolerates CRLF line ends and stray spaces, which hand-copied keys often have.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// One `-----BEGIN label-----` … `-----END label-----` block.
pub(crate) struct Block {
    pub label: String,
    pub encrypted_header: bool,
    pub der: Vec<u8>,
}

/// Why a text is not a PEM block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PemError {
    NoBlock,
    Unterminated(String),
    Base64(String),
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemError::NoBlock => f.write_str("no `-----BEGIN …-----` line found"),
            PemError::Unterminated(label) => write!(f, "`-----END {label}-----` line missing"),
            PemError::Base64(label) => write!(f, "the {label} block is not valid base64"),
        }
    }
}

/// Reads the first PEM block of `text`.
pub(crate) fn first_block(text: &str) -> Result<Block, PemError> {
    let mut lines = text.lines().map(str::trim);
    let label = loop {
        let line = lines.next().ok_or(PemError::NoBlock)?;
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        {
            break label.trim().to_owned();
        }
    };
    let mut encrypted_header = false;
    let mut body = String::new();
    let end = format!("-----END {label}-----");
    let mut terminated = false;
    for line in lines {
        if line == end {
            terminated = true;
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("Proc-Type") && value.contains("ENCRYPTED") {
                encrypted_header = true;
            }
            continue;
        }
        body.extend(line.chars().filter(|c| !c.is_ascii_whitespace()));
    }
    if !terminated {
        return Err(PemError::Unterminated(label));
    }
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| PemError::Base64(label.clone()))?;
    Ok(Block {
        label,
        encrypted_header,
        der,
    })
}

/// Encodes DER as PEM with 64-column lines.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_crlf() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = encode("PRIVATE KEY", &der);
        let block = first_block(&pem).unwrap();
        assert_eq!(block.label, "PRIVATE KEY");
        assert_eq!(block.der, der);
        let crlf = pem
            .replace('\n', "\r\n")
            .replace("-----BEGIN", "  -----BEGIN");
        assert_eq!(first_block(&crlf).unwrap().der, der);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(first_block("hello").err(), Some(PemError::NoBlock));
        assert!(matches!(
            first_block("-----BEGIN X-----\nAAAA\n"),
            Err(PemError::Unterminated(l)) if l == "X"
        ));
        assert!(matches!(
            first_block("-----BEGIN X-----\n!!!!\n-----END X-----\n"),
            Err(PemError::Base64(_))
        ));
    }

    #[test]
    fn legacy_encrypted_header_is_seen() {
        let text = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(first_block(text).unwrap().encrypted_header);
    }
}
