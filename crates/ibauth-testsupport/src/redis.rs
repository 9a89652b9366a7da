//! A throw-away redis-server.
