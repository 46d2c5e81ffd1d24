"""Training: run config, data pipeline and the framework-free parts of the trainer."""
