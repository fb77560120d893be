//! The broker's own HTTP/1.1 server. It owns every connection from the
//! first byte to the last, so one set of rules holds for every request,
//! whether first on its connection or not: the head is checked here
//! (framing, size, `Host`), the body is read whole within a time limit,
//! errors are JSON, and event streams are written straight to the socket
//! with the same dead-peer and write-timeout protection.

mod body;
mod connection;
mod head;
mod listener;

pub use self::listener::serve;
