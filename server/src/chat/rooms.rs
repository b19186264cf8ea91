//! RoomIndex: which of a worker's connections are in which room.
//!
//! Each room maps to a dense `Vec` of slab keys; a connection remembers its
//! position (`slot`) in that vector, so joining and leaving are O(1)
//! (`swap_remove`, and the connection moved into the freed slot is told its
//! new position). A room's entry is removed when its last member leaves.
//! The index belongs to one worker thread and is never shared.

use std::collections::HashMap;
use std::sync::Arc;

/// Room name → slab keys of the members on this worker.
#[derive(Debug, Default)]
pub struct RoomIndex {
    rooms: HashMap<Arc<str>, Vec<usize>>,
}

impl RoomIndex {
    /// An empty index.
    pub fn new() -> RoomIndex {
        RoomIndex::default()
    }

    /// The shared name of `room`: the index's own key when the room has
    /// members here, so its members hold one allocation, not one each.
    pub fn intern(&self, room: &str) -> Arc<str> {
        self.rooms.get_key_value(room).map_or_else(|| Arc::from(room), |(k, _)| k.clone())
    }

    /// Adds `key` to `room`; returns its slot.
    pub fn join(&mut self, room: &Arc<str>, key: usize) -> u32 {
        let members = self.rooms.entry(room.clone()).or_default();
        members.push(key);
        (members.len() - 1) as u32
    }

    /// Removes the member at `slot` of `room`. If another member was moved
    /// into `slot`, returns its key so the caller can update its slot.
    pub fn leave(&mut self, room: &str, slot: u32) -> Option<usize> {
        let members = self.rooms.get_mut(room)?;
        let slot = slot as usize;
        if slot >= members.len() {
            debug_assert!(false, "slot {slot} out of range in room {room}");
            return None;
        }
        members.swap_remove(slot);
        let moved = members.get(slot).copied();
        if members.is_empty() {
            self.rooms.remove(room);
        }
        moved
    }

    /// The members of `room` on this worker.
    pub fn members(&self, room: &str) -> &[usize] {
        self.rooms.get(room).map_or(&[], |m| m.as_slice())
    }

    /// Number of rooms with at least one member here.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room has members here.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_leave_keeps_slots_consistent() {
        let mut idx = RoomIndex::new();
        let r: Arc<str> = Arc::from("r");
        let mut slots = std::collections::HashMap::new();
        for key in 10..15 {
            slots.insert(key, idx.join(&r, key));
        }
        // Leave from the middle: the last member moves into the hole.
        let moved = idx.leave("r", slots[&11]).unwrap();
        assert_eq!(moved, 14);
        slots.insert(14, slots[&11]);
        slots.remove(&11);
        for (&key, &slot) in &slots {
            assert_eq!(idx.members("r")[slot as usize], key);
        }
        // Leave the last one: nothing moves.
        let last = *idx.members("r").last().unwrap();
        assert_eq!(idx.leave("r", slots[&last]), None);
        for key in idx.members("r").to_vec() {
            let slot = idx.members("r").iter().position(|&k| k == key).unwrap() as u32;
            idx.leave("r", slot);
        }
        assert!(idx.is_empty(), "empty rooms are removed");
        assert_eq!(idx.members("r"), &[] as &[usize]);
    }
}
