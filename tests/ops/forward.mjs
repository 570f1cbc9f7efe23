#!/usr/bin/env node
// A TCP forwarder between the replicas and Postgres, which the drill moves
// from one Postgres server to another as a failover (a DNS name, a virtual
// IP, a TCP proxy) does.
//
//   node forward.mjs LISTEN_PORT TARGET_PORT CONTROL_PORT [LABEL]
//
// `GET http://127.0.0.1:CONTROL_PORT/target?port=N` sends new connections to
// port N from then on; with `&cut=1` it also closes every connection open
// now, as a primary that goes away does. Without it the open connections
// stay on the server they were opened to, as through a proxy that only
// changes where new connections go. LABEL is ignored: it names the forwarder
// in process listings.

import { createServer, connect } from "node:net";
import { createServer as createHttpServer } from "node:http";

const [listenPort, firstTarget, controlPort] = process.argv.slice(2, 5).map(Number);
let target = firstTarget;
const open = new Set();

createServer((client) => {
  const server = connect({ host: "127.0.0.1", port: target });
  const pair = { client, server };
  open.add(pair);
  const close = () => {
    open.delete(pair);
    client.destroy();
    server.destroy();
  };
  client.on("error", close).on("close", close);
  server.on("error", close).on("close", close);
  client.pipe(server);
  server.pipe(client);
}).listen(listenPort, "127.0.0.1");

createHttpServer((request, response) => {
  const url = new URL(request.url, "http://control");
  if (url.pathname !== "/target" || !url.searchParams.get("port")) {
    response.writeHead(404).end("GET /target?port=N[&cut=1]\n");
    return;
  }
  target = Number(url.searchParams.get("port"));
  let cut = 0;
  if (url.searchParams.get("cut") === "1") {
    for (const { client, server } of open) {
      client.destroy();
      server.destroy();
      cut++;
    }
    open.clear();
  }
  response.end(`target ${target}, ${cut} connections cut\n`);
}).listen(controlPort, "127.0.0.1");
