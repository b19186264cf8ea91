//! permessage-deflate (RFC 7692) payload transforms, without context takeover.
//!
//! Both directions are negotiated with `server_no_context_takeover` and
//! `client_no_context_takeover` (see `http::extensions`), so every message
//! is compressed and inflated on its own: a compressor or inflater is reset
//! per message and can be shared by every connection of a thread. That is
//! what keeps compression free per connection:
//! - [`Deflater`]: one per thread that compresses (the sequencer compresses
//!   a broadcast once for every recipient; a worker compresses a
//!   connection's own replies), reached through [`compress`].
//! - [`Inflater`]: one per worker, inflating the messages of all of its
//!   connections, each into the same bounded output buffer.
//!
//! Tail handling (§7.2.1, §7.2.2): a compressed message is the raw DEFLATE
//! data of a sync flush without its final `00 00 ff ff`; inflating appends
//! those four bytes back. Inflating stops as soon as the output would pass
//! the message limit, so a small payload that inflates to gigabytes (a zip
//! bomb) costs at most the limit, never an allocation of its full size.
//!
//! Window sizes: a message of `n` bytes compressed on its own holds no
//! back-reference longer than `n - 1`, so for `n <= 2^w` it is valid for
//! any peer window of `w` bits. A client that asked for a smaller
//! `server_max_window_bits` (8 at the least) is therefore sent compressed
//! frames only for messages of at most [`SMALL_WINDOW_MAX_LEN`] bytes, and
//! uncompressed frames (allowed per message) otherwise; our inflater always
//! has the largest window (15), so `client_max_window_bits` needs nothing.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::WsError;

/// The empty stored block a sync flush ends with, removed before sending
/// and put back before inflating.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The longest message sent compressed to a client that limited our window
/// (`server_max_window_bits` below 15): 2^8 bytes, valid for every legal window.
pub const SMALL_WINDOW_MAX_LEN: usize = 1 << 8;

/// Compression level: 6, zlib's default. Chat frames are short, so the
/// level changes the ratio little and the cost per message even less.
const LEVEL: u32 = 6;

/// The largest compressed payload accepted for a message of at most `max`
/// bytes: incompressible data grows a little when deflated (5 bytes per
/// stored block of up to 64 KiB, plus a few), so the wire limit leaves
/// that room; the inflated size is what [`Inflater::inflate`] holds to `max`.
pub fn compressed_limit(max: usize) -> usize {
    max.saturating_add(max / 64).saturating_add(64)
}

/// A reusable raw-DEFLATE compressor, reset for every message.
pub struct Deflater {
    compress: Compress,
    /// Output buffer reused between messages (see [`with_compressed`]).
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deflater")
    }
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater::new()
    }
}

impl Deflater {
    /// A compressor at [`LEVEL`] producing raw DEFLATE (no zlib header).
    pub fn new() -> Deflater {
        Deflater { compress: Compress::new(Compression::new(LEVEL), false), scratch: Vec::new() }
    }

    /// Compresses `data` as one message (§7.2.1): the sync-flushed DEFLATE
    /// data without its `00 00 ff ff` tail, appended to `out`. Calls the
    /// compressor until all input is taken **and** the flush is complete
    /// (the output ends with the empty stored block), since it may hold
    /// output back between calls. `false` (and `out` as it was) if the
    /// compressor stopped without completing the flush: send uncompressed.
    pub fn compress_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        self.compress.reset();
        let start = out.len();
        out.reserve(data.len() / 2 + 64);
        for _ in 0..100_000 {
            let (in_before, out_before) = (self.compress.total_in(), out.len());
            // Errors are impossible here (raw streams, valid flush, output room).
            let _ = self.compress.compress_vec(&data[in_before as usize..], out, FlushCompress::Sync);
            let all_in = self.compress.total_in() as usize == data.len();
            let room_left = out.len() < out.capacity();
            if all_in && room_left && out[start..].ends_with(&TAIL) {
                out.truncate(out.len() - TAIL.len());
                return true;
            }
            let progressed = self.compress.total_in() > in_before || out.len() > out_before;
            if !progressed && room_left {
                break; // stuck: never seen, but never loop forever
            }
            if !room_left {
                out.reserve(out.capacity().max(64));
            }
        }
        out.truncate(start);
        false
    }
}

