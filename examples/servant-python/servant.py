#!/usr/bin/env python3
"""A JSON-RPC 2.0 servant over HTTP with Python's standard library only.
Run it, then: mserve -servants http://127.0.0.1:8000/ (see README.md)."""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FUNCTIONS = {"echo": lambda x: x, "add": lambda a, b: a + b, "upper": lambda s: s.upper()}

def answer(req):
    fn, params = FUNCTIONS.get(req["method"]), req.get("params", [])
    if fn is None:
        out = {"error": {"code": -32601, "message": "method not found: " + req["method"]}}
    else:
        out = {"result": fn(**params) if isinstance(params, dict) else fn(*params), "info": {"pid": os.getpid()}}
    return {"jsonrpc": "2.0", "id": req.get("id"), **out}

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        # A batch (a list of requests) is answered with the list of answers.
        body = json.dumps([answer(r) for r in req] if isinstance(req, list) else answer(req)).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8000), Handler).serve_forever()
