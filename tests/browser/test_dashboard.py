"""The dashboard as an operator uses it, in Debian's chromium (see conftest.py): log in,
replicate from a policy page and watch the row change live, stop a 200 MB replication
from its page, create a target and a policy through the forms, read a scan's findings;
and, over plain HTTP, what a browser cannot show: CSRF refusals, redirects to the login
page, no secret in any page."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
from acceptance.test_serve import SECRET, TARGET_PASSWORD, TARGET_USER
from conftest import SCREENSHOTS_ENV, Site, needs_browser, push_demo_image
from faultproxy import Fault
from registries import push_image
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = needs_browser

#: Seconds a page may take to show what the test waits for.
SHOWN_S = 30.0
#: The demo image's findings with the demo's advisories (scripts/demo-osv).
DEMO_FINDINGS = {
    "DEBIAN-CVE-2022-1292",
    "DEBIAN-CVE-2022-2068",
    "DEBIAN-CVE-2022-4304",
    "DEBIAN-CVE-2023-0286",
    "DEBIAN-CVE-2022-37434",
}


#: The status shown in the jobs table for a repository (its first row), or "".
STATUS_OF = """
for (const tr of document.querySelectorAll("#jobs tbody tr")) {
  const cells = tr.querySelectorAll("td");
  if (cells.length > 2 && cells[2].textContent.trim() === arguments[0]) {
    return cells[1].querySelector("[data-status]").dataset.status;
  }
}
return "";
"""


def shown(driver: WebDriver, css: str, text: str, timeout: float = SHOWN_S) -> Any:
    """Waits until the element at ``css`` holds ``text``; returns the element."""

    def holds(d: WebDriver) -> Any:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and text in found[0].text else False

    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
    )
    return wait.until(holds, f"{css!r} never held {text!r}")


def log_in(driver: WebDriver, site: Site, secret: str = SECRET, *, here: bool = False) -> None:
    """Fills the login form (``here``: the one on the current page) with ``secret``."""
    if not here:
        driver.get(f"{site.ui}/login")
    field = driver.find_element(By.ID, "secret")
    field.clear()
    field.send_keys(secret)
    field.submit()


def ensure_logged_in(driver: WebDriver, site: Site) -> None:
    driver.get(f"{site.ui}/")
    if "/ui/login" in driver.current_url:
        log_in(driver, site)
        shown(driver, "h1", "Overview")


def screenshot(driver: WebDriver, site: Site, name: str) -> None:
    """Saves the page at 1280x800 as ``name``.png (copied to $JOBSERVICE_UI_SCREENSHOTS)."""
    driver.set_window_size(1280, 800)
    site.screenshots.mkdir(exist_ok=True)
    path = site.screenshots / f"{name}.png"
    assert driver.save_screenshot(str(path))
    wanted = os.environ.get(SCREENSHOTS_ENV)
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(wanted) / path.name)


def policy_over_http(site: Site, project: str, name: str) -> int:
    http = site.served.http
    found = {p["name"]: p["id"] for p in http.get("/api/projects").json()}
    project_id = (
        found.get(project) or http.post("/api/projects", json={"name": project}).json()["id"]
    )
    targets = {t["name"]: t["id"] for t in http.get("/api/targets").json()}
    target_id = (
        targets.get("dr")
        or http.post(
            "/api/targets",
            json={
                "name": "dr",
                "url": site.target.url,
                "username": TARGET_USER,
                "password": TARGET_PASSWORD,
            },
        ).json()["id"]
    )
    answer = http.post(
        "/api/policies/replication",
        json={"name": name, "project_id": project_id, "target_id": target_id},
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


# -- in the browser ---------------------------------------------------------------------


def test_login_refuses_a_wrong_secret_then_the_right_one_opens_the_overview(
    site: Site, browser: WebDriver
) -> None:
    browser.delete_all_cookies()
    browser.get(f"{site.ui}/jobs?status=running")
    assert "/ui/login" in browser.current_url  # no cookie: to the login page
    log_in(browser, site, "not-the-secret", here=True)
    error = shown(browser, "#login-error", "wrong")
    assert error.text == "That secret is wrong."
    assert SECRET not in browser.page_source
    log_in(browser, site, here=True)
    shown(browser, "h1", "Jobs")  # back where it was going
    assert browser.current_url.endswith("/ui/jobs?status=running")
    cookie = browser.get_cookie("secret")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert SECRET not in browser.page_source
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    shown(browser, ".notice", "logged out")
    assert browser.get_cookie("secret") is None


def test_replicate_now_on_a_policy_page_and_the_rows_go_running_then_finished_live(
    site: Site, browser: WebDriver
) -> None:
    push_demo_image(site, "library/app", "v1")
    slow = site.images.random_layer(3_000_000)
    push_image(
        site.images, site.images.docker_image([slow]), site.source.host, "library/slow", "v1"
    )
    # The slow layer comes at 1 MB/s: its job is running for about three seconds.
    site.proxy.add(Fault.trickle(1_000_000, method="GET", path=slow.digest))
    policy = policy_over_http(site, "library", "library-to-dr")
    ensure_logged_in(browser, site)
    browser.get(f"{site.ui}/policies/{policy}")
    browser.find_element(By.ID, "replicate").click()
    shown(browser, ".notice", "Replication queued")
    assert f"policy={policy}" in browser.current_url
    browser.execute_script("window.notReloaded = true")
    shown(browser, "#jobs", "library/slow")

    def status_of(repository: str) -> str:
        # In one script: the table is replaced every second under the test's feet.
        return str(browser.execute_script(STATUS_OF, repository))

    wait = WebDriverWait(browser, 60, poll_frequency=0.05)
    wait.until(lambda _: status_of("library/slow") == "running", "never shown running")
    wait.until(lambda _: status_of("library/slow") == "finished", "never shown finished")
    wait.until(lambda _: status_of("library/app") == "finished", "library/app never finished")
    assert browser.execute_script("return window.notReloaded") is True
    assert site.proxy.fired  # the slow layer did come slowly


def test_stop_a_running_200_mb_replication_from_its_page_shows_stopped_within_2_s(
    site: Site, browser: WebDriver
) -> None:
    big = site.images.random_layer(200_000_000)
    push_image(site.images, site.images.docker_image([big]), site.source.host, "big/blob", "v1")
    site.proxy.add(Fault.trickle(20_000_000, method="GET", path=big.digest))
    policy = policy_over_http(site, "big", "big-to-dr")
    answer = site.served.http.post(
        "/api/jobs/replication", json={"policy_id": policy, "repository": "big/blob"}
    )
    (job_id,) = answer.json()["job_ids"]
    ensure_logged_in(browser, site)
    browser.get(f"{site.ui}/jobs/replication/{job_id}")
    shown(browser, "#job-status", "running")
    shown(browser, "#log", "not on the target")  # copying the blob now, the log says
    screenshot(browser, site, "job")
    browser.find_element(By.ID, "stop").click()
    clicked = time.monotonic()
    shown(browser, "#job-status", "stopped", timeout=10)
    assert time.monotonic() - clicked < 2.0
    shown(browser, ".notice", "The job was running when asked")
    shown(browser, "#timeline", "stopped")


def test_a_target_and_a_policy_made_through_the_forms_and_a_bad_url_names_its_field(
    site: Site, browser: WebDriver
) -> None:
    ensure_logged_in(browser, site)
    browser.get(f"{site.ui}/projects")
    browser.find_element(By.ID, "name").send_keys("forms")
    browser.find_element(By.CSS_SELECTOR, "#project-form button").click()
    shown(browser, "#projects", "forms")

    browser.get(f"{site.ui}/targets")
    browser.find_element(By.ID, "name").send_keys("forms-dr")
    browser.find_element(By.ID, "url").send_keys("ftp://registry.example")
    browser.find_element(By.ID, "username").send_keys(TARGET_USER)
    browser.find_element(By.ID, "password").send_keys(TARGET_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#target-form button").click()
    error = shown(browser, "#error-url", "url:")
    assert "http://" in error.text
    assert browser.find_element(By.ID, "name").get_attribute("value") == "forms-dr"
    assert browser.find_element(By.ID, "password").get_attribute("value") == ""
    assert TARGET_PASSWORD not in browser.page_source
    url = browser.find_element(By.ID, "url")
    url.clear()
    url.send_keys(site.target.url)
    browser.find_element(By.ID, "password").send_keys(TARGET_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#target-form button").click()
    shown(browser, "#targets", "forms-dr")
    assert "set" in browser.find_element(By.CSS_SELECTOR, "#targets").text
    assert TARGET_PASSWORD not in browser.page_source

    browser.get(f"{site.ui}/policies")
    browser.find_element(By.ID, "name").send_keys("forms-policy")
    browser.find_element(By.CSS_SELECTOR, "#policy-form button").click()
    shown(browser, "#error-project_id", "project_id")
    Select(browser.find_element(By.ID, "project_id")).select_by_visible_text("forms")
    Select(browser.find_element(By.ID, "target_id")).select_by_visible_text("forms-dr")
    browser.find_element(By.CSS_SELECTOR, "#policy-form button").click()
    shown(browser, "h1", "Policy forms-policy")
    shown(browser, ".notice", "Added")
    policies = site.served.http.get("/api/policies/replication").json()
    made = [p for p in policies if p["name"] == "forms-policy"]
    assert made and made[0]["enabled"] is True
    targets = site.served.http.get("/api/targets").json()
    assert [t for t in targets if t["name"] == "forms-dr" and t["has_password"]]


def test_a_scan_of_the_demo_image_shows_its_known_vulnerabilities(
    site: Site, browser: WebDriver
) -> None:
    push_demo_image(site, "demo/hello", "v1")
    ensure_logged_in(browser, site)
    browser.get(f"{site.ui}/scans")
    browser.find_element(By.NAME, "repository").send_keys("demo/hello")
    browser.find_element(By.NAME, "tag").send_keys("v1")
    browser.find_element(By.CSS_SELECTOR, "#scan-form button").click()
    shown(browser, "#job-status", "finished")
    shown(browser, "#progress", "1 of 1 layer(s) scanned")
    browser.find_element(By.LINK_TEXT, "the image's scan").click()
    table = shown(browser, "#findings", "DEBIAN-CVE-2022-37434")
    ids = {a.text for a in table.find_elements(By.CSS_SELECTOR, "tbody td:first-child a")}
    assert ids == DEMO_FINDINGS  # CVE-2022-0778 is fixed in the installed version
    first = browser.find_element(By.CSS_SELECTOR, "#findings tbody tr td:nth-child(5)")
    assert first.text == "HIGH"
    counts = browser.find_element(By.ID, "severity-counts").text
    assert "HIGH 4" in counts and "MEDIUM 1" in counts
    link = browser.find_element(By.LINK_TEXT, "DEBIAN-CVE-2022-37434").get_attribute("href")
    assert link == "https://security-tracker.debian.org/tracker/CVE-2022-37434"
    screenshot(browser, site, "scan")
    browser.find_element(By.LINK_TEXT, "package").click()
    shown(browser, "#findings thead", "package ▾")
    packages = [
        td.text for td in browser.find_elements(By.CSS_SELECTOR, "#findings tbody td:nth-child(2)")
    ]
    assert packages == sorted(packages) and packages[-1] == "zlib"


def test_the_overview_shows_the_node_its_pools_and_the_last_failures_at_both_widths(
    site: Site, browser: WebDriver
) -> None:
    # A failure to show: a target that refuses the password.
    http = site.served.http
    project = {p["name"]: p["id"] for p in http.get("/api/projects").json()}["library"]
    target = http.post(
        "/api/targets",
        json={"name": "refusing", "url": site.target.url, "username": "x", "password": "wrong"},
    ).json()["id"]
    policy = http.post(
        "/api/policies/replication",
        json={"name": "to-refusing", "project_id": project, "target_id": target},
    ).json()["id"]
    answer = http.post(
        "/api/jobs/replication", json={"policy_id": policy, "repository": "library/app"}
    )
    (failed,) = answer.json()["job_ids"]
    site.served.wait_status("replication", failed, "error")
    ensure_logged_in(browser, site)
    browser.get(f"{site.ui}/")
    shown(browser, "#nodes", "(this one)")
    shown(browser, "#pools", "replication")
    shown(browser, "#ended-summary", "ended in the last hour")
    shown(browser, "#failures", f"replication #{failed}")
    finished = browser.find_element(By.CSS_SELECTOR, "#status-counts").text
    assert re.search(r"finished \d+", finished)
    screenshot(browser, site, "overview")
    browser.set_window_size(390, 844)  # a phone
    for page in ("/", "/jobs", "/policies"):
        browser.get(f"{site.ui}{page}")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{page} is wider than a phone by {overflow} px"
    browser.set_window_size(1280, 800)


# -- over plain HTTP ----------------------------------------------------------------------


def test_posts_without_the_csrf_token_are_refused_pages_want_the_cookie_no_page_holds_a_secret(
    site: Site,
) -> None:
    anonymous = httpx.Client(base_url=site.served.url, timeout=10)
    for path in ("/ui/", "/ui/jobs", "/ui/policies", "/ui/scans"):
        answer = anonymous.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")
    assert anonymous.get("/ui/jobs/rows", headers={"X-Fragment": "1"}).status_code == 401
    page = anonymous.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    # The right secret without the token (or with another browser's): refused.
    assert anonymous.post("/ui/login", data={"secret": SECRET}).status_code == 403
    other = httpx.Client(base_url=site.served.url, timeout=10)
    assert other.post("/ui/login", data={"secret": SECRET, "csrf": token[1]}).status_code == 403
    assert "secret" not in other.cookies

    http = httpx.Client(base_url=site.served.url, cookies={"secret": SECRET}, timeout=10)
    before = http.get("/api/projects").json()
    answer = http.post("/ui/projects", data={"name": "no-token"})
    assert answer.status_code == 403 and "CSRF" in answer.text
    assert http.get("/api/projects").json() == before
    pages = ["/ui/", "/ui/overview/live", "/ui/jobs", "/ui/jobs/rows", "/ui/scans"]
    pages += ["/ui/projects", "/ui/targets", "/ui/policies", "/ui/login"]
    pages += [f"/ui/targets/{t['id']}" for t in http.get("/api/targets").json()]
    pages += [f"/ui/policies/{p['id']}" for p in http.get("/api/policies/replication").json()]
    jobs = http.get("/ui/jobs").text
    pages += sorted(set(re.findall(r'href="(/ui/jobs/[a-z]+/\d+)"', jobs)))
    for path in pages:
        answer = http.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
        assert SECRET not in answer.text and TARGET_PASSWORD not in answer.text, path
        assert "default-src 'self'" in answer.headers["content-security-policy"]
