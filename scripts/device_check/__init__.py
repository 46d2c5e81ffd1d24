"""The one-command GPU check (scripts/device_check.sh): its steps (steps.py), the runner that
times them against one budget and writes the table, JSON and log (run.py), and the programs
the steps run beside the repository's own (environment.py, quickstart.py with curve.py and
quickstart_reference.json, compile_layer.py, collectives.py). Framework-free at import."""
