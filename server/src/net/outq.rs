//! OutQueue: the bytes waiting to be written to one connection.
//!
//! A queue of whole frames (or HTTP responses): shared broadcast frames are
//! `Arc` clones, never copies; frames built for one connection are owned.
//! `write_to` sends as many queued chunks as fit in one vectored write, so
//! frames that pile up between loop iterations leave in one syscall. Only
//! the first chunk can be partly written (`head_written`), and
//! [`OutQueue::discard_unstarted`] keeps it, so a frame already on the wire
//! is always finished before anything else (a close frame) follows it.
//!
//! [`SocketSink`] writes with `send`/`sendmsg` rather than `write`/`writev`:
//! the socket calls skip the VFS layer (file position lock, generic
//! iterator setup), which profiling showed as ~9 % of the server's CPU in
//! the fan-out benchmark, where nearly all time is the kernel's TCP path.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

/// Chunks gathered into one vectored write.
const MAX_IOV: usize = 64;

/// One queued frame or response.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// A frame shared with other connections (a broadcast).
    Shared(Arc<[u8]>),
    /// Bytes built for this connection only.
    Owned(Box<[u8]>),
}

impl Chunk {
    /// The bytes of the frame or response.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(b) => b,
            Chunk::Owned(b) => b,
        }
    }

    /// Whether this is a WebSocket frame starting a compressed message
    /// (RSV1, RFC 7692); only meaningful for frames, not HTTP responses.
    pub fn is_compressed(&self) -> bool {
        self.bytes().first().is_some_and(|b| b & 0x40 != 0)
    }
}

impl From<Vec<u8>> for Chunk {
    fn from(v: Vec<u8>) -> Chunk {
        Chunk::Owned(v.into_boxed_slice())
    }
}

/// What a call to [`OutQueue::write_to`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes written.
    pub bytes: usize,
    /// Syscalls made.
    pub calls: usize,
    /// The socket would block: wait for a writable event.
    pub blocked: bool,
}

/// The frames waiting for one connection.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    head_written: usize,
    /// Bytes queued and not yet written.
    bytes: usize,
}

impl OutQueue {
    /// Queues `chunk` behind everything else.
    pub fn push(&mut self, chunk: Chunk) {
        self.bytes += chunk.bytes().len();
        self.chunks.push_back(chunk);
    }

    /// Queues `chunk`, whose first `written` bytes are already on the wire
    /// (a reply written at once only in part): the rest goes first, and
    /// [`discard_unstarted`](Self::discard_unstarted) keeps it, like a
    /// chunk `write_to` started. With `written > 0` the queue must be empty
    /// (nothing may come before bytes already sent); 0 is a plain [`push`](Self::push).
    pub fn push_after_written(&mut self, chunk: Chunk, written: usize) {
        if written == 0 {
            self.push(chunk);
            return;
        }
        assert!(self.chunks.is_empty(), "bytes already written must lead the queue");
        assert!(written < chunk.bytes().len(), "a chunk written whole is not queued");
        self.bytes += chunk.bytes().len() - written;
        self.head_written = written;
        self.chunks.push_back(chunk);
    }

    /// Whether the queue holds an allocation (its ring of chunks).
    pub fn holds_allocation(&self) -> bool {
        self.chunks.capacity() > 0
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Drops every chunk not yet started; keeps a partly written front chunk.
    /// Returns the bytes dropped.
    pub fn discard_unstarted(&mut self) -> usize {
        let keep = usize::from(self.head_written > 0 && !self.chunks.is_empty());
        let dropped: usize = self.chunks.drain(keep..).map(|c| c.bytes().len()).sum();
        self.bytes -= dropped;
        dropped
    }

    /// Releases the queue's memory if it is empty (an idle connection then
    /// holds no buffer at all).
    pub fn release_if_empty(&mut self) {
        if self.chunks.is_empty() && self.chunks.capacity() > 0 {
            self.chunks = VecDeque::new();
        }
    }

    /// Writes until the queue is empty, the socket would block, or `budget`
    /// bytes have been written.
    pub fn write_to(&mut self, w: &mut impl Write, budget: usize) -> io::Result<Written> {
        let mut done = Written { bytes: 0, calls: 0, blocked: false };
        while !self.chunks.is_empty() && done.bytes < budget {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n_iov = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOV).enumerate() {
                let bytes = if i == 0 { &chunk.bytes()[self.head_written..] } else { chunk.bytes() };
                iov[n_iov] = IoSlice::new(bytes);
                n_iov += 1;
            }
            let n = match w.write_vectored(&iov[..n_iov]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    done.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            done.calls += 1;
            done.bytes += n;
            self.advance(n);
        }
        Ok(done)
    }

    fn advance(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else { break };
            let left = front.bytes().len() - self.head_written;
            if n >= left {
                n -= left;
                self.chunks.pop_front();
                self.head_written = 0;
            } else {
                self.head_written += n;
                n = 0;
            }
        }
    }
}

/// Writes to a socket with `send(2)` / `sendmsg(2)` and MSG_NOSIGNAL: a
/// write to a connection the peer has reset fails with EPIPE instead of
/// raising SIGPIPE, whatever the process's SIGPIPE disposition (the Rust
/// runtime ignores it in the binary, but not in every embedding).
pub struct SocketSink<'a>(socket2::SockRef<'a>);

