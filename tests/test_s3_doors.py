"""Only the S3 port of the embedded SeaweedFS serves anyone: every other port in its
`service.json` refuses a request without weed's own certificate, over HTTP, HTTPS and gRPC. The
same probes made with the state dir's certificate succeed, so the refusals are not an artefact."""

import http.client
import json
import ssl
import urllib.error
import urllib.request

import grpc
import pytest

from simsiam.services import start_s3, stop_s3
from simsiam.services.s3 import PORT_FLAGS
from simsiam.services.state import read_record

pytestmark = pytest.mark.integration
PATHS = ("/", "/dir/assign", "/dir/lookup?volumeId=1", "/buckets/data/", "/status", "/cluster/status", "/healthz",
         "/ui/index.html", "/vol/status")
GRPC = {"master": "/master_pb.Seaweed/GetMasterConfiguration", "filer": "/filer_pb.SeaweedFiler/GetFilerConfiguration",
        "volume": "/volume_server_pb.VolumeServer/VolumeServerStatus",
        "s3": "/messaging_pb.SeaweedS3IamCache/PutIdentity"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    state = tmp_path_factory.mktemp("doors") / "state"
    svc = start_s3(state)
    yield state, svc, dict(zip(PORT_FLAGS, read_record(state, "s3")["ports"]))
    stop_s3(state)


def _http_status(url: str, context: ssl.SSLContext | None = None) -> int | str:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, ssl.SSLError, OSError) as exc:
        return type(exc).__name__  # reset, empty reply, handshake refused: nothing served


def _tls(state, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(state / "s3" / "security" / "ca.crt"))
    ctx.check_hostname = False
    if with_cert:
        ctx.load_cert_chain(state / "s3" / "security" / "weed.crt", state / "s3" / "security" / "weed.key")
    return ctx


def _grpc_call(port: int, method: str, creds: grpc.ChannelCredentials | None) -> str:
    target = f"127.0.0.1:{port}"
    channel = (grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")])
               if creds else grpc.insecure_channel(target))
    with channel:
        try:
            channel.unary_unary(method)(b"", timeout=10)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name


def test_anonymous_requests_on_every_non_s3_port_are_refused(s3):
    state, _, ports = s3
    http_ports = {flag: port for flag, port in ports.items() if not flag.endswith("grpc") and flag != "s3.port"}
    for flag, port in http_ports.items():
        for path in PATHS:
            plain = _http_status(f"http://127.0.0.1:{port}{path}")
            no_cert = _http_status(f"https://127.0.0.1:{port}{path}", _tls(state, with_cert=False))
            for got in (plain, no_cert):
                assert not (isinstance(got, int) and got < 400), f"{flag} {path}: {got}"
    for flag, port in ports.items():
        if flag.endswith("grpc"):
            role = flag.split(".")[0]
            assert _grpc_call(port, GRPC[role], None) == "UNAVAILABLE", flag  # plaintext: no TLS, no service


def test_the_refusals_are_real_weeds_certificate_opens_the_doors(s3):
    state, _, ports = s3
    sec = state / "s3" / "security"
    assert _http_status(f"https://127.0.0.1:{ports['master.port']}/cluster/status", _tls(state, True)) == 200
    creds = grpc.ssl_channel_credentials((sec / "ca.crt").read_bytes(), (sec / "weed.key").read_bytes(),
                                         (sec / "weed.crt").read_bytes())
    assert _grpc_call(ports["master.port.grpc"], GRPC["master"], creds) == "OK"
    assert _grpc_call(ports["filer.port.grpc"], GRPC["filer"], creds) == "OK"
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in sec.iterdir()} == dict.fromkeys(
        ["ca.crt", "weed.crt", "weed.key", "security.toml"], "0o600")


def test_s3_port_serves_only_signed_requests(s3):
    state, svc, ports = s3
    from simsiam.storage.client import ObjectStore, S3Settings

    store = ObjectStore(S3Settings(endpoint_url=svc.endpoint_url, bucket="data", access_key=svc.access_key,
                                   secret_key=svc.secret_key))
    store.put_bytes("doors/probe.txt", b"hello")
    assert store.get_bytes("doors/probe.txt") == b"hello"
    assert _http_status(f"{svc.endpoint_url}/data/doors/probe.txt") == 403
    body = json.dumps({"hello": 1}).encode()
    req = urllib.request.Request(f"{svc.endpoint_url}/data/doors/anon.txt", data=body, method="PUT")
    try:
        urllib.request.urlopen(req, timeout=10)
        status = 200
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == 403
