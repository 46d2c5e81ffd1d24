"""Text data: corpora from the package registries and user files, tokenizers, cached token
streams, seeded windows and resumable batches. Entry point: ``training.data.pipeline.build_data``."""
