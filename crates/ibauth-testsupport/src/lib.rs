//! Real servers for ibauth's tests, started and stopped by the tests themselves: a throw-away
//! PostgreSQL cluster ([`postgres`]) and a `redis-server` ([`redis`]). Nothing is assumed to
//! run beforehand; a missing program is a failure that says how to install it, never a skip.

pub mod postgres;
pub mod redis;
