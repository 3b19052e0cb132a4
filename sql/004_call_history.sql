-- The call history (GET /api/calls): newest first by COALESCE(started_at, created_at), then id,
-- paged with a keyset cursor on that pair. started_at can be NULL (a call whose start never
-- reached us); created_at stands in for it, so such calls still sort, page and keep their place.
--
-- Each filter has an index that leads with it and then holds the rows in page order, so a page
-- reads about `limit` index entries whatever the filter and however deep the cursor. since/until
-- range over the same sort key (history.py adds the matching condition next to started_at's).

CREATE INDEX call_logs_history_idx
    ON call_logs ((COALESCE(started_at, created_at)) DESC, id DESC);

CREATE INDEX call_logs_outcome_history_idx
    ON call_logs (outcome, (COALESCE(started_at, created_at)) DESC, id DESC);

CREATE INDEX call_logs_direction_history_idx
    ON call_logs (direction, (COALESCE(started_at, created_at)) DESC, id DESC);

-- Also the index behind answered_by's foreign key: deleting a user no longer scans call_logs.
CREATE INDEX call_logs_answered_by_history_idx
    ON call_logs (answered_by, (COALESCE(started_at, created_at)) DESC, id DESC);

CREATE INDEX call_logs_phone_number_history_idx
    ON call_logs (phone_number, (COALESCE(started_at, created_at)) DESC, id DESC);
