//! A throw-away PostgreSQL cluster.
