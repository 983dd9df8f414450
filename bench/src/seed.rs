//! Seeds an event log with a realistic chat history, fast (no HTTP, no argon2):
//! users, rooms everyone joined, then messages spread over the rooms.

use std::time::Instant;

use chrono::Utc;
use parley_domain::codec::EventCodec;
use parley_domain::ids::username_claim_id;
use parley_domain::message::{MessageEvent, MessageSent};
use parley_domain::room::{MemberJoined, RoomCreated, RoomEvent};
use parley_domain::user::{UserEvent, UserRegistered, UsernameClaimEvent, UsernameClaimed};
use parley_domain::values::{DisplayName, MessageBody, Role, RoomName, Username, Visibility};
use parley_event_log::{AppendRequest, Metadata, NewEvent, SharedLog, StreamWrite};
use uuid::Uuid;

/// What was seeded.
pub struct Seeded {
    pub users: Vec<Uuid>,
    pub rooms: Vec<Uuid>,
    pub events: u64,
}

fn new_event(e: &impl EventCodec) -> NewEvent {
    NewEvent {
        event_type: e.event_type().to_string(),
        event_version: e.event_version() as i32,
        payload: e.to_payload(),
    }
}

fn stream(aggregate_type: &str, id: Uuid, events: Vec<NewEvent>) -> StreamWrite {
    StreamWrite {
        aggregate_type: aggregate_type.to_string(),
        aggregate_id: id,
        expected_version: 0,
        events,
    }
}

async fn append(log: &SharedLog, streams: Vec<StreamWrite>) -> anyhow::Result<u64> {
    let request = AppendRequest {
        streams,
        metadata: Metadata::default(),
        recorded_at: Utc::now(),
        idempotency: None,
    };
    let n = request.event_count() as u64;
    log.append(request).await?;
    Ok(n)
}

/// Appends about `total` events: `users` users, `rooms` rooms joined by all of
/// them, and messages for the rest, 1,000 events per append.
pub async fn seed(
    log: &SharedLog,
    total: u64,
    users: usize,
    rooms: usize,
) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let now = Utc::now();
    let run = &Uuid::new_v4().simple().to_string()[..6];
    let mut count = 0u64;
    let user_ids: Vec<Uuid> = (0..users).map(|_| Uuid::now_v7()).collect();
    let mut streams = Vec::new();
    for (i, id) in user_ids.iter().enumerate() {
        let username = Username::parse(format!("seed{run}_{i}"))?;
        let registered = UserEvent::UserRegistered(UserRegistered {
            user_id: *id,
            username: username.clone(),
            display_name: DisplayName::parse(format!("Seed user {i}"))?,
            registered_at: now,
        });
        let claimed = UsernameClaimEvent::UsernameClaimed(UsernameClaimed {
            username: username.clone(),
            user_id: *id,
        });
        streams.push(stream("user", *id, vec![new_event(&registered)]));
        streams.push(stream(
            "username",
            username_claim_id(&username),
            vec![new_event(&claimed)],
        ));
    }
    count += append(log, streams).await?;

    let room_ids: Vec<Uuid> = (0..rooms).map(|_| Uuid::now_v7()).collect();
    for (r, room_id) in room_ids.iter().enumerate() {
        let mut events = vec![new_event(&RoomEvent::RoomCreated(RoomCreated {
            room_id: *room_id,
            name: RoomName::parse(format!("seeded room {r}"))?,
            topic: None,
            visibility: Visibility::Public,
            creator_id: user_ids[0],
            created_at: now,
        }))];
        for (i, user) in user_ids.iter().enumerate() {
            events.push(new_event(&RoomEvent::MemberJoined(MemberJoined {
                room_id: *room_id,
                user_id: *user,
                role: if i == 0 { Role::Owner } else { Role::Member },
                at: now,
            })));
        }
        count += append(log, vec![stream("room", *room_id, events)]).await?;
    }

    let mut n = 0usize;
    while count < total {
        let chunk = (total - count).min(1000) as usize;
        let streams = (0..chunk)
            .map(|_| {
                n += 1;
                let id = Uuid::now_v7();
                let sent = MessageEvent::MessageSent(MessageSent {
                    message_id: id,
                    room_id: room_ids[n % room_ids.len()],
                    sender_id: user_ids[n % user_ids.len()],
                    body: MessageBody::parse(format!(
                        "seeded message number {n}, a line of ordinary chat"
                    ))
                    .expect("a valid body"),
                    reply_to: None,
                    sent_at: now,
                    format: Default::default(),
                });
                stream("message", id, vec![new_event(&sent)])
            })
            .collect();
        count += append(log, streams).await?;
        if n % 100_000 < 1000 {
            eprintln!(
                "  seeded {count} events ({:.0} events/s)",
                count as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(Seeded {
        users: user_ids,
        rooms: room_ids,
        events: count,
    })
}
