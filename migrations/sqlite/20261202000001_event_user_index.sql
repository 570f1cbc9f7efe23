-- A user's events newest first, across flows (`flowEvents` without a flow,
-- `exportUserData`): one index range however long the history, instead of
-- sorting all of it for every page.
create index flow_event_by_user_newest on flow_event (user_id, id);
