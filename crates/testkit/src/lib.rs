//! Real peers for tests, started by the test itself on free ports and stopped on
//! drop. Only ever a dev-dependency.

mod redis_server;

pub use redis_server::RedisServer;
