-- Flows: declared versions, each user's state per flow, the events that
-- changed them, and the answers kept for idempotent retries.
--
-- The built-in flow `onboarding` keeps its state in `onboarding_state`,
-- whose columns stay as they are; it gains those of a flow state. Rows
-- written before read as COMPLETED, IN_PROGRESS (a step past 0) or
-- NOT_STARTED; `flow_state` holds every other flow's states.

alter table onboarding_state add column version integer not null default 0
    check (version >= 0);
alter table onboarding_state add column status text not null default 'NOT_STARTED'
    check (status in ('NOT_STARTED', 'IN_PROGRESS', 'COMPLETED', 'DISMISSED', 'SNOOZED'));
alter table onboarding_state add column steps text not null default '{}';
alter table onboarding_state add column started_at text;
alter table onboarding_state add column dismissed_at text;
alter table onboarding_state add column snoozed_until text;
alter table onboarding_state add column revision integer not null default 0
    check (revision >= 0);

update onboarding_state
set status = case
    when is_completed then 'COMPLETED'
    when current_step > 0 then 'IN_PROGRESS'
    else 'NOT_STARTED'
end;

create table flow_version (
    flow text not null check (length(flow) between 1 and 64),
    version integer not null check (version >= 1),
    title text not null,
    steps text not null,
    reonboarding text not null
        check (reonboarding in ('KEEP', 'RESTART_IN_PROGRESS', 'RESTART_ALL', 'NEW_STEPS_ONLY')),
    published_at text not null,
    primary key (flow, version)
) strict;

create table flow_state (
    user_id text not null check (length(cast(user_id as blob)) between 1 and 255),
    flow text not null check (flow <> 'onboarding'),
    version integer not null check (version >= 1),
    status text not null
        check (status in ('NOT_STARTED', 'IN_PROGRESS', 'COMPLETED', 'DISMISSED', 'SNOOZED')),
    current_step integer not null check (current_step >= 0),
    steps text not null,
    started_at text,
    completed_at text,
    dismissed_at text,
    snoozed_until text,
    revision integer not null check (revision >= 0),
    created_at text not null,
    updated_at text not null,
    primary key (user_id, flow)
) strict;

create table flow_event (
    id integer primary key autoincrement,
    user_id text not null,
    flow text not null,
    version integer not null check (version >= 0),
    type text not null check (type in (
        'FLOW_STARTED', 'STEP_COMPLETED', 'STEP_SKIPPED', 'STEP_SET', 'FLOW_COMPLETED',
        'FLOW_DISMISSED', 'FLOW_SNOOZED', 'FLOW_RESTARTED', 'RESET', 'REONBOARDED')),
    step text,
    actor text not null,
    request_id text,
    at text not null,
    data text
) strict;
create index flow_event_by_user on flow_event (user_id, flow, id);

create table idempotency_key (
    user_id text not null,
    key text not null check (length(cast(key as blob)) between 1 and 255),
    request text not null,
    response text not null,
    created_at text not null,
    primary key (user_id, key)
) strict;
create index idempotency_key_by_age on idempotency_key (created_at);
