//! The distributor (MSBroker + MD). In progress: the cluster subscription index.

pub mod index;

pub use index::{Change, ClusterIndex, Op, Route};
