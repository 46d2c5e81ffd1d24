"""The pieces of scripts/sim_cluster.py (a two-node cluster simulated with network
namespaces): the options (options.py), the namespaces, link and launchers (network.py), one
training run measured on it (one_run.py), its byte accounting (accounting.py), what a run
gives or how it fails (outcome.py), and the tables and plot (report.py)."""
