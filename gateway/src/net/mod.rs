//! Outbound HTTP, below both the gateway and its clients: `url` splits an endpoint from a URL
//! and redacts one for printing; `http` sends one request on its own hyper connection (TLS
//! too); `tls` holds the trusted roots and says why a handshake cannot work. The clients
//! (`tail`, `push`, `token`) and the JWKS fetch use them; nothing here knows about jobs.

pub mod http;
pub mod tls;
pub mod url;
