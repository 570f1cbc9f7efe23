-- Webhooks: the endpoints admins register, and the messages sent to them.
--
-- The event history is the outbox. An event records the state it left
-- (`revision`, and `state`: status, current step, steps done and in all,
-- completion) so that its message says what the change made, however many
-- changes follow before it is sent. SQLite commits one write at a time and
-- never reuses an event id, so events are made into messages in id order.
-- Existing events have no state: they are never sent.
alter table flow_event add column revision integer;
alter table flow_event add column state text;

create table webhook_endpoint (
    id text primary key,
    url text not null check (length(cast(url as blob)) between 1 and 2048),
    description text,
    event_types text not null,
    flows text not null,
    enabled integer not null,
    disabled_reason text,
    secret text not null,
    -- The secret a rotation replaced: it signs beside the new one until
    -- `previous_secret_until`.
    previous_secret text,
    previous_secret_until text,
    -- Since when every attempt has failed; null after a success.
    failing_since text,
    created_at text not null
) strict;

create table webhook_message (
    seq integer primary key autoincrement,
    id text not null unique,
    endpoint_id text not null references webhook_endpoint (id) on delete cascade,
    -- The event it tells of; erasing the event removes it.
    event_id integer references flow_event (id) on delete cascade,
    -- Whose data it carries, for erasure: `data.userId`, `data.groupId`
    -- and `data.actor`.
    user_id text,
    group_id text,
    actor text,
    event_type text not null,
    body text not null,
    status text not null check (status in ('PENDING', 'SUCCEEDED', 'FAILED')),
    -- Attempts since it was made or last resent, which set the backoff.
    tries integer not null default 0,
    attempts text not null default '[]',
    next_attempt_at text,
    -- Until when the process that took it may be sending it.
    lease_until text,
    created_at text not null
) strict;
create index webhook_message_due on webhook_message (endpoint_id, next_attempt_at)
    where status = 'PENDING';
create index webhook_message_by_endpoint on webhook_message (endpoint_id, seq);
create index webhook_message_by_event on webhook_message (event_id);
create index webhook_message_by_user on webhook_message (user_id);
create index webhook_message_by_group on webhook_message (group_id) where group_id is not null;
create index webhook_message_by_actor on webhook_message (actor);
create index webhook_message_by_age on webhook_message (created_at) where status <> 'PENDING';

-- How far the event history has been made into messages: the last event.
create table webhook_cursor (
    event_id integer not null
) strict;
insert into webhook_cursor select coalesce(max(id), 0) from flow_event;
