"""Joining a launcher's job (torchrun, msrun) and creating the process groups on each
framework's own runtime. The communication algorithms themselves are in ``parallel/``."""
