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

/// A registered user of that name: its own stream and its username claim.
fn user_streams(
    id: Uuid,
    name: &str,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<[StreamWrite; 2]> {
    let username = Username::parse(name.to_string())?;
    let registered = UserEvent::UserRegistered(UserRegistered {
        user_id: id,
        username: username.clone(),
        display_name: DisplayName::parse(format!("User {name}"))?,
        registered_at: now,
    });
    let claimed = UsernameClaimEvent::UsernameClaimed(UsernameClaimed {
        username: username.clone(),
        user_id: id,
    });
    Ok([
        stream("user", id, vec![new_event(&registered)]),
        stream(
            "username",
            username_claim_id(&username),
            vec![new_event(&claimed)],
        ),
    ])
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
        streams.extend(user_streams(*id, &format!("seed{run}_{i}"), now)?);
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

/// A chat where each user is in a few rooms, as in a real deployment (the
/// room list then holds those rooms, not all of them).
pub struct Spread {
    pub users: Vec<Uuid>,
    pub rooms: Vec<Uuid>,
    /// Indexes into `users`, per room.
    pub members: Vec<Vec<usize>>,
    /// The last message seeded into each room.
    pub last_message: Vec<Option<Uuid>>,
}

/// Appends `users` users, `rooms` rooms, each user a member of
/// `rooms_per_user` of them (evenly spread), and `messages_per_room` messages
/// in each room from its members, in turn.
pub async fn seed_spread(
    log: &SharedLog,
    users: usize,
    rooms: usize,
    rooms_per_user: usize,
    messages_per_room: usize,
) -> anyhow::Result<Spread> {
    anyhow::ensure!(
        users > 0 && rooms > 0 && rooms_per_user > 0,
        "users, rooms and rooms per user must be at least 1"
    );
    let now = Utc::now();
    let run = &Uuid::new_v4().simple().to_string()[..6];
    let user_ids: Vec<Uuid> = (0..users).map(|_| Uuid::now_v7()).collect();
    for (chunk_at, chunk) in user_ids.chunks(500).enumerate() {
        let mut streams = Vec::new();
        for (k, id) in chunk.iter().enumerate() {
            let i = chunk_at * 500 + k;
            streams.extend(user_streams(*id, &format!("mix{run}_{i}"), now)?);
        }
        append(log, streams).await?;
    }

    // User u is in rooms u, u + stride, u + 2 stride, ... (mod rooms).
    let per_user = rooms_per_user.min(rooms);
    let stride = (rooms / per_user).max(1);
    let mut members = vec![Vec::new(); rooms];
    for u in 0..users {
        for j in 0..per_user {
            let r = (u + j * stride) % rooms;
            if !members[r].contains(&u) {
                members[r].push(u);
            }
        }
    }
    let room_ids: Vec<Uuid> = (0..rooms).map(|_| Uuid::now_v7()).collect();
    for (r, room_id) in room_ids.iter().enumerate() {
        anyhow::ensure!(!members[r].is_empty(), "room {r} would have no members");
        let mut events = vec![new_event(&RoomEvent::RoomCreated(RoomCreated {
            room_id: *room_id,
            name: RoomName::parse(format!("mixed room {r}"))?,
            topic: None,
            visibility: Visibility::Public,
            creator_id: user_ids[members[r][0]],
            created_at: now,
        }))];
        for (i, u) in members[r].iter().enumerate() {
            events.push(new_event(&RoomEvent::MemberJoined(MemberJoined {
                room_id: *room_id,
                user_id: user_ids[*u],
                role: if i == 0 { Role::Owner } else { Role::Member },
                at: now,
            })));
        }
        append(log, vec![stream("room", *room_id, events)]).await?;
    }

    let mut last_message = vec![None; rooms];
    let sends: Vec<(usize, usize)> = (0..messages_per_room)
        .flat_map(|n| (0..rooms).map(move |r| (r, n)))
        .collect();
    for chunk in sends.chunks(1000) {
        let mut streams = Vec::with_capacity(chunk.len());
        for (r, n) in chunk {
            let id = Uuid::now_v7();
            let sender = members[*r][n % members[*r].len()];
            let sent = MessageEvent::MessageSent(MessageSent {
                message_id: id,
                room_id: room_ids[*r],
                sender_id: user_ids[sender],
                body: MessageBody::parse(format!(
                    "seeded message number {n}, a line of ordinary chat"
                ))?,
                reply_to: None,
                sent_at: now,
                format: Default::default(),
            });
            last_message[*r] = Some(id);
            streams.push(stream("message", id, vec![new_event(&sent)]));
        }
        append(log, streams).await?;
    }
    Ok(Spread {
        users: user_ids,
        rooms: room_ids,
        members,
        last_message,
    })
}

/// An access token for each of `users`, signed with the benchmark's secret
/// (the servers it starts share it).
pub fn access_tokens(users: &[Uuid]) -> anyhow::Result<Vec<String>> {
    let keys = parley_http_kit::default_token_keys(vec![parley_http_kit::SigningKey::new(
        "k1",
        super::commands::BENCH_SECRET.as_bytes(),
    )
    .map_err(anyhow::Error::msg)?]);
    users
        .iter()
        .map(|u| keys.issue_access(*u).map_err(|e| anyhow::anyhow!("{e}")))
        .collect()
}
