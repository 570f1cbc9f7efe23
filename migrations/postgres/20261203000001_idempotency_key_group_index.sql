-- no-transaction
-- The idempotency records of one group, for erasing the group. Partial:
-- users' own keys, the most, are not in it. Built concurrently, so that
-- writes go on while it is built on a large table.
create index concurrently idempotency_key_by_group
    on idempotency_key (group_id) where group_id is not null;
