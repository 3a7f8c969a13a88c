"""keyturn's benchmarks: ``python -m bench`` from the repository root.

Everything measured is started here, on ``ipc://`` sockets and files under a
temporary folder in ``/tmp``: the real daemon (CurveZMQ on), a bare pyzmq
echo and an fsync loop as the floor, and a private ``redis-server`` for
comparison. Figures go to a table on stdout and to ``bench/results/latest.json``.
"""
