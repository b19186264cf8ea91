//! A stored chat message and its document.
//!
//! Document (one per chat message, written once by its origin pod):
//! `{room, seq, id, username, message, podName, timestamp: Date}`, plus
//! `clientId` and `userId` when the message has them; seq is stored as a
//! 64-bit integer (one stored as a 32-bit integer reads back too). The
//! unique index `{room: 1, seq: 1}` (`room_1_seq_1`) makes a retried write
//! idempotent.

use mongodb::bson::{doc, DateTime, Document};

/// A chat message as MongoDB stores it: the fields of the server's
/// sequenced chat message, which converts to and from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The room.
    pub room: String,
    /// Position in the room: 1, 2, 3, …
    pub seq: u64,
    /// Opaque unique id.
    pub id: String,
    /// Sender's name.
    pub username: String,
    /// The text.
    pub message: String,
    /// The pod the sender was connected to.
    pub pod_name: String,
    /// When the origin pod accepted it, Unix milliseconds.
    pub timestamp_ms: i64,
    /// The sender's own id for it, if it gave one.
    pub client_id: Option<String>,
    /// The sender's user id, when authentication is on.
    pub user_id: Option<String>,
}

/// A message's key as stored, `{room, seq}` (the unique index).
pub(crate) fn key(m: &StoredMessage) -> Document {
    doc! {"room": &m.room, "seq": m.seq as i64}
}

/// The `(room, seq)` of a stored document, if it has them.
pub(crate) fn key_of(d: &Document) -> Option<(String, u64)> {
    let seq = d.get_i64("seq").or_else(|_| d.get_i32("seq").map(i64::from)).ok()?;
    Some((d.get_str("room").ok()?.to_string(), u64::try_from(seq).ok()?))
}

/// The stored form of a message.
pub(crate) fn to_document(m: &StoredMessage) -> Document {
    let mut d = key(m);
    d.extend(doc! {
        "id": &m.id,
        "username": &m.username,
        "message": &m.message,
        "podName": &m.pod_name,
        "timestamp": DateTime::from_millis(m.timestamp_ms),
    });
    if let Some(client_id) = &m.client_id {
        d.insert("clientId", client_id);
    }
    if let Some(user_id) = &m.user_id {
        d.insert("userId", user_id);
    }
    d
}

/// A stored message read back; `None` if the document is not one of ours.
pub(crate) fn from_document(d: &Document) -> Option<StoredMessage> {
    let (room, seq) = key_of(d)?;
    Some(StoredMessage {
        room,
        seq,
        id: d.get_str("id").unwrap_or_default().to_string(),
        username: d.get_str("username").ok()?.to_string(),
        message: d.get_str("message").ok()?.to_string(),
        pod_name: d.get_str("podName").unwrap_or_default().to_string(),
        timestamp_ms: d.get_datetime("timestamp").map_or(0, |t| t.timestamp_millis()),
        client_id: d.get_str("clientId").ok().map(str::to_string),
        user_id: d.get_str("userId").ok().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip() {
        let m = StoredMessage {
            room: "r".into(),
            seq: 42,
            id: "x-1".into(),
            username: "ana".into(),
            message: "hi".into(),
            pod_name: "p-0".into(),
            timestamp_ms: 1_795_608_245_123,
            client_id: None,
            user_id: None,
        };
        let d = to_document(&m);
        assert_eq!(d.get_i64("seq").unwrap(), 42);
        assert_eq!(d.get_datetime("timestamp").unwrap().timestamp_millis(), 1_795_608_245_123);
        assert!(!d.contains_key("clientId"));
        assert_eq!(from_document(&d), Some(m.clone()));
        let m = StoredMessage { client_id: Some("c-9".into()), user_id: Some("u-9".into()), ..m };
        assert_eq!(from_document(&to_document(&m)), Some(m));
        assert_eq!(from_document(&doc! {"other": 1}), None);
    }

    #[test]
    fn a_seq_stored_as_a_32_bit_integer_reads_back() {
        let d = doc! {"room": "r", "seq": 7_i32, "username": "ana", "message": "hi"};
        let m = from_document(&d).expect("one of ours");
        assert_eq!((m.seq, m.id.as_str(), m.timestamp_ms), (7, "", 0));
        assert_eq!(from_document(&doc! {"room": "r", "seq": -1_i64, "username": "a", "message": "m"}), None);
    }
}
