-- What the live dialer needs to continue a lead where it stopped after a restart: finished attempts by
-- how they ended (the retry rules count them per disposition; `attempts` keeps the total, the attempt
-- under way included), the last abandonment (the UK 72-hour re-dial block counts from it) and a
-- callback an agent scheduled (personal when it names the agent). Keep both flavours in step.

ALTER TABLE leads ADD COLUMN busy_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leads ADD COLUMN no_answer_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leads ADD COLUMN machine_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leads ADD COLUMN abandoned_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leads ADD COLUMN failed_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE leads ADD COLUMN last_abandoned_at BIGINT;
ALTER TABLE leads ADD COLUMN callback_at BIGINT;
ALTER TABLE leads ADD COLUMN callback_agent TEXT;
