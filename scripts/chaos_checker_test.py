"""Tests of the chaos history checker on hand-made histories: a clean run passes, and
each kind of violation is reported. Run: `python3 -m unittest discover -s scripts -p 'chaos_*test.py'`."""

import copy
import unittest

from chaos_checker import check

CATEGORY = "1"
EXPIRES = "2030-01-01T00:00:00Z"


def reservation(identifier, user="alice", quantity=1, status="held"):
    return {"id": identifier, "status": status, "user_id": user, "category_id": 1, "quantity": quantity,
            "expires_at": EXPIRES}


class History:
    """Builds a history one operation at a time, one second apart."""

    def __init__(self):
        self.records, self.clock = [], 1000.0

    def add(self, f, request, outcome, response):
        op = len(self.records)
        self.records.append({"op": op, "type": "invoke", "f": f, "time": self.clock, "api": 0, "value": request})
        self.records.append({"op": op, "type": outcome, "f": f, "time": self.clock + 0.5, "api": 0, "value": response})
        self.clock += 1.0

    def reserve(self, identifier, user="alice", quantity=1, key=None, outcome="ok"):
        request = {"user": user, "category_id": 1, "quantity": quantity, "key": key}
        response = {"status": 201, "reservation": reservation(identifier, user, quantity)} if outcome == "ok" else {}
        self.add("reserve", request, outcome, response)

    def confirm(self, identifier, user="alice", outcome="ok"):
        response = {"status": 200, "reservation": reservation(identifier, user, status="confirmed")}
        self.add("confirm", {"user": user, "reservation_id": identifier, "token": "tok_ok"}, outcome,
                 response if outcome == "ok" else {})

    def availability(self, available, held, sold):
        levels = {"category_id": 1, "available": available, "held": held, "sold": sold}
        self.add("availability", {"event_id": 1}, "ok", {"status": 200, "categories": [levels]})


def row(user="alice", quantity=1, status="confirmed", payment="pay-1"):
    return {"status": status, "user_id": user, "category_id": 1, "quantity": quantity, "payment_id": payment}


def clean_run():
    """Alice holds r1 and confirms it; bob's r2 expires; a read shows the levels."""
    history = History()
    history.reserve("r1", key="k1")
    history.reserve("r1", key="k1")  # a deliberate retry, answered again with r1
    history.reserve("r2", user="bob", quantity=2)
    history.availability(7, 3, 0)
    history.confirm("r1")
    snapshot = {
        "categories": {CATEGORY: {"event_id": 1, "quota": 10, "max_per_user": 2}},
        "stock": {CATEGORY: {"available": 9, "held": 0, "sold": 1}},
        "redis_holds": {"r1": row(), "r2": row("bob", 2, "expired", None)},
        "postgres_reservations": {"r1": row(), "r2": row("bob", 2, "expired", None)},
        "postgres_events": [["r1", "reserved"], ["r1", "confirmed"], ["r2", "reserved"], ["r2", "expired"]],
        "ledger": [{"attempt": "a1", "state": "charged", "reference": "r1", "payment_id": "pay-1"},
                   {"attempt": "a2", "state": "voided", "reference": "r2", "payment_id": None}],
        "reconcile": {"exit_code": 0, "output": "ok"},
    }
    return history, snapshot


