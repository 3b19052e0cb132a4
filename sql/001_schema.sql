-- The durable record: agents, prospects, inbound calls and their log rows, and every webhook seen.
-- call_logs and inbound_calls keep the seed's columns; the rest extends them.

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    name          text NOT NULL,
    password_hash text,
    sip_username  text,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Emails are unique whatever their case.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TABLE prospects (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL,
    phone_number text NOT NULL CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX prospects_phone_number_idx ON prospects (phone_number);

-- One row per inbound call, keyed by its Telnyx session; the caller's leg is the call's handle.
CREATE TABLE inbound_calls (
    id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    call_control_id          text UNIQUE,
    call_leg_id              text,
    call_session_id          text NOT NULL UNIQUE,
    connection_id            text,
    transfer_call_control_id text,
    transfer_call_leg_id     text,
    transfer_to              text,
    from_number              text,
    to_number                text,
    caller_id_name           text,
    status                   text NOT NULL DEFAULT 'ringing'
                             CHECK (status IN ('ringing', 'answering', 'answered', 'ended')),
    started_at               timestamptz,
    ringing_since            timestamptz,
    answered_at              timestamptz,
    bridged_at               timestamptz,
    ended_at                 timestamptz,
    hangup_cause             text,
    hangup_source            text,
    sip_hangup_cause         text,
    recording_url            text,
    answered_by              uuid REFERENCES users (id) ON DELETE SET NULL,
    prospect_id              uuid REFERENCES prospects (id) ON DELETE SET NULL,
    prospect_name            text,
    version                  integer NOT NULL DEFAULT 0,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

-- One row per ended inbound call; call_sid is the caller leg's call_control_id. Its indexes
-- are those the history needs (004).
CREATE TABLE call_logs (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    prospect_id   uuid REFERENCES prospects (id) ON DELETE SET NULL,
    prospect_name text,
    caller_id     uuid REFERENCES users (id) ON DELETE SET NULL,
    answered_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    phone_number  text,
    from_number   text,
    to_number     text,
    outcome       text CHECK (outcome IN ('answered', 'missed', 'abandoned', 'declined')),
    duration      integer NOT NULL DEFAULT 0,
    notes         text,
    started_at    timestamptz,
    ended_at      timestamptz,
    call_sid      text NOT NULL UNIQUE,
    call_session_id text,
    recording_url text,
    direction     text NOT NULL DEFAULT 'inbound',
    end_reason    text,
    hangup_source text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Every webhook Telnyx delivered, once: the primary key is the dedupe.
CREATE TABLE webhook_events (
    event_id        text PRIMARY KEY,
    event_type      text NOT NULL,
    call_control_id text,
    call_session_id text,
    occurred_at     timestamptz,
    received_at     timestamptz NOT NULL DEFAULT now(),
    payload         json NOT NULL  -- the body exactly as received
);
CREATE INDEX webhook_events_call_session_id_idx ON webhook_events (call_session_id);
