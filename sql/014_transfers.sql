-- Transfer to a colleague (issue 16, part 4): once Telnyx has taken the transfer of the caller's
-- leg to the colleague, the colleague is the agent who answered the call and the agent who
-- handed it over is kept in transferred_from (sql/010), on the call and on its log row.

-- Record a hand-over from p_from to p_to. Rewrites the log row when the call has already ended
-- (write_call_log copies transferred_from). The latest hand-over wins: a call passed on twice
-- names its last two agents. Returns the call (NULL when unknown).
CREATE FUNCTION record_transfer(
    p_call_control_id text, p_from uuid, p_to uuid, p_at timestamptz
) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    c inbound_calls;
BEGIN
    SELECT * INTO c FROM inbound_calls WHERE call_control_id = p_call_control_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- The same lock order as apply_call_event: session lock, then the row.
    PERFORM pg_advisory_xact_lock(hashtextextended(c.call_session_id, 0));
    UPDATE inbound_calls SET
        answered_by      = p_to,
        transferred_from = p_from,
        transferred_at   = p_at,
        updated_at       = now()
    WHERE id = c.id
    RETURNING * INTO c;
    PERFORM write_call_log(c);
    RETURN call_view(c);
END
$$;
