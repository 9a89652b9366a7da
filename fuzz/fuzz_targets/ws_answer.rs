//! The WebSocket: the server's answer to the upgrade request (its head read within bounds,
//! a refusal's body and `Retry-After`, the upgrade checks), then the frames that follow,
//! through tungstenite with ibauth's caps on frame and message size.
//!
//! Input: a byte choosing the read size and the message cap, then what the server sends.
//! The request was sent with RFC 6455's sample key, whose accept value the seeds carry.
#![no_main]

use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const CAPS: [usize; 4] = [ibauth::http::DEFAULT_MAX_BODY, 64 * 1024, 4096, 125];
const READS: [usize; 4] = [4096, 1, 7, 1024];

fuzz_target!(|data: &[u8]| {
    let Some((&shape, stream)) = data.split_first() else {
        return;
    };
    let cap = CAPS[usize::from(shape & 3)];
    let read = READS[usize::from((shape >> 2) & 3)];
    ibauth_fuzz::runtime().block_on(async {
        let peer = ibauth_fuzz::Peer::new(stream, read);
        let (mut socket, status) = match ibauth::fuzzing::ws_answer(peer, KEY, cap).await {
            Ok(open) => open,
            Err(e) => {
                let text = e.to_string();
                assert!(
                    !text.chars().any(|c| c.is_control() && c != '\n'),
                    "{text:?}"
                );
                return;
            }
        };
        assert_eq!(status, 101);
        // Every message the socket yields is within the cap; a stream always ends.
        for _ in 0..10_000 {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => assert!(text.len() <= cap),
                Some(Ok(Message::Binary(bytes))) => assert!(bytes.len() <= cap),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
        panic!("the socket never ended on a finite input");
    });
});
