"""The public contracts of the service: wire messages, status messages and job records.

What a client of ModelRunner may rely on; the command line (:mod:`client`) imports nothing
else from :mod:`worker`.
"""
