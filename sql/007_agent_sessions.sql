-- Sessions end when they should (invariant 13): the authority is here, not in Redis.
--
-- agent_sessions: one row per sign-in. The cookie and the bearer token of that sign-in carry its
-- id and the agent's session generation at the time; every authenticated request checks both.
-- expires_at is fixed when the session starts (an absolute lifetime: use does not extend it);
-- revoked_at is set by logout. Rows of an agent's sessions that have expired are deleted at
-- that agent's next sign-in, so the table holds little more than the live sessions.
-- users.session_generation: bumped by logout-everywhere, a new password and deactivation; a
-- session whose generation is older has ended.

ALTER TABLE users ADD COLUMN session_generation integer NOT NULL DEFAULT 0;

CREATE TABLE agent_sessions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    generation integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX agent_sessions_user_idx ON agent_sessions (user_id, expires_at);
