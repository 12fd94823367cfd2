#!/usr/bin/env python3
"""Log in to unigate's embedded identity provider without a browser.

It posts the same three forms a person fills in (username and company,
password, verification code), computes the verification code from the
user's TOTP secret (RFC 6238), then redeems the authorization code at the
token endpoint with PKCE, and prints the ID token's claims as JSON.

    examples/idp_login.py --issuer http://127.0.0.1:9000 --client automation \
        --client-secret-file config/demo/automation.secret \
        --redirect-uri http://127.0.0.1/automation/callback \
        --user alice --company "Acme MSP" --password alice-demo-pass \
        --totp-secret NBUJVNXAXKZEYDONQERB3FE5HWGFZFMX

    examples/idp_login.py --self-test   # starts `unigate idp` on a free port

Standard library only, so it runs on any machine with Python 3.11.
"""
import argparse, base64, hashlib, hmac, http.cookiejar, json, os, secrets, struct
import subprocess, sys, time, tomllib, urllib.error, urllib.parse, urllib.request


def totp(secret_b32: str, at: float | None = None) -> str:
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    counter = struct.pack(">Q", int((time.time() if at is None else at) // 30))
    mac = hmac.new(key, counter, hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1_000_000)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def login(issuer, client, client_secret, redirect_uri, user, company, password, totp_secret):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)

    def call(url, form=None, headers=None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(url, data=data, headers=headers or {})
        try:
            with opener.open(req) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    q = urllib.parse.urlencode({
        "client_id": client, "redirect_uri": redirect_uri, "response_type": "code",
        "scope": "openid email profile", "state": state, "nonce": nonce,
        "code_challenge": challenge, "code_challenge_method": "S256"})
    # 1. The authorization request sends the browser to the login form.
    status, headers, _ = call(f"{issuer}/authorize?{q}")
    assert status == 302, f"authorize: {status}"
    flow = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["flow"][0]
    # 2-4. The three forms. Each answers 302 on to the next step.
    steps = [("identify", {"username": user, "company": company}),
             ("password", {"password": password}),
             ("code", {"code": totp(totp_secret)})]
    for step, fields in steps:
        status, headers, body = call(f"{issuer}/login", {"flow": flow, "step": step, **fields})
        if status != 302:
            raise SystemExit(f"login failed at step {step}: HTTP {status}")
    back = headers["Location"]
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(back).query)
    assert back.startswith(redirect_uri), back
    assert params["state"] == [state] and params["iss"] == [issuer], params
    # 5. Redeem the code (client_secret_basic).
    basic = base64.b64encode(f"{urllib.parse.quote(client)}:{urllib.parse.quote(client_secret)}".encode()).decode()
    status, _, body = call(f"{issuer}/token", {
        "grant_type": "authorization_code", "code": params["code"][0],
        "redirect_uri": redirect_uri, "code_verifier": verifier},
        {"Authorization": f"Basic {basic}"})
    assert status == 200, f"token: {status} {body!r}"
    tokens = json.loads(body)
    payload = tokens["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["nonce"] == nonce
    return claims


def self_test():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.environ.get("UNIGATE_BIN", os.path.join(root, "target", "debug", "unigate"))
    config = os.path.join(root, "config", "idp.demo.toml")
    with open(config, "rb") as f:
        cfg = tomllib.load(f)
    alice = next(u for u in cfg["user"] if u["username"] == "alice")
    proc = subprocess.Popen([binary, "idp", "--config", config, "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=root)
    try:
        line = proc.stdout.readline()
        issuer = line.split("issuer ", 1)[1].strip()
        with open(os.path.join(root, "config", "demo", "automation.secret")) as f:
            secret = f.read().strip()
        claims = login(issuer, "automation", secret, "http://127.0.0.1/automation/callback",
                       "alice", "Acme MSP", "alice-demo-pass", alice["totp_secret"])
        assert claims["preferred_username"] == "alice" and claims["amr"] == ["pwd", "otp"], claims
        print("idp_login.py self-test: logged in alice through the forms, ID token ok")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--self-test", action="store_true")
    ap.add_argument("--issuer")
    ap.add_argument("--client")
    ap.add_argument("--client-secret-file")
    ap.add_argument("--redirect-uri")
    ap.add_argument("--user")
    ap.add_argument("--company")
    ap.add_argument("--password")
    ap.add_argument("--totp-secret")
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    with open(a.client_secret_file) as f:
        secret = f.read().strip()
    claims = login(a.issuer.rstrip("/"), a.client, secret, a.redirect_uri, a.user, a.company, a.password, a.totp_secret)
    print(json.dumps(claims, indent=2))


if __name__ == "__main__":
    main()
