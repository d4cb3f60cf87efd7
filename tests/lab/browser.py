"""A real browser on a lab host: Debian's Chromium, driven by Debian's chromedriver through
python3-selenium, all running *inside* the host's namespaces (the browser's DevTools port is
on that host's loopback, so the driver must be there too).

The test process talks to it over a pipe, one JSON command per line:

    b = Browser.start(lab.lan2, logs, spki="...")
    b.get("https://198.18.0.10:8443/")
    b.fill({"code": "ABCD-EFGH"}); b.submit()
    b.text()            # what a person reads on the page
    b.shot(path)        # a PNG to look at
    b.close()

Run as a script (by Browser.start) it is the other end of that pipe.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

COMMAND_TIMEOUT_S = 90


class Browser:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    @classmethod
    def start(cls, host: Any, profile: Path, spki: str, log: Path) -> Browser:
        """Chromium on `host`, trusting exactly the certificate whose SubjectPublicKeyInfo
        has this SHA-256 (base64): a person clicks through the warning once for their box;
        the test accepts no other certificate."""
        profile.mkdir(parents=True, exist_ok=True)
        argv = host.argv(["timeout", "1800", "/usr/bin/python3", str(Path(__file__).resolve()),
                          str(profile), spki])
        errlog = open(log, "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # noqa: S603
                                stderr=errlog, text=True, start_new_session=True)
        errlog.close()
        host.lab.children.append(proc)
        b = cls(proc)
        b.call("ping")
        return b

    def call(self, do: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"do": do, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the browser driver exited ({self.proc.poll()}); see its log")
        got = json.loads(line)
        if "error" in got:
            raise RuntimeError(f"browser {do}: {got['error']}")
        return got.get("result")

    def get(self, url: str) -> None:
        self.call("get", url=url)

    def fill(self, fields: dict[str, str], within: str = "main form") -> None:
        """Type into the named fields of the first form matching `within` (CSS)."""
        self.call("fill", fields=fields, within=within)

    def submit(self, css: str = "main form button[type=submit]") -> None:
        """Click a button (the first form's by default) and wait for the next page."""
        self.call("click", css=css)

    def text(self) -> str:
        return str(self.call("text"))

    def url(self) -> str:
        return str(self.call("url"))

    def wait_text(self, text: str, timeout: float = 60) -> str:
        return str(self.call("wait_text", text=text, timeout=timeout))

    def shot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.call("shot", path=str(path))

    def close(self) -> None:
        try:
            self.call("quit")
        finally:
            self.proc.wait(timeout=30)


# --- the other end: runs on the lab host --------------------------------------------------------
def serve(profile: str, spki: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--user-data-dir={profile}", f"--ignore-certificate-errors-spki-list={spki}",
                "--window-size=1100,900", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--disable-domain-reliability",
                "--metrics-recording-only", "--no-pings", "--dns-prefetch-disable"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    driver.set_page_load_timeout(COMMAND_TIMEOUT_S)
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            try:
                result = _do(driver, By, WebDriverWait, cmd)
                out: dict[str, Any] = {"result": result}
            except Exception as e:  # noqa: BLE001 - reported to the test, which fails
                out = {"error": f"{type(e).__name__}: {e}"}
            print(json.dumps(out), flush=True)
            if cmd["do"] == "quit":
                break
    finally:
        driver.quit()


def _do(driver: Any, By: Any, Wait: Any, cmd: dict[str, Any]) -> Any:
    do = cmd["do"]
    if do in ("ping", "quit"):
        return do
    if do == "get":
        driver.get(cmd["url"])
        return driver.current_url
    if do == "fill":
        form = driver.find_element(By.CSS_SELECTOR, cmd["within"])
        for name, value in cmd["fields"].items():
            el = form.find_element(By.NAME, name)
            if el.get_attribute("type") != "file":  # a file input takes a path, and no clear()
                el.clear()
            el.send_keys(value)
        return None
    if do == "click":
        old = driver.find_element(By.TAG_NAME, "html")
        driver.find_element(By.CSS_SELECTOR, cmd["css"]).click()
        Wait(driver, COMMAND_TIMEOUT_S).until(lambda d: _stale(old))
        return driver.current_url
    if do == "text":
        return driver.find_element(By.TAG_NAME, "body").text
    if do == "url":
        return driver.current_url
    if do == "js":  # a question about the page (run by the driver, not by the page's CSP)
        return driver.execute_script(cmd["code"])
    if do == "wait_text":
        deadline = time.monotonic() + float(cmd["timeout"])
        while time.monotonic() < deadline:
            try:
                body = driver.find_element(By.TAG_NAME, "body").text
                if cmd["text"] in body:
                    return body
            except Exception:  # noqa: BLE001, S110 - the page is reloading; look again
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{cmd['text']!r} not on the page after {cmd['timeout']} s: "
                           f"{driver.find_element(By.TAG_NAME, 'body').text[-3000:]}")
    if do == "shot":
        # The whole page, not the window: a long status page is judged as a whole.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1100, max(600, min(int(height) + 40, 4000)))
        driver.save_screenshot(cmd["path"])
        driver.set_window_size(1100, 900)
        return cmd["path"]
    raise ValueError(f"unknown command {do!r}")


def _stale(el: Any) -> bool:
    try:
        el.is_enabled()
    except Exception:  # noqa: BLE001 - StaleElementReferenceException: a new page
        return True
    return False


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
