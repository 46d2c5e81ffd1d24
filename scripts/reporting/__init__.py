"""What the experiments and benchmarks under scripts/ report with, written once: where and
when a run happened (``provenance``), summary statistics over seeds (``stats``), number and
table formatting (``tables``), figures (``figures``) and the results files under
docs/results (``results_files``)."""
