"""Deployment and the local stack: resource bootstrap, embedded emulator, the ``make run`` job."""
