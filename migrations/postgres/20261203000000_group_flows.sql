-- Team flows: a flow keeps each user's progress (scope USER) or each
-- group's (GROUP), fixed at its first publish. A group's states and events
-- are kept under the group's id in `user_id`: a flow has one scope, so a
-- user's and a group's rows never share a flow. Idempotency keys stay the
-- caller's; `group_id` says which group's state a key's answer holds, so
-- that erasing the group finds it.
--
-- Both columns are added without rewriting a table: `flow_version` is
-- small, and `group_id` is null for every existing key.
alter table flow_version
    add column scope text not null default 'USER' check (scope in ('USER', 'GROUP'));
alter table idempotency_key add column group_id text;
