//! Parley's domain: pure, synchronous aggregates on cqrs-es, typed values and the wire
//! contract of events. No IO: whatever a rule needs from outside (membership, blocks,
//! the time) is looked up by the caller and put into the command.
//!
//! Each aggregate has a pure `decide(&self, command) -> Result<Vec<Event>, DomainError>`;
//! `cqrs_es::Aggregate::handle` only writes what `decide` returns.

/// Implements `cqrs_es::Aggregate` for an aggregate with inherent `decide` and `evolve`.
macro_rules! impl_aggregate {
    ($aggregate:ty, $type:literal, $command:ty, $event:ty) => {
        impl cqrs_es::Aggregate for $aggregate {
            const TYPE: &'static str = $type;
            type Command = $command;
            type Event = $event;
            type Error = $crate::error::DomainError;
            type Services = ();

            async fn handle(
                &mut self,
                command: Self::Command,
                _services: &Self::Services,
                sink: &cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), Self::Error> {
                for event in self.decide(command)? {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: Self::Event) {
                self.evolve(event);
            }
        }

        impl $crate::Decide for $aggregate {
            fn decide(
                &self,
                command: Self::Command,
            ) -> Result<Vec<Self::Event>, $crate::error::DomainError> {
                <$aggregate>::decide(self, command)
            }
        }
    };
}

/// An aggregate's pure decision, as the command engine calls it: synchronous,
/// with no event sink. cqrs-es's async `handle` only writes what `decide`
/// returns; cqrs-es stays for the `Aggregate` contract (type, `apply`) and its
/// given/when/then test framework, which the domain's tests use.
pub trait Decide: cqrs_es::Aggregate<Error = DomainError> {
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, DomainError>;
}

pub mod call;
pub mod codec;
pub mod error;
pub mod friendship;
pub mod ids;
pub mod message;
pub mod presence;
pub mod read_marker;
pub mod room;
pub mod text;
pub mod user;
pub mod values;

pub use call::{Call, CallCommand, CallEvent};
pub use codec::{all_events, AnyEvent, DecodeError, EventCodec, EventDescriptor};
pub use error::DomainError;
pub use friendship::{Friendship, FriendshipCommand, FriendshipEvent};
pub use ids::UserPair;
pub use message::{Message, MessageCommand, MessageEvent};
pub use presence::{Presence, PresenceCommand, PresenceEvent};
pub use read_marker::{ReadMarker, ReadMarkerCommand, ReadMarkerEvent};
pub use room::{Room, RoomCommand, RoomEvent};
pub use user::{
    User, UserCommand, UserEvent, UsernameClaim, UsernameClaimCommand, UsernameClaimEvent,
};
pub use values::{
    DisplayName, Emoji, MessageBody, Password, PresenceStatus, Role, RoomName, StatusMessage,
    Topic, Username, Visibility,
};
