"""The history checker of `scripts/chaos`: judges a whole recorded run.

`check(history, snapshot)` takes the client history (a list of operation records, as
`scripts/chaos` writes them to `history.jsonl`) and a snapshot of the final state
(Redis stock and hold records, Postgres rows and event log, the simulated gateway's
ledger, the `worker reconcile` result) and returns a `Report`: every violation found,
and how each operation with an unknown outcome (`info`) was resolved.

History records (JSON lines), Jepsen style: an `invoke` and then exactly one of `ok`,
`fail` or `info` (unknown outcome: timeout, reset, 5xx) per operation, sharing `op`:
    {"op": 7, "type": "invoke", "f": "reserve", "time": 1700000000.5, "api": 0,
     "value": {"user": "u3", "category_id": 2, "quantity": 1, "key": "k-7"}}
    {"op": 7, "type": "ok", "f": "reserve", "time": 1700000000.6, "api": 0,
     "value": {"status": 201, "reservation": {"id": "…", "status": "held", …}}}
Operations (`f`): `reserve` (user, category_id, quantity, key or null), `confirm`
(user, reservation_id, token), `cancel` (user, reservation_id), `read` (user,
reservation_id; GET /reservations/{id}) and `availability` (event_id; the completion's
value holds the `categories` of the answer).

The snapshot (`snapshot.json`):
    {"categories": {"C": {"event_id", "quota", "max_per_user"}},
     "stock": {"C": {"available", "held", "sold"}},
     "redis_holds": {"R": {"status", "user_id", "category_id", "quantity", "payment_id"}},
     "postgres_reservations": {"R": {... the same fields}},
     "postgres_events": [["R", "reserved"], ["R", "confirmed"], ...],
     "ledger": [{"attempt", "state", "reference", "payment_id"}],
     "reconcile": {"exit_code": 0, "output": "…"},
     "postgres_confirmed_seats": [["R", C, "A-3"], ...],
     "dead_letters": ["the worker's error", ...],
     "replica_pauses": [{"kind", "shard", "nodes", "from", "until"}],
     "failover_probes": [{"kind", "shard", "nodes", "injected_at", "probed_at",
                          "statuses": {"R": "held" or null (no record)}}]}
A hold record in Redis may carry `seats` (comma-separated names, seated categories); a
reserve's answer carries them as a list. The last three keys are optional (a run on
one Redis has no probes; an older snapshot has no seats).

The rules are the issue's seven, and two for failovers (docs/testing.md, "Chaos soak"):
8. every reserve, confirm and cancel acknowledged before a failover probe is still in
   Redis when the probe reads it after the cluster is whole again: the hold exists, a
   confirmed one is confirmed, a cancelled one cancelled; and no reserve, confirm or
   cancel of a category on a shard whose only replica was paused (`replica_pauses`) was
   sent and acknowledged within the pause, since no replica could hold it (a replay of
   a change acknowledged before, which writes nothing, excepted);
9. no ticket is sold twice: per category, the tickets of acknowledged confirms, and the
   confirmed tickets in Postgres, are at most the quota; no seat is in two reservations
   with an acknowledged confirm, nor in two confirmed ones in Redis or in Postgres.
A violation names its rule. Every check is conservative where the history cannot show an exact moment: a
hold counts against a cap only while it surely held (from the reserve's answer until
the first cancel was sent or its `expires_at`), so load and clock skew never make one.
"""

import collections
import dataclasses
from datetime import datetime

FINAL_STATUSES = ("confirmed", "cancelled", "expired")
TERMINAL_EVENTS = FINAL_STATUSES


@dataclasses.dataclass
class Report:
    """What the checker found: violations (rule, text) and the resolved unknowns."""

    violations: list = dataclasses.field(default_factory=list)
    resolutions: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def add(self, rule, text):
        self.violations.append((rule, text))

    def lines(self):
        """The report as printable lines; the last one is `violations: N`."""
        lines = [f"violation [{rule}]: {text}" for rule, text in self.violations]
        lines += [f"unknown outcome resolved: {name}: {count}" for name, count in sorted(self.resolutions.items())]
        lines.append(f"violations: {len(self.violations)}")
        return lines


@dataclasses.dataclass
class Operation:
    """One client operation: its invocation and its completion (None if it never ended)."""

    op: int
    f: str
    request: dict
    invoked_at: float
    outcome: str = "info"
    response: dict = dataclasses.field(default_factory=dict)
    completed_at: float = float("inf")


