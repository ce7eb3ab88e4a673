"""Write: at the barrier, the outputs of a run (shards, parquet, dataset.json) and its report."""
