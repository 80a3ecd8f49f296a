//! The iptables mode: pure rendering (`render`) and the narrow `Iptables` trait that applies it.

pub mod render;
