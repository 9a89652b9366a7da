//! A Redis coordinator for ibauth.
