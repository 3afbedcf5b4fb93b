"""Real registries and test images for integration tests.

- :class:`RegistryServer` runs Debian's ``docker-registry`` (distribution 2.8) on a free
  loopback port with its own storage; anonymous, htpasswd or token auth; restartable
  on the same port and storage.
- :class:`TokenServer` is a Basic-auth protected token server in this process that
  signs RS256 JWTs with an ``x5c`` certificate the registry trusts.
- :class:`ImageBuilder` writes layers, configs and manifests (Docker schema2, OCI,
  OCI index, Docker manifest list) to disk; :func:`push_image` pushes one with
  ``skopeo copy --preserve-digests`` from skopeo's ``dir:`` layout, so the stored bytes
  are exactly the builder's; :func:`skopeo_digest` reads them back.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import bcrypt
import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "MEDIA_DOCKER_CONFIG",
    "MEDIA_DOCKER_LAYER",
    "MEDIA_DOCKER_LIST",
    "MEDIA_DOCKER_MANIFEST",
    "MEDIA_OCI_CONFIG",
    "MEDIA_OCI_INDEX",
    "MEDIA_OCI_LAYER",
    "MEDIA_OCI_MANIFEST",
    "AuthRegistry",
    "Blob",
    "Image",
    "ImageBuilder",
    "RegistryPair",
    "RegistryServer",
    "TokenRegistry",
    "TokenServer",
    "TokenSigner",
    "free_port",
    "push_image",
    "skopeo_digest",
    "wait_until",
]

MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

#: Seconds a registry may take to answer ``GET /v2/`` after its start.
REGISTRY_START_TIMEOUT_S = 10.0
#: Seconds a stopped registry may take to exit before it is killed.
REGISTRY_STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.01
) -> None:
    """Poll ``condition`` until it is true; ``TimeoutError`` naming ``what`` after
    ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s} s")
        time.sleep(interval_s)


# -- registries ------------------------------------------------------------------


