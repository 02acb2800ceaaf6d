"""The gateway's HTTP/1.1 client: model backends (every request's POST), Qdrant, health probes.

aiohttp's client builds a request object, a multidict of headers, a URL object, tracing hooks
and timers for every call: measured on the lab's 2-core VM (bench/clients.py, bench/RESULTS.md)
about twice the CPU of this client per call. Here a request is one bytes write on a kept-alive
connection and the response is parsed by httptools (llhttp, C).

What it does, because the backends (vLLM, Ollama, llama.cpp's server, Qdrant) and the gateway
need it: keep-alive pools per origin (idle connections dropped after ``keepalive_s``, below the
5 s uvicorn-based servers keep them), Content-Length and chunked bodies, a body read whole or
chunk by chunk as it arrives (server-sent events), back-pressure on a slow consumer
(``pause_reading``), a connect timeout, and one quiet retry on a fresh connection when a reused
one turns out to have been closed by the server before it answered anything. A response not
read to its end (an error, a client that went away) closes its connection, so the backend sees
the disconnect and stops generating. Redirects are never followed (a 3xx is an answer).

In step, or closed: a connection carries one user's request and then another's, so a response
read for the wrong request would hand one user's answer to another. Interim responses (1xx:
100 Continue, 103 Early Hints) are skipped and the final one read; 101 (a protocol switch) is
refused. A connection goes back to the pool only when its final response was read to its end
and nothing followed it; bytes after that response, or on an idle pooled connection (checked
again with ``poll`` just before reuse), close it.

Modules: ``errors`` (what a call raises), ``response`` (parsing one response: limits, interim
responses, the body and its back-pressure), ``connection`` (one socket and what arrives on it),
``pool`` (origins, their idle connections, the in-flight limit, the request itself).
"""

from .errors import ConnectFailed, Disconnected, StaleConnection, TooLarge, UpstreamError
from .pool import Origin, UpstreamClient
from .response import Response

__all__ = [
    "ConnectFailed",
    "Disconnected",
    "Origin",
    "Response",
    "StaleConnection",
    "TooLarge",
    "UpstreamClient",
    "UpstreamError",
]
