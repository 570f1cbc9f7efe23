-- One row per user.
create table onboarding_state (
    user_id text primary key check (octet_length(user_id) between 1 and 255),
    is_completed boolean not null default false,
    current_step integer not null default 0 check (current_step >= 0),
    completed_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
