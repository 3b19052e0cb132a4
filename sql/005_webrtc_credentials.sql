-- In-browser audio: each agent may have a Telnyx telephony credential, from which the service
-- mints WebRTC login tokens. The credential's SIP username is then the agent's sip_username, so
-- that answered calls are transferred to the browser that signed in with it.

ALTER TABLE users ADD COLUMN telephony_credential_id text
    CHECK (telephony_credential_id IS NULL OR length(telephony_credential_id) BETWEEN 1 AND 128);