def operations(history):
    """Pairs invocations with completions, in invocation order."""
    by_op = {}
    for record in history:
        if record["type"] == "invoke":
            by_op[record["op"]] = Operation(record["op"], record["f"], record["value"], record["time"])
        elif record["op"] in by_op:
            operation = by_op[record["op"]]
            operation.outcome = record["type"]
            operation.response = record.get("value") or {}
            operation.completed_at = record["time"]
    return sorted(by_op.values(), key=lambda operation: operation.invoked_at)


def timestamp(text):
    """Seconds since the epoch of an RFC 3339 time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def check(history, snapshot):
    """Checks a history against the final snapshot; returns a Report."""
    report = Report()
    ops = operations(history)
    acknowledged = acknowledged_reservations(ops)
    check_conservation(ops, snapshot, report)
    check_final_states(ops, acknowledged, snapshot, report)
    check_unknown_reservations(ops, acknowledged, snapshot, report)
    check_caps(ops, acknowledged, snapshot, report)
    check_idempotency(ops, report)
    check_event_log(ops, snapshot, report)
    check_charges(snapshot, report)
    check_failover_probes(ops, snapshot, report)
    check_replica_pauses(ops, snapshot, report)
    check_sold_once(ops, snapshot, report)
    for error in snapshot.get("dead_letters", []):
        report.add("6", f"the worker dead-lettered a record: {error}")
    reconcile = snapshot.get("reconcile")
    if reconcile is not None and reconcile.get("exit_code") != 0:
        report.add("6", f"worker reconcile exited {reconcile.get('exit_code')}: {reconcile.get('output', '')[-500:]}")
    return report


def acknowledged_reservations(ops):
    """Reservation id to the first reserve answered 201 with it."""
    acknowledged = {}
    for operation in ops:
        if operation.f == "reserve" and operation.outcome == "ok":
            acknowledged.setdefault(operation.response["reservation"]["id"], operation)
    return acknowledged


def check_levels(where, category, levels, quota, report):
    """Rule 1 on one reading of a category's levels."""
    available, held, sold = (int(levels[name]) for name in ("available", "held", "sold"))
    if available + held + sold != quota:
        report.add("1", f"{where}: category {category}: {available} + {held} + {sold} != quota {quota}")
    if min(available, held, sold) < 0:
        report.add("1", f"{where}: category {category}: a negative level {available}/{held}/{sold}")
    if held + sold > quota:
        report.add("1", f"{where}: category {category}: held + sold = {held + sold} > quota {quota} (oversold)")


def check_conservation(ops, snapshot, report):
    """Rule 1: every availability read during the run, and the final stock."""
    categories = snapshot["categories"]
    for operation in ops:
        if operation.f != "availability" or operation.outcome != "ok":
            continue
        for levels in operation.response["categories"]:
            category = str(levels["category_id"])
            if category in categories:
                check_levels(f"read op {operation.op}", category, levels, categories[category]["quota"], report)
    holds = snapshot["redis_holds"].values()
    for category, levels in snapshot["stock"].items():
        check_levels("final stock", category, levels, categories[category]["quota"], report)
        confirmed = sum(int(hold["quantity"]) for hold in holds
                        if str(hold["category_id"]) == category and hold["status"] == "confirmed")
        if confirmed != int(levels["sold"]):
            report.add("1", f"final stock: category {category}: sold {levels['sold']} but {confirmed} tickets confirmed")


def check_final_states(ops, acknowledged, snapshot, report):
    """Rule 2: acknowledged reservations end final and alike in Redis and Postgres (and
    every other one alike in both); an acknowledged confirm (or cancel) is what both show."""
    redis_holds, rows = snapshot["redis_holds"], snapshot["postgres_reservations"]
    for reservation, operation in acknowledged.items():
        redis_status = redis_holds.get(reservation, {}).get("status")
        postgres_status = rows.get(reservation, {}).get("status")
        if redis_status not in FINAL_STATUSES:
            report.add("2", f"reservation {reservation} (op {operation.op}) is {redis_status or 'missing'} in Redis")
        if postgres_status != redis_status:
            report.add("2", f"reservation {reservation}: Redis says {redis_status}, Postgres {postgres_status or 'nothing'}")
    for reservation in (redis_holds.keys() | rows.keys()) - acknowledged.keys():
        redis_status = redis_holds.get(reservation, {}).get("status")
        postgres_status = rows.get(reservation, {}).get("status")
        if redis_status != postgres_status:
            report.add("2", f"reservation {reservation} (unacknowledged): Redis says {redis_status or 'nothing'}, "
                            f"Postgres {postgres_status or 'nothing'}")
    expected = {"confirm": "confirmed", "cancel": "cancelled"}
    for operation in ops:
        if operation.f in expected and operation.outcome == "ok":
            reservation = operation.request["reservation_id"]
            for store, records in (("Redis", redis_holds), ("Postgres", rows)):
                status = records.get(reservation, {}).get("status")
                if status != expected[operation.f]:
                    report.add("2", f"acknowledged {operation.f} of {reservation} (op {operation.op}) "
                                    f"but {store} says {status or 'nothing'}")


