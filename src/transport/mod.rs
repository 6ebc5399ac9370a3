//! HTTP between nodes and clients: surf out, tide in. Only this module names them.

pub mod client;
pub mod gate;
mod request_head;
pub mod server;

pub use client::{CallError, Client};
pub use gate::Gate;
