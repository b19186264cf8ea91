//! Blocking command connections, one per node, routed by a room's slot.
//!
//! For the threads that read a room's keys (the subscriber's catch-ups and
//! gap fills, the history loader): [`NodePool::query`] sends a command to
//! the node owning the room's slot; on `MOVED`/`ASK` it refreshes the
//! topology and tries once more at the named node (with `ASKING` first for
//! `ASK`); a connection error drops that node's connection (the next call
//! reconnects) and refreshes the topology, since a failover may be why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::topology::{room_slot, Node, Topology};

/// Connect and I/O timeout of a pooled connection.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Lazily connected, one connection per node.
pub struct NodePool {
    topo: Arc<Topology>,
    cons: HashMap<Node, redis::Connection>,
}

/// Where a cluster redirection points: `MOVED slot host:port` or `ASK …`.
pub fn redirect(e: &redis::RedisError) -> Option<(bool, Node)> {
    let ask = match e.code()? {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let addr = e.redirect_node().map(|(addr, _)| addr.to_string())?;
    let (host, port) = addr.rsplit_once(':')?;
    Some((ask, Node { host: host.to_string(), port: port.parse().ok()? }))
}

impl NodePool {
    /// A pool over `topo`'s nodes.
    pub fn new(topo: Arc<Topology>) -> NodePool {
        NodePool { topo, cons: HashMap::new() }
    }

    /// The topology it routes by.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topo
    }

    fn con(&mut self, node: &Node) -> redis::RedisResult<&mut redis::Connection> {
        if !self.cons.contains_key(node) {
            let c = self.topo.client(node)?.get_connection_with_timeout(IO_TIMEOUT)?;
            c.set_read_timeout(Some(IO_TIMEOUT))?;
            c.set_write_timeout(Some(IO_TIMEOUT))?;
            self.cons.insert(node.clone(), c);
        }
        Ok(self.cons.get_mut(node).expect("just inserted"))
    }

    /// Runs `cmd` on the node owning `room`'s slot.
    pub fn query<T: redis::FromRedisValue>(&mut self, room: &str, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let mut node = self.topo.node_of(room_slot(room));
        let mut asking = false;
        for attempt in 0..3 {
            let result = self.con(&node).and_then(|con| {
                if asking {
                    redis::cmd("ASKING").query::<()>(con)?;
                }
                cmd.query::<T>(con)
            });
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if let Some((ask, to)) = redirect(&e) {
                        if !ask {
                            self.topo.refresh();
                        }
                        asking = ask;
                        node = to;
                        if attempt < 2 {
                            continue;
                        }
                    } else if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                        self.cons.remove(&node);
                        self.topo.refresh();
                    }
                    return Err(e);
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// Drops every connection (after an error whose node is unknown).
    pub fn reset(&mut self) {
        self.cons.clear();
    }
}