class CheckerTest(unittest.TestCase):
    def rules(self, history, snapshot):
        return sorted({rule for rule, _ in check(history.records, snapshot).violations})

    def test_a_clean_run_has_no_violation(self):
        # Goal: a run that keeps every promise, with a retried key, yields `violations: 0`.
        history, snapshot = clean_run()
        report = check(history.records, snapshot)
        self.assertEqual(report.violations, [])
        self.assertEqual(report.lines()[-1], "violations: 0")

    def test_an_oversell_is_reported(self):
        # Goal: a read with held + sold above the quota, and a final stock that does not add up, break rule 1.
        history, snapshot = clean_run()
        history.availability(0, 6, 5)
        self.assertEqual(self.rules(history, snapshot), ["1"])
        history, snapshot = clean_run()
        snapshot["stock"][CATEGORY]["sold"] = 2
        self.assertEqual(self.rules(history, snapshot), ["1"])

    def test_a_lost_confirm_is_reported(self):
        # Goal: an acknowledged confirm whose reservation ends expired breaks rule 2 (and its charge rule 7).
        history, snapshot = clean_run()
        for store in ("redis_holds", "postgres_reservations"):
            snapshot[store]["r1"] = row(status="expired")
        snapshot["postgres_events"][1] = ["r1", "expired"]
        snapshot["stock"][CATEGORY] = {"available": 10, "held": 0, "sold": 0}
        self.assertIn("2", self.rules(history, snapshot))

    def test_redis_and_postgres_disagreeing_is_reported(self):
        # Goal: a reservation Postgres never heard of breaks rule 2.
        history, snapshot = clean_run()
        del snapshot["postgres_reservations"]["r2"]
        snapshot["postgres_events"] = snapshot["postgres_events"][:2]
        self.assertEqual(self.rules(history, snapshot), ["2"])

    def test_a_reservation_no_client_knows_is_reported_and_an_unknown_outcome_resolved(self):
        # Goal: an extra reservation breaks rule 3 unless an unknown-outcome reserve accounts for it.
        history, snapshot = clean_run()
        extra = row("carol", 1, "expired", None)
        snapshot["redis_holds"]["r3"] = snapshot["postgres_reservations"]["r3"] = extra
        snapshot["postgres_events"] += [["r3", "reserved"], ["r3", "expired"]]
        self.assertEqual(self.rules(history, snapshot), ["3"])
        history.reserve("r3", user="carol", outcome="info")
        report = check(history.records, snapshot)
        self.assertEqual(report.violations, [])
        self.assertEqual(report.resolutions["reserve happened (expired)"], 1)
        del snapshot["postgres_reservations"]["r3"]
        snapshot["postgres_events"] = snapshot["postgres_events"][:-2]
        self.assertEqual(self.rules(history, snapshot), ["2"])

    def test_a_duplicate_is_reported(self):
        # Goal: one key giving two reservations breaks rule 5; an event row twice breaks rule 6.
        history, snapshot = clean_run()
        history.reserve("r9", key="k1")
        snapshot["redis_holds"]["r9"] = snapshot["postgres_reservations"]["r9"] = row(status="expired", payment=None)
        snapshot["postgres_events"] += [["r9", "reserved"], ["r9", "expired"]]
        self.assertEqual(self.rules(history, snapshot), ["5"])
        history, snapshot = clean_run()
        snapshot["postgres_events"].append(["r1", "confirmed"])
        self.assertEqual(self.rules(history, snapshot), ["6"])

    def test_a_status_going_backwards_is_reported(self):
        # Goal: a row with two final events, or a read of held after confirmed, breaks rule 6.
        history, snapshot = clean_run()
        snapshot["postgres_events"].append(["r1", "expired"])
        self.assertEqual(self.rules(history, snapshot), ["6"])
        history, snapshot = clean_run()
        history.add("read", {"user": "alice", "reservation_id": "r1"}, "ok",
                    {"status": 200, "reservation": reservation("r1")})
        self.assertEqual(self.rules(history, snapshot), ["6"])

    def test_a_cap_breach_is_reported(self):
        # Goal: three surely-held tickets under a cap of two break rule 4.
        history, snapshot = clean_run()
        history.reserve("r4", quantity=2)
        snapshot["redis_holds"]["r4"] = snapshot["postgres_reservations"]["r4"] = row(quantity=2, status="cancelled")
        snapshot["postgres_events"] += [["r4", "reserved"], ["r4", "cancelled"]]
        self.assertEqual(self.rules(history, snapshot), ["4"])

    def test_a_standing_charge_for_a_released_hold_is_reported(self):
        # Goal: a charge left standing for a hold that expired breaks rule 7.
        history, snapshot = clean_run()
        snapshot["ledger"].append({"attempt": "a3", "state": "charged", "reference": "r2", "payment_id": "pay-3"})
        self.assertEqual(self.rules(history, snapshot), ["7"])

    def test_reconcile_drift_is_reported(self):
        # Goal: `worker reconcile` finding drift is a violation of its own.
        history, snapshot = clean_run()
        snapshot["reconcile"] = {"exit_code": 1, "output": "category 1: drift"}
        self.assertEqual(self.rules(history, snapshot), ["6"])


if __name__ == "__main__":
    unittest.main()