thread_local! {
    /// This thread's compressor, created on first use.
    static DEFLATER: RefCell<Deflater> = RefCell::new(Deflater::new());
}

/// Compresses `data` with this thread's [`Deflater`] into `out`.
pub fn compress(data: &[u8], out: &mut Vec<u8>) -> bool {
    DEFLATER.with(|d| d.borrow_mut().compress_into(data, out))
}

/// Compresses `data` with this thread's [`Deflater`] into its reused
/// buffer and hands the result to `f` (which builds the frame: the only
/// allocation per message, of exactly the frame's size); `None` if the
/// compressor could not complete the message (then send it uncompressed).
pub fn with_compressed<R>(data: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    DEFLATER.with(|d| {
        let mut d = d.borrow_mut();
        let mut out = std::mem::take(&mut d.scratch);
        out.clear();
        let r = d.compress_into(data, &mut out).then(|| f(&out));
        if out.capacity() <= KEEP_OUT {
            d.scratch = out; // a larger one (a huge echo) is released
        }
        r
    })
}

/// A reusable raw-DEFLATE inflater with a bounded output buffer, reset for
/// every message.
pub struct Inflater {
    decompress: Decompress,
    out: Vec<u8>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").field("capacity", &self.out.capacity()).finish()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

/// Output buffer kept between messages; a larger one is released by [`Inflater::trim`].
const KEEP_OUT: usize = 64 * 1024;

impl Inflater {
    /// An inflater with the largest window (15 bits), so it accepts what
    /// any client compressed.
    pub fn new() -> Inflater {
        Inflater { decompress: Decompress::new(false), out: Vec::new() }
    }

    /// Inflates one message's compressed payload (§7.2.2) and returns it.
    ///
    /// `Err(MessageTooBig)` as soon as more than `max` bytes come out (at most
    /// `max + 1` bytes are ever held); `Err(InvalidCompressedData)` for data
    /// that is not DEFLATE.
    pub fn inflate(&mut self, compressed: &[u8], max: usize) -> Result<&[u8], WsError> {
        self.decompress.reset(false);
        self.out.clear();
        for part in [compressed, &TAIL[..]] {
            let mut pos = 0;
            loop {
                if self.out.len() == self.out.capacity() {
                    if self.out.len() > max {
                        return Err(WsError::MessageTooBig);
                    }
                    // Grow geometrically, never past max + 1 bytes.
                    let room = self.out.capacity().clamp(1024, 1 << 20).min(max + 1 - self.out.len());
                    self.out.reserve_exact(room);
                }
                let (in_before, out_before) = (self.decompress.total_in(), self.out.len());
                let status = self
                    .decompress
                    .decompress_vec(&part[pos..], &mut self.out, FlushDecompress::None)
                    .map_err(|_| WsError::InvalidCompressedData)?;
                pos += (self.decompress.total_in() - in_before) as usize;
                if self.out.len() > max {
                    return Err(WsError::MessageTooBig);
                }
                match status {
                    // A final block ended the stream: nothing after it counts.
                    Status::StreamEnd => return Ok(&self.out),
                    Status::Ok | Status::BufError => {
                        if pos == part.len() && self.out.len() < self.out.capacity() {
                            break; // all of this part taken, output not full: next part
                        }
                        let stuck = self.decompress.total_in() == in_before && self.out.len() == out_before;
                        if stuck && self.out.len() < self.out.capacity() {
                            return Err(WsError::InvalidCompressedData);
                        }
                    }
                }
            }
        }
        Ok(&self.out)
    }

