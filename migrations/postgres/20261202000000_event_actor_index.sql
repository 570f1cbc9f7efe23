-- no-transaction
-- Erasing a user anonymizes them as the actor of other users' events (an
-- admin acting for a user). Those events are few: a partial index finds
-- them without reading the whole history. Built concurrently, so that
-- writes of events go on while it is built on a large table.
create index concurrently flow_event_by_other_actor
    on flow_event (actor) where actor <> user_id;
