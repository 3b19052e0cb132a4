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
    p_body json,
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
    leg text := p_leg;
    c inbound_calls;
    is_new boolean;
    derived text;
    prospect prospects;
BEGIN
    INSERT INTO webhook_events (event_id, event_type, call_control_id, call_session_id,
                                occurred_at, payload)
    VALUES (p_event_id, p_event_type, p_call_control_id, p_call_session_id, p_occurred_at, p_body)
    ON CONFLICT (event_id) DO NOTHING;

    IF NOT FOUND THEN
        -- A redelivery changes nothing here, but the caller still needs the state so that a
        -- retry can finish what an earlier attempt did not (the Redis side).
        IF p_effect IS NOT NULL THEN
            SELECT * INTO c FROM inbound_calls WHERE call_session_id = p_call_session_id;
        END IF;
        RETURN jsonb_build_object('duplicate', true, 'leg', NULL,
                                  'call', CASE WHEN c.id IS NULL THEN NULL ELSE call_view(c) END);
    END IF;
    IF p_effect IS NULL OR p_call_session_id IS NULL THEN
        RETURN jsonb_build_object('duplicate', false, 'leg', NULL, 'call', NULL);
    END IF;

    -- Events of one call are applied one at a time, across every worker: the advisory lock
    -- covers a call's first event (no row to lock yet), the row lock the agents' writes.
    PERFORM pg_advisory_xact_lock(hashtextextended(p_call_session_id, 0));
    SELECT * INTO c FROM inbound_calls WHERE call_session_id = p_call_session_id FOR UPDATE;
    is_new := NOT FOUND;
    IF is_new THEN
        c.id := gen_random_uuid();
        c.call_session_id := p_call_session_id;
        c.status := 'ringing';
        c.version := 0;
        c.created_at := now();
    END IF;

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
        c.call_control_id := COALESCE(c.call_control_id, p_call_control_id);
        c.call_leg_id := COALESCE(c.call_leg_id, p_call_leg_id);
        c.connection_id := COALESCE(c.connection_id, p_connection_id);
        c.from_number := COALESCE(c.from_number, p_from);
        c.to_number := COALESCE(c.to_number, p_to);
        c.caller_id_name := COALESCE(c.caller_id_name, p_caller_id_name);
        c.started_at := LEAST(c.started_at, p_start_time);
        IF c.prospect_id IS NULL AND c.from_number IS NOT NULL THEN
            SELECT * INTO prospect FROM prospects WHERE phone_number = c.from_number
            ORDER BY created_at, id LIMIT 1;
            c.prospect_id := prospect.id;
            c.prospect_name := prospect.name;
        END IF;
        CASE p_effect
            WHEN 'initiated' THEN
                c.ringing_since := LEAST(c.ringing_since, COALESCE(p_start_time, p_occurred_at));
            WHEN 'answered' THEN
                c.answered_at := LEAST(c.answered_at, p_occurred_at);
            WHEN 'bridged' THEN
                c.bridged_at := LEAST(c.bridged_at, p_occurred_at);
            WHEN 'hangup' THEN
                c.ended_at := LEAST(c.ended_at, COALESCE(p_end_time, p_occurred_at));
                c.hangup_cause := COALESCE(c.hangup_cause, p_hangup_cause);
                c.hangup_source := COALESCE(c.hangup_source, p_hangup_source);
                c.sip_hangup_cause := COALESCE(c.sip_hangup_cause, p_sip_hangup_cause);
        END CASE;
    ELSIF leg = 'transfer' THEN
        c.transfer_call_control_id := COALESCE(c.transfer_call_control_id, p_call_control_id);
        c.transfer_call_leg_id := COALESCE(c.transfer_call_leg_id, p_call_leg_id);
        IF p_effect = 'initiated' THEN
            c.transfer_to := COALESCE(c.transfer_to, p_to);
        END IF;
    ELSE
        c.recording_url := COALESCE(c.recording_url, p_recording_url);
    END IF;

    -- Status follows from what is known, and only ever moves forward.
    derived := CASE
        WHEN c.ended_at IS NOT NULL THEN 'ended'
        WHEN c.answered_at IS NOT NULL OR c.bridged_at IS NOT NULL THEN 'answered'
        ELSE 'ringing' END;
    IF call_status_rank(derived) > call_status_rank(c.status) THEN
        c.status := derived;
    END IF;
    c.version := c.version + 1;
    c.updated_at := now();

    -- One write of the merged row.
    IF is_new THEN
        INSERT INTO inbound_calls VALUES (c.*);
    ELSE
        UPDATE inbound_calls SET
            (call_control_id, call_leg_id, connection_id, transfer_call_control_id,
             transfer_call_leg_id, transfer_to, from_number, to_number, caller_id_name, status,
             started_at, ringing_since, answered_at, bridged_at, ended_at, hangup_cause,
             hangup_source, sip_hangup_cause, recording_url, prospect_id, prospect_name,
             version, updated_at)
          = (c.call_control_id, c.call_leg_id, c.connection_id, c.transfer_call_control_id,
             c.transfer_call_leg_id, c.transfer_to, c.from_number, c.to_number,
             c.caller_id_name, c.status, c.started_at, c.ringing_since, c.answered_at,
             c.bridged_at, c.ended_at, c.hangup_cause, c.hangup_source, c.sip_hangup_cause,
             c.recording_url, c.prospect_id, c.prospect_name, c.version, c.updated_at)
        WHERE id = c.id;
    END IF;

    PERFORM write_call_log(c);

    RETURN jsonb_build_object('duplicate', false, 'leg', leg, 'call', call_view(c));
END
$$;
