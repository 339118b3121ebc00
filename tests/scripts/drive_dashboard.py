#!/usr/bin/env python3
"""Drives the dashboard in headless Chromium over the DevTools protocol (on a
pipe: no port, no extra package), as a person would: loads the page, enters
the key, finds the job in the list, opens it, presses Cancel, and waits until
the page shows it cancelled. Saves a screenshot after each step.

Then, with an operator key, the operator's side: queues, the throughput
chart (one column per minute of the hour) and the workers, without an error.

Usage: drive_dashboard.py CHROMIUM URL KEY JOB_ID OUT_DIR OPERATOR_KEY
Prints one JSON line ({"ok": true, "screenshots": [...]}, or what failed);
exits 0 only if every step was seen on the page.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, chromium):
        # Chromium reads commands on fd 3 and writes answers on fd 4.
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        self.profile = tempfile.mkdtemp(prefix="longhaul-chromium-")

        def fds():
            # Copies first: either end may itself be fd 3 or 4. The fds kept
            # open in the child are 3 and 4 (pass_fds), closed after this.
            reads, writes = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(reads, 3)
            os.dup2(writes, 4)

        self.process = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-pipe", "--no-first-run", "--window-size=1280,900",
             f"--user-data-dir={self.profile}", "about:blank"],
            preexec_fn=fds, pass_fds=(3, 4),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer = b""
        self.next_id = 0
        self.session = None

    def call(self, method, params=None, session=True):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.from_chrome, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url):
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.call("Target.attachToTarget",
                             {"targetId": target["targetId"], "flatten": True}, session=False)
        self.session = attached["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate",
                           {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression, what, within=15.0):
        deadline = time.time() + within
        while time.time() < deadline:
            try:
                if self.evaluate(expression):
                    return
            except RuntimeError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"not seen within {within} s: {what}")

    def screenshot(self, path):
        shot = self.call("Page.captureScreenshot", {"format": "png"})
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        return path

    def close(self):
        try:
            self.call("Browser.close", session=False)
        except Exception:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def main():
    chromium, url, key, job_id, out_dir, operator_key = sys.argv[1:7]
    os.makedirs(out_dir, exist_ok=True)
    browser = Browser(chromium)
    shots = []
    step = "loading the page"
    try:
        browser.open(url)
        browser.wait_for("document.readyState === 'complete' && !!document.querySelector('#key')",
                         "the key form")
        shots.append(browser.screenshot(os.path.join(out_dir, "1-loaded.png")))

        step = "entering the key"
        browser.evaluate(f"document.querySelector('#key').value = {json.dumps(key)};"
                         "document.querySelector('#use-key').click(); true")
        row = f"document.querySelector('#jobs tbody tr[data-job-id={json.dumps(job_id)}]')"
        browser.wait_for(f"!!{row}", "the job in the list")
        browser.wait_for(f"{row}.dataset.status === 'queued'", "the job listed as queued")
        shots.append(browser.screenshot(os.path.join(out_dir, "2-jobs.png")))

        step = "opening the job"
        browser.evaluate(f"{row}.click(); true")
        browser.wait_for("document.querySelector('#job-id').textContent === "
                         f"{json.dumps(job_id)} && "
                         "document.querySelector('#job-status').textContent === 'queued'",
                         "the job's detail")
        shots.append(browser.screenshot(os.path.join(out_dir, "3-detail.png")))

        step = "cancelling the job"
        browser.evaluate("document.querySelector('#cancel-job').click(); true")
        browser.wait_for("document.querySelector('#job-status').textContent === 'cancelled'",
                         "the job shown cancelled")
        browser.wait_for(f"{row} && {row}.dataset.status === 'cancelled'",
                         "the list showing it cancelled")
        shots.append(browser.screenshot(os.path.join(out_dir, "4-cancelled.png")))
        error = browser.evaluate("document.querySelector('#error').hidden ? '' : "
                                 "document.querySelector('#error').textContent")
        if error:
            raise RuntimeError(f"the page shows an error: {error}")
        step = "the operator's side"
        browser.evaluate("document.querySelector('#forget-key').click();"
                         f"document.querySelector('#key').value = {json.dumps(operator_key)};"
                         "document.querySelector('#use-key').click(); true")
        browser.wait_for("!document.querySelector('#operator').hidden && "
                         "document.querySelectorAll('#queues tbody tr').length > 0 && "
                         "document.querySelectorAll('#throughput > div').length === 60 && "
                         "document.querySelector('#throughput-total').textContent !== ''",
                         "queues and the throughput chart")
        error = browser.evaluate("document.querySelector('#error').hidden ? '' : "
                                 "document.querySelector('#error').textContent")
        if error:
            raise RuntimeError(f"the page shows an error: {error}")
        total = browser.evaluate("document.querySelector('#throughput-total').textContent")
        shots.append(browser.screenshot(os.path.join(out_dir, "5-operator.png")))
        print(json.dumps({"ok": True, "throughput": total, "screenshots": shots}))
    except Exception as failure:  # report which step failed, with what was taken
        try:
            shots.append(browser.screenshot(os.path.join(out_dir, "failed.png")))
        except Exception:
            pass
        print(json.dumps({"ok": False, "step": step, "error": str(failure), "screenshots": shots}))
        sys.exit(1)
    finally:
        browser.close()


if __name__ == "__main__":
    main()
