"""Token dispatch and combine, one dispatcher per mode (plan, dispatch, run_experts, combine,
load): capacity-limited buffers, dropless sorted rows, or the slots a router filled itself."""
