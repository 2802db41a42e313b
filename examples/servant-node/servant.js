// A JSON-RPC 2.0 servant over HTTP with Node's standard library only.
// Run it, then: mserve -servants http://127.0.0.1:8001/ (see README.md).
const http = require("http");
const functions = { echo: (x) => x, add: (a, b) => a + b, upper: (s) => s.toUpperCase() };

function answer(call) {
  const fn = functions[call.method];
  const params = call.params || [];
  const out = fn === undefined
    ? { error: { code: -32601, message: "method not found: " + call.method } }
    : { result: Array.isArray(params) ? fn(...params) : fn(...Object.values(params)), info: { pid: process.pid } };
  return { jsonrpc: "2.0", id: call.id ?? null, ...out };
}

http.createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    const call = JSON.parse(body);
    // A batch (an array of requests) is answered with the array of answers.
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify(Array.isArray(call) ? call.map(answer) : answer(call)));
  });
}).listen(Number(process.argv[2] || 8001), "127.0.0.1");
