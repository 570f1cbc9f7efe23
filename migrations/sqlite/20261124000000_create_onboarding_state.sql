-- One row per user. Timestamps are RFC 3339 text in UTC with microseconds.
create table onboarding_state (
    user_id text primary key not null
        check (length(cast(user_id as blob)) between 1 and 255),
    is_completed integer not null default 0 check (is_completed in (0, 1)),
    current_step integer not null default 0 check (current_step >= 0),
    completed_at text,
    created_at text not null,
    updated_at text not null
) strict;
