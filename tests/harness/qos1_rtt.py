#!/usr/bin/env python3
"""QoS 1 request -> reply round trips through a broker to a running sgbd-edge node (store s1,
node edge-t), as a raw MQTT 3.1.1 kiosk with TCP_NODELAY: `python3 qos1_rtt.py PORT`.
Used for the mosquitto `set_tcp_nodelay` figures in docs/security.md ("Network faults")."""
import socket, sys, time, json, struct
port=int(sys.argv[1])
def enc_str(s): b=s.encode(); return struct.pack(">H",len(b))+b
def pkt(t, body):
    n=len(body); rl=b''
    while True:
        d=n%128; n//=128
        rl+=bytes([d|(128 if n else 0)])
        if not n: break
    return bytes([t])+rl+body
class R:
    def __init__(s, sock): s.s=sock; s.buf=b''
    def need(s,n):
        while len(s.buf)<n:
            c=s.s.recv(65536)
            if not c: raise EOFError
            s.buf+=c
    def packet(s):
        s.need(2); mult=1; val=0; i=1
        while True:
            s.need(i+1); b=s.buf[i]; val+=(b&127)*mult; mult*=128; i+=1
            if not b&128: break
        s.need(i+val); p=s.buf[:i+val]; s.buf=s.buf[i+val:]; return p[0], p[i:]
sock=socket.create_connection(("127.0.0.1",port)); sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
r=R(sock)
sock.sendall(pkt(0x10, enc_str("MQTT")+bytes([4,2,0,60])+enc_str("rt-probe")))
r.packet()
base="sgbd/s1/edge-t/kiosk/kp"
sock.sendall(pkt(0x82, b"\x00\x01"+enc_str(base+"/reply")+b"\x01")); r.packet()
lat=[]
for i in range(30):
    rid="q%d"%i
    body=json.dumps({"schema_version":"1.0","ts":int(time.time()*1000),"user":"u1","k":5,"reply_to":base+"/reply","request_id":rid}).encode()
    t0=time.perf_counter()
    sock.sendall(pkt(0x32, enc_str(base+"/recommend")+struct.pack(">H",i+1)+body))
    while True:
        t,b=r.packet()
        if t>>4==3:
            qos=(t>>1)&3; tl=struct.unpack(">H",b[:2])[0]; off=2+tl
            if qos: pid=b[off:off+2]; off+=2; sock.sendall(b"\x40\x02"+pid)
            if json.loads(b[off:]).get("request_id")==rid: break
    lat.append((time.perf_counter()-t0)*1000); time.sleep(0.05)
lat.sort(); print("n=%d p50=%.1f ms p90=%.1f ms max=%.1f ms"%(len(lat),lat[15],lat[27],lat[-1]))
