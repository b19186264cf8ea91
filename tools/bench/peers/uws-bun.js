// Fan-out peer: uWebSockets, as Bun embeds it (Bun.serve + server.publish),
// speaking websocket-server's chat protocol far enough for connflood: the
// `system` frame on open (with lastSeq), `chat` frames with a per-room seq.
// Single node, no history, no limits: the least work a server can do for the
// workload, so it measures the transport.
//
//   PORT=8080 POD_NAME=uws-bun [COMPRESSION=shared] bun uws-bun.js
//
// COMPRESSION=shared turns on permessage-deflate with uWebSockets' shared
// compressor (SHARED_COMPRESSOR: no context takeover, one compressor for the
// whole server, so a published message is compressed once for all of its
// subscribers) and inflates what clients send compressed (shared
// decompressor); every frame it sends is offered for compression. Other
// values (default: off) leave the extension unnegotiated. A dedicated size
// ("3KB" … "256KB", "dedicated") gives every connection its own sliding
// window, uWS's other mode, for comparison.
//
// GET /metrics: websocket_messages_delivered_total (messages × subscribers),
// the counter tools/bench.sh reads; GET /ready: 200.
const pod = process.env.POD_NAME || "uws-bun";
const COMPRESSORS = ["shared", "dedicated", "3KB", "4KB", "8KB", "16KB", "32KB", "64KB", "128KB", "256KB"];
const compression = process.env.COMPRESSION || "off";
if (compression !== "off" && !COMPRESSORS.includes(compression)) {
  console.error(`COMPRESSION must be off or one of ${COMPRESSORS.join(", ")} (got ${compression})`);
  process.exit(2);
}
const compress = compression !== "off";
const seqs = new Map(); // room -> last seq
let delivered = 0;
let nextId = 0;

const server = Bun.serve({
  hostname: process.env.BIND_ADDR || "127.0.0.1",
  port: Number(process.env.PORT || 8080),
  fetch(req, srv) {
    const url = new URL(req.url);
    if (url.pathname === "/metrics") {
      return new Response(`websocket_messages_delivered_total ${delivered}\n`);
    }
    if (url.pathname === "/ready") return new Response("ready\n");
    const room = url.searchParams.get("room") || "lobby";
    const name = url.searchParams.get("name") || "Anonymous";
    if (srv.upgrade(req, { data: { room, name, id: ++nextId } })) return undefined;
    return new Response("expected a WebSocket upgrade\n", { status: 400 });
  },
  websocket: {
    maxPayloadLength: 64 * 1024,
    perMessageDeflate: compress ? { compress: compression, decompress: "shared" } : false,
    open(ws) {
      const { room, id } = ws.data;
      ws.subscribe(room);
      ws.send(JSON.stringify({
        type: "system", message: `Connected to pod: ${pod}`, podName: pod, timestamp: new Date().toISOString(),
        connection: id, room, lastSeq: seqs.get(room) || 0, history: [],
      }), compress);
    },
    message(ws, data) {
      const m = JSON.parse(data);
      const room = ws.data.room;
      const seq = (seqs.get(room) || 0) + 1;
      seqs.set(room, seq);
      const frame = JSON.stringify({
        type: "chat", username: m.username || ws.data.name, message: m.message, podName: pod,
        timestamp: new Date().toISOString(), room, seq, id: `${pod}-${seq}`,
      });
      delivered += server.subscriberCount(room);
      server.publish(room, frame, compress); // every subscriber, the sender included
    },
  },
});
console.log(`uws-bun listening on ${server.hostname}:${server.port} (compression ${compression})`);
