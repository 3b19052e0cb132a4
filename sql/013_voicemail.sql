-- Voicemail for calls nobody takes (issue 16, part 5). The ring timeout, instead of rejecting a
-- call, starts voicemail (start_voicemail: the plan, and the answer owed, in one transaction);
-- everything after follows from Telnyx's webhooks, owed in the same transaction as the webhook
-- that causes it (invariant 9), by apply_call_event:
--   call.answered (caller's leg)        -> the greeting (speak or playback_start), and a hangup
--                                          due later, in case the greeting never ends;
--   call.speak.ended / playback.ended   -> record_start (with a beep and max_length), record_stop
--                                          due at now() + max_seconds and the hangup just after.
-- A command whose call has ended meanwhile (the caller hung up) is given up as moot by the
-- outbox, so nothing more is sent. The outbox honours next_attempt_at, so "due later" is a row.

-- The service answers an unanswered call for voicemail, following `p_plan` (voicemail.py builds
-- it from the configuration): the plan is kept on the call and the answer owed, at once. A
-- refused answer is owed again after a backoff (the ring timeout tries again), as outbox.OWE
-- does. False when the call is unknown, over, or already answered.
CREATE FUNCTION start_voicemail(
    p_call_control_id text,
    p_plan jsonb,
    p_backoff_seconds double precision DEFAULT 1,
    p_max_backoff_seconds double precision DEFAULT 300) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    c inbound_calls;
BEGIN
    SELECT * INTO c FROM inbound_calls WHERE call_control_id = p_call_control_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- The same lock order as apply_call_event: session lock, then the row.
    PERFORM pg_advisory_xact_lock(hashtextextended(c.call_session_id, 0));
    SELECT * INTO c FROM inbound_calls WHERE id = c.id FOR UPDATE;
    IF c.ended_at IS NOT NULL OR c.answered_at IS NOT NULL OR c.bridged_at IS NOT NULL THEN
        RETURN false;
    END IF;
    UPDATE inbound_calls
       SET voicemail_at = COALESCE(voicemail_at, now()),
           voicemail_plan = COALESCE(voicemail_plan, p_plan),
           updated_at = now()
     WHERE id = c.id;
    INSERT INTO telnyx_outbox (call_control_id, action, args)
    VALUES (p_call_control_id, 'answer', '{}')
    ON CONFLICT (call_control_id, action) DO UPDATE
        SET outcome = NULL, done_at = NULL, last_error = NULL,
            next_attempt_at = now() + make_interval(secs => LEAST(
                p_max_backoff_seconds,
                p_backoff_seconds * power(2, LEAST(telnyx_outbox.attempts, 30))))
        WHERE telnyx_outbox.outcome = 'refused';
    RETURN true;
END
$$;

-- Owe a voicemail's command `p_action` with `p_args`, due `p_after` seconds from now; true when
-- it was newly owed (a retried webhook owes nothing twice).
CREATE FUNCTION owe_voicemail_command(
    p_call_control_id text, p_action text, p_args jsonb, p_after double precision DEFAULT 0)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO telnyx_outbox (call_control_id, action, args, next_attempt_at)
    VALUES (p_call_control_id, p_action, COALESCE(p_args, '{}'),
            now() + make_interval(secs => p_after))
    ON CONFLICT (call_control_id, action) DO NOTHING;
    RETURN FOUND;
END
$$;

-- 008's apply_call_event, with the voicemail's steps (the greeting on answer, the recording and
-- its end on the greeting's end) in place of record_start for a voicemail call, and the new
-- effect greeting_ended (call.speak.ended, call.playback.ended), which changes nothing about a
-- call and makes none. Otherwise the same, line for line.
DROP FUNCTION apply_call_event(jsonb, json, boolean);

CREATE FUNCTION apply_call_event(
    p_event jsonb,               -- a webhook_event, as JSON (WebhookEvent in webhook_events.py)
    p_body json,                 -- the body exactly as received, kept in webhook_events
    p_record_calls boolean DEFAULT false) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    e webhook_event := jsonb_populate_record(NULL::webhook_event, p_event);
    leg text := e.leg;
    c inbound_calls;
    is_new boolean;
    derived text;
    old_status text;
    owed boolean := false;
    prospect prospects;
BEGIN
    INSERT INTO webhook_events (event_id, event_type, call_control_id, call_session_id,
                                occurred_at, payload)
    VALUES (e.event_id, e.event_type, e.call_control_id, e.call_session_id, e.occurred_at, p_body)
    ON CONFLICT (event_id) DO NOTHING;

    IF NOT FOUND THEN
        -- A redelivery changes nothing here, but the caller still needs the state so that a
        -- retry can finish what an earlier attempt did not (the Redis side).
        IF e.effect IS NOT NULL THEN
            SELECT * INTO c FROM inbound_calls WHERE call_session_id = e.call_session_id;
        END IF;
        RETURN jsonb_build_object('duplicate', true, 'leg', NULL, 'owed', false,
                                  'call', CASE WHEN c.id IS NULL THEN NULL ELSE call_view(c) END);
    END IF;
    IF e.effect IS NULL OR e.call_session_id IS NULL THEN
        RETURN jsonb_build_object('duplicate', false, 'leg', NULL, 'owed', false, 'call', NULL);
    END IF;

    -- Events of one call are applied one at a time, across every worker: the advisory lock
    -- covers a call's first event (no row to lock yet), the row lock the agents' writes.
    PERFORM pg_advisory_xact_lock(hashtextextended(e.call_session_id, 0));
    SELECT * INTO c FROM inbound_calls WHERE call_session_id = e.call_session_id FOR UPDATE;
    is_new := NOT FOUND;
    IF is_new AND e.effect = 'greeting_ended' THEN
        -- Only a call the service answered plays a greeting: another's is stored, not a call.
        RETURN jsonb_build_object('duplicate', false, 'leg', NULL, 'owed', false, 'call', NULL);
    END IF;
    IF is_new THEN
        c.id := gen_random_uuid();
        c.call_session_id := e.call_session_id;
        c.status := 'ringing';
        c.version := 0;
        c.created_at := now();
        c.end_inferred := false;
    END IF;
    old_status := c.status;

    IF e.effect = 'recording' THEN
        leg := NULL;  -- a recording belongs to the call, whichever leg it names
    ELSIF leg IS NULL THEN
        leg := CASE
            WHEN e.call_control_id = c.call_control_id OR e.call_leg_id = c.call_leg_id
                THEN 'caller'
            WHEN e.call_control_id = c.transfer_call_control_id
                 OR e.call_leg_id = c.transfer_call_leg_id
                THEN 'transfer'
            -- Nothing known yet: the caller's leg always reports before any leg we create.
            WHEN c.call_control_id IS NULL AND c.call_leg_id IS NULL THEN 'caller'
            ELSE 'transfer' END;
    END IF;

    IF leg = 'caller' THEN
        c.call_control_id := COALESCE(c.call_control_id, e.call_control_id);
        c.call_leg_id := COALESCE(c.call_leg_id, e.call_leg_id);
        c.connection_id := COALESCE(c.connection_id, e.connection_id);
        c.from_number := COALESCE(c.from_number, e.from_number);
        c.to_number := COALESCE(c.to_number, e.to_number);
        c.caller_id_name := COALESCE(c.caller_id_name, e.caller_id_name);
        c.started_at := LEAST(c.started_at, e.start_time);
        IF c.prospect_id IS NULL AND c.from_number IS NOT NULL THEN
            SELECT * INTO prospect FROM prospects WHERE phone_number = c.from_number
            ORDER BY created_at, id LIMIT 1;
            c.prospect_id := prospect.id;
            c.prospect_name := prospect.name;
        END IF;
        CASE e.effect
            WHEN 'initiated' THEN
                c.ringing_since := LEAST(c.ringing_since, COALESCE(e.start_time, e.occurred_at));
            WHEN 'answered' THEN
                c.answered_at := LEAST(c.answered_at, e.occurred_at);
            WHEN 'bridged' THEN
                c.bridged_at := LEAST(c.bridged_at, e.occurred_at);
            WHEN 'greeting_ended' THEN
                NULL;  -- nothing about the call changes; what it owes is below
            WHEN 'hangup' THEN
                c.ended_at := LEAST(c.ended_at, COALESCE(e.end_time, e.occurred_at));
                IF c.end_inferred THEN
                    -- Telnyx's own account of the end replaces what the service concluded.
                    c.hangup_cause := COALESCE(e.hangup_cause, c.hangup_cause);
                    c.hangup_source := COALESCE(e.hangup_source, c.hangup_source);
                    c.end_inferred := false;
                ELSE
                    c.hangup_cause := COALESCE(c.hangup_cause, e.hangup_cause);
                    c.hangup_source := COALESCE(c.hangup_source, e.hangup_source);
                END IF;
                c.sip_hangup_cause := COALESCE(c.sip_hangup_cause, e.sip_hangup_cause);
        END CASE;
    ELSIF leg = 'transfer' THEN
        c.transfer_call_control_id := COALESCE(c.transfer_call_control_id, e.call_control_id);
        c.transfer_call_leg_id := COALESCE(c.transfer_call_leg_id, e.call_leg_id);
        IF e.effect = 'initiated' THEN
            c.transfer_to := COALESCE(c.transfer_to, e.to_number);
        END IF;
    ELSE
        c.recording_url := COALESCE(c.recording_url, e.recording_url);
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

    -- A voicemail call (the service answered it, start_voicemail): its next steps are owed,
    -- durably, before this webhook is acknowledged, and never for a call already over.
    IF c.voicemail_at IS NOT NULL THEN
        IF leg = 'caller' AND c.status = 'answered' AND old_status IS DISTINCT FROM 'answered'
           AND c.call_control_id IS NOT NULL THEN
            owed := owe_voicemail_command(c.call_control_id,
                                          c.voicemail_plan -> 'greeting' ->> 'action',
                                          c.voicemail_plan -> 'greeting' -> 'args');
            -- Should the greeting never end (refused, its webhook lost), the caller is still
            -- hung up on, after the longest greeting and message there can be.
            PERFORM owe_voicemail_command(c.call_control_id, 'hangup', '{}',
                (c.voicemail_plan ->> 'greeting_seconds')::double precision
                + (c.voicemail_plan ->> 'max_seconds')::double precision
                + (c.voicemail_plan ->> 'hangup_after_seconds')::double precision);
        ELSIF leg = 'caller' AND e.effect = 'greeting_ended' AND c.status = 'answered'
              AND c.call_control_id IS NOT NULL THEN
            owed := owe_voicemail_command(c.call_control_id, 'record_start',
                                          c.voicemail_plan -> 'record');
            IF owed THEN
                PERFORM owe_voicemail_command(c.call_control_id, 'record_stop', '{}',
                    (c.voicemail_plan ->> 'max_seconds')::double precision);
                -- The hangup owed since the answer is now due just after the message's end.
                UPDATE telnyx_outbox
                   SET next_attempt_at = now() + make_interval(
                           secs => (c.voicemail_plan ->> 'max_seconds')::double precision
                                   + (c.voicemail_plan ->> 'hangup_after_seconds')::double precision)
                 WHERE call_control_id = c.call_control_id AND action = 'hangup'
                   AND done_at IS NULL;
            END IF;
        END IF;
    -- The caller's leg was answered just now, and the call is still on: recording is owed,
    -- durably, before this webhook is acknowledged. Never for a call already known to be over.
    ELSIF p_record_calls AND c.status = 'answered' AND old_status IS DISTINCT FROM 'answered'
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
