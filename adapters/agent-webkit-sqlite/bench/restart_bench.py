# By-hand restart measurement (not run by CI): N replay sessions with full rings, SIGKILL, start
# -> all served again, and the first event of a resumed turn.
# python3 restart_bench.py target/release/agent-webkit-server 1000 998
import http.client, json, os, signal, subprocess, sys, threading, time, shutil
from concurrent.futures import ThreadPoolExecutor
BIN, N, EV = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
DATA = os.path.join(os.environ.get("TMPDIR", "/tmp"), "aw-restart-bench"); shutil.rmtree(DATA, ignore_errors=True)
def start():
    p = subprocess.Popen([BIN, "--no-auth", "--agent", "replay", "--port", "0", "--data-dir", DATA],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if "listening on" in line:
            port = int(line.strip().rsplit(":", 1)[1]); break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, port
def req(port, method, path, body=None, headers={}):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers={"content-type": "application/json", **headers})
    return c, c.getresponse()
def read_until(resp, want):
    ev = None; last = None
    while True:
        line = resp.fp.readline().decode()
        if not line: return last
        line = line.rstrip("\n")
        if line.startswith("id: "): last = int(line[4:])
        if line.startswith("event: "):
            ev = line[7:]
            if ev == want: return last
p, port = start()
ids = []
def make(_):
    c, r = req(port, "POST", "/sessions", {"model": f"stream:{EV}:0"}); sid = json.loads(r.read())["session_id"]; c.close()
    c, r = req(port, "POST", f"/sessions/{sid}/input", {"type": "user_message", "content": "go"}); r.read(); c.close()
    c, r = req(port, "GET", f"/sessions/{sid}/stream"); last = read_until(r, "result"); c.close()
    return sid, last
t = time.time()
with ThreadPoolExecutor(32) as ex: ids = list(ex.map(make, range(N)))
# let the last writes land (durable delivery: result was delivered only once stored)
print(f"filled {N} sessions x ~{ids[0][1]} events in {time.time()-t:.1f}s", flush=True)
os.kill(p.pid, signal.SIGKILL); p.wait()
t0 = time.time(); p, port = start(); t_listen = time.time() - t0
def serve(item):
    sid, last = item
    c, r = req(port, "GET", f"/sessions/{sid}/stream", headers={"last-event-id": str(last)})
    ok = r.status == 200; c.close(); return ok
print("listening", t_listen, flush=True)
with ThreadPoolExecutor(64) as ex: oks = list(ex.map(serve, ids))
print("served", sum(oks), time.time()-t0, flush=True)
t_all = time.time() - t0
sid, last = ids[0]
c, r = req(port, "GET", f"/sessions/{sid}/stream", headers={"last-event-id": str(last)})
t1 = time.time()
c2, r2 = req(port, "POST", f"/sessions/{sid}/input", {"type": "user_message", "content": "again"}); r2.read()
first = None
while first is None:
    l = r.fp.readline().decode()
    if l.startswith("event: "): first = l.strip()[7:]
t_delta = time.time() - t1
print(f"RESTART N={N} ring~{last}: start->listening {t_listen*1000:.0f} ms; start->all {sum(oks)}/{N} served {t_all*1000:.0f} ms; resumed turn: input->first event ({first}) {t_delta*1000:.1f} ms")
p.kill()
