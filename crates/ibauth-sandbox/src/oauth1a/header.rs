//! The parameters of an `Authorization: OAuth …` header, strictly: each parameter once.

use std::collections::BTreeMap;

/// Why a header was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Not `OAuth k="v", …`.
    Malformed,
    /// A parameter given twice: which value was signed is ambiguous, so neither is trusted.
    Duplicate(String),
}

/// Longest header the parser looks at; HTTP limits headers anyway, this bounds the work.
const MAX_HEADER: usize = 8 * 1024;

/// The parameters of `value` (values percent-decoded).
pub(crate) fn parse_header(value: &str) -> Result<BTreeMap<String, String>, HeaderError> {
    if value.len() > MAX_HEADER {
        return Err(HeaderError::Malformed);
    }
    let rest = value
        .trim()
        .strip_prefix("OAuth ")
        .ok_or(HeaderError::Malformed)?;
    let mut params = BTreeMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(HeaderError::Malformed)?;
        let v = v
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or(HeaderError::Malformed)?;
        let decoded = percent_decode(v).ok_or(HeaderError::Malformed)?;
        let key = k.trim().to_owned();
        if params.contains_key(&key) {
            return Err(HeaderError::Duplicate(key));
        }
        params.insert(key, decoded);
    }
    Ok(params)
}

/// RFC 3986 percent-decoding (a `+` stays a plus: this is not a form); `None` for a broken
/// escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                // `from_str_radix` alone would take `%+1`.
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::{HeaderError, parse_header};

    #[test]
    fn parameters_are_decoded_and_each_allowed_once() {
        let params = parse_header(r#"OAuth realm="r", oauth_signature="a%2Bb%3D", x="1+2""#);
        let params = params.unwrap_or_default();
        assert_eq!(
            params.get("oauth_signature").map(String::as_str),
            Some("a+b=")
        );
        assert_eq!(params.get("x").map(String::as_str), Some("1+2"));
        let amp = parse_header(r#"OAuth a="x&y=z%26""#).unwrap_or_default();
        assert_eq!(amp.get("a").map(String::as_str), Some("x&y=z&"));
        assert_eq!(
            parse_header(r#"OAuth oauth_nonce="a", oauth_nonce="b""#),
            Err(HeaderError::Duplicate("oauth_nonce".into()))
        );
        for bad in [
            "Bearer x",
            "OAuth x",
            r#"OAuth x="1"#,
            r#"OAuth x="1","#,
            r#"OAuth x="%zz""#,
            r#"OAuth x="%4""#,
            r#"OAuth x="%ff""#,
            r#"OAuth x="%+1""#,
        ] {
            assert_eq!(parse_header(bad), Err(HeaderError::Malformed), "{bad}");
        }
        let long = format!(r#"OAuth x="{}""#, "a".repeat(9000));
        assert_eq!(parse_header(&long), Err(HeaderError::Malformed));
    }
}
