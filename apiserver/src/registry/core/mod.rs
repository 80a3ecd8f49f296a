//! core/v1 kinds with behaviour of their own.

pub mod events;
pub mod namespaces;
pub mod nodes;
pub mod pods;
pub mod pvcs;
pub mod secrets;
pub mod services;
