//! HTTP/1.1 as far as this server needs it: request heads parsed in place,
//! the WebSocket opening handshake, the JSON and metrics endpoints, and the
//! embedded chat page.

pub mod assets;
pub mod extensions;
pub mod header;
pub mod query;
pub mod request;
pub mod response;
pub mod routes;
pub mod upgrade;
