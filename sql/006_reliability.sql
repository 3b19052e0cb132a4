-- Nothing owed to Telnyx is forgotten, and a call Telnyx says is over is ended here too.
--
-- telnyx_outbox: each command the service owes Telnyx (record_start once the caller is answered,
-- reject on ring timeout), written in the same transaction as the event that causes it and
-- delivered by any worker until Telnyx takes it or the call is over.
-- inbound_calls.last_webhook_at: when Telnyx last told us anything about the call, so a call
-- that has gone silent (its hangup lost) can be checked against Telnyx and ended.
-- inbound_calls.end_inferred: the end was concluded by the service (Telnyx answered 90018, or
-- said the call is no longer alive), not reported by a webhook: a real call.hangup that arrives
-- later replaces its cause and source.

CREATE TABLE telnyx_outbox (
    id              bigserial PRIMARY KEY,
    call_control_id text NOT NULL,
    action          text NOT NULL CHECK (action IN ('record_start', 'reject')),
    args            jsonb NOT NULL DEFAULT '{}',
    command_id      text,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    outcome         text CHECK (outcome IN ('sent', 'moot', 'refused')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    -- One logical command per call and action: a retried webhook owes nothing new.
    UNIQUE (call_control_id, action)
);
-- What the delivery loop reads, and what the depth metric counts.
CREATE INDEX telnyx_outbox_due_idx ON telnyx_outbox (next_attempt_at) WHERE done_at IS NULL;
CREATE INDEX telnyx_outbox_done_idx ON telnyx_outbox (done_at) WHERE done_at IS NOT NULL;

ALTER TABLE inbound_calls
    ADD COLUMN last_webhook_at  timestamptz,
    ADD COLUMN alive_checked_at timestamptz,
    ADD COLUMN end_inferred     boolean NOT NULL DEFAULT false;
UPDATE inbound_calls SET last_webhook_at = updated_at;
-- The silent-call check and the rebuild of Redis read only the calls not over yet.
CREATE INDEX inbound_calls_open_idx ON inbound_calls (last_webhook_at) WHERE status <> 'ended';

-- apply_call_event gains p_record_calls: when the caller's leg is first answered, record_start
-- is owed in the same transaction. A real hangup replaces an inferred end's cause and source.
DROP FUNCTION apply_call_event(text, text, timestamptz, json, text, text, text, text, text, text,
                               text, text, text, timestamptz, timestamptz, text, text, text, text);

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
    p_recording_url text,
    p_record_calls boolean DEFAULT false
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    leg text := p_leg;
    c inbound_calls;
    is_new boolean;
    derived text;
    old_status text;
    owed boolean := false;
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
        RETURN jsonb_build_object('duplicate', true, 'leg', NULL, 'owed', false,
                                  'call', CASE WHEN c.id IS NULL THEN NULL ELSE call_view(c) END);
    END IF;
    IF p_effect IS NULL OR p_call_session_id IS NULL THEN
        RETURN jsonb_build_object('duplicate', false, 'leg', NULL, 'owed', false, 'call', NULL);
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
        c.end_inferred := false;
    END IF;
    old_status := c.status;

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
                IF c.end_inferred THEN
                    -- Telnyx's own account of the end replaces what the service concluded.
                    c.hangup_cause := COALESCE(p_hangup_cause, c.hangup_cause);
                    c.hangup_source := COALESCE(p_hangup_source, c.hangup_source);
                    c.end_inferred := false;
                ELSE
                    c.hangup_cause := COALESCE(c.hangup_cause, p_hangup_cause);
                    c.hangup_source := COALESCE(c.hangup_source, p_hangup_source);
                END IF;
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
    c.last_webhook_at := now();

    -- One write of the merged row.
    IF is_new THEN
        INSERT INTO inbound_calls VALUES (c.*);
    ELSE
        UPDATE inbound_calls SET
            (call_control_id, call_leg_id, connection_id, transfer_call_control_id,
             transfer_call_leg_id, transfer_to, from_number, to_number, caller_id_name, status,
             started_at, ringing_since, answered_at, bridged_at, ended_at, hangup_cause,
             hangup_source, sip_hangup_cause, recording_url, prospect_id, prospect_name,
             version, updated_at, last_webhook_at, end_inferred)
          = (c.call_control_id, c.call_leg_id, c.connection_id, c.transfer_call_control_id,
             c.transfer_call_leg_id, c.transfer_to, c.from_number, c.to_number,
             c.caller_id_name, c.status, c.started_at, c.ringing_since, c.answered_at,
             c.bridged_at, c.ended_at, c.hangup_cause, c.hangup_source, c.sip_hangup_cause,
             c.recording_url, c.prospect_id, c.prospect_name, c.version, c.updated_at,
             c.last_webhook_at, c.end_inferred)
        WHERE id = c.id;
    END IF;

    -- The caller's leg was answered just now, and the call is still on: recording is owed,
    -- durably, before this webhook is acknowledged. Never for a call already known to be over.
    IF p_record_calls AND c.status = 'answered' AND old_status IS DISTINCT FROM 'answered'
       AND c.call_control_id IS NOT NULL THEN
        INSERT INTO telnyx_outbox (call_control_id, action, args)
        VALUES (c.call_control_id, 'record_start', '{"format": "mp3", "channels": "dual"}')
        ON CONFLICT (call_control_id, action) DO NOTHING;
        owed := FOUND;
    END IF;

    PERFORM write_call_log(c);

    RETURN jsonb_build_object('duplicate', false, 'leg', leg, 'owed', owed, 'call', call_view(c));
END
$$;

-- The service concludes a call is over (Telnyx answered 90018 to a command, or says the leg is
-- no longer alive): end it with a cause and source, unless a webhook already ended it. Returns
-- the call (NULL when unknown), and whether this changed it.
CREATE FUNCTION end_call_inferred(
    p_call_control_id text, p_cause text, p_source text, p_at timestamptz
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c inbound_calls;
BEGIN
    SELECT * INTO c FROM inbound_calls WHERE call_control_id = p_call_control_id;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('changed', false, 'call', NULL);
    END IF;
    -- The same lock order as apply_call_event: session lock, then the row.
    PERFORM pg_advisory_xact_lock(hashtextextended(c.call_session_id, 0));
    SELECT * INTO c FROM inbound_calls WHERE id = c.id FOR UPDATE;
    IF c.ended_at IS NOT NULL THEN
        RETURN jsonb_build_object('changed', false, 'call', call_view(c));
    END IF;
    UPDATE inbound_calls SET
        ended_at = p_at,
        hangup_cause = COALESCE(hangup_cause, p_cause),
        hangup_source = COALESCE(hangup_source, p_source),
        end_inferred = true,
        status = 'ended',
        version = version + 1,
        updated_at = now()
    WHERE id = c.id
    RETURNING * INTO c;
    PERFORM write_call_log(c);
    RETURN jsonb_build_object('changed', true, 'call', call_view(c));
END
$$;
