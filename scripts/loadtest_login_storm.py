#!/usr/bin/env python3
"""Interactive login storm at scale, on loopback only.

The embedded IdP (like KaseyaOne) accepts each verification code once per
user and 30 s, so a storm of full logins needs many users. This generates
--users test users (one shared password, a random TOTP secret each) into a
copy of config/idp.demo.toml, starts `unigate demo` with it (and with
unigate's login-start rate limit raised), gives each user an account in
the bms-east module (by SCIM, as its account matching expects), and runs
`unigate loadtest --scenario login` with the users taken in turn.

    scripts/loadtest-login-storm [--users 3000] [--concurrency 16] [--duration 20] [--threads N]

Prints the tool's report and writes target/loadtest-login-storm.json.
"""
import argparse, base64, http.client, json, os, re, secrets, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadtest_auth_path import BIN, ROOT, free_port, stop, wait_port  # noqa: E402

PASSWORD = "storm-test-pass"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="unigate worker threads (default: the CPUs)")
    a = ap.parse_args()
    work = os.path.join(ROOT, "target", "loadtest-login-storm")
    os.makedirs(work, exist_ok=True)
    hashed = subprocess.run([BIN, "idp", "hash-password"], input=PASSWORD + "\n", capture_output=True,
                            text=True, check=True).stdout.strip()
    params = re.match(r"\$argon2id\$v=\d+\$([^$]+)\$", hashed).group(1)

    # The IdP: the demo's settings and companies, the generated users.
    with open(os.path.join(ROOT, "config", "idp.demo.toml")) as f:
        demo = f.read()
    # Everything but the demo's own users (clients, companies, settings).
    kept, skipping = [], False
    for line in demo.splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.strip() == "[[user]]"
        if not skipping:
            kept.append(line)
    head = "".join(kept).replace('dir = "outbox"', f'dir = "{os.path.join(work, "outbox")}"') + "\n"
    # Every virtual user comes from 127.0.0.1: the IdP's per-address limits
    # on login starts and password checks are raised too.
    head = head.replace("[login]\n", "[login]\nmax_starts_per_minute_per_ip = 1000000\n"
                        "max_password_checks_per_minute_per_ip = 1000000\n", 1)
    users, rows = [], []
    for i in range(a.users):
        secret = base64.b32encode(secrets.token_bytes(20)).decode()
        name = f"storm{i:05d}"
        users.append(f'''[[user]]
username = "{name}"
company = "Acme MSP"
email = "{name}@acme-msp.example"
display_name = "Storm User {i}"
password_hash = "{hashed}"
totp_secret = "{secret}"
groups = ["portal-users", "bms-users"]
''')
        rows.append(f"{name},Acme MSP,{PASSWORD},{secret}")
    # Beside the demo config, whose relative secret paths it keeps.
    idp_cfg = os.path.join(ROOT, "config", ".loadtest-login-storm-idp.toml")
    with open(idp_cfg, "w") as f:
        f.write(head + "\n".join(users))
    csv = os.path.join(work, "users.csv")
    with open(csv, "w") as f:
        f.write("\n".join(rows) + "\n")

    # unigate: the demo's config with the per-address login-start limit
    # raised (every virtual user comes from 127.0.0.1). Written beside the
    # demo config, whose relative paths it keeps.
    with open(os.path.join(ROOT, "config", "unigate.demo.toml")) as f:
        gw = f.read()
    gw = gw.replace("[session]\n", "[session]\nlogin_starts_per_minute = 1000000\n", 1)
    gw_cfg = os.path.join(ROOT, "config", ".loadtest-login-storm.toml")
    with open(gw_cfg, "w") as f:
        f.write(gw)

    port, idp_port, module_port = free_port(), free_port(), free_port(5)
    cmd = [BIN, "demo", "--config", gw_cfg, "--idp-config", idp_cfg, "--port", str(port),
           "--idp-port", str(idp_port), "--module-port", str(module_port)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    log = open(os.path.join(work, "demo.log"), "w")
    demo_proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "RUST_LOG": "info"},
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        for p in (port, idp_port, module_port):
            wait_port(p)
        # bms-east matches module accounts by SCIM: give each user one, the
        # way an administrator (or provisioning) would.
        east = module_port + 1
        wait_port(east)
        c = http.client.HTTPConnection("127.0.0.1", east, timeout=10)
        for i in range(a.users):
            name = f"storm{i:05d}"
            body = json.dumps({"userName": name, "emails": [{"value": f"{name}@acme-msp.example"}]})
            c.request("POST", "/scim/v2/Users", body=body, headers={"Content-Type": "application/scim+json"})
            r = c.getresponse()
            r.read()
            if r.status not in (201, 409):
                raise SystemExit(f"creating the module account of {name}: status {r.status}")
        c.close()
        # bms-east: Unified Login without the module's own login.
        out = os.path.join(ROOT, "target", "loadtest-login-storm.json")
        run = subprocess.run([BIN, "loadtest", "--url", f"http://bms-east.localhost:{port}/page.html",
                              "--connect", f"127.0.0.1:{port}", "--idp", f"http://127.0.0.1:{idp_port}",
                              "--users", csv, "--scenario", "login", "--concurrency", str(a.concurrency),
                              "--duration", f"{a.duration}s", "--warmup", f"{a.warmup}s", "--quiet",
                              "--json", out], cwd=ROOT, capture_output=True, text=True)
        print(run.stdout, end="")
        print(run.stderr, end="", file=sys.stderr)
        print(f"\n{a.users} generated users, Argon2id {params} (the embedded IdP's password hashing)")
        sys.exit(run.returncode)
    finally:
        stop([demo_proc], timeout=30)
        os.remove(gw_cfg)
        os.remove(idp_cfg)


if __name__ == "__main__":
    main()
