// A function in Node.js behind `shim run` (delivery params), with nothing but Node's standard library:
// proof that docs/protocol.md is implementable in any language in a few dozen lines.
//   SHIM_FUNCTION=... SHIM_FUNCTION_KEY=... fprocess="node server.js" shim run
"use strict";
const http = require("http");

// The function itself: it sees its secrets as a parameter, never in its environment.
function handle(req, body, secrets) {
  return {
    function: req.shimFunction,
    secrets: Object.fromEntries(Object.entries(secrets).map(([name, keys]) => [name, Object.keys(keys).sort()])),
    greeting: (Object.values(secrets).find((keys) => "greeting" in keys) || {}).greeting,
    body_length: body.length,
    headers_seen: Object.keys(req.headers).sort(),
  };
}

// The protocol: `Shim-Secrets: N`, then N bytes of JSON in front of the caller's body.
function splitSecrets(req, payload) {
  const announced = req.headers["shim-secrets"];
  if (announced === undefined) return { secrets: {}, body: payload };
  const n = Number(announced);
  if (!/^\d+$/.test(announced) || n > payload.length) throw new Error("bad Shim-Secrets length");
  const block = JSON.parse(payload.subarray(0, n).toString("utf8"));
  if (block.v !== 1) throw new Error("unknown protocol version");
  const secrets = {};
  for (const [name, keys] of Object.entries(block.secrets || {})) secrets[name] = { ...keys };
  for (const [name, keys] of Object.entries(block.binary || {})) {
    secrets[name] = secrets[name] || {};
    for (const [key, b64] of Object.entries(keys)) secrets[name][key] = Buffer.from(b64, "base64");
  }
  delete req.headers["shim-secrets"]; // the handler's view of the headers never holds the carrier
  req.headers["content-length"] = String(payload.length - n);
  req.shimFunction = block.function;
  return { secrets, body: payload.subarray(n) };
}

const server = http.createServer((req, res) => {
  const pieces = [];
  req.on("data", (piece) => pieces.push(piece));
  req.on("end", () => {
    let answer;
    try {
      const { secrets, body } = splitSecrets(req, Buffer.concat(pieces));
      answer = JSON.stringify(handle(req, body, secrets));
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(answer) });
    } catch (err) {
      answer = JSON.stringify({ error: "bad request from the sidecar" }); // never echo the block
      res.writeHead(400, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(answer) });
    }
    res.end(answer);
  });
});
server.keepAliveTimeout = 0; // the sidecar pools connections: let it decide when to close them
server.listen(Number(process.env.PORT || 5000), "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
