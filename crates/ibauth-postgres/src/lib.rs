//! A PostgreSQL coordinator for ibauth.
