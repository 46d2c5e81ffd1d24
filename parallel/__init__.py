"""Communication algorithms written once on the op vocabulary ``F``: the expert-parallel
all-to-all (flat and hierarchical), the gradient synchronisation plan, expert sharding of
host-side values and the all-to-all traffic formulas. Process groups are made by
``launch/``; the layout value types live in ``core/``."""
