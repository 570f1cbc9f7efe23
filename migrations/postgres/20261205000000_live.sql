-- Live updates across replicas. A replica records the owners (users and
-- groups) its subscribers watch; a change to a state of a watched owner
-- notifies `onboarding_live` with the owner, flow and revision, in the
-- writing transaction, so that only committed changes are heard. A change
-- to an owner nobody watches costs one index probe and sends nothing.

create table live_interest (
    owner text not null,
    -- The watching process, a random name it takes at start.
    replica text not null,
    -- Which watch of the replica recorded it, so that an old removal never
    -- removes a newer interest.
    watch_id bigint not null,
    -- Refreshed while the replica runs; rows of a replica gone quiet for
    -- two minutes are removed.
    seen_at timestamptz not null,
    primary key (owner, replica)
);

create function live_signal() returns trigger language plpgsql as $$
declare
    changed record;
begin
    if tg_op = 'DELETE' then
        changed := old;
    else
        changed := new;
    end if;
    if exists (select 1 from live_interest where owner = changed.user_id) then
        perform pg_notify('onboarding_live', json_build_object(
            'owner', changed.user_id,
            'flow', coalesce(to_jsonb(changed) ->> 'flow', 'onboarding'),
            'revision', case when tg_op = 'DELETE' then null else changed.revision end
        )::text);
    end if;
    return null;
end
$$;

create trigger flow_state_live after insert or update or delete on flow_state
    for each row execute function live_signal();
create trigger onboarding_state_live after insert or update or delete on onboarding_state
    for each row execute function live_signal();
