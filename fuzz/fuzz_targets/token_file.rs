//! The token file as `FileStore` reads it: JSON documents of schema 2 (an entry per identity)
//! and schema 1 (one document, moved under its identity), from a private file in a private
//! folder, as ibauth's own.
//!
//! Input: the file's bytes.
#![no_main]

use ibauth::store::{FileStore, StoredTokens, TokenStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = ibauth_fuzz::scratch("token_file").join("tokens.json");
    ibauth_fuzz::write_private(&path, data);
    let store = FileStore::new(&path);
    match store.inspect() {
        Ok(docs) => {
            for doc in &docs {
                let _ = format!("{doc:?}");
                // What is read is what would be written: a document survives a round trip.
                let json = serde_json::to_string(doc).expect("a read document encodes");
                let again: StoredTokens = serde_json::from_str(&json).expect("and reads back");
                assert_eq!(&again, doc);
            }
            // Loading reads the same documents. (An entry filed under another identity than
            // its own is never used: every client checks the document's identity.)
            let loaded = store.load_all().expect("a readable file loads");
            assert_eq!(loaded, docs);
        }
        Err(e) => {
            let _ = e.to_string();
            // Without the lock a corrupt file is only reported, never moved or deleted.
            let _ = store.load_all();
            assert!(path.exists(), "{e}");
        }
    }
});
