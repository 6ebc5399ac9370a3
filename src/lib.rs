//! facto: a fault-tolerant cluster that computes factorials.
//!
//! The pure cores ([`coordinator`], and the `facto-elections` crate) know nothing of HTTP,
//! storage or the command line; [`http`] (tide), [`transport`] (surf), [`store`] (sled) and
//! [`cli`] (structopt) are the thin edges that wrap the user's crates, and [`node`] is the
//! runtime that joins them: it owns time and I/O and feeds events to the state machines.
//! [`member`] wires one member together.

pub mod api;
pub mod bignum;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod frame;
pub mod html;
pub mod http;
pub mod member;
pub mod metrics;
pub mod node;
pub mod node_core;
#[cfg(feature = "simulation")]
pub mod simulation;
pub mod store;
pub mod transport;
