"""The ``modelrunner`` command line: submit requests, follow them, read results, run the local
stack. Built on the service's public contracts (:mod:`worker.contract`) only.
"""
