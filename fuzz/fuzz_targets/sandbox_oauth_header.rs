//! The sandbox's reading of an `Authorization: OAuth k="v", …` header: strict syntax, strict
//! percent-decoding, each parameter once.
//!
//! Input: the header's value.
#![no_main]

use ibauth::oauth1a::percent_encode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(params) = ibauth_sandbox::fuzzing::oauth_header(value) else {
        return;
    };
    // Written back as a client writes it, the same parameters are read.
    let header = params
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", percent_encode(v)))
        .collect::<Vec<_>>()
        .join(", ");
    let again = ibauth_sandbox::fuzzing::oauth_header(&format!("OAuth {header}"));
    assert_eq!(again.as_ref(), Ok(&params), "{header:?}");
});