class RegistryServer:
    """One ``docker-registry serve`` process on ``127.0.0.1:port`` with storage in
    ``root/storage``; ``auth`` is the ``auth:`` section of its config (``None`` for
    anonymous); ``notifications`` the ``notifications:`` section (endpoints the registry
    posts its events to). :meth:`stop` and :meth:`start` again keep port and storage."""

    def __init__(
        self,
        root: Path,
        *,
        auth: dict[str, Any] | None = None,
        notifications: dict[str, Any] | None = None,
    ) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
        self.binary = binary
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage = root / "storage"
        self.port = free_port()
        self.auth = auth
        self.notifications = notifications
        self.config_path = root / "config.yml"
        self.log_path = root / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as skopeo's ``docker://`` references want it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {"addr": self.host, "secret": f"test-secret-{self.port}"},
        }
        if self.auth:
            cfg["auth"] = self.auth
        if self.notifications:
            cfg["notifications"] = self.notifications
        return cfg

    def start(self) -> None:
        """Start the process and wait until ``GET /v2/`` answers."""
        if self.running:
            return
        # JSON is YAML: the registry reads this file as its config.
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [self.binary, "serve", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def answers() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_tail()}")
            try:
                return httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401)
            except httpx.TransportError:
                return False

        try:
            wait_until(answers, timeout_s=REGISTRY_START_TIMEOUT_S, what=f"registry {self.url}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); storage stays."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(REGISTRY_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(REGISTRY_STOP_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (to corrupt them in tests)."""
        algorithm, hexdigest = digest.split(":", 1)
        return (
            self.storage
            / "docker/registry/v2/blobs"
            / algorithm
            / hexdigest[:2]
            / hexdigest
            / "data"
        )

    def __enter__(self) -> RegistryServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def htpasswd_auth(root: Path, users: dict[str, str]) -> dict[str, Any]:
    """The ``auth:`` section for htpasswd auth of ``users`` (bcrypt, the only kind
    distribution accepts), writing the file under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "htpasswd"
    path.write_text(
        "".join(
            f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
            for user, pw in users.items()
        )
    )
    return {"htpasswd": {"realm": "jobservice-test", "path": str(path)}}


# -- token server ----------------------------------------------------------------


@dataclass(frozen=True)
class TokenSigner:
    """An RSA key and the self-signed certificate that vouches for it."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def generate(cls) -> TokenSigner:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jobservice test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def x5c(self) -> list[str]:
        return [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]


@dataclass
class TokenRequest:
    """One request the token server answered (or refused)."""

    account: str | None
    service: str | None
    scopes: list[str]
    status: int


class TokenServer:
    """A registry token server (Docker token auth) on a free loopback port, in a thread.

    ``users`` maps a user to ``(password, actions)``: the actions it may get on any
    repository (e.g. ``("pull",)`` or ``("pull", "push", "delete")``). Requests need
    Basic auth of a known user; a refused one answers 401. ``requests`` records every
    request; ``expires_in`` is the lifetime put into tokens and answers, in seconds.
    """

    def __init__(
        self,
        signer: TokenSigner,
        users: dict[str, tuple[str, Sequence[str]]],
        *,
        issuer: str = "jobservice-test-issuer",
        expires_in: int = 300,
        token_field: str = "token",
    ) -> None:
        self.signer = signer
        self.users = users
        self.issuer = issuer
        self.expires_in = expires_in
        self.token_field = token_field
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="TokenServerThread",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def registry_auth(self, root: Path, service: str) -> dict[str, Any]:
        """The registry's ``auth:`` section trusting this server (cert written to ``root``)."""
        root.mkdir(parents=True, exist_ok=True)
        bundle = root / "token-signer.pem"
        bundle.write_bytes(self.signer.cert_pem())
        return {
            "token": {
                "realm": self.realm,
                "service": service,
                "issuer": self.issuer,
                "rootcertbundle": str(bundle),
            }
        }

    def issue(self, account: str, service: str, scopes: Sequence[str]) -> str:
        """A signed token granting ``account`` what it may have of ``scopes``."""
        allowed = set(self.users[account][1])
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            if kind == "registry":
                granted = ["*"] if "catalog" in allowed or "*" in allowed else []
            else:
                granted = [a for a in actions if a in allowed or "*" in allowed]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": account,
            "aud": service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": base64.urlsafe_b64encode(os.urandom(12)).decode(),
            "access": access,
        }
        return jwt.encode(
            claims, self.signer.key, algorithm="RS256", headers={"x5c": self.signer.x5c()}
        )

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                scopes = [s for value in query.get("scope", []) for s in value.split()]
                service = query.get("service", [None])[0]
                account = server._check(self.headers.get("Authorization"))
                status = 200 if url.path == "/token" and account is not None else 401
                with server._lock:
                    server.requests.append(TokenRequest(account, service, scopes, status))
                if status != 200 or account is None:
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    return
                token = server.issue(account, service or "", scopes)
                self._answer(200, {server.token_field: token, "expires_in": server.expires_in})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="token"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _check(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            return None
        known = self.users.get(user)
        return user if known is not None and known[0] == password else None


# -- fixtures' values -----------------------------------------------------------


@dataclass
class RegistryPair:
    source: RegistryServer
    target: RegistryServer


@dataclass
class AuthRegistry:
    """A registry with auth and the credentials it accepts (``username`` may push,
    ``reader`` may only pull)."""

    server: RegistryServer
    username: str
    password: str
    reader: str
    reader_password: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def creds(self) -> str:
        return f"{self.username}:{self.password}"


@dataclass
class TokenRegistry(AuthRegistry):
    tokens: TokenServer


# -- images ----------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """A blob file: ``digest`` and ``size`` of the bytes in ``path``; ``diff_id`` is the
    digest of the uncompressed tar for a layer."""

    path: Path
    digest: str
    size: int
    diff_id: str | None = None


@dataclass(frozen=True)
class Image:
    """A manifest (image or index) written by :class:`ImageBuilder`.

    ``blobs`` are the blobs this manifest references directly; ``children`` the child
    images of an index or list.
    """

    media_type: str
    manifest: bytes = field(repr=False)
    digest: str
    blobs: tuple[Blob, ...] = ()
    children: tuple[Image, ...] = ()

    @property
    def size(self) -> int:
        return len(self.manifest)

    def all_blobs(self) -> list[Blob]:
        """Blobs of this image and of its children, without repeats."""
        seen: dict[str, Blob] = {b.digest: b for b in self.blobs}
        for child in self.children:
            for blob in child.all_blobs():
                seen.setdefault(blob.digest, blob)
        return list(seen.values())


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


class _RandomReader:
    """An endless file of pseudo-random bytes (seeded: fast, and reproducible)."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def read(self, n: int = -1) -> bytes:
        return self._random.randbytes(max(n, 0))


class ImageBuilder:
    """Writes blobs and manifests under ``root``; images built by one builder may
    share layers (pass the same :class:`Blob` twice)."""

    def __init__(self, root: Path, *, seed: int | None = None) -> None:
        self.root = root
        self.blob_dir = root / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self._random = random.Random(seed)

    def blob(self, data: bytes) -> Blob:
        digest = hashlib.sha256(data).hexdigest()
        path = self.blob_dir / digest
        path.write_bytes(data)
        return Blob(path, f"sha256:{digest}", len(data))

    def random_layer(self, size: int, *, compresslevel: int = 1) -> Blob:
        """A ``tar.gz`` layer of one file of ``size`` random bytes, streamed to disk
        (never whole in memory)."""
        tmp = self.blob_dir / f"tmp-{self._random.getrandbits(64):016x}"
        with tmp.open("wb") as raw:
            compressed = _HashingWriter(raw)
            with gzip.GzipFile(
                fileobj=compressed,
                mode="wb",
                compresslevel=compresslevel,
                mtime=0,
            ) as gz:
                plain = _HashingWriter(gz)
                with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    info = tarfile.TarInfo(f"data-{self._random.getrandbits(32):08x}.bin")
                    info.size = size
                    info.mtime = 0
                    tar.addfile(info, _RandomReader(self._random.getrandbits(64)))
        digest = f"sha256:{compressed.hash.hexdigest()}"
        path = self.blob_dir / digest.split(":", 1)[1]
        tmp.rename(path)
        return Blob(path, digest, compressed.size, f"sha256:{plain.hash.hexdigest()}")

    def _config(self, layers: Sequence[Blob], arch: str) -> Blob:
        doc = {
            "architecture": arch,
            "os": "linux",
            "created": "2018-01-01T00:00:00Z",
            "config": {"Labels": {"built-by": f"jobservice-tests-{self._random.getrandbits(32)}"}},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        }
        return self.blob(json.dumps(doc, indent=2).encode())

    def _image(
        self,
        layers: Sequence[Blob | int],
        *,
        manifest_type: str,
        config_type: str,
        layer_type: str,
        arch: str,
    ) -> Image:
        blobs = [lay if isinstance(lay, Blob) else self.random_layer(lay) for lay in layers]
        config = self._config(blobs, arch)
        doc = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config.digest, "size": config.size},
            "layers": [
                {"mediaType": layer_type, "digest": b.digest, "size": b.size} for b in blobs
            ],
        }
        # Indented, as real tools write them: proves that bytes, not JSON, are copied.
        manifest = json.dumps(doc, indent=3).encode()
        return Image(
            manifest_type,
            manifest,
            "sha256:" + hashlib.sha256(manifest).hexdigest(),
            (config, *blobs),
        )

    def docker_image(self, layers: Sequence[Blob | int] = (1024,), *, arch: str = "amd64") -> Image:
        """A Docker schema2 image; ``layers`` are blobs or sizes of new random layers."""
        return self._image(
            layers,
            manifest_type=MEDIA_DOCKER_MANIFEST,
            config_type=MEDIA_DOCKER_CONFIG,
            layer_type=MEDIA_DOCKER_LAYER,
            arch=arch,
        )

    def oci_image(self, layers: Sequence[Blob | int] = (1024,), *, arch: str = "amd64") -> Image:
        """An OCI image; ``layers`` are blobs or sizes of new random layers."""
        return self._image(
            layers,
            manifest_type=MEDIA_OCI_MANIFEST,
            config_type=MEDIA_OCI_CONFIG,
            layer_type=MEDIA_OCI_LAYER,
            arch=arch,
        )

    def _index(self, media_type: str, images: Sequence[Image]) -> Image:
        doc = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [
                {
                    "mediaType": img.media_type,
                    "digest": img.digest,
                    "size": img.size,
                    "platform": {"architecture": _arch(img), "os": "linux"},
                }
                for img in images
            ],
        }
        manifest = json.dumps(doc, indent=2).encode()
        return Image(
            media_type,
            manifest,
            "sha256:" + hashlib.sha256(manifest).hexdigest(),
            (),
            tuple(images),
        )

    def oci_index(self, archs: Sequence[str] = ("amd64", "arm64"), layer_size: int = 1024) -> Image:
        """A multi-platform OCI index of one OCI image per architecture."""
        return self._index(MEDIA_OCI_INDEX, [self.oci_image((layer_size,), arch=a) for a in archs])

    def docker_manifest_list(
        self, archs: Sequence[str] = ("amd64", "arm64"), layer_size: int = 1024
    ) -> Image:
        """A Docker manifest list of one schema2 image per architecture."""
        return self._index(
            MEDIA_DOCKER_LIST, [self.docker_image((layer_size,), arch=a) for a in archs]
        )

    def dir_layout(self, image: Image) -> Path:
        """skopeo's ``dir:`` layout of ``image`` (blobs hard-linked from the store)."""
        path = self.root / f"dir-{image.digest.split(':', 1)[1][:16]}"
        if path.exists():
            return path
        tmp = self.root / f"tmp-dir-{self._random.getrandbits(64):016x}"
        tmp.mkdir()
        (tmp / "version").write_text("Directory Transport Version: 1.1\n")
        (tmp / "manifest.json").write_bytes(image.manifest)
        for child in image.children:
            (tmp / f"{child.digest.split(':', 1)[1]}.manifest.json").write_bytes(child.manifest)
        for blob in image.all_blobs():
            target = tmp / blob.digest.split(":", 1)[1]
            try:
                os.link(blob.path, target)
            except OSError:
                shutil.copyfile(blob.path, target)
        tmp.rename(path)
        return path


