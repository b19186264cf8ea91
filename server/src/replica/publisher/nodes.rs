//! The publisher's connections, per node: a node that fails holds only
//! its slots' messages while the slot map is read again (a failover
//! promotes a replica); each node reconnects with its own backoff.

use std::sync::atomic::Ordering::Relaxed;

use super::super::topology::Node;
use super::super::{node_failed, PUBLISH_SCRIPT};
use super::{Publisher, CONNECT_TIMEOUT, IO_TIMEOUT};
use crate::health::one_line;

impl Publisher {
    /// Checks idle connections, so an outage is seen (and logged, and
    /// counted) before the next message needs Redis.
    pub(super) fn ping_if_idle(&mut self) {
        let mut failed = Vec::new();
        for (node, con) in self.cons.iter_mut() {
            if let Err(e) = redis::cmd("PING").query::<String>(con) {
                failed.push((node.clone(), e));
            }
        }
        for (node, e) in failed {
            self.lost(&node, &e);
        }
    }

    /// The connection to `node` failed: the messages of its slots wait
    /// (until it answers again, or the topology names another owner);
    /// the other nodes' go on. The slot map is read again at once.
    pub(super) fn lost(&mut self, node: &Node, e: &redis::RedisError) {
        let m = &self.state.metrics.backend;
        m.redis_errors.fetch_add(1, Relaxed);
        m.redis_publisher_up.store(0, Relaxed);
        self.cons.remove(node);
        let (wait, first) = node_failed(&mut self.down, node);
        if first {
            log::warn!(
                "Redis publisher lost {node} ({}); holding its rooms' messages (up to {:?}), reconnecting with \
                 backoff (next in {wait:?}); {} held",
                one_line(e),
                self.hold,
                self.held.len()
            );
        }
        self.topo.refresh();
    }

    /// While a node is down: reads the slot map again (rate-limited by the
    /// topology), so a failover is followed as soon as the cluster has
    /// promoted a replica; nodes no longer masters are forgotten.
    pub(super) fn follow_failover(&mut self) {
        if self.topo.is_cluster() {
            self.topo.refresh();
        }
        let masters = self.topo.masters();
        let before = self.down.len();
        self.down.retain(|n, _| masters.contains(n));
        self.cons.retain(|n, _| masters.contains(n));
        if self.down.len() < before {
            log::info!("Redis publisher: the slot map names new masters; sending their rooms' messages there");
        }
        if self.down.is_empty() {
            self.recovered();
        }
    }

    /// Every node answers again.
    pub(super) fn recovered(&mut self) {
        let m = &self.state.metrics.backend;
        m.redis_publisher_up.store(1, Relaxed);
        m.redis_reconnects.fetch_add(1, Relaxed);
        log::info!("Redis publisher reconnected");
        self.resolve_unresolved();
    }

    /// Connects `node` if it has no connection (and is not waiting out its
    /// backoff), loading the script. Whether it is connected.
    pub(super) fn ensure(&mut self, node: &Node) -> bool {
        if self.cons.contains_key(node) {
            return true;
        }
        if self.down.get(node).is_some_and(|b| !b.ready()) {
            return false;
        }
        let attempt =
            self.topo.client(node).and_then(|c| c.get_connection_with_timeout(CONNECT_TIMEOUT)).and_then(|mut c| {
                c.set_read_timeout(Some(IO_TIMEOUT))?;
                c.set_write_timeout(Some(IO_TIMEOUT))?;
                redis::Script::new(PUBLISH_SCRIPT).load(&mut c)?;
                Ok(c)
            });
        match attempt {
            Ok(c) => {
                self.cons.insert(node.clone(), c);
                if self.down.remove(node).is_some() {
                    log::info!("Redis publisher reconnected to {node}");
                    if self.down.is_empty() {
                        self.recovered();
                    }
                } else if !self.ever_connected {
                    self.ever_connected = true;
                    log::info!("Redis publisher connected ({node})");
                }
                if self.down.is_empty() {
                    self.state.metrics.backend.redis_publisher_up.store(1, Relaxed);
                }
                true
            }
            Err(e) => {
                self.lost(node, &e);
                false
            }
        }
    }

    /// Connects every master that has no connection (at start-up, and
    /// while idle), so `redis_connected` says the truth before a message
    /// needs it.
    pub(super) fn connect_masters(&mut self) {
        for node in self.topo.masters() {
            self.ensure(&node);
        }
    }
}