def check_unknown_reservations(ops, acknowledged, snapshot, report):
    """Rule 3: every reservation that exists was told to a client or is what an
    unknown-outcome reserve did; each unknown outcome is resolved."""
    stored = {**snapshot["redis_holds"], **snapshot["postgres_reservations"]}
    unclaimed = collections.defaultdict(list)
    for reservation, record in stored.items():
        if reservation not in acknowledged:
            unclaimed[(record["user_id"], str(record["category_id"]), int(record["quantity"]))].append(reservation)
    for operation in ops:
        if operation.outcome != "info":
            continue
        if operation.f == "reserve":
            request = operation.request
            candidates = unclaimed[(request["user"], str(request["category_id"]), int(request["quantity"]))]
            if candidates:
                reservation = candidates.pop(0)
                report.resolutions[f"reserve happened ({stored[reservation]['status']})"] += 1
            else:
                report.resolutions["reserve did not happen (or replayed an earlier one)"] += 1
        elif operation.f in ("confirm", "cancel"):
            status = stored.get(operation.request["reservation_id"], {}).get("status", "missing")
            report.resolutions[f"{operation.f} of a reservation now {status}"] += 1
        else:
            report.resolutions[f"{operation.f} (a read changes nothing)"] += 1
    for key, reservations in unclaimed.items():
        for reservation in reservations:
            report.add("3", f"reservation {reservation} of user {key[0]} exists, but no client was told of it "
                            "and no unknown-outcome reserve accounts for it")


def check_caps(ops, acknowledged, snapshot, report):
    """Rule 4: a user's surely-held tickets in a category never pass `max_per_user`."""
    rows, categories = snapshot["postgres_reservations"], snapshot["categories"]
    released_at = {}
    for operation in ops:
        if operation.f == "cancel" and operation.outcome != "fail":
            reservation = operation.request["reservation_id"]
            released_at[reservation] = min(released_at.get(reservation, float("inf")), operation.invoked_at)
    changes = collections.defaultdict(list)
    for reservation, operation in acknowledged.items():
        answer = operation.response["reservation"]
        end = released_at.get(reservation, float("inf"))
        if rows.get(reservation, {}).get("status") != "confirmed":
            end = min(end, timestamp(answer["expires_at"]))
        if end > operation.completed_at:
            key = (answer["user_id"], str(answer["category_id"]))
            changes[key] += [(operation.completed_at, int(answer["quantity"])), (end, -int(answer["quantity"]))]
    for (user, category), steps in changes.items():
        cap, holding = categories[category]["max_per_user"], 0
        for moment, change in sorted(steps, key=lambda step: (step[0], step[1])):
            holding += change
            if holding > cap:
                report.add("4", f"user {user} surely held {holding} tickets of category {category} "
                                f"at {moment:.3f}, past the cap {cap}")
                break
    confirmed = collections.Counter()
    for row in rows.values():
        if row["status"] == "confirmed":
            confirmed[(row["user_id"], str(row["category_id"]))] += int(row["quantity"])
    for (user, category), tickets in confirmed.items():
        if tickets > categories[category]["max_per_user"]:
            report.add("4", f"user {user} bought {tickets} tickets of category {category}, past the cap")


def check_idempotency(ops, report):
    """Rule 5: one Idempotency-Key of one user never produced two reservations."""
    by_key = collections.defaultdict(set)
    for operation in ops:
        if operation.f == "reserve" and operation.outcome == "ok" and operation.request.get("key"):
            by_key[(operation.request["user"], operation.request["key"])].add(operation.response["reservation"]["id"])
    for (user, key), reservations in by_key.items():
        if len(reservations) > 1:
            report.add("5", f"user {user}'s Idempotency-Key {key} produced {len(reservations)} reservations")


