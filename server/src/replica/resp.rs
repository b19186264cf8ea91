//! A subscribed connection to one Redis node, non-blocking, for mio.
//!
//! The subscriber thread holds one per master node and polls them all with
//! one `mio::Poll`. It writes `SSUBSCRIBE`/`SUNSUBSCRIBE` commands and reads
//! the replies and pushed messages as RESP2 values. The read buffer keeps a
//! partial value across reads, so a message split over TCP segments is
//! never lost (the redis crate's blocking reader may skip a reply after a
//! read timeout, which a subscription polled with a timeout cannot afford).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::topology::{Auth, Node};

/// A RESP2 value as a subscription sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`
    Simple(String),
    /// `-ERR …`
    Error(String),
    /// `:n`
    Int(i64),
    /// `$n …` (`None`: `$-1`)
    Bulk(Option<Vec<u8>>),
    /// `*n …` (`None`: `*-1`)
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The bytes of a bulk or simple string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(Some(b)) => Some(b),
            Resp::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one value from the front of `buf`: the value and its length, or
/// `None` if `buf` holds only part of it.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
    let Some(&kind) = buf.first() else { return Ok(None) };
    let line = std::str::from_utf8(&buf[1..end]).map_err(|_| "RESP line is not UTF-8".to_string())?;
    let after = end + 2;
    let int = || line.parse::<i64>().map_err(|_| format!("bad RESP length {line:?}"));
    match kind {
        b'+' => Ok(Some((Resp::Simple(line.to_string()), after))),
        b'-' => Ok(Some((Resp::Error(line.to_string()), after))),
        b':' => Ok(Some((Resp::Int(int()?), after))),
        b'$' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), after)));
            }
            let n = n as usize;
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            Ok(Some((Resp::Bulk(Some(buf[after..after + n].to_vec())), after + n + 2)))
        }
        b'*' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Resp::Array(None), after)));
            }
            let mut items = Vec::with_capacity(n.min(64) as usize);
            let mut at = after;
            for _ in 0..n {
                match parse(&buf[at..])? {
                    Some((v, len)) => {
                        items.push(v);
                        at += len;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Resp::Array(Some(items)), at)))
        }
        other => Err(format!("unexpected RESP type byte {other:#x}")),
    }
}

/// A non-blocking connection to one node, registered with a mio Poll.
#[derive(Debug)]
pub struct SubConn {
    /// The node.
    pub node: Node,
    /// The socket.
    pub stream: mio::net::TcpStream,
    inbuf: Vec<u8>,
    start: usize,
    outbuf: Vec<u8>,
}

impl SubConn {
    /// Connects (blocking, bounded by `timeout`), authenticates, then turns
    /// the socket non-blocking.
    pub fn connect(node: &Node, auth: &Auth, timeout: Duration) -> io::Result<SubConn> {
        let addr = (node.host.as_str(), node.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{node}: no address")))?;
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        if let Some(pw) = &auth.password {
            let mut out = Vec::new();
            match &auth.username {
                Some(u) => command(&mut out, &[b"AUTH", u.as_bytes(), pw.as_bytes()]),
                None => command(&mut out, &[b"AUTH", pw.as_bytes()]),
            }
            s.write_all(&out)?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 512];
            let reply = loop {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some((v, _)) = parse(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                    break v;
                }
            };
            if let Resp::Error(e) = reply {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{node}: AUTH: {e}")));
            }
        }
        s.set_nonblocking(true)?;
        Ok(SubConn {
            node: node.clone(),
            stream: mio::net::TcpStream::from_std(s),
            inbuf: Vec::new(),
            start: 0,
            outbuf: Vec::new(),
        })
    }

    /// Queues a command; [`SubConn::flush`] writes it.
    pub fn send(&mut self, args: &[&[u8]]) {
        command(&mut self.outbuf, args);
    }

    /// Writes what is queued, as far as the socket takes it. Returns
    /// whether something is left (wait for writable).
    pub fn flush(&mut self) -> io::Result<bool> {
        while !self.outbuf.is_empty() {
            match self.stream.write(&self.outbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Reads what the socket has and returns the complete values in it.
    pub fn read(&mut self, values: &mut Vec<Resp>) -> io::Result<()> {
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "Redis closed the connection")),
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while let Some((v, len)) =
            parse(&self.inbuf[self.start..]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            self.start += len;
            values.push(v);
        }
        if self.start > 0 {
            self.inbuf.drain(..self.start);
            self.start = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pushes_and_waits_for_partial_values() {
        let mut wire = b"*3\r\n$8\r\nsmessage\r\n$11\r\nchat:{r}:ch\r\n$5\r\n1 {}x\r\n".to_vec();
        let (v, n) = parse(&wire).unwrap().unwrap();
        assert_eq!(n, wire.len());
        let Resp::Array(Some(items)) = v else { panic!("{v:?}") };
        assert_eq!(items[0].bytes(), Some(&b"smessage"[..]));
        assert_eq!(items[2].bytes(), Some(&b"1 {}x"[..]));
        for cut in 0..wire.len() {
            assert_eq!(parse(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        let binary = b"$4\r\na\r\nb\r\n";
        assert_eq!(parse(binary).unwrap().unwrap().0, Resp::Bulk(Some(b"a\r\nb".to_vec())), "lengths are binary-safe");
        wire.clear();
        command(&mut wire, &[b"SSUBSCRIBE", b"chat:{r}:ch"]);
        assert_eq!(wire, b"*2\r\n$10\r\nSSUBSCRIBE\r\n$11\r\nchat:{r}:ch\r\n");
        assert_eq!(parse(b"-MOVED 1 h:1\r\n").unwrap().unwrap().0, Resp::Error("MOVED 1 h:1".into()));
        assert_eq!(parse(b":3\r\n").unwrap().unwrap().0, Resp::Int(3));
        assert!(parse(b"?x\r\n").is_err());
    }
}
