//! Calls to other members and to the cluster (surf), the admin gate that cuts a node off,
//! and mutual TLS (rustls). Only this module names surf and rustls; [`crate::http`] serves
//! the node with tide.

pub mod certs;
pub mod client;
pub mod gate;
mod pool;
mod resolver;
pub mod stream;
pub mod tls;

pub use client::{CallError, Client};
pub use gate::Gate;