def check_event_log(ops, snapshot, report):
    """Rule 6: one `reserved` and at most one final event per reservation, matching its
    row; statuses read by clients never went backwards."""
    events = collections.defaultdict(collections.Counter)
    for reservation, kind in snapshot["postgres_events"]:
        events[reservation][kind] += 1
    for reservation, row in snapshot["postgres_reservations"].items():
        kinds = events.get(reservation, collections.Counter())
        for kind, count in kinds.items():
            if count > 1:
                report.add("6", f"reservation {reservation}: event {kind} recorded {count} times")
        if kinds["reserved"] == 0:
            report.add("6", f"reservation {reservation}: no reserved event")
        finals = [kind for kind in TERMINAL_EVENTS if kinds[kind]]
        if len(finals) > 1:
            report.add("6", f"reservation {reservation}: events {finals} (two final states)")
        if row["status"] in FINAL_STATUSES and row["status"] not in finals:
            report.add("6", f"reservation {reservation}: row is {row['status']} without its event")
    for reservation in events.keys() - snapshot["postgres_reservations"].keys():
        report.add("6", f"events of reservation {reservation} but no row")
    check_read_order(ops, report)


def check_read_order(ops, report):
    """Rule 6, as the clients saw it: once an answer showed a reservation final, every
    answer that began later shows the same status."""
    seen = collections.defaultdict(list)
    for operation in ops:
        if operation.outcome == "ok" and operation.f in ("read", "confirm", "cancel", "reserve"):
            answer = operation.response.get("reservation") or {}
            if answer.get("id"):
                seen[answer["id"]].append(operation)
    for reservation, answers in seen.items():
        final = None
        for operation in sorted(answers, key=lambda operation: operation.completed_at):
            status = operation.response["reservation"]["status"]
            if final and status != final[0] and operation.invoked_at > final[1]:
                report.add("6", f"reservation {reservation} read {status} (op {operation.op}) after {final[0]}")
            if status in FINAL_STATUSES and not final:
                final = (status, operation.completed_at)


def check_charges(snapshot, report):
    """Rule 7: every standing charge pays for a confirmed reservation, once."""
    redis_holds, rows = snapshot["redis_holds"], snapshot["postgres_reservations"]
    charged = collections.defaultdict(list)
    for entry in snapshot["ledger"]:
        if entry["state"] == "charged":
            charged[entry["reference"]].append(entry)
    for reservation, entries in charged.items():
        statuses = {redis_holds.get(reservation, {}).get("status"), rows.get(reservation, {}).get("status")}
        if statuses != {"confirmed"}:
            report.add("7", f"a charge stands for reservation {reservation}, which is {sorted(map(str, statuses))}")
        if len(entries) > 1:
            report.add("7", f"reservation {reservation} is charged {len(entries)} times")
        payment = redis_holds.get(reservation, {}).get("payment_id")
        if payment and entries[0].get("payment_id") not in (None, payment):
            report.add("7", f"reservation {reservation} confirmed with payment {payment}, the charge is another")


def check_failover_probes(ops, snapshot, report):
    """Rule 8: what a client was told before a failover probe read Redis is still there."""
    expected = {"confirm": "confirmed", "cancel": "cancelled"}
    reported = set()
    for probe in snapshot.get("failover_probes", []):
        statuses = probe["statuses"]
        for operation in ops:
            if operation.outcome != "ok" or operation.f not in ("reserve", "confirm", "cancel"):
                continue
            if operation.completed_at >= probe["probed_at"] or operation.op in reported:
                continue
            reservation = operation.response["reservation"]["id"]
            if reservation not in statuses:
                continue  # acknowledged while the probe gathered its list: not read
            status = statuses[reservation]
            lost = status is None if operation.f == "reserve" else status != expected[operation.f]
            if lost:
                reported.add(operation.op)
                report.add("8", f"acknowledged {operation.f} of {reservation} (op {operation.op}, answered at "
                                f"{operation.completed_at:.3f}) is {status or 'missing'} in Redis after "
                                f"{probe['kind']} (shard {probe.get('shard')}: {probe.get('nodes')}, "
                                f"injected at {probe['injected_at']:.3f})")


SHARD_FIRST_SLOTS = (0, 5461, 10923)


