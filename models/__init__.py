"""Model servers with the SageMaker container contract (``GET /ping``, ``POST /invocations``)."""
