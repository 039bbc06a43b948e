//! Test support: start the real server on an ephemeral port.