def category_shard(category):
    """The shard (0, 1, 2: slots from 0, 5461, 10923) of a category's keys ({c:ID})."""
    crc = 0
    for byte in f"c:{category}".encode():
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    slot = crc % 16384
    return sum(1 for first in SHARD_FIRST_SLOTS[1:] if slot >= first)


def check_replica_pauses(ops, snapshot, report):
    """Rule 8: nothing written on a shard while its only replica was paused was acknowledged."""
    pauses = snapshot.get("replica_pauses", [])
    if not pauses:
        return
    acknowledged_before = collections.defaultdict(list)  # (f, reservation) -> completion times
    for operation in ops:
        if operation.outcome == "ok" and operation.f in ("reserve", "confirm", "cancel"):
            answer = operation.response["reservation"]
            acknowledged_before[(operation.f, answer["id"])].append(operation.completed_at)
    for operation in ops:
        if operation.outcome != "ok" or operation.f not in ("reserve", "confirm", "cancel"):
            continue
        answer = operation.response["reservation"]
        replayed = any(moment < operation.invoked_at for moment in acknowledged_before[(operation.f, answer["id"])])
        for pause in pauses:
            if (pause["from"] < operation.invoked_at and operation.completed_at < pause["until"] and not replayed
                    and category_shard(answer["category_id"]) == pause["shard"]):
                report.add("8", f"{operation.f} of {answer['id']} (op {operation.op}, category "
                                f"{answer['category_id']}) was acknowledged while shard {pause['shard']}'s replica "
                                f"was paused ({pause['kind']}: {pause.get('nodes')}): no replica could hold it")


def answered_seats(ops):
    """Reservation id to its seats as the answers told them (none for a counted category)."""
    seats = {}
    for operation in ops:
        if operation.outcome == "ok" and operation.f in ("reserve", "confirm", "cancel", "read"):
            answer = operation.response.get("reservation") or {}
            if answer.get("seats"):
                seats[answer["id"]] = answer["seats"]
    return seats


def check_seats_once(where, seats_by_reservation, category_of, report):
    """Rule 9 on one view: no (category, seat) in two reservations."""
    owner = {}
    for reservation, seats in sorted(seats_by_reservation.items()):
        for seat in seats:
            key = (str(category_of[reservation]), seat)
            if key in owner and owner[key] != reservation:
                report.add("9", f"{where}: seat {seat} of category {key[0]} sold twice: "
                                f"reservations {owner[key]} and {reservation}")
            owner.setdefault(key, reservation)


def check_sold_once(ops, snapshot, report):
    """Rule 9: no ticket sold twice, as the clients were told and as the stores say."""
    categories = snapshot["categories"]
    confirmed, category_of = {}, {}
    for operation in ops:
        if operation.f == "confirm" and operation.outcome == "ok":
            answer = operation.response["reservation"]
            confirmed[answer["id"]] = answer
            category_of[answer["id"]] = answer["category_id"]
    tickets = collections.Counter()
    for answer in confirmed.values():
        tickets[str(answer["category_id"])] += int(answer["quantity"])
    rows = snapshot["postgres_reservations"]
    stored = collections.Counter()
    for row in rows.values():
        if row["status"] == "confirmed":
            stored[str(row["category_id"])] += int(row["quantity"])
    for category, entry in categories.items():
        if tickets[category] > entry["quota"]:
            report.add("9", f"category {category}: confirms of {tickets[category]} tickets acknowledged, "
                            f"quota {entry['quota']} (sold twice)")
        if stored[category] > entry["quota"]:
            report.add("9", f"category {category}: {stored[category]} tickets confirmed in Postgres, "
                            f"quota {entry['quota']} (sold twice)")
    seats = answered_seats(ops)
    check_seats_once("acknowledged confirms", {reservation: seats.get(reservation, []) for reservation in confirmed},
                     category_of, report)
    holds = {reservation: hold for reservation, hold in snapshot["redis_holds"].items()
             if hold["status"] == "confirmed" and hold.get("seats")}
    check_seats_once("Redis", {reservation: hold["seats"].split(",") for reservation, hold in holds.items()},
                     {reservation: hold["category_id"] for reservation, hold in holds.items()}, report)
    in_postgres, postgres_category = collections.defaultdict(list), {}
    for reservation, category, seat in snapshot.get("postgres_confirmed_seats", []):
        in_postgres[reservation].append(seat)
        postgres_category[reservation] = category
    check_seats_once("Postgres", in_postgres, postgres_category, report)
