"""Picks the class for each role and configuration, importing only the one in use.

A worker is given a ``Consumer`` (pull) or a ``PushReceiver`` (Pub/Sub push), chosen from the
configuration, never from what an object happens to offer; producers get a ``Publisher``. Each class
has ``from_config(config)``.
"""

from __future__ import annotations

from swell_worker.backends.base import (
    BackendError,
    Consumer,
    Delivery,
    Publisher,
    PushAdmission,
    PushOutcome,
    PushReceiver,
)
from swell_worker.config import WorkerConfig
from swell_worker.imports import load_object

__all__ = [
    "BackendError",
    "Consumer",
    "Delivery",
    "Publisher",
    "PushAdmission",
    "PushOutcome",
    "PushReceiver",
    "make_consumer",
    "make_publisher",
    "make_push_receiver",
    "receives_by_push",
]

# "module:Class" per backend kind; imported on demand so Redis workers never import google-cloud.
CONSUMER_CLASSES = {
    "redis-list": "swell_worker.backends.redis_list:RedisListConsumer",
    "redis-streams": "swell_worker.backends.redis_streams:RedisStreamsConsumer",
    "pubsub": "swell_worker.backends.pubsub:PubSubPullConsumer",
}
PUBLISHER_CLASSES = {
    "redis-list": "swell_worker.backends.redis_list:RedisListPublisher",
    "redis-streams": "swell_worker.backends.redis_streams:RedisStreamsPublisher",
    "pubsub": "swell_worker.backends.pubsub:PubSubPublisher",
}
PUSH_RECEIVER_CLASS = "swell_worker.backends.pubsub:PubSubPushReceiver"


def receives_by_push(config: WorkerConfig) -> bool:
    """Whether work reaches this worker over HTTP (Pub/Sub push) instead of being pulled."""
    return config.backend == "pubsub" and config.pubsub_mode == "push"


def make_consumer(config: WorkerConfig) -> Consumer:
    consumer: Consumer = load_object(CONSUMER_CLASSES[config.backend]).from_config(config)
    return consumer


def make_push_receiver(config: WorkerConfig) -> PushReceiver:
    receiver: PushReceiver = load_object(PUSH_RECEIVER_CLASS).from_config(config)
    return receiver


def make_publisher(config: WorkerConfig) -> Publisher:
    publisher: Publisher = load_object(PUBLISHER_CLASSES[config.backend]).from_config(config)
    return publisher
