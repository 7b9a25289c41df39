"""An HTTP server on a unix socket: GET /health answers OK (or 503 with ``never``).

``python httpd.py WORKDIR SOCKET [never]``
"""

import http.server
import os
import socketserver
import sys

workdir, path = sys.argv[1], sys.argv[2]
healthy = sys.argv[3:] != ["never"]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"OK" if healthy else b"not yet"
        self.send_response(200 if healthy else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(format % args, flush=True)


class Server(socketserver.UnixStreamServer):
    def get_request(self):  # type: ignore[no-untyped-def]
        request, _ = super().get_request()
        return request, ("local", 0)


if os.path.exists(path):
    os.unlink(path)
with Server(path, Handler) as server:
    print(f"serving on {path} for {workdir}", flush=True)
    server.serve_forever()
