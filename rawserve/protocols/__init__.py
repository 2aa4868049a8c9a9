"""Protocol adapters (L1, sans-IO): bytes in, rawserve events out.

``http1/`` (httptools), ``http2/`` (h2), ``http3/`` (aioquic), and
``semantics``: the request-head rules, RFC 9218 write order and rate limits
that HTTP/2 and HTTP/3 share.
Adapters never import each other; each may import ``semantics``.
"""
