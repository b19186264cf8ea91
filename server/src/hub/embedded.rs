//! The embedded sequencer: one thread that gives each message its room's
//! next seq, stores it in history and fans it out. The single-node mode
//! (no Redis), and the default `cargo run` starts.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use super::{fan_out, HubCommand, IdGen, Origin, Publish};
use crate::chat::history::Entry;
use crate::chat::protocol::{ChatMessage, Reject};
use crate::hub::inbox::ToWorker;
use crate::state::ServerState;
use crate::store::loader::LoadRequest;
use crate::store::StoreSender;

/// Starts the sequencer thread; it exits after [`HubCommand::Stop`].
pub fn spawn(
    state: Arc<ServerState>,
    rx: Receiver<HubCommand>,
    store: Option<StoreSender>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("hub".into()).spawn(move || {
        let ids = IdGen::new();
        let pod: Arc<str> = Arc::from(state.config.pod_name.as_str());
        for cmd in rx.iter() {
            match cmd {
                HubCommand::Publish(p) => sequence(&state, &ids, &pod, p, store.as_ref()),
                HubCommand::Stop => break,
            }
        }
        log::debug!("hub stopped");
    })
}

fn sequence(state: &ServerState, ids: &IdGen, pod: &Arc<str>, p: Publish, store: Option<&StoreSender>) {
    let mut msg = ChatMessage {
        room: p.room.to_string(),
        seq: 0,
        id: ids.next_id(),
        username: p.username,
        message: p.message,
        pod_name: pod.to_string(),
        timestamp_ms: p.timestamp_ms,
    };
    let Some(entry) = state.history.append_next(&p.room, |seq| {
        msg.seq = seq;
        Entry::new(seq, &msg.to_json())
    }) else {
        // The room's latest seq is not loaded from MongoDB yet: numbering it
        // now could reuse a stored seq. Refuse, and load it.
        refuse_unknown_room(state, &p.room, p.origin);
        return;
    };
    fan_out(&state.inboxes, &p.room, &entry);
    state.metrics.backend.fanned_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(store) = store {
        store.enqueue(msg);
    }
}

fn refuse_unknown_room(state: &ServerState, room: &Arc<str>, origin: Origin) {
    if let Some(inbox) = state.inboxes.get(origin.worker) {
        let reject = Reject::new("unavailable", "the room's history is loading on this server; retry in a moment");
        inbox.send(ToWorker::Reject { key: origin.key, conn_id: origin.conn_id, reject });
    }
    if let Some(loader) = &state.loader {
        let _ = loader.try_send(LoadRequest { room: room.clone(), since: None, reply: None });
    }
}
