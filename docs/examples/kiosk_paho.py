#!/usr/bin/env python3
"""A kiosk for sgbd-edge in Python with paho-mqtt 2.x (pip install paho-mqtt).

It sends an interaction, waits for the node's acknowledgement, asks for recommendations and prints
the reply. MQTT 5 (the default) uses Response Topic + Correlation Data + Message Expiry;
`--v311` uses the JSON `reply_to` / `request_id` fields instead (docs/mqtt.md).

Two things every kiosk should do, both shown below:
- turn Nagle's algorithm off on the socket (TCP_NODELAY): with it on, a QoS 1 request waits about
  40 ms for a delayed ACK before its reply comes (0.4 ms with it off);
- give every event a stable `event_id` and send it again until it is acknowledged: the node
  stores it once (per kiosk) and says `duplicate: true` for a copy it already had.

Against the demo (`cargo run --release -- run --config firmware-config/dev.toml --demo`: store
demo-store, node edge-dev, embedded broker on 127.0.0.1:1883):

    python3 docs/examples/kiosk_paho.py --port 1883 --kiosk k1 --user alice --sku 10003

It prints three JSON lines (the acknowledgement, the acknowledgement of a resend, the reply with
the round-trip times in ms) and exits 0 when the event was stored and the reply had items.
"""

import argparse
import json
import socket
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

SCHEMA = "1.2"


def now_ms():
    return int(time.time() * 1000)


class Kiosk:
    def __init__(self, host, port, prefix, store, node, kiosk, v311=False, username=None, password=None):
        self.base = f"{prefix}/{store}/{node}/kiosk/{kiosk}"
        self.reply_topic = f"{self.base}/reply"
        self.kiosk = kiosk
        self.v311 = v311
        self.pending = {}  # correlation / request id -> (event, reply)
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        protocol = mqtt.MQTTv311 if v311 else mqtt.MQTTv5
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"kiosk-{kiosk}", protocol=protocol)
        if username:
            self.c.username_pw_set(username, password)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._on_message
        # TCP_NODELAY on the socket as soon as it exists (paho does not set it).
        self.c.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("not connected / subscribed within 10 s")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe(self.reply_topic, qos=1)

    def _on_message(self, client, userdata, msg):
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        key = None
        props = getattr(msg, "properties", None)
        if props is not None and getattr(props, "CorrelationData", None):
            key = props.CorrelationData.decode()
        key = key or body.get("request_id")
        with self.lock:
            waiter = self.pending.get(key)
        if waiter:
            waiter[1].append(body)
            waiter[0].set()

    def _request(self, topic, body, timeout_s):
        rid = uuid.uuid4().hex
        done = (threading.Event(), [])
        with self.lock:
            self.pending[rid] = done
        if self.v311:
            body = dict(body, request_id=rid, reply_to=self.reply_topic)
            self.c.publish(topic, json.dumps(body), qos=1)
        else:
            p = Properties(PacketTypes.PUBLISH)
            p.ResponseTopic = self.reply_topic
            p.CorrelationData = rid.encode()
            p.MessageExpiryInterval = max(1, int(timeout_s))
            self.c.publish(topic, json.dumps(body), qos=1, properties=p)
        ok = done[0].wait(timeout_s)
        with self.lock:
            self.pending.pop(rid, None)
        return done[1][0] if ok else None

    def event(self, event_id, user, sku, kind, timeout_s=5.0):
        """Sends an interaction; returns the acknowledgement (None on timeout: send it again)."""
        body = {"schema_version": SCHEMA, "ts": now_ms(), "event_id": event_id, "user": user, "sku": sku, "kind": kind}
        return self._request(f"{self.base}/events", body, timeout_s)

    def recommend(self, user, k=5, timeout_s=2.0):
        body = {"schema_version": SCHEMA, "ts": now_ms(), "user": user, "k": k, "ttl_ms": int(timeout_s * 1000)}
        return self._request(f"{self.base}/recommend", body, timeout_s)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--prefix", default="sgbd")
    ap.add_argument("--store", default="demo-store")
    ap.add_argument("--node", default="edge-dev")
    ap.add_argument("--kiosk", default="k1")
    ap.add_argument("--user", default="alice")
    ap.add_argument("--sku", default="10003")
    ap.add_argument("--v311", action="store_true", help="MQTT 3.1.1 (JSON reply_to / request_id)")
    ap.add_argument("--requests", type=int, default=5, help="recommendation requests to time")
    a = ap.parse_args()
    k = Kiosk(a.host, a.port, a.prefix, a.store, a.node, a.kiosk, v311=a.v311)
    event_id = f"{a.kiosk}-{uuid.uuid4().hex[:12]}"
    ack = None
    for _ in range(3):  # send again until acknowledged; the node stores it once
        ack = k.event(event_id, a.user, a.sku, "view")
        if ack is not None:
            break
    print(json.dumps({"ack": ack}))
    again = k.event(event_id, a.user, a.sku, "view")
    print(json.dumps({"ack_of_resend": again}))
    times = []
    reply = None
    for _ in range(a.requests):
        t = time.perf_counter()
        reply = k.recommend(a.user)
        times.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"reply": reply, "ms": [round(x, 2) for x in times]}))
    k.close()
    return 0 if ack and ack.get("stored") and reply and "items" in reply else 1


if __name__ == "__main__":
    sys.exit(main())
