-- CRM schema, PostgreSQL flavour. Times are BIGINT milliseconds since the Unix epoch (domain::Timestamp),
-- durations BIGINT milliseconds, money BIGINT cents. Event payloads are JSON (validated, stored as written:
-- cheaper to insert than JSONB, and nothing queries inside them). Keep in step with ../sqlite/0001_init.sql.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('agent', 'supervisor', 'admin')),
    password_hash TEXT,
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE customers (
    id                   TEXT PRIMARY KEY,
    account_number       TEXT UNIQUE,
    name                 TEXT NOT NULL,
    email                TEXT,
    tier                 TEXT NOT NULL DEFAULT 'normal' CHECK (tier IN ('key', 'major', 'normal', 'small')),
    account_manager      TEXT,
    lifetime_value_cents BIGINT NOT NULL DEFAULT 0,
    notes                TEXT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    masked_at            BIGINT
);

CREATE TABLE customer_phones (
    customer_id TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    e164        TEXT NOT NULL,
    PRIMARY KEY (customer_id, e164)
);
CREATE INDEX customer_phones_by_number ON customer_phones (e164);

CREATE TABLE interactions (
    id                  TEXT PRIMARY KEY,
    channel             TEXT,
    direction           TEXT,
    customer_id         TEXT,
    caller_number       TEXT,
    called_number       TEXT,
    arrived_at          BIGINT,
    queued_at           BIGINT,
    offered_at          BIGINT,
    answered_at         BIGINT,
    ended_at            BIGINT,
    wrapped_at          BIGINT,
    ivr_path            TEXT NOT NULL DEFAULT '',
    queue_id            TEXT,
    priority            BIGINT,
    wait_ms             BIGINT,
    agent_id            TEXT,
    talk_ms             BIGINT,
    hold_ms             BIGINT NOT NULL DEFAULT 0,
    held_since          BIGINT,
    wrap_ms             BIGINT,
    ended_by            TEXT,
    end_reason          TEXT,
    abandoned           BOOLEAN NOT NULL DEFAULT FALSE,
    disposition         TEXT,
    notes               TEXT,
    recording_path      TEXT,
    survey_score        BIGINT,
    mos                 DOUBLE PRECISION,
    routing_explanation TEXT,
    campaign_id         TEXT,
    lead_id             TEXT,
    dial_outcome        TEXT,
    last_seq            BIGINT NOT NULL DEFAULT 0,
    masked_at           BIGINT
);
CREATE INDEX interactions_by_customer ON interactions (customer_id, arrived_at);
CREATE INDEX interactions_by_queue ON interactions (queue_id, queued_at);
CREATE INDEX interactions_by_agent ON interactions (agent_id, answered_at);
CREATE INDEX interactions_by_arrival ON interactions (arrived_at);

CREATE TABLE interaction_events (
    interaction_id TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    at             BIGINT NOT NULL,
    type           TEXT NOT NULL,
    payload        JSON NOT NULL,
    PRIMARY KEY (interaction_id, seq)
);

CREATE TABLE agent_states (
    agent_id   TEXT NOT NULL,
    state      TEXT NOT NULL,
    reason     TEXT,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT NOT NULL,
    PRIMARY KEY (agent_id, started_at)
);

CREATE TABLE campaigns (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    mode             TEXT NOT NULL CHECK (mode IN ('preview', 'progressive', 'predictive', 'agentless')),
    queue_id         TEXT,
    status           TEXT NOT NULL DEFAULT 'draft',
    max_abandon_rate DOUBLE PRECISION NOT NULL DEFAULT 0.03,
    created_at       BIGINT NOT NULL
);

CREATE TABLE leads (
    id              TEXT PRIMARY KEY,
    campaign_id     TEXT NOT NULL,
    name            TEXT,
    phone_e164      TEXT NOT NULL,
    timezone        TEXT,
    customer_id     TEXT,
    status          TEXT NOT NULL DEFAULT 'new',
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_attempt_at BIGINT,
    next_attempt_at BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX leads_by_campaign ON leads (campaign_id, status);

CREATE TABLE do_not_call (
    phone_e164 TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    added_at   BIGINT NOT NULL
);

CREATE TABLE callbacks (
    id             TEXT PRIMARY KEY,
    customer_id    TEXT,
    phone_e164     TEXT NOT NULL,
    queue_id       TEXT,
    interaction_id TEXT,
    requested_at   BIGINT NOT NULL,
    due_at         BIGINT,
    status         TEXT NOT NULL DEFAULT 'pending'
);

CREATE TABLE audit_log (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    entity    TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_by_time ON audit_log (at);
