-- Applying one webhook is one statement: SELECT apply_call_event(...). It dedupes on the event id,
-- merges the event into the call's row and rewrites the call's log row, in one transaction.
-- Every merge rule is order-free (first value wins, earliest timestamp wins, status only moves
-- forward), so any order of the same events, with any duplicates, leaves the same rows.

-- The forward-only order of call statuses.
CREATE FUNCTION call_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'ringing' THEN 1 WHEN 'answering' THEN 2 WHEN 'answered' THEN 3 WHEN 'ended' THEN 4
        ELSE 0 END
$$;

-- answered | abandoned (the caller gave up while it rang) | missed (any other unanswered end).
CREATE FUNCTION call_outcome(c inbound_calls) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN c.ended_at IS NULL THEN NULL
        WHEN c.answered_at IS NOT NULL OR c.bridged_at IS NOT NULL THEN 'answered'
        WHEN c.hangup_source = 'caller' OR c.hangup_cause = 'originator_cancel' THEN 'abandoned'
        ELSE 'missed' END
$$;

-- Talk time in whole seconds: answered to ended, 0 when never answered.
CREATE FUNCTION call_duration(c inbound_calls) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN c.ended_at IS NULL OR COALESCE(c.answered_at, c.bridged_at) IS NULL THEN 0
        ELSE GREATEST(0, floor(extract(epoch FROM
            c.ended_at - LEAST(c.answered_at, c.bridged_at))))::integer END
$$;

-- The call as the application sees it: the row, plus what is derived from it.
CREATE FUNCTION call_view(c inbound_calls) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT to_jsonb(c) || jsonb_build_object('outcome', call_outcome(c), 'duration', call_duration(c))
$$;

-- The call's log row, written from the merged call once it has ended. It is rewritten each time,
-- so it is the same whatever order the events came in.
CREATE FUNCTION write_call_log(c inbound_calls) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF c.ended_at IS NULL OR c.call_control_id IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO call_logs (call_sid, call_session_id, direction, from_number, phone_number,
                           to_number, started_at, ended_at, duration, outcome, end_reason,
                           hangup_source, answered_by, caller_id, prospect_id, prospect_name,
                           recording_url)
    VALUES (c.call_control_id, c.call_session_id, 'inbound', c.from_number, c.from_number,
            c.to_number, COALESCE(c.started_at, c.ringing_since), c.ended_at,
            call_duration(c), call_outcome(c), c.hangup_cause, c.hangup_source,
            c.answered_by, c.answered_by, c.prospect_id, c.prospect_name, c.recording_url)
    ON CONFLICT (call_sid) DO UPDATE SET
        call_session_id = EXCLUDED.call_session_id,
        from_number     = EXCLUDED.from_number,
        phone_number    = EXCLUDED.phone_number,
        to_number       = EXCLUDED.to_number,
        started_at      = EXCLUDED.started_at,
        ended_at        = EXCLUDED.ended_at,
        duration        = EXCLUDED.duration,
        outcome         = EXCLUDED.outcome,
        end_reason      = EXCLUDED.end_reason,
        hangup_source   = EXCLUDED.hangup_source,
        answered_by     = EXCLUDED.answered_by,
        caller_id       = EXCLUDED.caller_id,
        prospect_id     = EXCLUDED.prospect_id,
        prospect_name   = EXCLUDED.prospect_name,
        recording_url   = EXCLUDED.recording_url,
        updated_at      = now();
END
$$;

