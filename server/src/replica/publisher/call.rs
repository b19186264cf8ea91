//! One script call: the group of rooms it carries, its arguments (see
//! [`PUBLISH_SCRIPT`](super::super::PUBLISH_SCRIPT)), and what the node's
//! answer means for each message of the group: its seq (or `-SEQ`, a
//! deduplicated resend), sent again (a slot elsewhere, a script cache
//! flushed, a node loading), or refused.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::super::pool::redirect;
use super::super::topology::{room_slot, Node};
use super::super::{publish_call, RoomCall};
use super::{Held, Publisher};
use crate::health::one_line;

/// One script call: the rooms of one node (of one slot, for messages
/// sent `ASKING` or `alone`).
pub(super) struct Group {
    pub node: Node,
    pub asking: bool,
    /// Per room, the batch indices of its messages, in order.
    pub rooms: Vec<(Arc<str>, Vec<usize>)>,
}

impl Group {
    /// The batch indices of its messages, in the order of the call.
    pub fn messages(&self) -> impl Iterator<Item = usize> + '_ {
        self.rooms.iter().flat_map(|(_, i)| i.iter().copied())
    }
}

/// What the answers to a batch's calls decided, per batch index.
pub(super) struct Outcome {
    /// The script's answer for the message: seq, `-SEQ`, or 0 (refused).
    pub results: Vec<Option<i64>>,
    /// Messages to hold and send again.
    pub retry: Vec<usize>,
    /// Wait a moment before the next batch (a slot moving, a failover).
    pub pause: bool,
}

impl Outcome {
    pub fn new(batch: usize) -> Outcome {
        Outcome { results: vec![None; batch], retry: Vec::new(), pause: false }
    }
}

impl Publisher {
    /// Takes `node`'s answer `v` to the call of `g`.
    pub(super) fn take_answer(
        &mut self,
        node: &Node,
        g: &Group,
        v: redis::Value,
        batch: &mut [Held],
        out: &mut Outcome,
    ) {
        let idx: Vec<usize> = g.messages().collect();
        match v {
            redis::Value::Array(seqs) if seqs.len() <= idx.len() => {
                let ran = seqs.len();
                for (&i, s) in idx.iter().zip(seqs) {
                    out.results[i] = Some(match s {
                        redis::Value::Int(s) => s,
                        _ => 0,
                    });
                }
                if ran < idx.len() {
                    // A room further on is not this node's (any more): it and
                    // the rooms after it did not run. Sent again, a call per slot.
                    self.topo.refresh();
                    out.pause = true;
                    for &i in &idx[ran..] {
                        batch[i].alone = true;
                    }
                    self.reroute(out, &idx[ran..]);
                }
            }
            redis::Value::ServerError(e) => {
                let err = redis::RedisError::from(e.clone());
                match (e.code(), redirect(&err)) {
                    (_, Some((true, to))) => {
                        // Redis routed by the first room: its slot is moving;
                        // the other slots' rooms are sent as before.
                        let moving = room_slot(&g.rooms[0].0);
                        for &i in &idx {
                            if room_slot(&batch[i].msg.room) == moving {
                                batch[i].ask = Some(to.clone());
                            }
                        }
                        self.reroute(out, &idx);
                    }
                    (_, Some((false, _))) | ("TRYAGAIN", None) => {
                        self.topo.refresh();
                        out.pause = true;
                        self.reroute(out, &idx);
                    }
                    ("NOSCRIPT", None) => {
                        // The script cache was flushed: reconnect (which loads it) and resend.
                        self.cons.remove(node);
                        out.retry.extend(idx);
                    }
                    ("CLUSTERDOWN", None) => {
                        // This slot has no master (mid-failover): held; the node's
                        // other slots are fine, so it is not marked down.
                        self.topo.refresh();
                        out.pause = true;
                        self.reroute(out, &idx);
                    }
                    ("LOADING", None) | ("MASTERDOWN", None) => {
                        out.retry.extend(idx);
                        self.lost(node, &err);
                    }
                    _ => {
                        let m = &self.state.metrics.backend;
                        m.redis_errors.fetch_add(1, Relaxed);
                        log::warn!("Redis refused a publish: {}", one_line(&err));
                        for &i in &idx {
                            out.results[i] = Some(0);
                        }
                    }
                }
            }
            other => {
                self.state.metrics.backend.redis_errors.fetch_add(1, Relaxed);
                log::warn!("unexpected answer to a publish: {other:?}");
                for i in idx {
                    out.results[i] = Some(0);
                }
            }
        }
    }

    /// Marks the batch's messages `idx` to be sent again because their
    /// slot was elsewhere, and counts them.
    fn reroute(&self, out: &mut Outcome, idx: &[usize]) {
        self.state.metrics.backend.redis_rerouted.fetch_add(idx.len() as u64, Relaxed);
        out.retry.extend_from_slice(idx);
    }

    /// Appends the script call of `g` to `pipe`.
    pub(super) fn script_call(&self, pipe: &mut redis::Pipeline, g: &Group, batch: &[Held]) {
        let history = &self.state.history;
        let rooms: Vec<RoomCall<'_>> = g
            .rooms
            .iter()
            .map(|(room, idx)| RoomCall {
                room,
                floor: history.known_last_seq(room).unwrap_or(0),
                messages: idx.iter().map(|&i| (&batch[i].msg, batch[i].in_doubt)).collect(),
            })
            .collect();
        let (route, args) = publish_call(history.ring(), self.topo.is_cluster(), &rooms);
        pipe.cmd("EVALSHA").arg(&self.sha).arg(1).arg(route).arg(args);
    }
}
