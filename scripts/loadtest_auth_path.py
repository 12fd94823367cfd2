#!/usr/bin/env python3
"""Load comparison of the authenticated request path, on loopback only.

Starts, on free loopback ports: the embedded IdP, the demo module and
unigate (`unigate demo --threads 1`), and a plain Pingora pass-through with
no auth (`unigate passthrough --threads 1`) in front of the same module.
Logs alice in through unigate (the real forms, TOTP included) to get a
session cookie, then runs wrk against /ping three ways: direct to the
module, through the pass-through, and through unigate with the session.
Then the HTML injection comparison: a 64 KiB page through unigate as
`text/html` (the App Launcher streamed in) and the same bytes as
`text/plain` (no injection), beside the page direct and through the
pass-through. Prints Markdown tables and writes
target/loadtest-auth-path.json.

    scripts/loadtest-auth-path [--duration 10] [--connections 32] [--rounds 3] [--suites ping,page]
"""
import argparse, json, os, re, socket, subprocess, sys, time, tomllib, urllib.parse
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
from idp_login import totp  # noqa: E402

BIN = os.environ.get("UNIGATE_BIN", os.path.join(ROOT, "target", "release", "unigate"))


def free_port(span=1):
    """A free loopback port whose next `span - 1` ports are free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + span > 65535:
            continue
        try:
            for p in range(port, port + span):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


def request(port, method, path, host, headers=None, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"Host": host, **(headers or {})}
    if body is not None:
        body = urllib.parse.urlencode(body)
        h["Content-Type"] = "application/x-www-form-urlencoded"
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    r.read()
    return r.status, r.getheader("Location"), r.getheaders()


def cookies_from(headers, jar):
    for k, v in headers:
        if k.lower() == "set-cookie":
            name, _, rest = v.partition("=")
            jar[name] = rest.split(";", 1)[0]


def cookie_header(jar):
    return "; ".join(f"{k}={v}" for k, v in jar.items() if v)


def login(port, idp_port, host, user, company, password, secret):
    """Logs in through unigate and the IdP's forms; returns unigate's cookie."""
    ujar, ijar = {}, {}
    idp_host = f"127.0.0.1:{idp_port}"
    st, loc, hs = request(port, "GET", "/_unigate/login", host)
    cookies_from(hs, ujar)
    assert st == 302, st
    u = urllib.parse.urlsplit(loc)
    st, loc, hs = request(idp_port, "GET", f"{u.path}?{u.query}", idp_host)
    cookies_from(hs, ijar)
    flow = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)["flow"][0]
    for step, fields in [("identify", {"username": user, "company": company}),
                         ("password", {"password": password}),
                         ("code", {"code": totp(secret)})]:
        st, loc, hs = request(idp_port, "POST", "/login", idp_host,
                              {"Cookie": cookie_header(ijar)}, {"flow": flow, "step": step, **fields})
        cookies_from(hs, ijar)
        assert st == 302, (step, st)
    cb = urllib.parse.urlsplit(loc)
    st, loc, hs = request(port, "GET", f"{cb.path}?{cb.query}", host, {"Cookie": cookie_header(ujar)})
    cookies_from(hs, ujar)
    assert st == 302 and "unigate" in ujar, (st, ujar)
    return ujar["unigate"]


def stop(procs, timeout=10):
    """Ends the processes a script started, and waits for them."""
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=timeout)


def wrk(url, duration, connections, headers=()):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    ms = lambda m: float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    return {"rps": rps, "p50_ms": ms(p50), "p99_ms": ms(p99), "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--suites", default="ping,page,store",
                    help="which comparisons: ping (auth path vs pass-through), page (HTML injection), "
                         "store (memory vs Redis sessions)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="the three paths are measured in turn this many times; medians are reported")
    a = ap.parse_args()
    # The demo starts a module on each of module_port .. module_port + 4.
    port, idp_port, module_port, pt_port = free_port(), free_port(), free_port(5), free_port()
    procs = []
    env = {**os.environ, "RUST_LOG": "warn"}
    try:
        procs.append(subprocess.Popen([BIN, "demo", "--port", str(port), "--idp-port", str(idp_port),
                                       "--module-port", str(module_port), "--threads", "1"],
                                      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([BIN, "passthrough", "--listen", f"127.0.0.1:{pt_port}",
                                       "--upstream", f"127.0.0.1:{module_port}", "--threads", "1"],
                                      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in (port, idp_port, module_port, pt_port):
            wait_port(p)
        with open(os.path.join(ROOT, "config", "idp.demo.toml"), "rb") as f:
            alice = next(u for u in tomllib.load(f)["user"] if u["username"] == "alice")
        host = f"portal.localhost:{port}"
        sid = login(port, idp_port, host, "alice", "Acme MSP", "alice-demo-pass", alice["totp_secret"])
        unigate_h = (f"Host: {host}", f"Cookie: unigate={sid}")
        if "store" in a.suites.split(","):
            # A second stack with its sessions in a redis-server of its own.
            redis_port = free_port()
            procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                           "--save", "", "--appendonly", "no"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(redis_port)
            rport, ridp, rmod = free_port(), free_port(), free_port(5)
            procs.append(subprocess.Popen([BIN, "demo", "--port", str(rport), "--idp-port", str(ridp),
                                           "--module-port", str(rmod), "--threads", "1",
                                           "--redis-url", f"redis://127.0.0.1:{redis_port}/0"],
                                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for p in (rport, ridp, rmod):
                wait_port(p)
            rhost = f"portal.localhost:{rport}"
            rsid = login(rport, ridp, rhost, "alice", "Acme MSP", "alice-demo-pass", alice["totp_secret"])
        suites = {
            "ping": [
                ("direct", f"http://127.0.0.1:{module_port}/ping", ()),
                ("pingora_passthrough", f"http://127.0.0.1:{pt_port}/ping", ()),
                ("unigate", f"http://127.0.0.1:{port}/ping", unigate_h),
            ],
            "page": [
                ("direct_html", f"http://127.0.0.1:{module_port}/page.html", ()),
                ("pingora_passthrough_html", f"http://127.0.0.1:{pt_port}/page.html", ()),
                ("unigate_text_no_injection", f"http://127.0.0.1:{port}/page.txt", unigate_h),
                ("unigate_html_with_launcher", f"http://127.0.0.1:{port}/page.html", unigate_h + ("Accept: text/html",)),
            ],
        }
        if "store" in a.suites.split(","):
            suites["store"] = [
                ("unigate_memory_store", f"http://127.0.0.1:{port}/ping", unigate_h),
                ("unigate_redis_store", f"http://127.0.0.1:{rport}/ping", (f"Host: {rhost}", f"Cookie: unigate={rsid}")),
            ]
        median = lambda xs: sorted(xs)[len(xs) // 2]
        summary = {"duration_s": a.duration, "connections": a.connections, "threads": 1, "rounds": a.rounds}
        for suite, targets in suites.items():
            if suite not in a.suites.split(","):
                continue
            for _, url, headers in targets:
                wrk(url, 2, a.connections, headers)  # warm-up
            rounds = {name: [] for name, _, _ in targets}
            ratios = []
            # Interleaved, so drift on a shared machine hits every path alike.
            for _ in range(a.rounds):
                for name, url, headers in targets:
                    r = wrk(url, a.duration, a.connections, headers)
                    if r["non_2xx"]:
                        raise SystemExit(f"{name}: {r['non_2xx']} non-2xx responses")
                    rounds[name].append(r)
                last = {n: rs[-1]["rps"] for n, rs in rounds.items()}
                ratios.append(last["unigate"] / last["pingora_passthrough"] if suite == "ping"
                              else last["unigate_html_with_launcher"] / last["unigate_text_no_injection"] if suite == "page"
                              else last["unigate_redis_store"] / last["unigate_memory_store"])
            runs = {name: {k: median([r[k] for r in rs]) for k in ("rps", "p50_ms", "p99_ms")} for name, rs in rounds.items()}
            ratio = median(ratios)
            summary[suite] = {"median": runs, "all": rounds, "ratios": [round(r, 3) for r in ratios], "ratio": round(ratio, 3)}
            title = {"ping": "/ping (auth path)", "page": "64 KiB HTML page (App Launcher injection)",
                     "store": "/ping, memory store vs Redis store"}[suite]
            print(f"\n{title}\n")
            print("| path | requests/s | p50 | p99 |\n|---|---|---|---|")
            for name, r in runs.items():
                print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms |")
            what = {"ping": "unigate / pass-through", "page": "with injection / same page without",
                    "store": "Redis store / memory store"}[suite]
            print(f"\n{what} throughput, median of {a.rounds}: {ratio:.2f} "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
        os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
        with open(os.path.join(ROOT, "target", "loadtest-auth-path.json"), "w") as f:
            json.dump(summary, f, indent=2)
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
