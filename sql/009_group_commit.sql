-- Group commit (#13): the webhooks a worker receives together are applied in one statement and
-- one transaction, SELECT apply_call_events(...), instead of one round trip and one commit (one
-- WAL flush) each. Each event goes through apply_call_event exactly as it would alone, in the
-- order given, so a duplicate inside a batch is still a duplicate (the first insert of its
-- event_id is visible to the second) and two events of one call merge as they would one after
-- the other. The caller orders a batch by call_session_id, so that two batches lock the calls
-- they share in the same order and never deadlock.
CREATE FUNCTION apply_call_events(
    p_events jsonb,              -- an array of webhook_event objects
    p_bodies json[],             -- their bodies exactly as received, in the same order
    p_record_calls boolean DEFAULT false) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    -- An array, appended in place, not a jsonb array: `jsonb || jsonb` would copy every result
    -- so far at each event.
    results jsonb[] := '{}';
BEGIN
    FOR i IN 1 .. jsonb_array_length(p_events) LOOP
        results := results || apply_call_event(p_events -> (i - 1), p_bodies[i], p_record_calls);
    END LOOP;
    RETURN to_jsonb(results);
END
$$;
