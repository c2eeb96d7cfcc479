"""The results layer: the schema of the trials and curves tables, the study folder's store
(Parquet, study.yaml) and atomic file writes. Knows pyarrow, not Ray nor torch."""
