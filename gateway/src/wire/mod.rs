//! Wire encoders shared by the data model and the protocols: the bytes a record becomes
//! on each kind of connection. `entry` caches them per record; `capgo` and the SSE path
//! send them. SSE's own encoder is [`crate::sse`].

pub(crate) mod capgo;
