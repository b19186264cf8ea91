// Fan-out peer: Node.js with the `ws` package, the stack websocket-server
// replaces, speaking its chat protocol far enough for connflood: the
// `system` frame on open (with lastSeq), `chat` frames with a per-room seq.
// Single node, no history, no limits: the least work a server can do for the
// workload, so it measures the transport.
//
//   PORT=8080 POD_NAME=node-ws node node-ws.js
//
// GET /metrics: websocket_messages_delivered_total, the counter
// tools/bench.sh reads; GET /ready: 200.
"use strict";
const http = require("http");
const { WebSocketServer, WebSocket } = require("ws");

const pod = process.env.POD_NAME || "node-ws";
const rooms = new Map(); // room -> { seq, members: Set<WebSocket> }
let delivered = 0;
let nextId = 0;

const server = http.createServer((req, res) => {
  if (req.url === "/metrics") return res.end(`websocket_messages_delivered_total ${delivered}\n`);
  if (req.url === "/ready") return res.end("ready\n");
  res.writeHead(400).end("expected a WebSocket upgrade\n");
});
const wss = new WebSocketServer({ server, maxPayload: 64 * 1024 });
wss.on("connection", (ws, req) => {
  const q = new URL(req.url, "http://localhost").searchParams;
  const roomName = q.get("room") || "lobby";
  const name = q.get("name") || "Anonymous";
  let room = rooms.get(roomName);
  if (!room) rooms.set(roomName, (room = { seq: 0, members: new Set() }));
  room.members.add(ws);
  ws.send(JSON.stringify({
    type: "system", message: `Connected to pod: ${pod}`, podName: pod, timestamp: new Date().toISOString(),
    connection: ++nextId, room: roomName, lastSeq: room.seq, history: [],
  }));
  ws.on("message", (data) => {
    const m = JSON.parse(data);
    const seq = ++room.seq;
    const frame = JSON.stringify({
      type: "chat", username: m.username || name, message: m.message, podName: pod,
      timestamp: new Date().toISOString(), room: roomName, seq, id: `${pod}-${seq}`,
    });
    for (const member of room.members) {
      if (member.readyState === WebSocket.OPEN) {
        member.send(frame);
        delivered++;
      }
    }
  });
  ws.on("close", () => room.members.delete(ws));
});
server.listen(Number(process.env.PORT || 8080), process.env.BIND_ADDR || "127.0.0.1", () => {
  console.log(`node-ws listening on ${server.address().address}:${server.address().port}`);
});
