"""The relay's protocol logic: small state machines that take an event and say what to do.

Each module holds one concern and knows nothing of sockets; ``agents.realtime.bridge`` is the
thin async shell that reads both sockets, asks these parts what to do, and does it.

* ``contracts``: what the relay talks to (client sink, upstream, recorder, tools, spend guard)
  and the records it hands over.
* ``closing``: the one close table: every way a session ends, its error event and close code.
* ``intake``: client events checked against the policy and OpenAI's session schemas.
* ``metering``: audio measured in the session's *effective* formats, and the real-time limiter.
* ``turns``: who is speaking, which response is active, when the line is quiet.
* ``calls``: function calls: who answers each, and when a follow-up response is due.
* ``transcript``: conversation items turned into transcript records, in conversation order.
"""
