"""OpenWebUI in a real browser: Debian's headless Chromium driven by Playwright (its Python
client; Playwright's own browser download is never used: ``executable_path`` is the system
``chromium`` that scripts/bootstrap.sh installs).

What a user does: open the UI, sign in, pick a model, send a message, read the model's answer,
reload the page, find the conversation in the history and open it again. A screenshot of the
answered chat (and one of the reopened conversation) lands in ``reports/``.

    python -m tests.verify.webui_browser http://10.210.10.38 EMAIL PASSWORD_FILE [MODEL]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPORTS = Path("reports")
CHROMIUM_ENV = "CITADEL_CHROMIUM"  # another browser binary than `chromium` on PATH
TIMEOUT_MS = 30_000
ANSWER_TIMEOUT_MS = 180_000  # a CPU model behind the gateway; the first answer warms it up


class BrowserError(AssertionError):
    """A step of the browser session failed; the message says which and what the page showed."""


@dataclass(frozen=True)
class ChatResult:
    chat_id: str
    answer: str  # what the page shows as the model's answer
    stored: dict[str, Any]  # the assistant message as OpenWebUI stored it (its own API)
    screenshot: Path
    reopened: Path  # screenshot after reload + opening the conversation from the history
    links: dict[str, str]  # the start page's outbound links (the monitoring banner): URL -> text


def chromium() -> str:
    """The system Chromium; a missing one is a failure (bootstrap installs it), never a skip."""
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium")
    if not path:
        raise BrowserError(
            "no chromium on this machine (scripts/bootstrap.sh installs Debian's; or set "
            f"{CHROMIUM_ENV})"
        )
    return path


def _shot(page: Any, name: str) -> Path:
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / name
    page.screenshot(path=str(path), full_page=False)
    return path


def _step(page: Any, what: str, fn: Any) -> Any:
    """Run one step; on failure keep a screenshot of what the page showed, and say so."""
    try:
        return fn()
    except Exception as exc:
        shot = _shot(page, "webui-failed.png")
        raise BrowserError(f"browser: {what} failed ({exc}); the page is in {shot}") from exc


def _dismiss_release_notes(page: Any) -> None:
    """OpenWebUI shows its release notes once per account and version: close them if shown."""
    button = page.get_by_role("button", name="Okay, Let's Go!")
    try:
        button.wait_for(state="visible", timeout=3000)
    except Exception:
        return
    button.click()


def _select_model(page: Any, model: str) -> None:
    page.locator("#model-selector-0-button").click()
    item = page.locator(f'button[aria-roledescription="model-item"][aria-label="{model}"]')
    item.wait_for(state="visible", timeout=TIMEOUT_MS)
    item.click()
    try:
        item.wait_for(state="hidden", timeout=3000)
    except Exception:
        page.keyboard.press("Escape")
    shown = page.locator("#model-selector-0-button").inner_text().strip()
    if shown != model:
        raise BrowserError(f"the model selector shows {shown!r}, not {model!r}")


def _stored_answer(page: Any, base: str, chat_id: str) -> dict[str, Any]:
    """The conversation's last assistant message, read through OpenWebUI's API with the
    session's own token: what the history holds, with the model that answered."""
    token = page.evaluate("() => localStorage.token")
    rsp = page.request.get(
        f"{base}/api/v1/chats/{chat_id}", headers={"Authorization": f"Bearer {token}"}
    )
    if not rsp.ok:
        raise BrowserError(f"GET /api/v1/chats/{chat_id}: HTTP {rsp.status}")
    messages = rsp.json()["chat"]["history"]["messages"].values()
    answers = [m for m in messages if m.get("role") == "assistant"]
    if not answers:
        raise BrowserError(f"chat {chat_id} holds no assistant message")
    return dict(max(answers, key=lambda m: m.get("timestamp", 0)))


def chat_in_browser(
    base: str,
    email: str,
    password: str,
    model: str,
    prompt: str,
    *,
    shot_prefix: str = "webui",
) -> ChatResult:
    """The whole session (see the module docstring); raises BrowserError naming the failed step."""
    from playwright.sync_api import sync_playwright

    base = base.rstrip("/")
    with (
        tempfile.TemporaryDirectory(prefix="citadel-chromium-") as profile,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch_persistent_context(
            profile,
            executable_path=chromium(),
            headless=True,
            # root (CI, the lab's controller) cannot use Chromium's own sandbox
            args=["--no-sandbox", "--disable-dev-shm-usage"],
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)

            def sign_in() -> None:
                page.goto(f"{base}/auth")
                page.locator("input[name=email]").fill(email)
                page.locator("input[type=password]").fill(password)
                page.get_by_role("button", name="Sign in").click()
                page.locator("#chat-input").wait_for(state="visible")

            _step(page, f"sign in as {email}", sign_in)
            _dismiss_release_notes(page)
            links = {
                str(href): str(text).strip()
                for href, text in page.eval_on_selector_all(
                    "a[href^='http']", "els => els.map(e => [e.href, e.textContent])"
                )
            }
            _step(page, f"pick {model}", lambda: _select_model(page, model))

            def send() -> str:
                page.locator("#chat-input").click()
                page.keyboard.type(prompt)
                page.keyboard.press("Enter")
                deadline = time.monotonic() + TIMEOUT_MS / 1000
                while "/c/" not in page.url:
                    if time.monotonic() > deadline:
                        raise BrowserError(f"no conversation URL after sending ({page.url})")
                    page.wait_for_timeout(200)
                return page.url.rsplit("/c/", 1)[1].split("?")[0]

            chat_id = _step(page, "send the message", send)
            assistant = page.locator(".chat-assistant").last

            def answered() -> str:
                # the answer's actions appear when it is complete
                page.locator(".regenerate-response-button").last.wait_for(
                    state="attached", timeout=ANSWER_TIMEOUT_MS
                )
                return str(assistant.inner_text()).strip()

            answer = _step(page, f"wait for {model}'s answer", answered)
            shot = _shot(page, f"{shot_prefix}-chat.png")
            stored = _stored_answer(page, base, chat_id)

            def reopen() -> None:
                page.reload()
                page.locator("#chat-input").wait_for(state="visible")
                page.goto(f"{base}/")  # a new chat: the conversation is only in the history
                page.locator("#chat-input").wait_for(state="visible")
                link = page.locator(f'a[href="/c/{chat_id}"]').first
                opener = page.locator("button[aria-label='Open Sidebar']").first
                if not link.is_visible() and opener.is_visible():
                    opener.click()
                link.wait_for(state="visible")
                link.click()
                page.locator(".chat-assistant").last.wait_for(state="visible")
                page.get_by_text(prompt).first.wait_for(state="visible")

            _step(page, "find the conversation in the history after a reload", reopen)
            reopened = _shot(page, f"{shot_prefix}-history.png")
            shown_again = str(page.locator(".chat-assistant").last.inner_text()).strip()
            if shown_again != answer:
                raise BrowserError(
                    f"the reopened conversation shows {shown_again!r}, not the answer {answer!r}"
                )
        finally:
            browser.close()
    return ChatResult(chat_id, answer, stored, shot, reopened, links)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    base, email, password_file, *rest = argv
    model = rest[0] if rest else "llama-3-chat"
    password = Path(password_file).read_text().strip()
    result = chat_in_browser(base, email, password, model, "What is the capital of France?")
    print(json.dumps({**result.__dict__, "screenshot": str(result.screenshot),
                      "reopened": str(result.reopened)}, default=str, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
