"""Tests of the chaos checker's failover rules on hand-made histories: rule 8 (what a
client was told before a failover is still in Redis after it) and rule 9 (no ticket sold
twice). Run: `python3 -m unittest discover -s scripts -p 'chaos_*test.py'`."""

import unittest

from chaos_checker import category_shard, check
from chaos_checker_test import CATEGORY, History, clean_run, reservation, row

SEATED = "2"


def probe(statuses, probed_at, kind="master_kill"):
    return {"kind": kind, "shard": 0, "nodes": "master redis-0 (:1), replica redis-3 (:4)",
            "injected_at": probed_at - 5, "probed_at": probed_at, "statuses": statuses}


def seated_answer(identifier, seats, user="alice", status="held"):
    return dict(reservation(identifier, user, len(seats), status), category_id=2, seats=seats)


def seated_run():
    """The clean run plus a seated category of 4 seats: alice confirms A-1 and A-2 (r5),
    bob's hold of A-3 (r6) expires."""
    history, snapshot = clean_run()
    history.add("reserve", {"user": "alice", "category_id": 2, "quantity": 2, "key": None, "seats": ["A-1", "A-2"]},
                "ok", {"status": 201, "reservation": seated_answer("r5", ["A-1", "A-2"])})
    history.add("confirm", {"user": "alice", "reservation_id": "r5", "token": "tok_visa"}, "ok",
                {"status": 200, "reservation": seated_answer("r5", ["A-1", "A-2"], status="confirmed")})
    history.add("reserve", {"user": "bob", "category_id": 2, "quantity": 1, "key": None}, "ok",
                {"status": 201, "reservation": seated_answer("r6", ["A-3"], "bob")})
    snapshot["categories"][SEATED] = {"event_id": 1, "quota": 4, "max_per_user": 4}
    snapshot["stock"][SEATED] = {"available": 2, "held": 0, "sold": 2}
    r5 = dict(row(quantity=2, payment="pay-5"), category_id=2, seats="A-1,A-2")
    r6 = dict(row("bob", 1, "expired", None), category_id=2, seats="A-3")
    snapshot["redis_holds"].update(r5=r5, r6=r6)
    snapshot["postgres_reservations"].update(r5=r5, r6=r6)
    snapshot["postgres_events"] += [["r5", "reserved"], ["r5", "confirmed"], ["r6", "reserved"], ["r6", "expired"]]
    snapshot["ledger"].append({"attempt": "a5", "state": "charged", "reference": "r5", "payment_id": "pay-5"})
    snapshot["postgres_confirmed_seats"] = [["r5", 2, "A-1"], ["r5", 2, "A-2"]]
    snapshot["dead_letters"] = []
    return history, snapshot


class FailoverProbeTest(unittest.TestCase):
    def rules(self, history, snapshot):
        return sorted({rule for rule, _ in check(history.records, snapshot).violations})

    def test_a_probe_that_finds_everything_is_clean(self):
        # Goal: a probe after a failover that reads every acknowledged change as it was told passes.
        history, snapshot = clean_run()
        snapshot["failover_probes"] = [probe({"r1": "confirmed", "r2": "held"}, history.clock)]
        self.assertEqual(check(history.records, snapshot).violations, [])

    def test_a_confirm_lost_in_a_failover_is_reported_with_its_fault(self):
        # Goal: a confirm acknowledged before the probe that Redis shows paying afterwards breaks rule 8,
        # and the violation names the reservation, the operation and the fault.
        history, snapshot = clean_run()
        snapshot["failover_probes"] = [probe({"r1": "paying", "r2": "held"}, history.clock)]
        report = check(history.records, snapshot)
        self.assertEqual(sorted({rule for rule, _ in report.violations}), ["8"])
        text = report.violations[0][1]
        self.assertIn("acknowledged confirm of r1 (op 8", text)
        self.assertIn("paying in Redis after master_kill", text)

    def test_a_hold_or_a_cancel_lost_in_a_failover_is_reported(self):
        # Goal: an acknowledged hold with no record after a failover, and an acknowledged cancel
        # read held, each break rule 8.
        history, snapshot = clean_run()
        snapshot["failover_probes"] = [probe({"r1": "confirmed", "r2": None}, history.clock)]
        self.assertEqual(self.rules(history, snapshot), ["8"])
        history, snapshot = clean_run()
        history.add("cancel", {"user": "bob", "reservation_id": "r2"}, "ok",
                    {"status": 200, "reservation": reservation("r2", "bob", 2, "cancelled")})
        for store in ("redis_holds", "postgres_reservations"):
            snapshot[store]["r2"] = row("bob", 2, "cancelled", None)
        snapshot["postgres_events"][3] = ["r2", "cancelled"]
        snapshot["failover_probes"] = [probe({"r1": "confirmed", "r2": "held"}, history.clock)]
        self.assertEqual(self.rules(history, snapshot), ["8"])

    def test_what_was_acknowledged_after_the_probe_or_not_read_is_not_judged(self):
        # Goal: a probe judges only the changes answered before it read and that it did read.
        history, snapshot = clean_run()
        snapshot["failover_probes"] = [probe({"r1": "held", "r2": "held"}, history.clock - 1.2)]
        self.assertEqual(check(history.records, snapshot).violations, [])
        snapshot["failover_probes"] = [probe({"r2": "held"}, history.clock)]
        self.assertEqual(check(history.records, snapshot).violations, [])

    def test_a_change_acknowledged_while_its_shards_replica_was_paused_is_reported(self):
        # Goal: a confirm sent and answered 200 within a pause of the only replica of its category's
        # shard breaks rule 8; on another shard, or a replay of a confirm acknowledged before, it does not.
        history, snapshot = clean_run()
        confirm = next(record for record in history.records if record["f"] == "confirm" and record["type"] == "ok")
        pause = {"kind": "replica_pause", "shard": category_shard(1), "nodes": "…", "from": confirm["time"] - 0.6,
                 "until": confirm["time"] + 0.1}
        snapshot["replica_pauses"] = [pause]
        report = check(history.records, snapshot)
        self.assertEqual(sorted({rule for rule, _ in report.violations}), ["8"])
        self.assertIn("confirm of r1", report.violations[0][1])
        snapshot["replica_pauses"] = [dict(pause, shard=(pause["shard"] + 1) % 3)]
        self.assertEqual(check(history.records, snapshot).violations, [])
        history, snapshot = clean_run()
        history.confirm("r1")
        pause = dict(pause, **{"from": history.clock - 1.1, "until": history.clock})
        snapshot["replica_pauses"] = [pause]
        self.assertEqual(check(history.records, snapshot).violations, [])


