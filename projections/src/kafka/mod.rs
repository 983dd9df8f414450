//! The projections' Kafka feed: one member of the projector consumer group
//! ([`member`]), its checkpoint kept with the read models ([`partitions`]),
//! events held for their predecessor ([`held`]), and what `parley projections
//! status` shows of the group ([`status`]).

pub mod held;
pub mod member;
pub mod partitions;
pub mod status;
