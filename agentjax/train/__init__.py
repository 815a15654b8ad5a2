"""Training: the run config, the jitted step, optimizer, orbax checkpoints, metrics, the loop (`trainer`), and the
self-describing run directory (`run_dir.load_trained_model` rebuilds what a run produced, to evaluate or export it)."""
