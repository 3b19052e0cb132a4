-- The agents' floor (issue 16): the columns and indexes presence, caller context, after-call
-- notes, transfers to a colleague and voicemail keep. The behaviour is in later migrations and in
-- the Python modules named for each.

-- Presence: what the agent chose (available | away). "On a call" and "away because every page
-- has been gone a while" are worked out from the live state (presence.py); this is the part that
-- survives a Redis flush.
ALTER TABLE users
    ADD COLUMN presence text NOT NULL DEFAULT 'available'
        CHECK (presence IN ('available', 'away')),
    ADD COLUMN presence_changed_at timestamptz;

-- Caller context: what an import knows about a prospect besides the name.
ALTER TABLE prospects
    ADD COLUMN company text,
    ADD COLUMN notes   text;

-- After the call: a disposition from CALL_DISPOSITIONS (the list is configuration, so it is
-- checked by the application, not here) and a note (call_logs.notes, the seed's column), with
-- who left them and when.
ALTER TABLE call_logs
    ADD COLUMN disposition text,
    ADD COLUMN noted_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN noted_at    timestamptz;
-- ?disposition= pages like the other history filters (004).
CREATE INDEX call_logs_disposition_history_idx
    ON call_logs (disposition, (COALESCE(started_at, created_at)) DESC, id DESC);
-- The caller context reads this number's newest note without walking its calls that have none.
CREATE INDEX call_logs_phone_number_noted_idx
    ON call_logs (phone_number, (COALESCE(started_at, created_at)) DESC, id DESC)
    WHERE notes IS NOT NULL OR disposition IS NOT NULL;

-- Transfer to a colleague: answered_by becomes the colleague who took it; the agent who handed
-- it over is kept here.
ALTER TABLE inbound_calls
    ADD COLUMN transferred_from uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN transferred_at   timestamptz;
ALTER TABLE call_logs
    ADD COLUMN transferred_from uuid REFERENCES users (id) ON DELETE SET NULL;

-- Voicemail: a call nobody took is answered by the service (voicemail_at), greeted, recorded and
-- hung up, following voicemail_plan (the commands and their arguments, from the configuration
-- when the ring timeout chose voicemail). Heard once somebody has played it to the end.
ALTER TABLE inbound_calls
    ADD COLUMN voicemail_at   timestamptz,
    ADD COLUMN voicemail_plan jsonb;
ALTER TABLE call_logs
    ADD COLUMN heard_at timestamptz,
    ADD COLUMN heard_by uuid REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE call_logs DROP CONSTRAINT call_logs_outcome_check;
ALTER TABLE call_logs ADD CONSTRAINT call_logs_outcome_check
    CHECK (outcome IN ('answered', 'missed', 'abandoned', 'declined', 'voicemail'));
-- The header's count of unheard voicemails.
CREATE INDEX call_logs_unheard_voicemail_idx
    ON call_logs ((COALESCE(started_at, created_at)) DESC, id DESC)
    WHERE outcome = 'voicemail' AND heard_at IS NULL;

-- The commands a voicemail owes Telnyx go through the outbox like record_start and reject.
ALTER TABLE telnyx_outbox DROP CONSTRAINT telnyx_outbox_action_check;
ALTER TABLE telnyx_outbox ADD CONSTRAINT telnyx_outbox_action_check
    CHECK (action IN ('record_start', 'reject', 'answer', 'speak', 'playback_start',
                      'record_stop', 'hangup'));

-- voicemail: the service answered it for voicemail (not an agent) and the caller got through.
-- Otherwise as 004: answered | declined | abandoned | missed.
CREATE OR REPLACE FUNCTION call_outcome(c inbound_calls) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN c.ended_at IS NULL THEN NULL
        WHEN c.voicemail_at IS NOT NULL AND c.answered_at IS NOT NULL THEN 'voicemail'
        WHEN c.answered_at IS NOT NULL OR c.bridged_at IS NOT NULL THEN 'answered'
        WHEN c.declined_at IS NOT NULL THEN 'declined'
        WHEN c.hangup_source = 'caller' OR c.hangup_cause = 'originator_cancel' THEN 'abandoned'
        ELSE 'missed' END
$$;

-- 002's write_call_log, also carrying who handed the call over. The columns an agent writes
-- after the call (notes, disposition, heard) are not touched: rewriting the row keeps them.
CREATE OR REPLACE FUNCTION write_call_log(c inbound_calls) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF c.ended_at IS NULL OR c.call_control_id IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO call_logs (call_sid, call_session_id, direction, from_number, phone_number,
                           to_number, started_at, ended_at, duration, outcome, end_reason,
                           hangup_source, answered_by, caller_id, prospect_id, prospect_name,
                           recording_url, transferred_from)
    VALUES (c.call_control_id, c.call_session_id, 'inbound', c.from_number, c.from_number,
            c.to_number, COALESCE(c.started_at, c.ringing_since), c.ended_at,
            call_duration(c), call_outcome(c), c.hangup_cause, c.hangup_source,
            c.answered_by, c.answered_by, c.prospect_id, c.prospect_name, c.recording_url,
            c.transferred_from)
    ON CONFLICT (call_sid) DO UPDATE SET
        call_session_id  = EXCLUDED.call_session_id,
        from_number      = EXCLUDED.from_number,
        phone_number     = EXCLUDED.phone_number,
        to_number        = EXCLUDED.to_number,
        started_at       = EXCLUDED.started_at,
        ended_at         = EXCLUDED.ended_at,
        duration         = EXCLUDED.duration,
        outcome          = EXCLUDED.outcome,
        end_reason       = EXCLUDED.end_reason,
        hangup_source    = EXCLUDED.hangup_source,
        answered_by      = EXCLUDED.answered_by,
        caller_id        = EXCLUDED.caller_id,
        prospect_id      = EXCLUDED.prospect_id,
        prospect_name    = EXCLUDED.prospect_name,
        recording_url    = EXCLUDED.recording_url,
        transferred_from = EXCLUDED.transferred_from,
        updated_at       = now();
END
$$;
