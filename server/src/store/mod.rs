//! Persistence: MongoDB (when `MONGO_URI` is set) and the history loader.
//!
//! - [`StoreSender`](crate::channels::StoreSender) (in `channels`, with the
//!   other ways between threads): how the sequencer hands each message
//!   sequenced on this pod to the writer thread, never blocking; a full
//!   queue (`MONGO_QUEUE_MAX`) drops the message, counts it and logs it
//!   loudly.
//! - [`writer`]: the writer thread (batches, retries with backoff, health
//!   and metrics, the flush on shutdown).
//! - [`loader`]: the thread that warms a cold room's history on this pod
//!   and serves resumes older than the in-memory ring, from the Redis list
//!   and MongoDB, so no worker ever blocks on either.
//!
//! MongoDB itself — the client, the `messages` collection and its unique
//! `(room, seq)` index, the document's shape, `insert_many` and what became
//! of each message, the history queries — is the `websocket-mongo` crate
//! (`server/mongo`), which compiles the driver's generic code once, apart
//! from this crate. Both threads speak its [`StoredMessage`]; the
//! conversions from and to [`ChatMessage`] are below (fields moved, not
//! copied, on the way in; the destructuring is exhaustive, so a field
//! added to either type does not compile until both sides have it).

use websocket_mongo::StoredMessage;

use crate::chat::protocol::ChatMessage;

pub mod loader;
pub mod writer;

impl From<ChatMessage> for StoredMessage {
    fn from(m: ChatMessage) -> StoredMessage {
        let ChatMessage { room, seq, id, username, message, pod_name, timestamp_ms, client_id, user_id } = m;
        StoredMessage { room, seq, id, username, message, pod_name, timestamp_ms, client_id, user_id }
    }
}

impl From<StoredMessage> for ChatMessage {
    fn from(m: StoredMessage) -> ChatMessage {
        let StoredMessage { room, seq, id, username, message, pod_name, timestamp_ms, client_id, user_id } = m;
        ChatMessage { room, seq, id, username, message, pod_name, timestamp_ms, client_id, user_id }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_message_converts_to_its_stored_form_and_back() {
        let m = ChatMessage {
            room: "r".into(),
            seq: 42,
            id: "x-1".into(),
            username: "ana".into(),
            message: "hi".into(),
            pod_name: "p-0".into(),
            timestamp_ms: 1_795_608_245_123,
            client_id: Some("c-9".into()),
            user_id: Some("u-9".into()),
        };
        let stored = StoredMessage::from(m.clone());
        assert_eq!((stored.room.as_str(), stored.seq, stored.pod_name.as_str()), ("r", 42, "p-0"));
        assert_eq!((stored.client_id.as_deref(), stored.user_id.as_deref()), (Some("c-9"), Some("u-9")));
        assert_eq!(ChatMessage::from(stored), m);
    }
}