    /// Releases a large output buffer (call when idle).
    pub fn trim(&mut self) {
        if self.out.capacity() > KEEP_OUT {
            self.out = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(Deflater::new().compress_into(data, &mut out));
        out
    }

    #[test]
    fn the_rfc_hello_example_inflates() {
        // RFC 7692 §7.2.3.1: "Hello" compressed without context takeover.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(Inflater::new().inflate(&hello, 100).unwrap(), b"Hello");
        // §7.2.3.3: "Hello" in a stored (uncompressed) block.
        let stored = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        assert_eq!(Inflater::new().inflate(&stored, 100).unwrap(), b"Hello");
        // §7.2.3.4: a final block (BFINAL set): the appended tail is ignored.
        let fin = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(Inflater::new().inflate(&fin, 100).unwrap(), b"Hello");
    }

    #[test]
    fn round_trips_and_each_message_stands_alone() {
        let mut inf = Inflater::new();
        let mut def = Deflater::new();
        let chat = br#"{"type":"chat","seq":17,"room":"general","username":"alice","message":"hello everyone","timestamp":1764700000000,"podName":"websocket-server-0"}"#;
        for data in [&b""[..], b"x", chat, &[7u8; 100_000][..]] {
            let mut z = Vec::new();
            assert!(def.compress_into(data, &mut z));
            assert!(!z.ends_with(&TAIL) || data.is_empty(), "tail removed");
            // The same message compresses to the same bytes every time: no context kept.
            let mut again = Vec::new();
            assert!(def.compress_into(data, &mut again));
            assert_eq!(z, again);
            assert_eq!(inf.inflate(&z, data.len()).unwrap(), data);
        }
        assert!(deflate(chat).len() < chat.len() * 9 / 10);
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit_without_growing_past_it() {
        let z = deflate(&vec![0u8; 50 << 20]); // 50 MiB of zeros: ~50 KiB compressed
        assert!(z.len() < 100 << 10);
        let mut inf = Inflater::new();
        assert_eq!(inf.inflate(&z, 1 << 20), Err(WsError::MessageTooBig));
        assert!(inf.out.capacity() <= (1 << 20) + 1, "held {} bytes", inf.out.capacity());
        // Exactly at the limit is fine.
        let z = deflate(&[1u8; 4096]);
        assert_eq!(inf.inflate(&z, 4096).unwrap().len(), 4096);
        assert_eq!(inf.inflate(&z, 4095), Err(WsError::MessageTooBig));
    }

    #[test]
    fn garbage_is_invalid_data() {
        let mut inf = Inflater::new();
        assert_eq!(inf.inflate(&[0xff, 0xff, 0xff, 0xff], 100), Err(WsError::InvalidCompressedData));
        // A truncated stream that never completes a block is accepted by
        // nothing: it yields what it decoded so far or an error, never a hang.
        let z = deflate(&[b'a'; 1000]);
        let _ = inf.inflate(&z[..z.len() / 2], 2000);
        // The inflater works again after an error.
        assert_eq!(inf.inflate(&deflate(b"again"), 100).unwrap(), b"again");
    }

    #[test]
    fn large_messages_round_trip_whatever_their_content() {
        // Autobahn 12.2.14: 64 KiB messages that do not compress well.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        };
        let random: Vec<u8> = (0..65536).map(|_| next()).collect();
        let text: Vec<u8> = (0..65536).map(|_| b"abcdefghijklmnop "[usize::from(next()) % 17]).collect();
        let mut inf = Inflater::new();
        for data in [random, text] {
            let z = deflate(&data);
            assert_eq!(inf.inflate(&z, 1 << 20).unwrap().len(), data.len());
            assert_eq!(inf.inflate(&z, 1 << 20).unwrap(), &data[..]);
            let mut again = Vec::new();
            with_compressed(&data, |z2| again.extend_from_slice(z2)).unwrap();
            assert_eq!(inf.inflate(&again, 1 << 20).unwrap(), &data[..]);
        }
    }

    #[test]
    fn compressed_limit_leaves_room_for_incompressible_data() {
        let mut seed = 12345u64;
        let random: Vec<u8> = (0..65536)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            })
            .collect();
        assert!(deflate(&random).len() <= compressed_limit(random.len()));
    }
}
