"""Target-set synthesis: the frozen fan-out policy, run over the training queries, writes Parquet targets."""
