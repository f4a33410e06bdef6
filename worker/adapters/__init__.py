"""Adapters: the AWS services (SQS, DynamoDB, S3, SNS, Kinesis, STS, SageMaker) and the HTTP
model endpoints behind the service's ports. Only this package talks to them, and it turns their
errors into the service's own (:mod:`worker.errors`).
"""
