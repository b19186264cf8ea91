//! Persistence: MongoDB (when `MONGO_URI` is set) and the history loader.
//!
//! - [`StoreSender`](crate::channels::StoreSender) (in `channels`, with the
//!   other ways between threads): how the sequencer hands each message
//!   sequenced on this pod to the writer thread, never blocking; a full
//!   queue (`MONGO_QUEUE_MAX`) drops the message, counts it and logs it
//!   loudly.
//! - [`mongo`]: the connection, the document shape and the writer thread
//!   (batched unordered `insert_many`, idempotent through the unique
//!   `(room, seq)` index, retried with backoff, flushed on shutdown).
//! - [`loader`]: the thread that warms a cold room's history on this pod
//!   and serves resumes older than the in-memory ring, from the Redis list
//!   and MongoDB, so no worker ever blocks on either.

pub mod loader;
pub mod mongo;