class SoldOnceTest(unittest.TestCase):
    def rules(self, history, snapshot):
        return sorted({rule for rule, _ in check(history.records, snapshot).violations})

    def test_a_seated_run_that_sells_each_seat_once_is_clean(self):
        # Goal: seats confirmed once in the answers, Redis and Postgres give no violation.
        history, snapshot = seated_run()
        self.assertEqual(check(history.records, snapshot).violations, [])

    def test_a_seat_confirmed_to_two_clients_is_reported(self):
        # Goal: a seat in two reservations whose confirms were both acknowledged breaks rule 9 (here the
        # first confirm was lost in a failover: Redis and Postgres show only the second buyer's).
        history, snapshot = seated_run()
        history.add("reserve", {"user": "carol", "category_id": 2, "quantity": 1, "key": None}, "ok",
                    {"status": 201, "reservation": seated_answer("r7", ["A-1"], "carol")})
        history.add("confirm", {"user": "carol", "reservation_id": "r7", "token": "tok_visa"}, "ok",
                    {"status": 200, "reservation": seated_answer("r7", ["A-1"], "carol", "confirmed")})
        violations = check(history.records, snapshot).violations
        self.assertIn("9", {rule for rule, _ in violations})
        self.assertTrue(any("seat A-1 of category 2 sold twice: reservations r5 and r7" in text
                            for rule, text in violations if rule == "9"))

    def test_more_tickets_confirmed_than_the_quota_is_reported(self):
        # Goal: acknowledged confirms of more tickets than the quota break rule 9, and so do more
        # confirmed tickets in Postgres than the quota.
        history, snapshot = clean_run()
        snapshot["categories"][CATEGORY]["quota"] = 4
        for number in range(3, 8):
            history.reserve(f"x{number}", user=f"u{number}")
            history.confirm(f"x{number}", user=f"u{number}")
        self.assertIn("9", self.rules(history, snapshot))
        history, snapshot = clean_run()
        snapshot["categories"][CATEGORY]["quota"] = 1
        snapshot["postgres_reservations"]["r2"] = row("bob", 2, "confirmed", "pay-2")
        self.assertIn("9", self.rules(history, snapshot))

    def test_a_seat_confirmed_twice_in_a_store_is_reported(self):
        # Goal: two confirmed holds of one seat in Redis break rule 9; a dead-lettered record
        # (what the worker does with the second one in Postgres) breaks rule 6.
        history, snapshot = seated_run()
        snapshot["redis_holds"]["r6"] = dict(snapshot["redis_holds"]["r6"], status="confirmed", seats="A-2")
        self.assertIn("9", self.rules(history, snapshot))
        history, snapshot = seated_run()
        snapshot["dead_letters"] = ["duplicate key value violates unique constraint \"reservation_seats_sold_once\""]
        self.assertEqual(self.rules(history, snapshot), ["6"])


if __name__ == "__main__":
    unittest.main()
