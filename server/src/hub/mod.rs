//! How a chat message becomes a sequenced broadcast on every worker.
//!
//! Workers never sequence anything themselves: they validate a client's
//! message and send a [`Publish`] to the process's sequencer over a bounded
//! channel (`try_send`: a full channel is answered with an `unavailable`
//! error frame, never a blocked worker). The sequencer is either
//! - [`embedded`]: one thread that assigns each room's next seq in memory
//!   (single node, the default), or
//! - the Redis bridge (replica mode), where Redis assigns the seq and every
//!   pod receives the message from its subscription.
//!
//! Both end in [`fan_out`]: the message is appended to [`History`] and its
//! frame — serialised and framed once per pod, and compressed once for the
//! clients that negotiated permessage-deflate — goes to every worker's
//! [`inbox`], which queues it to the room's local members.
//!
//! [`History`]: crate::chat::history::History

pub mod embedded;
pub mod inbox;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::channels::Workers;
pub use crate::channels::{HubCommand, Origin, Publish};
use crate::chat::history::Entry;
use crate::ws::{encoder, Data, OpCode};
use inbox::ToWorker;

/// Messages that may wait for the sequencer before senders are refused.
pub const PUBLISH_QUEUE_MAX: usize = 65_536;

/// Hands a sequenced message to every worker, with its compressed frame
/// when any connection of the process negotiated permessage-deflate.
///
/// The frame is compressed here, once per message on the sequencer's
/// thread, never per recipient: with no context takeover a message
/// compresses to the same bytes for everyone, so the workers share one
/// `Arc` of it exactly as they share the uncompressed frame.
pub fn fan_out(workers: &Workers, room: &Arc<str>, entry: &Entry) {
    let deflated = deflated_frame(workers, entry);
    for inbox in &workers.inboxes {
        inbox.send(ToWorker::Broadcast { room: room.clone(), entry: entry.clone(), deflated: deflated.clone() });
    }
}

/// The compressed frame of `entry`, if it is worth sending to anyone.
fn deflated_frame(workers: &Workers, entry: &Entry) -> Option<Arc<[u8]>> {
    let json = entry.json();
    let wanted =
        workers.compression && json.len() >= workers.compression_min_bytes && workers.metrics.deflate_connections() > 0;
    wanted.then(|| encoder::compressed_frame(OpCode::Data(Data::Text), json, None).into())
}

/// Message ids: unique across pods and restarts without coordination —
/// a per-process tag (start time and pid) and a counter.
#[derive(Debug)]
pub struct IdGen {
    tag: String,
    next: AtomicU64,
}

impl IdGen {
    /// A generator with a fresh per-process tag.
    pub fn new() -> IdGen {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let tag = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
        IdGen { tag: format!("{:012x}", tag & 0xffff_ffff_ffff), next: AtomicU64::new(1) }
    }

    /// The next id.
    pub fn next_id(&self) -> String {
        format!("{}-{:x}", self.tag, self.next.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for IdGen {
    fn default() -> Self {
        IdGen::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique() {
        let a = IdGen::new();
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| a.next_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
