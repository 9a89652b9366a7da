//! The two prefixes of the REST API. IBKR serves it at `/v1/api`; the Client Portal Gateway
//! also answers at `/v1/portal`, and clients written for the gateway use either, so the
//! sandbox serves every `/v1/api/…` path at `/v1/portal/…` too.

/// Where the REST API is served, the canonical prefix first.
pub(crate) const API_PREFIXES: [&str; 2] = ["/v1/api", "/v1/portal"];

/// The part of `path` after its API prefix, with its leading `/` (`/tickle`); `None` outside
/// the REST API.
pub(crate) fn api_relative(path: &str) -> Option<&str> {
    API_PREFIXES.iter().find_map(|prefix| {
        path.strip_prefix(prefix)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::api_relative;

    #[test]
    fn both_prefixes_and_nothing_else() {
        assert_eq!(api_relative("/v1/api/tickle"), Some("/tickle"));
        assert_eq!(api_relative("/v1/portal/tickle"), Some("/tickle"));
        assert_eq!(api_relative("/v1/api"), Some(""));
        assert_eq!(api_relative("/v1/apix/tickle"), None);
        assert_eq!(api_relative("/v1/portalx"), None);
        assert_eq!(api_relative("/gw/api/v1/sso-sessions"), None);
    }
}
