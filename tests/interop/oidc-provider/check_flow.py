#!/usr/bin/env python3
"""Drive the test OP (server.mjs) through the flows unigate's interop tests use.

Standard library only. Run from anywhere, after `npm ci` in this directory:

    python3 check_flow.py            # default mode (claims only via UserInfo)
    python3 check_flow.py --claims-in-id-token

It plays the browser and the RP by hand, never following a redirect to the
RP: authorization code flow with PKCE S256 and the devInteractions login form,
token exchange, UserInfo, refresh, a group change through the test hook,
SSO re-authorization, an unknown login, RP-initiated logout with the
confirmation form, and the back-channel logout token. Exits non-zero on the
first failed expectation.
"""

import argparse
import base64
import hashlib
import html.parser
import http.client
import http.cookiejar
import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_ID = "unigate-test"
CLIENT_SECRET = "unigate-test-secret-0123456789"
REDIRECT_URI = "http://localhost:9/cb"
POST_LOGOUT_URI = "http://localhost:9/logged-out"


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def expect(cond, msg):
    if not cond:
        fail(msg)


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- back-channel logout receiver ------------------------------------------

class BackchannelHandler(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length).decode()
        BackchannelHandler.received.append(
            {"path": self.path, "content_type": self.headers.get("content-type"), "body": body}
        )
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


# --- a cookie-keeping client that never follows redirects --------------------

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Browser:
    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def request(self, method, url, form=None, headers=None, body=None):
        data = None
        hdrs = dict(headers or {})
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            hdrs["content-type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = body
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
        try:
            resp = self.opener.open(req, timeout=10)
        except urllib.error.HTTPError as e:  # 3xx (not followed) and 4xx/5xx
            resp = e
        payload = resp.read().decode("utf-8", "replace")
        return resp.status if hasattr(resp, "status") else resp.code, resp.headers, payload

    def cookies(self):
        return sorted(f"{c.name}@{c.domain}{c.path}" for c in self.jar)


class FormParser(html.parser.HTMLParser):
    """Collects <form>s: id, action, method, inputs, and submit buttons (incl. form= attr)."""

    def __init__(self):
        super().__init__()
        self.forms = []
        self.buttons = []
        self._cur = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._cur = {"id": a.get("id"), "action": a.get("action"),
                         "method": (a.get("method") or "get").lower(), "inputs": []}
            self.forms.append(self._cur)
        elif tag == "input" and self._cur is not None:
            self._cur["inputs"].append(a)
        elif tag == "button":
            self.buttons.append(a)

    def handle_endtag(self, tag):
        if tag == "form":
            self._cur = None


def parse_forms(text):
    p = FormParser()
    p.feed(text)
    return p


# --- minimal RS256 verification (PKCS#1 v1.5, SHA-256) -----------------------

SHA256_DIGESTINFO = bytes.fromhex("3031300d060960864801650304020105000420")


def verify_rs256(jwt, jwks):
    header_b64, payload_b64, sig_b64 = jwt.split(".")
    header = json.loads(b64url_decode(header_b64))
    expect(header.get("alg") == "RS256", f"alg is {header.get('alg')}")
    key = next((k for k in jwks["keys"] if k.get("kid") == header.get("kid")), None)
    expect(key is not None and key["kty"] == "RSA", f"no RSA key for kid {header.get('kid')}")
    n = int.from_bytes(b64url_decode(key["n"]), "big")
    e = int.from_bytes(b64url_decode(key["e"]), "big")
    k = (n.bit_length() + 7) // 8
    em = pow(int.from_bytes(b64url_decode(sig_b64), "big"), e, n).to_bytes(k, "big")
    digest = hashlib.sha256(f"{header_b64}.{payload_b64}".encode()).digest()
    t = SHA256_DIGESTINFO + digest
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    expect(em == expected, "RS256 signature does not verify")
    return header, json.loads(b64url_decode(payload_b64))


def at_hash(access_token):
    return b64url(hashlib.sha256(access_token.encode()).digest()[:16])


# --- the flow ------------------------------------------------------------------

def start_op(claims_in_id_token, backchannel_uri):
    env = dict(os.environ)
    env.update({
        "OP_CLIENT_ID": CLIENT_ID,
        "OP_CLIENT_SECRET": CLIENT_SECRET,
        "OP_REDIRECT_URIS": f"{REDIRECT_URI},http://localhost:9/other",
        "OP_POST_LOGOUT_REDIRECT_URIS": POST_LOGOUT_URI,
        "OP_BACKCHANNEL_LOGOUT_URI": backchannel_uri,
        "OP_CLAIMS_IN_ID_TOKEN": "1" if claims_in_id_token else "0",
        "OP_ACCESS_TOKEN_TTL": "600",
    })
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["node", "server.mjs"], cwd=HERE, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    elapsed = time.monotonic() - t0
    if not line.startswith("ISSUER "):
        proc.kill()
        fail(f"no ISSUER line, got {line!r}; stderr: {proc.stderr.read()}")
    issuer = line.split(" ", 1)[1].strip()
    print(f"OP started in {elapsed * 1000:.0f} ms: {issuer}")
    # Drain stderr in the background so the pipe never fills up.
    stderr_lines = []
    threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True).start()
    return proc, issuer, stderr_lines


