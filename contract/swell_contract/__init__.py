"""What the operator, the worker, the client and the benches agree on, in one place.

The task envelope, the worker's settings (and so its environment), the names of the metrics the
operator reads from workers, and the Redis key layout. This package imports nothing else of Swell
(import-linter checks it), so either side can depend on it without depending on the other.
"""
