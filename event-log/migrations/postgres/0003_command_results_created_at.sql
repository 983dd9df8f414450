-- Stored command answers are pruned by age (PARLEY_COMMAND_RESULT_RETENTION_HOURS).
CREATE INDEX command_results_created_at ON command_results (created_at);
