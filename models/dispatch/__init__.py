"""Token dispatch and combine: capacity-limited buffers or dropless sorted rows."""
