-- no-transaction
-- The events in the order their transactions began, for making webhook
-- messages. Built concurrently, so that writes of events go on while it is
-- built on a large table.
create index concurrently flow_event_by_transaction on flow_event (tx, id) where tx is not null;
