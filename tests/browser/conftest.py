"""The dashboard in a real browser: Debian's chromium, headless, driven by Selenium
through Debian's chromedriver, against one ``jobservice serve`` subprocess (shared by
the module) with real registries: a source behind a fault proxy (which slows chosen
layers down, so a job is seen running) and a target that wants a password."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from acceptance.test_serve import TARGET_PASSWORD, TARGET_USER, Served
from faultproxy import FaultProxy
from registries import Blob, ImageBuilder, RegistryServer, htpasswd_auth, push_image

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
#: The demo's image files and its advisories (scripts/demo uses the same).
DEMO_ROOTFS = REPO / "scripts" / "demo-image" / "rootfs"
DEMO_OSV = REPO / "scripts" / "demo-osv"
#: Where the tests copy their screenshots when set (the README's are made so).
SCREENSHOTS_ENV = "JOBSERVICE_UI_SCREENSHOTS"

#: The browser tests' skip: without these, nothing to drive or serve.
needs_browser = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK))
    or shutil.which("docker-registry") is None
    or shutil.which("skopeo") is None,
    reason="needs chromium, chromium-driver, docker-registry and skopeo (scripts/test has them)",
)


def rootfs_layer(builder: ImageBuilder, root: Path) -> Blob:
    """A ``tar.gz`` layer of the files under ``root`` (as the demo's image has them)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                info = tarfile.TarInfo(str(path.relative_to(root)))
                data = path.read_bytes()
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    blob = builder.blob(gzip.compress(plain, mtime=0))
    return Blob(blob.path, blob.digest, blob.size, "sha256:" + hashlib.sha256(plain).hexdigest())


@dataclass
class Site:
    """The served dashboard and what stands behind it."""

    served: Served
    source: RegistryServer
    target: RegistryServer
    proxy: FaultProxy
    images: ImageBuilder
    screenshots: Path

    @property
    def ui(self) -> str:
        return f"{self.served.url}/ui"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("dashboard")
    source = RegistryServer(root / "source")
    target = RegistryServer(
        root / "target", auth=htpasswd_auth(root / "target", {TARGET_USER: TARGET_PASSWORD})
    )
    source.start()
    target.start()
    proxy = FaultProxy(source.host).start()
    served = Served(
        root / "service",
        registry_url=proxy.url,
        vuln_db_path=DEMO_OSV,
        max_job_workers=3,
    )
    served.root.mkdir()
    served.upgrade()
    images = ImageBuilder(root / "images")
    try:
        served.start()
        yield Site(served, source, target, proxy, images, root / "screenshots")
    finally:
        served.stop()
        proxy.stop()
        for server in (source, target):
            server.stop()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[object]:
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,800",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def push_demo_image(site: Site, repository: str, tag: str) -> str:
    """Pushes the demo's image (its Debian packages) to the source; returns its digest."""
    layer = rootfs_layer(site.images, DEMO_ROOTFS)
    image = site.images.docker_image([layer])
    return push_image(site.images, image, site.source.host, repository, tag)
