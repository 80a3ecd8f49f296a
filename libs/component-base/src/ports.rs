//! Loopback ports for servers that must be named before they bind (etcd takes its ports as
//! flags; the cluster tool records the ports of the components it starts).
//!
//! A port the kernel gives `bind(127.0.0.1:0)` comes from the ephemeral range, which outgoing
//! connections take their local ports from too: released and bound again a moment later by
//! the server, it may by then be the local end of some connection, and the server exits with
//! "address already in use". Ports below the ephemeral range are never handed to outgoing
//! connections, so a port picked there stays free unless another listener picks the same one.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};

/// Lowest port tried: above the well-known ports and the usual registered services.
const LOW: u16 = 15000;
/// Exclusive top: NodePorts (30000-32767 by default) and the ephemeral range start here.
const HIGH: u16 = 30000;

/// A loopback port that was free a moment ago, below the ephemeral range when there is room.
pub fn free_loopback_port() -> std::io::Result<u16> {
    let high = ephemeral_range_start().unwrap_or(32768).min(HIGH);
    if high > LOW + 1000 {
        let span = u64::from(high - LOW);
        let mut x = seed();
        for _ in 0..256 {
            // xorshift64: a different walk for each call, in each process.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = LOW + (x % span) as u16;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

fn seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    // RandomState's keys are random per process; hashing a counter gives each call its own.
    RandomState::new().hash_one((std::process::id(), CALLS.fetch_add(1, Ordering::Relaxed))) | 1
}

fn ephemeral_range_start() -> Option<u16> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_and_below_the_ephemeral_range() {
        let start = ephemeral_range_start().unwrap_or(32768);
        let ports: Vec<u16> = (0..20).map(|_| free_loopback_port().expect("a port")).collect();
        for &p in &ports {
            if start > LOW + 1000 {
                assert!((LOW..start.min(HIGH)).contains(&p), "{p} outside {LOW}..{start}");
            }
            // Free: it can be bound now.
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("the port is free");
        }
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert!(distinct.len() > 15, "picks repeat: {ports:?}");
    }
}
