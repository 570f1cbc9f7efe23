-- no-transaction
-- A user's events newest first, across flows (`flowEvents` without a flow,
-- `exportUserData`): one index range however long the history, instead of
-- sorting all of it for every page. Built concurrently, so that writes of
-- events go on while it is built on a large table.
create index concurrently flow_event_by_user_newest on flow_event (user_id, id);
