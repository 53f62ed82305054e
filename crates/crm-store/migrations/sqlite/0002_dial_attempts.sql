-- One row per outbound dial attempt of a campaign: who was dialled (the number is personal data and
-- blanked by retention), when it was answered, what the answering-machine analysis said, which agent
-- took it, how it ended and whether it counts as abandoned under the campaign's compliance rules.
-- The id is the attempt's call id (also its interaction id). Keep both flavours in step.

CREATE TABLE dial_attempts (
    id           TEXT PRIMARY KEY,
    campaign_id  TEXT NOT NULL,
    lead_id      TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    phone_e164   TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    answered_at  BIGINT,
    amd_result   TEXT,
    agent_id     TEXT,
    connected_at BIGINT,
    ended_at     BIGINT,
    outcome      TEXT NOT NULL,
    abandoned    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX dial_attempts_by_campaign ON dial_attempts (campaign_id, started_at);
CREATE INDEX dial_attempts_by_lead ON dial_attempts (lead_id, started_at);
