"""Fault-injection runs on real Kafka brokers: the fault soak and the scale-out run.

Run from the repository root (``scripts/soak`` does that)::

    python -m soak faults --budget 300      # randomized fault soak (issue 9)
    python -m soak scaleout                 # 3 nodes, 16 partitions, 8 listeners (issue 13)

The shared machinery (brokers, listener processes, publisher, counting, lag) is in
:mod:`soak.harness`; each listener process runs :mod:`soak.listener`.
"""
