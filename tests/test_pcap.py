"""--pcap: decrypted streams as pcapng, read back by tshark as a user would open them in Wireshark."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest

from conftest import FIXTURES, run_client, start_gateway, start_server

PY = sys.executable
FIX = FIXTURES / "python_ssl_server_keepalive.events.jsonl"


def tshark(*args) -> str:
    exe = shutil.which("tshark")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("tshark is missing: make setup installs it (APT_PKGS)")
        pytest.skip("tshark not installed (make setup installs it)")
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def fields(path, *names, display="http", extra=()) -> list[list[str]]:
    args = ["-r", str(path), *extra, "-Y", display, "-T", "fields"]
    for n in names:
        args += ["-e", n]
    return [line.split("\t") for line in tshark(*args).splitlines()]


def test_replay_to_pcap_reads_back_in_tshark(tmp_path):
    out = tmp_path / "fx.pcapng"
    r = subprocess.run([PY, "-m", "hdrlog", "replay", str(FIX), "--pcap", str(out), "--show-secrets"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "pcap: " in r.stderr and "-d tcp.port==" in r.stderr
    reqs = fields(out, "http.request.method", "http.request.uri", "http.authorization", display="http.request")
    assert [x[:2] for x in reqs][:3] == [["GET", "/api/users?id=1&fields=name"], ["POST", "/api/orders"],
                                         ["GET", "/stream"]]
    assert len(reqs) == 14
    assert any(x[2] == "Bearer demo-token-9f8e7d6c5b4a" for x in reqs)  # --show-secrets: as sent
    codes = [x[0] for x in fields(out, "http.response.code", display="http.response")]
    assert codes.count("404") == 2 and len(codes) == 14
    # valid checksums, no TCP analysis complaints (sequence numbers follow the byte streams)
    bad = tshark("-r", str(out), "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                 "-Y", "tcp.checksum.status == 0 || ip.checksum.status == 0 || tcp.analysis.flags")
    assert bad.strip() == "", bad
    # every packet says which process it came from
    comments = fields(out, "frame.comment", display="tcp.len > 0")
    assert comments and all(c[0].startswith("pid=") and "comm=python" in c[0] and "fn=SSL_" in c[0]
                            for c in comments)
    syn = fields(out, "tcp.srcport", "tcp.dstport", display="tcp.flags.syn == 1 && tcp.flags.ack == 0")
    assert len(syn) == 2  # two client connections, each with a synthesized handshake


def test_pcap_without_show_secrets_is_refused(tmp_path):
    out = tmp_path / "x.pcapng"
    for cmd in (["replay", str(FIX)], ["attach", "--pid", "1"]):
        r = subprocess.run([PY, "-m", "hdrlog", *cmd, "--pcap", str(out)], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("hdrlog: error: --pcap writes the decrypted bytes") and "--show-secrets" in r.stderr
        assert not out.exists()


@pytest.mark.kernel
def test_attach_pcap_http1(procs, hdrlog, certs, tmp_path):
    cert, key = certs
    gw, port = start_gateway(procs, certs)
    pcap = tmp_path / "live.pcapng"
    h = hdrlog(gw.pid, extra=("--pcap", str(pcap), "--show-secrets"))
    conns = run_client(port, "pcap", requests=7, connections=2)
    h.stop()
    assert f"-d tcp.port=={port},http" in h.stderr()
    got = fields(pcap, "ip.src", "tcp.srcport", "tcp.dstport", "http.request.uri", "http.request.line", display="http.request", extra=("-d", f"tcp.port=={port},http"))
    assert len(got) == 7
    client_ports = {c["local_port"] for c in conns}
    for src, sport, dport, uri, lines in got:
        assert src == "127.0.0.1" and int(dport) == port and int(sport) in client_ports  # the real 4-tuple
        assert "X-Request-Id: pcap-" in lines
    assert {x[3] for x in got} >= {"/api/users?id=1&fields=name", "/api/orders", "/missing"}


NODE_H2 = r"""
const http2 = require('http2'), fs = require('fs');
const s = http2.createSecureServer({key: fs.readFileSync(process.argv[2]), cert: fs.readFileSync(process.argv[3])});
s.on('stream', (st, h) => { st.respond({':status': 200, 'content-type': 'text/plain', 'x-h2-test': 'yes'}); st.end('ok'); });
s.listen(0, '127.0.0.1', () => console.log('listening ' + s.address().port));
"""


@pytest.mark.kernel
def test_attach_pcap_http2_node(procs, hdrlog, certs, tmp_path):
    """node (OpenSSL linked in, memory BIO) serving HTTP/2; curl --http2 as the client: tshark decodes h2."""
    node, curl = shutil.which("node"), shutil.which("curl")
    if not node or not curl:
        pytest.skip("needs node and curl")
    cert, key = certs
    script = tmp_path / "h2.js"
    script.write_text(NODE_H2)
    srv, port = start_server(procs, [node, str(script), key, cert])
    pcap = tmp_path / "h2.pcapng"
    h = hdrlog(srv.pid, extra=("--pcap", str(pcap), "--show-secrets"))
    for i in range(3):
        r = subprocess.run([curl, "-sk", "--http2", "-H", f"x-req: h2-{i}", f"https://127.0.0.1:{port}/h2/{i}"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout == "ok", r.stderr
    h.stop()
    assert f"-d tcp.port=={port},http2" in h.stderr()
    got = fields(pcap, "http2.header.name", "http2.header.value", display="http2.type == 1",
                 extra=("-d", f"tcp.port=={port},http2"))
    text = "\n".join("\t".join(x) for x in got)
    for i in range(3):
        assert f"/h2/{i}" in text and f"h2-{i}" in text
    assert "x-h2-test" in text
