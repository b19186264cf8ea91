//! The subscriber's catch-up after a room's subscription is confirmed:
//! the room's counter is read (at once), and once this pod knows the
//! room's last seq, a counter below the pod's floor is raised to it (Redis
//! lost writes it had acknowledged) and what lies between is filled from
//! the room's Redis list. Only then is the room *live* for the publisher.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::super::seq_key;
use super::Subscriber;

/// Raises a room's counter (`KEYS[1]`) to `ARGV[1]` if it is below;
/// returns what it was.
const RAISE_SCRIPT: &str = "local c = tonumber(redis.call('GET', KEYS[1]) or '0') \
    if c < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end return c";

impl Subscriber {
    /// Fills what rooms missed while they were not subscribed.
    pub(super) fn catch_up_rooms(&mut self) {
        let pending: Vec<Arc<str>> =
            self.rooms.iter().filter(|(_, r)| r.active && r.catch_up.is_some()).map(|(k, _)| k.clone()).collect();
        for room in pending {
            let want = self.rooms.get(&room).and_then(|r| r.catch_up).expect("filtered");
            let counter = match want {
                Some(c) => c,
                None => match self.pool.query::<Option<u64>>(&room, redis::cmd("GET").arg(seq_key(&room))) {
                    Ok(c) => {
                        // A counter beyond MAX_SEQ is not ours: ignored (and c + 1 cannot overflow).
                        let c = c.filter(|&c| c <= super::super::MAX_SEQ).unwrap_or(0);
                        if let Some(r) = self.rooms.get_mut(&room) {
                            r.catch_up = Some(Some(c));
                        }
                        c
                    }
                    Err(e) => {
                        self.command_failed(&e);
                        continue;
                    }
                },
            };
            let Some(local) = self.state.history.known_last_seq(&room) else { continue };
            if counter < local {
                if let Err(e) = self.raise_counter(&room, local) {
                    self.command_failed(&e);
                    continue;
                }
            }
            if local < counter {
                if let Err(e) = self.fill(&room, local, counter + 1) {
                    self.command_failed(&e);
                    continue;
                }
            }
            if let Some(r) = self.rooms.get_mut(&room) {
                r.catch_up = None;
            }
            // Caught up and the counter at least this pod's floor: the
            // publisher may publish into the room now.
            self.live.set(&room, true);
        }
    }

    /// The room's counter was read below this pod's floor: Redis lost
    /// writes it had acknowledged (a restart without persistence, a
    /// failover to a replica without the last writes). Raises it to the
    /// floor, atomically and never downwards, so that no seq this pod saw
    /// given is given again, whichever pod publishes next.
    fn raise_counter(&mut self, room: &Arc<str>, floor: u64) -> redis::RedisResult<()> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RAISE_SCRIPT).arg(1).arg(seq_key(room)).arg(floor);
        let before: u64 = self.pool.query(room, &cmd)?;
        if before < floor {
            self.state.metrics.backend.seq_raised.fetch_add(1, Relaxed);
            log::warn!("room {room}: Redis's counter was {before}, below seq {floor} given before; raised to {floor}");
        }
        Ok(())
    }
}
