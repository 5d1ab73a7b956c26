-- The daily storage rollup (docs/architecture.md, Cost): the metrics service carries every org's
-- stored level into a `storage_gb` row of `s3_usage_metrics` for each day, events or not, so a
-- month's storage cost counts every day the bytes were held. One row per day rolled up: the next
-- run starts after the latest one (catching up the days it missed while down), and a usage event
-- for an earlier day corrects every day rolled up since (`notetaker.metrics.usage.apply`).
CREATE TABLE IF NOT EXISTS usage_rollup_days (
    day           date PRIMARY KEY,
    orgs_carried  integer NOT NULL,  -- orgs given a row by the rollup (the rest had events)
    rolled_up_at  timestamptz NOT NULL DEFAULT now()
);

-- The rollup reads one day's rows (the day before's), the projections and the admin API a range
-- of days: by day, not by org, so each reads what it needs however long the history.
CREATE INDEX IF NOT EXISTS s3_usage_metrics_by_day ON s3_usage_metrics (date, metric_type);
