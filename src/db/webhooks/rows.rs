//! Many rows in one statement: a batch of messages made or of outcomes
//! recorded is one call to the database, on either backend.

use chrono::{DateTime, Utc};

use super::super::{DbError, pooler};
use super::{NewMessage, Outcome};

/// SQLite's writes of many rows: one statement over a JSON array, so that
/// a batch is one call to the connection's thread, not one per row.
pub(super) mod sqlite_rows {
    use chrono::SecondsFormat;
    use serde_json::json;

    use super::*;

    type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

    const INSERT_MANY: &str = "insert into webhook_message (id, endpoint_id, event_id, user_id, \
         group_id, actor, event_type, body, status, next_attempt_at, created_at) \
         select json_extract(value, '$.id'), json_extract(value, '$.endpoint'), \
         json_extract(value, '$.event'), json_extract(value, '$.user'), \
         json_extract(value, '$.group'), json_extract(value, '$.actor'), \
         json_extract(value, '$.type'), json_extract(value, '$.body'), 'PENDING', $2, $2 \
         from json_each($1) order by key";
    const RECORD_MANY: &str = "update webhook_message set \
         status = json_extract(o.value, '$.status'), tries = json_extract(o.value, '$.tries'), \
         attempts = json_extract(o.value, '$.attempts'), \
         next_attempt_at = json_extract(o.value, '$.next'), lease_until = null \
         from json_each($1) as o where webhook_message.id = json_extract(o.value, '$.id') \
         and webhook_message.lease_until = json_extract(o.value, '$.lease')";

    /// A time as sqlx writes it into SQLite, so that the two compare equal.
    fn stored(at: DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
    }

    pub async fn insert_many(
        tx: &mut Tx,
        messages: &[NewMessage],
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        if messages.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                json!({
                    "id": m.id, "endpoint": m.endpoint_id, "event": m.event_id, "user": m.user_id,
                    "group": m.group_id, "actor": m.actor, "type": m.event_type, "body": m.body,
                })
            })
            .collect();
        sqlx::query(INSERT_MANY)
            .bind(serde_json::Value::Array(rows).to_string())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn record_many(tx: &mut Tx, outcomes: &[Outcome]) -> Result<(), DbError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| {
                json!({
                    "id": o.message_id, "lease": stored(o.lease_until), "status": o.status,
                    "tries": o.tries, "attempts": o.attempts,
                    "next": o.next_attempt_at.map(stored),
                })
            })
            .collect();
        sqlx::query(RECORD_MANY)
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Postgres's writes of many rows: one statement over arrays, one round trip.
pub(super) mod postgres_rows {
    use super::*;

    type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

    const INSERT_MANY: &str = "insert into webhook_message (id, endpoint_id, event_id, user_id, \
         group_id, actor, event_type, body, status, next_attempt_at, created_at) \
         select m.id, m.endpoint_id, m.event_id, m.user_id, m.group_id, m.actor, m.event_type, \
         m.body, 'PENDING', $9, $9 from unnest($1::text[], $2::text[], $3::int8[], $4::text[], \
         $5::text[], $6::text[], $7::text[], $8::text[]) with ordinality \
         as m(id, endpoint_id, event_id, user_id, group_id, actor, event_type, body, n) order by m.n";
    /// One field of every row, as the array a statement unnests.
    fn column<T, U>(rows: &[T], field: impl Fn(&T) -> U) -> Vec<U> {
        rows.iter().map(field).collect()
    }

    const RECORD_MANY: &str = "update webhook_message as m set status = o.status, \
         tries = o.tries, attempts = o.attempts, next_attempt_at = o.next_attempt_at, \
         lease_until = null from unnest($1::text[], $2::timestamptz[], $3::text[], $4::int4[], \
         $5::text[], $6::timestamptz[]) as o(id, lease_until, status, tries, attempts, \
         next_attempt_at) where m.id = o.id and m.lease_until = o.lease_until";

    pub async fn insert_many(
        tx: &mut Tx,
        messages: &[NewMessage],
        now: DateTime<Utc>,
    ) -> Result<(), DbError> {
        if messages.is_empty() {
            return Ok(());
        }
        sqlx::query(INSERT_MANY)
            .persistent(pooler::keep_prepared())
            .bind(column(messages, |m| m.id.clone()))
            .bind(column(messages, |m| m.endpoint_id.clone()))
            .bind(column(messages, |m| m.event_id))
            .bind(column(messages, |m| m.user_id.clone()))
            .bind(column(messages, |m| m.group_id.clone()))
            .bind(column(messages, |m| m.actor.clone()))
            .bind(column(messages, |m| m.event_type.clone()))
            .bind(column(messages, |m| m.body.clone()))
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn record_many(tx: &mut Tx, outcomes: &[Outcome]) -> Result<(), DbError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        sqlx::query(RECORD_MANY)
            .persistent(pooler::keep_prepared())
            .bind(column(outcomes, |o| o.message_id.clone()))
            .bind(column(outcomes, |o| o.lease_until))
            .bind(column(outcomes, |o| o.status))
            .bind(column(outcomes, |o| o.tries))
            .bind(column(outcomes, |o| o.attempts.clone()))
            .bind(column(outcomes, |o| o.next_attempt_at))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}
