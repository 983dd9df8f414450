//! Receipts: how many members have received and read each message of a page,
//! counted from the rooms model's read and delivery markers.
//!
//! A marker names a message; its place (the message's log position) is looked
//! up here, as for unread counts, so the count does not depend on the order in
//! which markers and messages were applied. Reading a message implies having
//! received it. Only current members count, never the sender.

use sqlx::{AnyPool, Row};
use uuid::Uuid;

use super::history::MessageView;
use super::parse_uuid;

/// One member's markers in a room, as positions (0: none, or its message is
/// not applied yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marks {
    user_id: Uuid,
    read: i64,
    /// Received: the delivery marker, or the read marker if further.
    delivered: i64,
}

/// The members of `room_id` who have a marker there.
async fn marks_of(pool: &AnyPool, room_id: Uuid) -> Result<Vec<Marks>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT m.user_id,
                COALESCE((SELECT p.position FROM room_read_markers k
                            JOIN room_messages p ON p.message_id = k.message_id
                           WHERE k.room_id = m.room_id AND k.user_id = m.user_id), 0) AS read_at,
                COALESCE((SELECT p.position FROM room_delivery_markers d
                            JOIN room_messages p ON p.message_id = d.message_id
                           WHERE d.room_id = m.room_id AND d.user_id = m.user_id), 0) AS delivered_at
           FROM room_members m
          WHERE m.room_id = $1
            AND (EXISTS (SELECT 1 FROM room_read_markers k WHERE k.room_id = m.room_id AND k.user_id = m.user_id)
              OR EXISTS (SELECT 1 FROM room_delivery_markers d WHERE d.room_id = m.room_id AND d.user_id = m.user_id))",
    )
    .bind(room_id.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let read: i64 = r.try_get("read_at")?;
            let delivered: i64 = r.try_get("delivered_at")?;
            Ok(Marks {
                user_id: parse_uuid(&r.try_get::<String, _>("user_id")?)?,
                read,
                delivered: delivered.max(read),
            })
        })
        .collect()
}

/// Fills `delivered_count` and `read_count` of a page's messages (all of one
/// room). One query per page, whatever its length.
pub(crate) async fn attach(
    pool: &AnyPool,
    room_id: Uuid,
    messages: &mut [MessageView],
) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let marks = marks_of(pool, room_id).await?;
    count(&marks, messages);
    Ok(())
}

fn count(marks: &[Marks], messages: &mut [MessageView]) {
    for message in messages {
        let others = marks.iter().filter(|m| m.user_id != message.sender_id);
        let (mut delivered, mut read) = (0, 0);
        for m in others {
            delivered += i64::from(m.delivered >= message.position);
            read += i64::from(m.read >= message.position);
        }
        message.delivered_count = delivered;
        message.read_count = read;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(sender: Uuid, position: i64) -> MessageView {
        MessageView {
            message_id: Uuid::now_v7(),
            room_id: Uuid::nil(),
            sender_id: sender,
            body: None,
            sent_at: chrono::Utc::now(),
            edited_at: None,
            redacted: false,
            reactions: Vec::new(),
            reply_to: None,
            position,
            delivered_count: 0,
            read_count: 0,
        }
    }

    #[test]
    fn markers_at_or_past_a_message_count_and_the_sender_never_does() {
        let (alice, bob, carol) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let marks = [
            // Alice, the sender, has read everything: she never counts.
            Marks {
                user_id: alice,
                read: 30,
                delivered: 30,
            },
            // Bob received up to 20 and read up to 10.
            Marks {
                user_id: bob,
                read: 10,
                delivered: 20,
            },
            // Carol read up to 20.
            Marks {
                user_id: carol,
                read: 20,
                delivered: 20,
            },
        ];
        let mut page = vec![message(alice, 10), message(alice, 20), message(alice, 30)];
        count(&marks, &mut page);
        let counts: Vec<(i64, i64)> = page
            .iter()
            .map(|m| (m.delivered_count, m.read_count))
            .collect();
        assert_eq!(counts, [(2, 2), (2, 1), (0, 0)]);

        let mut theirs = vec![message(bob, 10)];
        count(&marks, &mut theirs);
        assert_eq!((theirs[0].delivered_count, theirs[0].read_count), (2, 2));
    }
}
