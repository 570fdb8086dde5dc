-- Start-up reconciliation asks, for each spool file, whether an instance row points at it.
CREATE INDEX instances_file_path ON instances (file_path);
