"""Benchmark harness: the realtime relay (Daphne, uvicorn) against a bare ``websockets`` relay.

``python -m bench`` (``make bench``) runs N concurrent real-time audio sessions through four
stacks and prints latency, delivery, CPU per frame and memory per session. See ``bench/README.md``.
"""