def get_json(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def post_token(token_endpoint, form):
    basic = base64.b64encode(
        f"{urllib.parse.quote(CLIENT_ID, safe='')}:{urllib.parse.quote(CLIENT_SECRET, safe='')}".encode()
    ).decode()
    req = urllib.request.Request(
        token_endpoint, data=urllib.parse.urlencode(form).encode(), method="POST",
        headers={"authorization": f"Basic {basic}",
                 "content-type": "application/x-www-form-urlencoded"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def authorize(browser, disc, issuer, login, log=print):
    """Runs /auth through login until the redirect to REDIRECT_URI. Returns (params, verifier, nonce, steps)."""
    verifier = b64url(secrets.token_bytes(32))
    challenge = b64url(hashlib.sha256(verifier.encode()).digest())
    state = b64url(secrets.token_bytes(16))
    nonce = b64url(secrets.token_bytes(16))
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile groups",
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    url = disc["authorization_endpoint"] + "?" + urllib.parse.urlencode(params)
    steps = []
    method, form = "GET", None
    for _ in range(10):
        status, headers, body = browser.request(method, url, form=form)
        steps.append(f"{method} {urllib.parse.urlsplit(url).path} -> {status}"
                     + (f" Location: {headers.get('location')}" if headers.get("location") else ""))
        if status in (302, 303):
            loc = urllib.parse.urljoin(url, headers["location"])
            if not loc.startswith(issuer + "/"):
                # Redirect out of the OP: to the RP (never followed).
                expect(loc.startswith(REDIRECT_URI + "?"), f"unexpected redirect {loc}")
                got = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
                expect(got.get("state") == state, f"state mismatch: {got}")
                for s in steps:
                    log("   " + s)
                return got, verifier, nonce, steps
            url, method, form = loc, "GET", None
            continue
        expect(status == 200, f"unexpected {status} at {url}: {body[:500]}")
        forms = parse_forms(body).forms
        expect(len(forms) == 1, f"expected one form at {url}, got {forms}")
        f = forms[0]
        hidden = {i["name"]: i.get("value", "") for i in f["inputs"] if i.get("type") == "hidden"}
        fields = [i.get("name") for i in f["inputs"]]
        steps.append(f"   form action={f['action']} method={f['method']} inputs={fields} hidden={hidden}")
        expect(hidden.get("prompt") == "login", f"expected the login prompt, got {hidden}")
        form = {**hidden, "login": login, "password": "any-password"}
        url, method = urllib.parse.urljoin(url, f["action"]), "POST"
    fail("too many steps in the authorization")


def run(claims_in_id_token):
    print(f"===== mode: OP_CLAIMS_IN_ID_TOKEN={'1' if claims_in_id_token else 'unset/0'} =====")
    BackchannelHandler.received = []
    bc_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BackchannelHandler)
    threading.Thread(target=bc_server.serve_forever, daemon=True).start()
    bc_uri = f"http://127.0.0.1:{bc_server.server_address[1]}/backchannel-logout"

    proc, issuer, stderr_lines = start_op(claims_in_id_token, bc_uri)
    try:
        disc = get_json(issuer + "/.well-known/openid-configuration")
        expect(disc["issuer"] == issuer, "issuer mismatch in discovery")
        expect(disc.get("authorization_response_iss_parameter_supported") is True,
               "authorization_response_iss_parameter_supported not true")
        print("discovery: iss param supported =",
              disc["authorization_response_iss_parameter_supported"],
              "| end_session_endpoint =", disc.get("end_session_endpoint"),
              "| backchannel_logout_session_supported =", disc.get("backchannel_logout_session_supported"))
        jwks = get_json(disc["jwks_uri"])

        browser = Browser()
        print("1. authorization (alice):")
        got, verifier, nonce, _ = authorize(browser, disc, issuer, "alice")
        expect("code" in got, f"no code: {got}")
        expect(got.get("iss") == issuer, f"iss in authorization response: {got.get('iss')}")
        print("   redirect params:", sorted(got))
        print("   OP cookies in jar:", browser.cookies())

        print("2. token exchange:")
        status, tok = post_token(disc["token_endpoint"], {
            "grant_type": "authorization_code", "code": got["code"],
            "redirect_uri": REDIRECT_URI, "code_verifier": verifier,
        })
        expect(status == 200, f"token endpoint {status}: {tok}")
        print("   response keys:", sorted(tok), "| token_type:", tok["token_type"],
              "| expires_in:", tok.get("expires_in"), "| scope:", tok.get("scope"))
        expect("refresh_token" in tok, "no refresh_token issued")
        header, idt = verify_rs256(tok["id_token"], jwks)
        print("   id_token header:", header)
        print("   id_token payload:", json.dumps(idt, sort_keys=True))
        expect(idt["iss"] == issuer and idt["aud"] == CLIENT_ID and idt["sub"] == "alice", "bad iss/aud/sub")
        expect(idt.get("nonce") == nonce, "nonce mismatch")
        print("   at_hash present:", "at_hash" in idt,
              "| matches:", idt.get("at_hash") == at_hash(tok["access_token"]),
              "| sid:", "sid" in idt, "| auth_time:", "auth_time" in idt)
        if claims_in_id_token:
            expect(idt.get("email") == "alice@example.com", "email missing from ID token")
            expect(idt.get("groups") == ["portal-users", "staff"], "groups missing from ID token")
        else:
            expect("email" not in idt and "groups" not in idt, "claims unexpectedly in ID token")
        sid = idt.get("sid")

        print("3. userinfo:")
        ui = get_json(disc["userinfo_endpoint"], {"authorization": f"Bearer {tok['access_token']}"})
        print("  ", json.dumps(ui, sort_keys=True))
        expect(ui.get("email") == "alice@example.com" and ui.get("name") == "Alice Adams", "userinfo claims")
        expect(ui.get("groups") == ["portal-users", "staff"], "userinfo groups")

        print("4. refresh:")
        rt1 = tok["refresh_token"]
        status, ref = post_token(disc["token_endpoint"], {"grant_type": "refresh_token", "refresh_token": rt1})
        expect(status == 200, f"refresh {status}: {ref}")
        rotated = ref.get("refresh_token") != rt1
        print("   response keys:", sorted(ref), "| refresh token rotated:", rotated)
        expect("id_token" in ref, "no id_token on refresh")
        _, ridt = verify_rs256(ref["id_token"], jwks)
        print("   refreshed id_token:", json.dumps(ridt, sort_keys=True))
        expect(ridt.get("sid") == sid, "sid changed on refresh")
        rt = ref.get("refresh_token", rt1)

        print("5. change alice's groups via /__test/groups, refresh again:")
        status, _, body = Browser().request(
            "POST", issuer + "/__test/groups?user=alice",
            body=json.dumps(["staff", "auditors"]).encode(),
            headers={"content-type": "application/json"})
        expect(status == 204, f"/__test/groups -> {status} {body}")
        status, ref2 = post_token(disc["token_endpoint"], {"grant_type": "refresh_token", "refresh_token": rt})
        expect(status == 200, f"refresh {status}: {ref2}")
        _, ridt2 = verify_rs256(ref2["id_token"], jwks)
        print("   refreshed id_token groups:", ridt2.get("groups"))
        if claims_in_id_token:
            expect(ridt2.get("groups") == ["staff", "auditors"], "groups not updated in refreshed ID token")
        ui2 = get_json(disc["userinfo_endpoint"], {"authorization": f"Bearer {ref2['access_token']}"})
        print("   userinfo groups (new access token):", ui2.get("groups"))
        expect(ui2.get("groups") == ["staff", "auditors"], "groups not updated in userinfo")
        ui_old = get_json(disc["userinfo_endpoint"], {"authorization": f"Bearer {tok['access_token']}"})
        print("   userinfo groups (first access token):", ui_old.get("groups"))

        print("6. second authorization in the same browser (SSO, no form expected):")
        got2, verifier2, _, steps2 = authorize(browser, disc, issuer, "alice")
        expect("code" in got2 and not any("form action" in s for s in steps2), "second authorization showed a form")
        status, tok2 = post_token(disc["token_endpoint"], {
            "grant_type": "authorization_code", "code": got2["code"],
            "redirect_uri": REDIRECT_URI, "code_verifier": verifier2})
        expect(status == 200, f"token (2nd) {status}: {tok2}")
        _, idt2 = verify_rs256(tok2["id_token"], jwks)
        print("   same sid:", idt2.get("sid") == sid, "| same auth_time:", idt2.get("auth_time") == idt.get("auth_time"))

        print("7. bob in a fresh browser:")
        got_b, ver_b, _, _ = authorize(Browser(), disc, issuer, "bob", log=lambda *_: None)
        status, tok_b = post_token(disc["token_endpoint"], {
            "grant_type": "authorization_code", "code": got_b["code"],
            "redirect_uri": REDIRECT_URI, "code_verifier": ver_b})
        ui_b = get_json(disc["userinfo_endpoint"], {"authorization": f"Bearer {tok_b['access_token']}"})
        print("  ", json.dumps(ui_b, sort_keys=True))
        expect(ui_b.get("groups") == ["staff"], "bob's groups")

        print("8. unknown login (mallory) in a fresh browser:")
        got_m, _, _, _ = authorize(Browser(), disc, issuer, "mallory", log=lambda *_: None)
        print("   redirect params:", got_m)
        expect(got_m.get("error") == "access_denied" and got_m.get("iss") == issuer, "expected access_denied")

        print("9. PKCE is required (no code_challenge):")
        status, headers, body = Browser().request("GET", disc["authorization_endpoint"] + "?" + urllib.parse.urlencode({
            "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI,
            "scope": "openid", "state": "s"}))
        print("   ->", status, headers.get("location"))

        print("10. RP-initiated logout:")
        logout_state = b64url(secrets.token_bytes(8))
        end_url = disc["end_session_endpoint"] + "?" + urllib.parse.urlencode({
            "id_token_hint": tok["id_token"], "post_logout_redirect_uri": POST_LOGOUT_URI,
            "state": logout_state})
        status, headers, body = browser.request("GET", end_url)
        expect(status == 200, f"end_session -> {status} {body[:300]}")
        parsed = parse_forms(body)
        expect(len(parsed.forms) == 1, f"logout forms: {parsed.forms}")
        lf = parsed.forms[0]
        hidden = {i["name"]: i.get("value", "") for i in lf["inputs"] if i.get("type") == "hidden"}
        print(f"   GET {urllib.parse.urlsplit(end_url).path} -> 200; form id={lf['id']} "
              f"action={lf['action']} method={lf['method']} hidden={sorted(hidden)}")
        print("   buttons:", [{k: v for k, v in b.items() if k in ('name', 'value', 'form', 'type')} for b in parsed.buttons])
        bc_before = len(BackchannelHandler.received)
        status, headers, body = browser.request(
            "POST", urllib.parse.urljoin(end_url, lf["action"]), form={**hidden, "logout": "yes"})
        loc = headers.get("location")
        print(f"   POST {lf['action']} (xsrf, logout=yes) -> {status} Location: {loc}")
        expect(status in (302, 303) and loc.startswith(POST_LOGOUT_URI), "no redirect to post_logout_redirect_uri")
        expect(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query)).get("state") == logout_state,
               "logout state not echoed")
        for _ in range(50):
            if len(BackchannelHandler.received) > bc_before:
                break
            time.sleep(0.05)
        expect(len(BackchannelHandler.received) > bc_before, "no back-channel logout POST received")
        rec = BackchannelHandler.received[-1]
        form = dict(urllib.parse.parse_qsl(rec["body"]))
        expect("logout_token" in form, f"back-channel body: {rec}")
        lh, lt = verify_rs256(form["logout_token"], jwks)
        print("   back-channel POST", rec["path"], rec["content_type"], "fields:", sorted(form))
        print("   logout_token header:", lh)
        print("   logout_token payload:", json.dumps(lt, sort_keys=True))
        expect(lt.get("sid") == sid and lt.get("sub") == "alice"
               and "http://schemas.openid.net/event/backchannel-logout" in lt.get("events", {}),
               "logout token content")
        print("   OP cookies in jar after logout:", browser.cookies())

        print("11. after logout:")
        status, ref3 = post_token(disc["token_endpoint"], {"grant_type": "refresh_token", "refresh_token": ref2.get("refresh_token", rt)})
        print("   refresh with the old refresh token ->", status, ref3)
        _, _, _, steps3 = authorize(browser, disc, issuer, "alice", log=lambda *_: None)
        print("   new authorization shows the login form again:", any("form action" in s for s in steps3))
        print(f"RESULT: OK (mode claims_in_id_token={claims_in_id_token})")
    finally:
        t0 = time.monotonic()
        proc.stdin.close()  # the OP exits on stdin EOF
        try:
            proc.wait(timeout=5)
            print(f"OP exited on stdin EOF in {(time.monotonic() - t0) * 1000:.0f} ms, rc={proc.returncode}")
        except subprocess.TimeoutExpired:
            proc.kill()
            fail("OP did not exit on stdin EOF")
        bc_server.shutdown()
        errs = [l.rstrip() for l in stderr_lines if "WARNING" not in l]
        if errs:
            print("OP stderr (non-warning):", *errs, sep="\n  ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims-in-id-token", action="store_true")
    ap.add_argument("--both", action="store_true", help="run both modes")
    args = ap.parse_args()
    if args.both:
        run(False)
        run(True)
    else:
        run(args.claims_in_id_token)


if __name__ == "__main__":
    main()
