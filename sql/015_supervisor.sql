-- The supervisor's view and reports (issue 17): a role per user, and the moment each call was
-- answered on its log row (the speed of answer and the service level are measured to it).

-- Everyone who exists now stays an agent; `flask users set-role` makes a supervisor.
ALTER TABLE users
    ADD COLUMN role text NOT NULL DEFAULT 'agent' CHECK (role IN ('agent', 'supervisor'));

-- When the caller's leg was answered (by an agent's transfer, or for voicemail): the earlier of
-- call.answered and call.bridged, as call_duration measures the talk time from.
ALTER TABLE call_logs ADD COLUMN answered_at timestamptz;

UPDATE call_logs cl
   SET answered_at = LEAST(c.answered_at, c.bridged_at)
  FROM inbound_calls c
 WHERE c.call_control_id = cl.call_sid
   AND COALESCE(c.answered_at, c.bridged_at) IS NOT NULL;

CREATE OR REPLACE FUNCTION write_call_log(c inbound_calls) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF c.ended_at IS NULL OR c.call_control_id IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO call_logs (call_sid, call_session_id, direction, from_number, phone_number,
                           to_number, started_at, answered_at, ended_at, duration, outcome,
                           end_reason, hangup_source, answered_by, caller_id, prospect_id,
                           prospect_name, recording_url, transferred_from)
    VALUES (c.call_control_id, c.call_session_id, 'inbound', c.from_number, c.from_number,
            c.to_number, COALESCE(c.started_at, c.ringing_since),
            LEAST(c.answered_at, c.bridged_at), c.ended_at,
            call_duration(c), call_outcome(c), c.hangup_cause, c.hangup_source,
            c.answered_by, c.answered_by, c.prospect_id, c.prospect_name, c.recording_url,
            c.transferred_from)
    ON CONFLICT (call_sid) DO UPDATE SET
        call_session_id  = EXCLUDED.call_session_id,
        from_number      = EXCLUDED.from_number,
        phone_number     = EXCLUDED.phone_number,
        to_number        = EXCLUDED.to_number,
        started_at       = EXCLUDED.started_at,
        answered_at      = EXCLUDED.answered_at,
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
