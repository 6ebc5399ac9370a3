//! Calls to other members and to the cluster (surf), and the admin gate that cuts a node off.
//! Only this module names surf; [`crate::http`] serves the node with tide.

pub mod client;
pub mod gate;

pub use client::{CallError, Client};
pub use gate::Gate;
