//! # ibauth-gateway
//!
//! A drop-in replacement for IBKR's Client Portal Gateway and IBeam, on an OAuth session: every
//! client that talks to the gateway on `localhost:5000` — ibind without OAuth, IBeam
//! deployments, scripts with `curl -k` — keeps working unchanged, with no browser login and no
//! JVM.
//!
//! Requests under `/v1/api/…` and `/v1/portal/…` are passed on to IBKR authorised by an
//! [`ibauth::Session`] (OAuth 2.0, OAuth 1.0a or third party), paced under IBKR's limits (a
//! request that would wait too long is answered 429 here, so IBKR never sees a violation),
//! bodies streamed both ways. What must not reach IBKR from each client is answered here: a
//! re-authentication becomes the session's own recovery, a client's logout does not end the
//! session every other client uses, tickles are answered from the keep-alive's. The WebSocket
//! is bridged, its subscriptions re-sent after a reconnect. A health server like IBeam's reads
//! cached state.
//!
//! The settings IBKR's and IBeam's users already have are read by [`conf`] (the gateway's
//! `conf.yaml`, unchanged) and [`env`] (the `IBEAM_*` variables), and put together under the
//! caller's own by [`Setup`] — command-line flags, then the environment, then `conf.yaml`, then
//! the defaults — which is all `ibauth gateway` does before starting a [`Gateway`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ibauth_gateway::{Gateway, GatewayOptions};
//! let session = ibauth::Session::from_config(None, None)?.build()?;
//! let running = Gateway::new(session, GatewayOptions::default()).start().await?;
//! println!("serving on {:?}", running.addrs());
//! running.run_until_signal().await; // drains, then logs out once
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod access;
pub mod conf;
pub mod env;
mod error;
mod front;
mod health;
mod local;
mod options;
mod proxy;
mod router;
mod server;
pub mod setup;
mod state;
mod tls;
mod ws;

pub use access::{AccessList, BadPattern};
pub use error::GatewayError;
pub use local::LOGIN_SUCCEEDS;
pub use options::{Cors, DEFAULT_HEALTH_PORT, DEFAULT_PORT, GatewayOptions, LogoutMode, TlsMode};
pub use server::{Gateway, Running};
pub use setup::{Overrides, Setup};