CREATE FUNCTION apply_call_event(
    p_event_id text,
    p_event_type text,
    p_occurred_at timestamptz,
    p_body jsonb,
    p_effect text,               -- initiated | answered | bridged | hangup | recording | NULL (store only)
    p_call_session_id text,
    p_call_control_id text,
    p_call_leg_id text,
    p_connection_id text,
    p_leg text,                  -- caller | transfer | NULL (work it out from the legs known)
    p_from text,
    p_to text,
    p_caller_id_name text,
    p_start_time timestamptz,
    p_end_time timestamptz,
    p_hangup_cause text,
    p_hangup_source text,
    p_sip_hangup_cause text,
    p_recording_url text
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    fresh boolean;
    leg text := p_leg;
    c inbound_calls;
    prospect prospects;
BEGIN
    INSERT INTO webhook_events (event_id, event_type, call_control_id, call_session_id,
                                occurred_at, payload)
    VALUES (p_event_id, p_event_type, p_call_control_id, p_call_session_id, p_occurred_at, p_body)
    ON CONFLICT (event_id) DO NOTHING;
    fresh := FOUND;

    IF p_effect IS NULL OR p_call_session_id IS NULL THEN
        RETURN jsonb_build_object('duplicate', NOT fresh, 'leg', NULL, 'call', NULL);
    END IF;

    IF NOT fresh THEN
        -- A redelivery changes nothing here, but the caller still needs the state so that a
        -- retry can finish what an earlier attempt did not (the Redis side).
        SELECT * INTO c FROM inbound_calls WHERE call_session_id = p_call_session_id;
        RETURN jsonb_build_object('duplicate', true, 'leg', NULL,
                                  'call', CASE WHEN c.id IS NULL THEN NULL ELSE call_view(c) END);
    END IF;

    INSERT INTO inbound_calls (call_session_id) VALUES (p_call_session_id)
    ON CONFLICT (call_session_id) DO NOTHING;
    -- The row lock serialises concurrent events of one call across every worker.
    SELECT * INTO c FROM inbound_calls WHERE call_session_id = p_call_session_id FOR UPDATE;

    IF p_effect = 'recording' THEN
        leg := NULL;  -- a recording belongs to the call, whichever leg it names
    ELSIF leg IS NULL THEN
        leg := CASE
            WHEN p_call_control_id = c.call_control_id OR p_call_leg_id = c.call_leg_id
                THEN 'caller'
            WHEN p_call_control_id = c.transfer_call_control_id
                 OR p_call_leg_id = c.transfer_call_leg_id
                THEN 'transfer'
            -- Nothing known yet: the caller's leg always reports before any leg we create.
            WHEN c.call_control_id IS NULL AND c.call_leg_id IS NULL THEN 'caller'
            ELSE 'transfer' END;
    END IF;

    IF leg = 'caller' THEN
        SELECT * INTO prospect FROM prospects
        WHERE phone_number = COALESCE(c.from_number, p_from)
        ORDER BY created_at, id LIMIT 1;

        UPDATE inbound_calls SET
            call_control_id = COALESCE(call_control_id, p_call_control_id),
            call_leg_id     = COALESCE(call_leg_id, p_call_leg_id),
            connection_id   = COALESCE(connection_id, p_connection_id),
            from_number     = COALESCE(from_number, p_from),
            to_number       = COALESCE(to_number, p_to),
            caller_id_name  = COALESCE(caller_id_name, p_caller_id_name),
            prospect_id     = COALESCE(prospect_id, prospect.id),
            prospect_name   = COALESCE(prospect_name, prospect.name),
            started_at      = LEAST(started_at, p_start_time),
            ringing_since   = CASE WHEN p_effect = 'initiated'
                                   THEN LEAST(ringing_since, COALESCE(p_start_time, p_occurred_at))
                                   ELSE ringing_since END,
            answered_at     = CASE WHEN p_effect = 'answered'
                                   THEN LEAST(answered_at, p_occurred_at) ELSE answered_at END,
            bridged_at      = CASE WHEN p_effect = 'bridged'
                                   THEN LEAST(bridged_at, p_occurred_at) ELSE bridged_at END,
            ended_at        = CASE WHEN p_effect = 'hangup'
                                   THEN LEAST(ended_at, COALESCE(p_end_time, p_occurred_at))
                                   ELSE ended_at END,
            hangup_cause    = CASE WHEN p_effect = 'hangup'
                                   THEN COALESCE(hangup_cause, p_hangup_cause) ELSE hangup_cause END,
            hangup_source   = CASE WHEN p_effect = 'hangup'
                                   THEN COALESCE(hangup_source, p_hangup_source)
                                   ELSE hangup_source END,
            sip_hangup_cause = CASE WHEN p_effect = 'hangup'
                                   THEN COALESCE(sip_hangup_cause, p_sip_hangup_cause)
                                   ELSE sip_hangup_cause END
        WHERE id = c.id;
    ELSIF leg = 'transfer' THEN
        UPDATE inbound_calls SET
            transfer_call_control_id = COALESCE(transfer_call_control_id, p_call_control_id),
            transfer_call_leg_id     = COALESCE(transfer_call_leg_id, p_call_leg_id),
            transfer_to              = CASE WHEN p_effect = 'initiated'
                                            THEN COALESCE(transfer_to, p_to) ELSE transfer_to END
        WHERE id = c.id;
    ELSE
        UPDATE inbound_calls SET recording_url = COALESCE(recording_url, p_recording_url)
        WHERE id = c.id;
    END IF;

    -- Status follows from what is known, and only ever moves forward.
    UPDATE inbound_calls SET
        status = CASE WHEN call_status_rank(derived.status) > call_status_rank(inbound_calls.status)
                      THEN derived.status ELSE inbound_calls.status END,
        version = version + 1,
        updated_at = now()
    FROM (SELECT CASE
              WHEN ended_at IS NOT NULL THEN 'ended'
              WHEN answered_at IS NOT NULL OR bridged_at IS NOT NULL THEN 'answered'
              ELSE 'ringing' END AS status
          FROM inbound_calls WHERE id = c.id) AS derived
    WHERE inbound_calls.id = c.id
    RETURNING inbound_calls.* INTO c;

    PERFORM write_call_log(c);

    RETURN jsonb_build_object('duplicate', false, 'leg', leg, 'call', call_view(c));
END
$$;
