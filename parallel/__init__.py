"""Process groups, topology (which experts live on which node), all-to-all, launch helpers."""