/// The flags of every send.
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;

impl<'a> SocketSink<'a> {
    /// Wraps a connected stream socket.
    pub fn new<S: std::os::fd::AsFd>(socket: &'a S) -> SocketSink<'a> {
        SocketSink(socket2::SockRef::from(socket))
    }
}

impl Write for SocketSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_with_flags(buf, SEND_FLAGS)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if bufs.len() == 1 {
            self.0.send_with_flags(&bufs[0], SEND_FLAGS)
        } else {
            self.0.send_vectored_with_flags(bufs, SEND_FLAGS)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `cap` bytes per call, then blocks after `calls` calls.
    struct Trickle {
        out: Vec<u8>,
        cap: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.cap - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.cap {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_exactly_and_share_frames() {
        let shared: Arc<[u8]> = Arc::from(&b"shared-frame"[..]);
        let mut q = OutQueue::default();
        q.push(Chunk::Owned(b"abc".to_vec().into()));
        q.push(Chunk::Shared(shared.clone()));
        q.push(b"xyz".to_vec().into());
        assert_eq!(q.bytes(), 18);
        let mut w = Trickle { out: vec![], cap: 5, calls_left: 2 };
        let r = q.write_to(&mut w, usize::MAX).unwrap();
        assert_eq!(r, Written { bytes: 10, calls: 2, blocked: true });
        assert_eq!(q.bytes(), 8);
        w.calls_left = 10;
        q.write_to(&mut w, usize::MAX).unwrap();
        assert_eq!(w.out, b"abcshared-framexyz");
        assert!(q.is_empty() && q.bytes() == 0);
        assert_eq!(Arc::strong_count(&shared), 1, "the queue released its clone");
    }

    #[test]
    fn many_frames_leave_in_one_call() {
        let mut q = OutQueue::default();
        for _ in 0..10 {
            q.push(b"0123456789".to_vec().into());
        }
        let mut w = Trickle { out: vec![], cap: 1000, calls_left: 1 };
        assert_eq!(q.write_to(&mut w, usize::MAX).unwrap().calls, 1);
        assert_eq!(w.out.len(), 100);
    }

    #[test]
    fn discard_keeps_a_started_frame() {
        let mut q = OutQueue::default();
        q.push(b"12345".to_vec().into());
        q.push(b"678".to_vec().into());
        let mut w = Trickle { out: vec![], cap: 2, calls_left: 1 };
        q.write_to(&mut w, usize::MAX).unwrap();
        assert_eq!(q.discard_unstarted(), 3);
        q.push(b"C".to_vec().into());
        w.calls_left = 10;
        w.cap = 100;
        q.write_to(&mut w, usize::MAX).unwrap();
        assert_eq!(w.out, b"12345C", "the started frame is finished before the close");
        let mut fresh = OutQueue::default();
        fresh.push(b"abc".to_vec().into());
        assert_eq!(fresh.discard_unstarted(), 3, "nothing started: everything goes");
    }

    #[test]
    fn a_partly_written_reply_is_finished_before_a_close() {
        let mut q = OutQueue::default();
        assert!(!q.holds_allocation());
        q.push_after_written(b"101 and welcome".to_vec().into(), 4);
        assert_eq!(q.bytes(), 11);
        assert_eq!(q.discard_unstarted(), 0, "its first bytes are on the wire: it stays");
        q.push(b"C".to_vec().into());
        let mut w = Trickle { out: vec![], cap: 100, calls_left: 1 };
        q.write_to(&mut w, usize::MAX).unwrap();
        assert_eq!(w.out, b"and welcomeC");
        q.push_after_written(b"x".to_vec().into(), 0);
        assert_eq!(q.bytes(), 1);
    }

    #[test]
    fn budget_bounds_one_call_and_release_frees_memory() {
        let mut q = OutQueue::default();
        for _ in 0..4 {
            q.push(vec![0u8; 100].into());
        }
        let mut w = Trickle { out: vec![], cap: 100, calls_left: 10 };
        let r = q.write_to(&mut w, 150).unwrap();
        assert_eq!((r.bytes, r.blocked), (200, false));
        q.write_to(&mut w, usize::MAX).unwrap();
        q.release_if_empty();
        assert_eq!(q.chunks.capacity(), 0);
    }

    #[test]
    fn sends_never_raise_sigpipe() {
        use std::sync::atomic::{AtomicBool, Ordering};
        // Catch SIGPIPE instead of ignoring it (the test harness, like the
        // binary, ignores it): a send without MSG_NOSIGNAL to a reset
        // connection would raise it.
        let raised = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGPIPE, raised.clone()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        drop(listener.accept().unwrap().0);
        let mut sink = SocketSink::new(&stream);
        let mut broken = false;
        for _ in 0..200 {
            let one = sink.write(b"x");
            let two = sink.write_vectored(&[IoSlice::new(b"a"), IoSlice::new(b"b")]);
            if [one, two].iter().any(|r| r.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe)) {
                broken = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(broken, "the peer's reset never surfaced as EPIPE");
        assert!(!raised.load(Ordering::SeqCst), "a send raised SIGPIPE: MSG_NOSIGNAL missing");
    }
}
