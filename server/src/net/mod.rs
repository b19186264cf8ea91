//! The network layer: thread-per-core mio event loops.
//!
//! Every worker owns a `mio::Poll`, a listener on the shared port
//! (SO_REUSEPORT), a `Slab` of connections whose keys are the mio tokens,
//! a per-worker scratch read buffer and a room index. Workers share
//! nothing on the hot path; other threads reach a worker only through its
//! inbox (a channel and a `Waker`).
//!
//! mio is edge-triggered, and the worker follows its rules:
//! - *Spurious events*: readiness does not promise the operation succeeds;
//!   every read and write handles `WouldBlock`.
//! - *Draining readiness*: after an event, read (or write) until
//!   `WouldBlock`, or no further event is guaranteed. Where a fairness
//!   budget stops a read early, the connection is remembered
//!   (`READ_PENDING`) and read again on the next iteration, with a zero
//!   poll timeout; the listener, when accepting is paused at the
//!   open-file limit, is retried by the tick.
//! - *Hints*: closed and error readiness only prompt a read, which reports
//!   the actual state.
//!
//! Writes are never made in the middle of handling an event or a fan-out:
//! output is queued and the connection marked pending; `before_sleep`
//! writes every pending connection once, gathering everything queued into
//! vectored writes; under load `pacing` spaces those passes so that each
//! write carries more frames. Connections are likewise only removed at the
//! end of a loop turn (`DOOMED`), never while a room is being iterated.
//!
//! Modules: `worker` (the loop, with its parts in `worker/`), `conn` (one
//! connection's state), `outq` (its output queue), `pacing` (when a flush
//! pass runs), `drain` (the SIGTERM drain plan), `listener` (SO_REUSEPORT
//! listeners).

pub mod conn;
pub mod drain;
pub mod listener;
pub mod outq;
pub mod pacing;
pub mod worker;
