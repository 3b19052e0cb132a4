-- Agents act on calls: who answered or declined, and the log rows that follow from it.

ALTER TABLE inbound_calls
    ADD COLUMN declined_by uuid REFERENCES users (id) ON DELETE SET NULL,
    ADD COLUMN declined_at timestamptz;

-- answered | declined (an agent rejected it) | abandoned | missed.
CREATE OR REPLACE FUNCTION call_outcome(c inbound_calls) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN c.ended_at IS NULL THEN NULL
        WHEN c.answered_at IS NOT NULL OR c.bridged_at IS NOT NULL THEN 'answered'
        WHEN c.declined_at IS NOT NULL THEN 'declined'
        WHEN c.hangup_source = 'caller' OR c.hangup_cause = 'originator_cancel' THEN 'abandoned'
        ELSE 'missed' END
$$;

-- Record that an agent answered or declined a call (after Telnyx accepted the command), and
-- rewrite its log row if the hangup is already in. First agent recorded wins.
CREATE FUNCTION record_agent_action(
    p_call_control_id text, p_action text, p_agent_id uuid, p_at timestamptz
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c inbound_calls;
BEGIN
    IF p_action NOT IN ('answer', 'decline') THEN
        RAISE EXCEPTION 'unknown agent action %', p_action;
    END IF;
    UPDATE inbound_calls SET
        answered_by = CASE WHEN p_action = 'answer' THEN COALESCE(answered_by, p_agent_id)
                           ELSE answered_by END,
        declined_by = CASE WHEN p_action = 'decline' THEN COALESCE(declined_by, p_agent_id)
                           ELSE declined_by END,
        declined_at = CASE WHEN p_action = 'decline' THEN LEAST(declined_at, p_at)
                           ELSE declined_at END,
        updated_at = now()
    WHERE call_control_id = p_call_control_id
    RETURNING * INTO c;
    IF c.id IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM write_call_log(c);
    RETURN call_view(c);
END
$$;