def _arch(image: Image) -> str:
    config = image.blobs[0] if image.blobs else None
    if config is None:
        return "amd64"
    return str(json.loads(config.path.read_bytes()).get("architecture", "amd64"))


def _skopeo(*args: str, timeout_s: float = 300) -> bytes:
    result = subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"skopeo {' '.join(a for a in args if 'creds=' not in a)} failed: "
            + result.stderr.decode(errors="replace").strip()
        )
    return result.stdout


def push_image(
    builder: ImageBuilder,
    image: Image,
    host: str,
    repository: str,
    tag: str,
    *,
    creds: str | None = None,
) -> str:
    """Push ``image`` (with its children) to ``host/repository:tag`` with skopeo, bytes
    unchanged (``--preserve-digests``); returns the manifest digest. ``creds`` is
    ``user:password``."""
    layout = builder.dir_layout(image)
    args = ["copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false"]
    if creds:
        args.append(f"--dest-creds={creds}")
    _skopeo(*args, f"dir:{layout}", f"docker://{host}/{repository}:{tag}")
    return image.digest


def skopeo_digest(host: str, repository: str, tag: str, *, creds: str | None = None) -> str:
    """sha256 of the manifest bytes ``skopeo inspect --raw`` reads for ``repository:tag``:
    what the registry stores, byte for byte. ``host`` may be a URL."""
    host = host.split("://", 1)[-1]
    args = ["inspect", "--raw", "--tls-verify=false"]
    if creds:
        args.append(f"--creds={creds}")
    raw = _skopeo(*args, f"docker://{host}/{repository}:{tag}")
    return "sha256:" + hashlib.sha256(raw).hexdigest()
