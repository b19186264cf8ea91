//! Listening sockets: one per worker on the same port (SO_REUSEPORT), so
//! the kernel spreads new connections over the workers with no acceptor
//! thread and no shared accept queue.
//!
//! SO_REUSEPORT also lets a *second process* of the same user share the
//! port silently; two servers started on one port by mistake would split
//! the traffic instead of failing. So a fixed port is first probed with a
//! plain bind, which fails if anything already listens there.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};

use mio::net::TcpListener;
use socket2::{Domain, Socket, Type};

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 4096;

/// Binds `count` listeners on `addr:port` (port 0: one free port for all).
pub fn bind(addr: IpAddr, port: u16, count: usize) -> io::Result<Vec<TcpListener>> {
    if port != 0 {
        // Fails with AddrInUse if any socket, reuseport or not, listens here.
        drop(
            StdListener::bind(SocketAddr::new(addr, port))
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}:{port}: {e}")))?,
        );
    }
    let first = bind_one(SocketAddr::new(addr, port))?;
    let actual = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind_one(actual)?);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into()).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_one_port_and_a_taken_port_is_refused() {
        let listeners = bind(IpAddr::from([127, 0, 0, 1]), 0, 3).unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        assert!(listeners.iter().all(|l| l.local_addr().unwrap().port() == port));
        let err = bind(IpAddr::from([127, 0, 0, 1]), port, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
