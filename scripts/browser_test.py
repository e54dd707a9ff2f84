#!/usr/bin/env python3
"""The web app in a real browser: headless Debian Chromium driven by Selenium.

Run through scripts/browser-test, which installs Chromium and Selenium and builds the
binaries. Starts a tansu broker, the worker and the api on free ports (its own database on
the local Postgres, its own key prefix on the local Redis, its own topic), then drives:

1. an organiser who creates a seated event in the app (seat-map editor), adds a counted
   category, turns the waiting room on at 5/s and opens the live sale view;
2. a buyer who joins the waiting room behind a crowd (position and countdown shown, then
   admitted with the pass's expiry), picks two seats (mouse and keyboard), reserves with a
   double click, watches the hold's countdown and pays with tok_visa;
3. a second buyer whose open seat map shows those seats taken without a reload, sees a
   picked seat vanish when someone else takes it, gets no_adjacent_seats explained, holds
   two seats, is declined (402 with the API's detail) and cancels;
4. the organiser's sale view following all of it live.

Then checks the API's availability (conserved counts) and the reservations in Postgres,
every control's label on each page, the absence of script and CSP errors in the browser
logs, and the layout at phone width. Screenshots go to docs/screenshots/.
The last line is `browser test: passed` (exit 0) or the failure (exit 1).
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import traceback

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from free_port import free_port  # noqa: E402
import stampede_client  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCREENSHOTS = os.path.join(ROOT, "docs", "screenshots")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
POSTGRES = "postgres://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379"
HOLD_TTL_SECONDS = 120
CROWD = 25
WAIT_SECONDS = 30
FULL_PAGE_HEIGHT_MAX = 2400
STARTED = time.monotonic()


def log(message):
    print(f"[browser-test {time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def wait_until(predicate, seconds, what):
    """Polls `predicate` until it returns something true; fails with `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # a probe that fails says "not yet"
            last_error = error
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


# ---------------------------------------------------------------- services


class Services:
    """A broker, a worker and an api of our own, on free ports."""

    def __init__(self, folder):
        self.folder = folder
        self.database = f"stampede_browser_{os.getpid()}"
        self.prefix = f"browser-{os.getpid()}-{secrets.token_hex(3)}"
        self.secret = secrets.token_hex(32)
        self.broker_port, self.api_port, self.metrics_port = free_port(), free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.processes = []

    def environment(self):
        environment = dict(os.environ)
        environment.update({
            "DATABASE_URL": f"{POSTGRES}/{self.database}", "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": self.prefix,
            "KAFKA_BROKERS": f"127.0.0.1:{self.broker_port}", "KAFKA_TOPIC": f"reservations-{self.prefix}",
            "JWT_SECRET": self.secret, "LISTEN_ADDR": f"127.0.0.1:{self.api_port}", "HOLD_TTL": f"{HOLD_TTL_SECONDS}s",
            "METRICS_ADDR": f"127.0.0.1:{self.metrics_port}", "RUST_LOG": environment.get("RUST_LOG", "info"),
        })
        return environment

    def spawn(self, name, command):
        output = open(os.path.join(self.folder, f"{name}.log"), "w")
        process = subprocess.Popen(command, env=self.environment(), stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        output.close()
        self.processes.append((name, process))
        return process

    def start(self, binaries):
        psql("postgres", f"CREATE DATABASE {self.database}")
        self.spawn("broker", [os.environ["TANSU_BIN"], "broker", "--storage-engine", f"memory://browser-{self.broker_port}/",
                              "--listener-url", f"tcp://127.0.0.1:{self.broker_port}",
                              "--advertised-listener-url", f"tcp://127.0.0.1:{self.broker_port}"])
        wait_until(lambda: socket.create_connection(("127.0.0.1", self.broker_port), timeout=1), 30, "the broker")
        api = self.spawn("api", [os.path.join(binaries, "api")])
        wait_until(lambda: api.poll() is not None or http("GET", self.base + "/ready")[0] == 200, 120, "the api")
        if api.poll() is not None:
            raise RuntimeError(f"the api exited; see {self.folder}/api.log")
        self.spawn("worker", [os.path.join(binaries, "worker")])
        log(f"api on {self.base}, database {self.database}, key prefix {self.prefix}; logs in {self.folder}")

    def stop(self):
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        script = ('local cursor = "0" repeat local page = redis.call("SCAN", cursor, "MATCH", ARGV[1], "COUNT", 1000) '
                  'cursor = page[1] for _, key in ipairs(page[2]) do redis.call("UNLINK", key) end until cursor == "0"')
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "EVAL", script, "0", f"{self.prefix}:*"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        psql("postgres", f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)", check=False)

    def token(self, subject, role):
        return stampede_client.mint_token(self.secret, subject, role, 7200)

    def sql(self, statement):
        return psql(self.database, statement)


def psql(database, statement, check=True):
    result = subprocess.run(["psql", f"{POSTGRES}/{database}", "-At", "-v", "ON_ERROR_STOP=1", "-c", statement],
                            capture_output=True, text=True, check=check)
    return result.stdout.strip()


def http(method, url, token=None, body=None, headers=None):
    """One request; returns (status, headers, parsed JSON body or None)."""
    status, answer_headers, data = stampede_client.request(method, url, token=token, body=body, headers=headers)
    is_json = "json" in (answer_headers.get("Content-Type") or "")
    return status, answer_headers, json.loads(data) if data and is_json else data


# ---------------------------------------------------------------- the browser


class Page:
    """One browser (its own session storage, so its own token) on the app."""

    def __init__(self, name, base, width=1280, height=900):
        options = Options()
        options.binary_location = CHROMIUM
        if not os.environ.get("BROWSER_TEST_HEADED"):
            options.add_argument("--headless=new")
        for argument in ("--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                         "--disable-extensions", "--lang=en-GB", f"--window-size={width},{height}"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.name, self.base = name, base
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.console = []

    def open(self, fragment):
        self.driver.get(f"{self.base}/app/{fragment}")

    def go(self, fragment):
        """Moves within the app (no reload)."""
        self.driver.execute_script("window.location.hash = arguments[0]", fragment)

    def find(self, css, seconds=WAIT_SECONDS):
        return wait_until(lambda: self.visible(css), seconds, f"{self.name}: {css}")

    def visible(self, css):
        for element in self.driver.find_elements(By.CSS_SELECTOR, css):
            if element.is_displayed():
                return element
        return None

    def text(self, css):
        """The text of the first visible match ("" when none); a match redrawn meanwhile is looked up again."""
        for _ in range(5):
            try:
                element = self.visible(css)
                return element.text if element else ""
            except StaleElementReferenceException:
                continue
        return ""

    def wait_text(self, css, pattern, seconds=WAIT_SECONDS):
        """Waits until the element's text matches `pattern`; returns the match."""
        return wait_until(lambda: re.search(pattern, self.text(css)), seconds,
                          f"{self.name}: {css} to read /{pattern}/ (reads {self.text(css)!r})")

    def click(self, css):
        self.find(css).click()

    def button(self, text, within="main"):
        """A visible button (or link styled as one) whose text is `text` (or starts with it, for `text…`)."""
        def matches(found):
            return found.startswith(text[:-1]) if text.endswith("…") else found == text

        def find():
            for element in self.driver.find_elements(By.CSS_SELECTOR, f"{within} button, {within} a.button"):
                if element.is_displayed() and matches(element.text.strip()):
                    return element
            return None
        return wait_until(find, WAIT_SECONDS, f"{self.name}: the button {text!r}")

    def fill(self, element, value):
        element.clear()
        element.send_keys(str(value))

    def labelled(self, label, within="main"):
        """The control whose <label> reads `label`."""
        def find():
            for element in self.driver.find_elements(By.CSS_SELECTOR, f"{within} label"):
                if element.is_displayed() and element.text.strip() == label and element.get_attribute("for"):
                    return self.driver.find_element(By.ID, element.get_attribute("for"))
            return None
        return wait_until(find, WAIT_SECONDS, f"{self.name}: the field {label!r}")

    def screenshot(self, name, full_page=False):
        """Saves docs/screenshots/NAME.png: the window, or with `full_page` the whole page (at most 2400 px)."""
        os.makedirs(SCREENSHOTS, exist_ok=True)
        path = os.path.join(SCREENSHOTS, f"{name}.png")
        size = self.driver.get_window_size()
        if full_page:
            chrome = size["height"] - self.driver.execute_script("return window.innerHeight")
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(size["width"], min(height, FULL_PAGE_HEIGHT_MAX) + chrome)
        self.driver.save_screenshot(path)
        if full_page:
            self.driver.set_window_size(size["width"], size["height"])
        log(f"screenshot {os.path.relpath(path, ROOT)}")

    def unlabelled_controls(self):
        """Visible controls with no accessible name (label, aria-label, aria-labelledby or text)."""
        return self.driver.execute_script("""
            return [...document.querySelectorAll('input, select, textarea, button, meter, progress')]
              .filter((element) => element.offsetParent !== null && element.type !== 'hidden')
              .filter((element) => !(element.labels && element.labels.length) && !element.getAttribute('aria-label')
                && !element.getAttribute('aria-labelledby') && !(element.textContent || '').trim())
              .map((element) => element.outerHTML.slice(0, 120));""")

    def check_labels(self, where):
        missing = self.unlabelled_controls()
        assert not missing, f"{self.name} on {where}: controls without a label: {missing}"

    def fits(self, where):
        """Fails when the page scrolls sideways (wide parts such as seat maps scroll inside their own box)."""
        overflow = self.driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{self.name}: {where} is {overflow}px wider than the window"

    def check_console(self):
        """Fails on a script error or a Content-Security-Policy violation in the browser's log."""
        self.console += self.driver.get_log("browser")
        bad = [entry["message"] for entry in self.console
               if entry["level"] == "SEVERE" and re.search(r"Content Security Policy|Uncaught|TypeError|SyntaxError|"
                                                          r"ReferenceError|TrustedHTML|Trusted Type", entry["message"])]
        assert not bad, f"{self.name}: errors in the browser log: {bad}"

    def quit(self):
        try:
            self.driver.quit()
        except Exception:
            pass


# ---------------------------------------------------------------- the scenario


def headers_checks(services):
    status, headers, _ = http("GET", services.base + "/app/")
    assert status == 200, status
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy, policy
    assert headers["X-Content-Type-Options"] == "nosniff"


def organiser_creates_the_event(admin):
    admin.open(f"#token={admin.token}")
    admin.find("#nav a[href='#/organise']")
    assert "token" not in admin.driver.execute_script("return window.location.hash"), "the token left the address bar"
    assert admin.driver.execute_script("return sessionStorage.getItem('stampede.token')") == admin.token
    admin.go("#/organise")
    admin.fill(admin.labelled("Name"), "Stampede Live")
    admin.fill(admin.labelled("Venue"), "Main Arena, Jakarta")
    admin.check_labels("the new-event form")
    admin.button("Create the event").click()
    event_id = int(wait_until(lambda: re.search(r"#/organise/events/(\d+)$", admin.driver.current_url), WAIT_SECONDS,
                              "the event's page").group(1))
    log(f"organiser created event {event_id}")
    admin.fill(admin.labelled("Name"), "Floor")
    admin.fill(admin.labelled("Price (minor units, such as cents)"), 25000)
    admin.fill(admin.labelled("At most per person"), 10)
    admin.find("input[type=radio][value=seated]").click()
    admin.fill(admin.labelled("Rows"), 2)
    admin.fill(admin.labelled("Seats per row"), 8)
    admin.button("Fill").click()
    admin.wait_text(".seat-map-editor .total", r"2 rows, 16 seats")
    admin.check_labels("the category form")
    admin.screenshot("organiser-seat-map-editor", full_page=True)
    admin.button("Add the category").click()
    admin.wait_text(".notice", r"Added Floor: 16 tickets")
    admin.fill(admin.labelled("Name"), "Balcony")
    admin.fill(admin.labelled("Price (minor units, such as cents)"), 9000)
    admin.find("input[type=radio][value=counted]").click()
    admin.fill(admin.labelled("Tickets (quota)"), 40)
    admin.button("Add the category").click()
    admin.wait_text(".notice", r"Added Balcony: 40 tickets")
    checkbox = admin.find("label.check input[type=checkbox]")
    if not checkbox.is_selected():
        checkbox.click()
    admin.fill(admin.labelled("Let in per second"), 5)
    admin.fill(admin.labelled("Pass valid for (seconds)"), 600)
    admin.button("Save the waiting room").click()
    admin.wait_text("[data-field=room-state]", r"^On")
    admin.screenshot("organiser-event", full_page=True)
    admin.button("Watch the sale live").click()
    admin.wait_text(".stream-state", "Live")
    admin.wait_text("[data-field=room-enabled]", r"On, 5 let in per second")
    admin.check_labels("the sale view")
    return event_id


def seat(page, name):
    return page.find(f"button.seat[data-seat='{name}']")


def seat_state(page, name):
    return seat(page, name).get_attribute("class")


def buyer_waits_and_is_admitted(alice, services, event_id, crowd_tokens):
    # The crowd joins just before, so that the buyer has people ahead and waits.
    for token in crowd_tokens:
        status, _, _ = http("POST", f"{services.base}/events/{event_id}/queue", token)
        assert status == 201, status
    alice.button("Join the queue").click()
    alice.wait_text(".waiting-room", r"You are number \d+ in the queue")
    position = int(alice.text("[data-field=position]").replace(",", ""))
    assert position > 1, f"the buyer should wait behind the crowd, is number {position}"
    countdown = alice.wait_text(".waiting-room .countdown", r"Checking again in (\d+):(\d\d)")
    log(f"buyer is number {position}; the page reads {countdown.group(0)!r}")
    alice.screenshot("buyer-waiting-room")
    alice.wait_text(".waiting-room", r"It is your turn", seconds=60)
    alice.wait_text(".waiting-room .countdown", r"\d+:\d\d left on your pass")
    assert alice.find(".waiting-room").get_attribute("data-queue-state") == "admitted"
    log("buyer admitted: " + alice.text(".waiting-room .countdown"))


def buyer_picks_and_reserves(alice, bob):
    floor = alice.find(".category[data-category-id] .seat-map")
    assert floor
    seat(alice, "A-4").click()
    # The second seat by keyboard: the arrow key moves the focus, Enter picks.
    seat(alice, "A-4").send_keys(Keys.ARROW_RIGHT)
    assert alice.driver.switch_to.active_element.get_attribute("data-seat") == "A-5"
    alice.driver.switch_to.active_element.send_keys(Keys.ENTER)
    alice.wait_text(".selection", r"Picked A-4, A-5")
    alice.check_labels("the event page")
    alice.screenshot("buyer-seat-pick", full_page=True)
    assert "taken" not in seat_state(bob, "A-4")
    ActionChains(alice.driver).double_click(alice.button("Reserve picked seats")).perform()
    reservation_id = wait_until(lambda: re.search(r"#/reservations/([0-9a-f-]{36})$", alice.driver.current_url),
                                WAIT_SECONDS, "the hold's page").group(1)
    alice.wait_text("[data-field=status]", "On hold")
    first = alice.wait_text("[data-field=countdown]", r"(\d+):(\d\d) left to pay")
    later = wait_until(lambda: (lambda match: match and match.group(0) != first.group(0) and match)(
        re.search(r"(\d+):(\d\d) left to pay", alice.text("[data-field=countdown]"))), 5, "the countdown to move")
    seconds = lambda match: int(match.group(1)) * 60 + int(match.group(2))  # noqa: E731
    assert seconds(later) < seconds(first) <= HOLD_TTL_SECONDS, (first.group(0), later.group(0))
    log(f"hold {reservation_id}: countdown {first.group(0)!r} then {later.group(0)!r}")
    alice.check_labels("the hold page")
    alice.screenshot("buyer-hold", full_page=True)
    return reservation_id


def second_buyer_sees_the_seats_taken(bob):
    bob.driver.execute_script("window.notReloaded = true")
    wait_until(lambda: "taken" in seat_state(bob, "A-4") and "taken" in seat_state(bob, "A-5"), WAIT_SECONDS,
               "the second buyer's map to show A-4 and A-5 taken")
    assert bob.driver.execute_script("return window.notReloaded === true"), "the page was reloaded"
    assert seat(bob, "A-4").get_attribute("aria-label") == "Seat A-4, taken"
    log("second buyer sees A-4 and A-5 taken without a reload")


def second_buyer_is_refused_then_declined(bob, services, category_id, carol):
    # A seat picked by bob and then taken by carol leaves bob's pick, with a word why.
    seat(bob, "B-1").click()
    bob.wait_text(".selection", r"Picked B-1")
    status, _, body = http("POST", f"{services.base}/reserve", carol["token"],
                           {"category_id": category_id, "seats": ["B-1"]}, {"Queue-Pass": carol["pass"]})
    assert status == 201, (status, body)
    bob.wait_text(".category .alert", r"B-1 was just taken by someone else")
    wait_until(lambda: "taken" in seat_state(bob, "B-1"), WAIT_SECONDS, "B-1 to show taken")
    bob.wait_text(".selection", "No seats picked yet")
    bob.screenshot("buyer-seat-taken-live")
    # Nine together: 13 seats are free, but no row of 8 has 9 in a row.
    bob.fill(bob.labelled("Best seats together"), 9)
    bob.button("Find seats together").click()
    bob.wait_text(".category .alert", r"no_adjacent_seats")
    assert "No single row has 9 free seats side by side" in bob.text(".category .alert")
    bob.screenshot("buyer-no-adjacent-seats")
    bob.fill(bob.labelled("Best seats together"), 2)
    bob.button("Find seats together").click()
    reservation_id = wait_until(lambda: re.search(r"#/reservations/([0-9a-f-]{36})$", bob.driver.current_url),
                                WAIT_SECONDS, "bob's hold").group(1)
    Select(bob.labelled("Test card")).select_by_value("tok_decline")
    bob.button("Pay…").click()
    bob.wait_text(".alert", r"Payment Required \(402\)")
    assert "the payment was declined; the hold stays until it expires" in bob.text(".alert")
    assert bob.text("[data-field=status]") == "On hold"
    bob.screenshot("buyer-payment-declined", full_page=True)
    bob.button("Cancel the hold").click()
    bob.wait_text("[data-field=status]", "Cancelled")
    log(f"second buyer: no_adjacent_seats explained, {reservation_id} declined (402) and cancelled")
    return reservation_id


def check_api_and_postgres(services, event_id, floor_id, alice_reservation, bob_reservation, alice_token):
    _, _, availability = http("GET", f"{services.base}/events/{event_id}/availability")
    levels = {category["name"]: category for category in availability["categories"]}
    floor, balcony = levels["Floor"], levels["Balcony"]
    assert (floor["quota"], floor["available"], floor["held"], floor["sold"]) == (16, 13, 1, 2), floor
    assert (balcony["quota"], balcony["available"], balcony["held"], balcony["sold"]) == (40, 40, 0, 0), balcony
    for category in availability["categories"]:
        assert category["available"] + category["held"] + category["sold"] == category["quota"], category
    _, _, mine = http("GET", f"{services.base}/reservations/{alice_reservation}", alice_token)
    assert mine["status"] == "confirmed" and mine["seats"] == ["A-4", "A-5"], mine
    wait_until(lambda: services.sql(f"SELECT status FROM reservations WHERE id = '{alice_reservation}'") == "confirmed",
               WAIT_SECONDS, "the confirmed reservation in Postgres")
    seats = services.sql(f"SELECT string_agg(seat || ':' || confirmed, ',' ORDER BY position) FROM reservation_seats "
                         f"WHERE reservation_id = '{alice_reservation}'")
    assert seats == "A-4:true,A-5:true", seats
    wait_until(lambda: services.sql(f"SELECT status FROM reservations WHERE id = '{bob_reservation}'") == "cancelled",
               WAIT_SECONDS, "the cancelled reservation in Postgres")
    holds_of_alice = services.sql(f"SELECT count(*) FROM reservations WHERE user_id = 'alice' AND category_id = {floor_id}")
    assert holds_of_alice == "1", f"the double click held {holds_of_alice} times"
    log(f"API: Floor {floor}; Postgres: {alice_reservation} confirmed with {seats}, {bob_reservation} cancelled")


def run(services):
    admin_token = services.token("organiser", "admin")
    admin = Page("organiser", services.base)
    alice = Page("alice", services.base)
    bob = Page("bob", services.base)
    pages = [admin, alice, bob]
    try:
        admin.token = admin_token
        event_id = organiser_creates_the_event(admin)
        _, _, event = http("GET", f"{services.base}/events/{event_id}")
        floor_id = next(category["id"] for category in event["categories"] if category["name"] == "Floor")

        alice_token, bob_token = services.token("alice", "user"), services.token("bob", "user")
        bob.open(f"#token={bob_token}")
        bob.go(f"#/events/{event_id}")
        bob.find(".waiting-room")
        alice.open(f"#token={alice_token}")
        alice.find(f".event-card a[href='#/events/{event_id}']")
        alice.screenshot("buyer-events")
        alice.find(f".event-card a[href='#/events/{event_id}']").click()
        alice.wait_text(".stream-state", "Live")
        alice.find("button.seat[data-seat='A-1']")
        crowd = [services.token(f"crowd-{n}", "user") for n in range(CROWD)]
        buyer_waits_and_is_admitted(alice, services, event_id, crowd)
        bob.button("Join the queue").click()
        bob.wait_text(".waiting-room", r"It is your turn", seconds=60)

        alice_reservation = buyer_picks_and_reserves(alice, bob)
        second_buyer_sees_the_seats_taken(bob)
        bob.screenshot("buyer-seats-taken")
        alice.button("Pay…").click()
        alice.wait_text("[data-field=status]", "Confirmed")
        alice.screenshot("buyer-confirmed")

        _, _, carol_status = http("GET", f"{services.base}/events/{event_id}/queue", crowd[0])
        assert carol_status["status"] == "admitted", carol_status
        carol = {"token": crowd[0], "pass": carol_status["pass"]}
        bob_reservation = second_buyer_is_refused_then_declined(bob, services, floor_id, carol)

        admin.wait_text("[data-field=sold]", r"^2$")
        admin.wait_text("[data-field=held]", r"^1$")
        admin.wait_text(f"tr[data-category-id='{floor_id}'] [data-field=available]", r"^13$")
        admitted = int(admin.wait_text("[data-field=admitted]", r"^\d+$").group(0))
        assert admitted >= CROWD + 2, admitted
        assert len(admin.driver.find_elements(By.CSS_SELECTOR, ".chart polyline")) == 4
        admin.screenshot("organiser-live-sale", full_page=True)

        alice.go("#/reservations")
        alice.wait_text(f"tr[data-reservation-id='{alice_reservation}']", "confirmed")
        alice.screenshot("buyer-my-reservations")
        alice.check_labels("my reservations")

        alice.driver.set_window_size(390, 844)
        alice.go(f"#/events/{event_id}")
        alice.wait_text(".stream-state", "Live")
        alice.find("button.seat[data-seat='A-1']")
        alice.fits("the event page")
        alice.screenshot("buyer-phone", full_page=True)
        alice.go(f"#/reservations/{alice_reservation}")
        alice.wait_text("[data-field=status]", "Confirmed")
        alice.fits("the reservation page")
        admin.driver.set_window_size(390, 844)
        admin.fits("the live sale view")
        admin.go(f"#/organise/events/{event_id}")
        admin.find("input[type=radio][value=seated]").click()
        admin.fits("the event's organiser page with the seat-map editor")

        check_api_and_postgres(services, event_id, floor_id, alice_reservation, bob_reservation, alice_token)
        for page in pages:
            page.check_console()
    except Exception:
        for page in pages:
            try:
                page.screenshot(f"failure-{page.name}")
                with open(os.path.join(services.folder, f"console-{page.name}.json"), "w") as file:
                    json.dump(page.console + page.driver.get_log("browser"), file, indent=1)
            except Exception:
                pass
        raise
    finally:
        for page in pages:
            page.quit()


def main():
    folder = os.path.join(ROOT, ".run", "browser-test", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(folder, exist_ok=True)
    for stale in os.listdir(SCREENSHOTS) if os.path.isdir(SCREENSHOTS) else []:
        if stale.startswith("failure-"):
            os.remove(os.path.join(SCREENSHOTS, stale))
    services = Services(folder)
    status = 0
    try:
        services.start(os.environ["BROWSER_TEST_BIN_DIR"])
        headers_checks(services)
        run(services)
        print("browser test: passed", flush=True)
    except Exception as error:
        traceback.print_exc()
        print(f"browser test: FAILED: {error} (logs and failure screenshots: {folder}, docs/screenshots/failure-*)",
              flush=True)
        status = 1
    finally:
        services.stop()
        if status == 0:
            shutil.rmtree(folder, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
