#!/usr/bin/env python3
"""Instructions per request on the authenticated path, counted by
valgrind's callgrind: a figure that does not move with the load on a
shared machine (requests/s do, by several percent).

Starts, on free loopback ports, `unigate demo --threads 1` and
`unigate passthrough --threads 1` (in front of the same demo module), each
under callgrind. Logs alice in, warms up, then for each path zeroes the
counters, sends --requests keep-alive GETs of --path (/ping; /ping/chunked
is the same answer streamed without Content-Length, which unigate watches
as a long-lived response) one after another, and reads the process's
instruction count:

- direct: to the module, in the demo process (the module's own cost);
- passthrough: through the plain Pingora pass-through (its process only);
- unigate: through unigate with the session (demo process: unigate plus
  the module, so the module's cost is subtracted).

    scripts/instructions-per-request [--requests 2000] [--path /ping/chunked]
"""
import argparse, os, re, subprocess, sys, time, tomllib
import http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadtest_auth_path import BIN, ROOT, free_port, login, stop, wait_port  # noqa: E402


def valgrind(args, out):
    return ["valgrind", "--tool=callgrind", "--collect-atstart=yes", "--compress-strings=no", "--compress-pos=no",
            f"--callgrind-out-file={out}", BIN, *args]


def instructions(pid):
    """Instructions executed by the process since its counters were zeroed."""
    out = subprocess.run(["callgrind_control", "-e", "Ir", str(pid)], capture_output=True, text=True, check=True).stdout
    total = sum(int(m.group(1).replace(",", "")) for m in re.finditer(r"^\s*Th\s+\d+\s+([\d,]+)\s*$", out, re.M))
    if total == 0:
        raise SystemExit(f"no counts in callgrind_control's answer:\n{out}")
    return total


def run(port, host, headers, n, path="/ping"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        c.request("GET", path, headers={"Host": host, **headers})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"{host}: status {r.status}")
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--path", default="/ping", help="the module path asked for (/ping or /ping/chunked)")
    a = ap.parse_args()
    out_dir = os.path.join(ROOT, "target", "callgrind")
    os.makedirs(out_dir, exist_ok=True)
    port, idp_port, module_port, pt_port = free_port(), free_port(), free_port(5), free_port()
    env = {**os.environ, "RUST_LOG": "warn"}
    procs = []
    try:
        demo = subprocess.Popen(valgrind(["demo", "--port", str(port), "--idp-port", str(idp_port),
                                          "--module-port", str(module_port), "--threads", "1"],
                                         os.path.join(out_dir, "demo.out")),
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(demo)
        pt = subprocess.Popen(valgrind(["passthrough", "--listen", f"127.0.0.1:{pt_port}",
                                        "--upstream", f"127.0.0.1:{module_port}", "--threads", "1"],
                                       os.path.join(out_dir, "passthrough.out")),
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(pt)
        for p in (port, idp_port, module_port, pt_port):
            wait_port(p, timeout=300)
        with open(os.path.join(ROOT, "config", "idp.demo.toml"), "rb") as f:
            alice = next(u for u in tomllib.load(f)["user"] if u["username"] == "alice")
        host = f"portal.localhost:{port}"
        sid = login(port, idp_port, host, "alice", "Acme MSP", "alice-demo-pass", alice["totp_secret"])
        paths = [
            ("direct", demo.pid, module_port, f"127.0.0.1:{module_port}", {}),
            ("passthrough", pt.pid, pt_port, f"127.0.0.1:{pt_port}", {}),
            ("unigate", demo.pid, port, host, {"Cookie": f"unigate={sid}"}),
        ]
        counts = {}
        for name, pid, p, h, hs in paths:
            run(p, h, hs, 200, a.path)  # warm-up: connection pools, caches, the assertion
            subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
            time.sleep(0.5)
            subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
            run(p, h, hs, a.requests, a.path)
            counts[name] = instructions(pid) / a.requests
            # A profile of just these requests, for callgrind_annotate.
            dump = name + a.path.replace("/", "-").removeprefix("-ping")
            subprocess.run(["callgrind_control", f"--dump={dump}", str(pid)], check=True, capture_output=True)
        own = counts["unigate"] - counts["direct"]
        print(f"\ninstructions per {a.path} request, {a.requests} sequential keep-alive requests (callgrind)\n")
        print("| path | instructions per request |\n|---|---|")
        print(f"| the module itself (direct) | {counts['direct']:,.0f} |")
        print(f"| plain Pingora pass-through (its process) | {counts['passthrough']:,.0f} |")
        print(f"| unigate, authenticated (its process, less the module) | {own:,.0f} |")
        print(f"\nunigate / pass-through: {own / counts['passthrough']:.2f}")
        print(f"\nprofiles of each measurement: {out_dir}/*.out.* (callgrind_annotate --inclusive=yes FILE)")
    finally:
        stop(procs, timeout=60)


if __name__ == "__main__":
    main()
