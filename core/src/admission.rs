//! Admission of connections that have not authenticated yet: a socket open, no credential
//! shown (an MQTT session before its CONNECT is verified, an AMQP connection before SASL or a
//! token on `$cbs`).
//!
//! Such a connection costs the hub a socket (a descriptor under workerd) and a little memory,
//! and anybody who can reach the port can open one. Refusing newcomers once a bound is reached
//! would hand the hub to whoever opens sockets fastest: a flood of silent sockets would lock
//! every real device out until they time out. So the bound is kept by **evicting the oldest**
//! waiting connection instead: a real device authenticates within milliseconds of opening, so
//! it is done long before the flood's newer sockets push it out, while the flood only churns
//! its own sockets. One source (a client address, when the runtime tells it) may hold at most
//! a share of the bound, and a source at its share evicts its own oldest, so one address cannot
//! fill the shard at all.
//!
//! Sans-I/O: the adapter reports opens, authentications and closes, and closes what
//! [`PreAuth::admit`] says to evict.

use std::collections::{HashMap, VecDeque};

/// What a newcomer's admission asks of the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted<C> {
    /// A waiting connection to close now (code 1013 "try again later" on a WebSocket), to make
    /// room: the source's own oldest when it is at its share, else the oldest of all.
    pub evict: Option<C>,
}

/// The connections waiting to authenticate, in the order they arrived.
#[derive(Clone, Debug)]
pub struct PreAuth<C> {
    max_total: usize,
    max_per_source: usize,
    waiting: VecDeque<Waiting<C>>,
    per_source: HashMap<String, usize>,
}

#[derive(Clone, Debug)]
struct Waiting<C> {
    conn: C,
    /// Empty when the runtime does not say (local workerd's WebSockets): such connections are
    /// bounded by the total only.
    source: String,
}

impl<C: Clone + PartialEq> PreAuth<C> {
    /// At most `max_total` waiting at once, and `max_per_source` from one known source.
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        Self {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            waiting: VecDeque::new(),
            per_source: HashMap::new(),
        }
    }

    /// A connection opened from `source` (a client address; empty when unknown). It is always
    /// admitted; to keep the bounds, an older waiting connection may have to go.
    pub fn admit(&mut self, conn: C, source: &str) -> Admitted<C> {
        let at_share = !source.is_empty() && self.per_source.get(source).copied().unwrap_or(0) >= self.max_per_source;
        let evict = if at_share {
            self.waiting.iter().position(|w| w.source == source).and_then(|i| self.remove_at(i))
        } else if self.waiting.len() >= self.max_total {
            self.remove_at(0)
        } else {
            None
        };
        if !source.is_empty() {
            *self.per_source.entry(source.to_owned()).or_default() += 1;
        }
        self.waiting.push_back(Waiting { conn, source: source.to_owned() });
        Admitted { evict }
    }

    /// The connection authenticated or closed: it no longer waits. Whether it was waiting.
    pub fn done(&mut self, conn: &C) -> bool {
        match self.waiting.iter().position(|w| &w.conn == conn) {
            Some(i) => self.remove_at(i).is_some(),
            None => false,
        }
    }

    /// Connections waiting now.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    fn remove_at(&mut self, i: usize) -> Option<C> {
        let gone = self.waiting.remove(i)?;
        if let Some(n) = self.per_source.get_mut(&gone.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&gone.source);
            }
        }
        Some(gone.conn)
    }
}

/// The key a client address is bounded under: an IPv4 address as it is, an IPv6 address by its
/// /64 (one subscriber's prefix: a client rotating through its own addresses is one source).
pub fn source_key(address: &str) -> String {
    match address.trim().parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(v4) => v4.to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bound_evicts_the_oldest_not_the_newcomer() {
        let mut pre = PreAuth::new(3, 10);
        for c in 0..3 {
            assert_eq!(pre.admit(c, "").evict, None);
        }
        // A flood's fourth socket pushes out the first; a real device arriving now is admitted
        // and authenticates before the flood reaches it.
        assert_eq!(pre.admit(3, "").evict, Some(0));
        assert_eq!(pre.admit(100, "").evict, Some(1));
        assert!(pre.done(&100));
        assert!(!pre.done(&100));
        assert_eq!(pre.len(), 2);
        assert_eq!(pre.admit(4, "").evict, None);
        assert_eq!(pre.admit(5, "").evict, Some(2));
    }

    #[test]
    fn one_source_evicts_only_its_own_past_its_share() {
        let mut pre = PreAuth::new(100, 2);
        assert_eq!(pre.admit(1, "10.0.0.9").evict, None);
        assert_eq!(pre.admit(2, "10.0.0.7").evict, None);
        assert_eq!(pre.admit(3, "10.0.0.9").evict, None);
        // The third from .9 evicts .9's oldest, never .7's.
        assert_eq!(pre.admit(4, "10.0.0.9").evict, Some(1));
        assert_eq!(pre.admit(5, "10.0.0.9").evict, Some(3));
        assert_eq!(pre.len(), 3);
        assert!(pre.done(&2));
        assert!(pre.done(&4) && pre.done(&5));
        assert!(pre.is_empty() && pre.per_source.is_empty());
    }

    #[test]
    fn sources_are_keyed_by_address_or_ipv6_prefix() {
        assert_eq!(source_key("203.0.113.9"), "203.0.113.9");
        assert_eq!(source_key("2001:db8:1:2:aaaa::1"), source_key("2001:db8:1:2:ffff::7"));
        assert_ne!(source_key("2001:db8:1:2::1"), source_key("2001:db8:1:3::1"));
        assert_eq!(source_key("junk"), "");
        assert_eq!(source_key(""), "");
    }

    proptest::proptest! {
        /// Whatever the sequence of opens and closes, the bounds hold after each step and the
        /// per-source counts agree with the queue.
        #[test]
        fn bounds_hold(ops in proptest::collection::vec((0u8..4, 0u16..64, proptest::bool::ANY), 0..300)) {
            let mut pre = PreAuth::new(8, 3);
            for (source, conn, open) in ops {
                let source = if source == 0 { String::new() } else { format!("s{source}") };
                if open {
                    if pre.waiting.iter().any(|w| w.conn == conn) { continue; }
                    pre.admit(conn, &source);
                } else {
                    pre.done(&conn);
                }
                proptest::prop_assert!(pre.len() <= 8);
                let mut counted: HashMap<String, usize> = HashMap::new();
                for w in pre.waiting.iter().filter(|w| !w.source.is_empty()) {
                    *counted.entry(w.source.clone()).or_default() += 1;
                }
                proptest::prop_assert!(counted.values().all(|n| *n <= 3));
                proptest::prop_assert_eq!(&counted, &pre.per_source);
            }
        }
    }
}
