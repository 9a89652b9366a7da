//! The parameters of `iserver/auth/ssodh/init` in every form IBKR takes them: a JSON body
//! (IBKR's current samples), an `application/x-www-form-urlencoded` body, or query parameters
//! (IBKR's guide allows each).

use serde_json::Value;

use crate::reply::Reject;

/// `publish` and `compete`, each absent unless given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InitParams {
    pub publish: Option<bool>,
    pub compete: Option<bool>,
}

impl InitParams {
    /// The parameters of one request: the query first, then the body, whose values win.
    pub fn from_request(
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Self, Reject> {
        let mut params = Self::default();
        if let Some(query) = query {
            params.merge_pairs(query.as_bytes())?;
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(params);
        }
        let form = content_type.is_some_and(|t| {
            t.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        if form {
            params.merge_pairs(body)?;
        } else {
            let json: Value = serde_json::from_slice(body)
                .map_err(|_| Reject::ibkr(400, "Bad Request: body is not JSON"))?;
            params.merge_json(&json)?;
        }
        Ok(params)
    }

    fn merge_pairs(&mut self, pairs: &[u8]) -> Result<(), Reject> {
        for (key, value) in url::form_urlencoded::parse(pairs) {
            if let Some(slot) = self.slot(&key) {
                *slot = Some(flag(&key, &value)?);
            }
        }
        Ok(())
    }

    fn merge_json(&mut self, json: &Value) -> Result<(), Reject> {
        let Some(object) = json.as_object() else {
            return Err(Reject::ibkr(400, "Bad Request: body is not a JSON object"));
        };
        for (key, value) in object {
            let Some(slot) = self.slot(key) else { continue };
            *slot = Some(match value {
                Value::Bool(b) => *b,
                // Some clients send the flags as strings; IBKR's Java backend reads them too.
                Value::String(text) => flag(key, text)?,
                _ => {
                    return Err(Reject::ibkr(
                        400,
                        format!("Bad Request: {key} is not a boolean"),
                    ));
                }
            });
        }
        Ok(())
    }

    fn slot(&mut self, key: &str) -> Option<&mut Option<bool>> {
        match key {
            "publish" => Some(&mut self.publish),
            "compete" => Some(&mut self.compete),
            _ => None,
        }
    }
}

/// `true` or `false`, any case.
fn flag(key: &str, text: &str) -> Result<bool, Reject> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Reject::ibkr(
            400,
            format!("Bad Request: {key} must be true or false"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::InitParams;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn both(publish: bool, compete: bool) -> InitParams {
        InitParams {
            publish: Some(publish),
            compete: Some(compete),
        }
    }

    #[test]
    fn json_form_and_query_give_the_same_flags() {
        let json = br#"{"publish":true,"compete":true}"#;
        let from = |q, t, b: &[u8]| InitParams::from_request(q, t, b).ok();
        assert_eq!(
            from(None, Some("application/json"), json),
            Some(both(true, true))
        );
        assert_eq!(from(None, None, json), Some(both(true, true)));
        assert_eq!(
            from(None, FORM, b"publish=true&compete=true"),
            Some(both(true, true))
        );
        assert_eq!(
            from(Some("publish=true&compete=false"), None, b""),
            Some(both(true, false))
        );
        assert_eq!(from(None, None, b" "), Some(InitParams::default()));
        // The body wins over the query.
        assert_eq!(
            from(Some("compete=false"), FORM, b"compete=true&publish=false"),
            Some(both(false, true))
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for (query, content_type, body) in [
            (Some("compete=yes"), None, &b""[..]),
            (None, FORM, &b"compete=1"[..]),
            (None, None, &b"compete=true"[..]),
            (None, None, &br#"{"compete":1}"#[..]),
            (None, None, &b"[true]"[..]),
        ] {
            assert!(
                InitParams::from_request(query, content_type, body).is_err(),
                "{query:?} {body:?}"
            );
        }
    }
}
